//! Tests against the real Piper voice and the real espeak-ng binary.

use std::time::Instant;

use super::*;

const SENTENCE: &str = "The compressor head bolts are torqued to thirty eight newton meters.";

fn paths() -> ModelPaths {
    ModelPaths::new(ModelPaths::default_root())
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

fn write_wav(path: &str, samples: &[f32], sample_rate: u32) {
    let spec =
        hound::WavSpec { channels: 1, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        writer.write_sample((s * 32767.0).round() as i16).unwrap();
    }
    writer.finalize().unwrap();
}

#[test]
fn synthesizes_a_plausible_sentence() {
    let mut voice = PiperVoice::load(&paths(), 1).unwrap();
    assert_eq!(voice.sample_rate(), 22050);
    let audio = voice.synthesize(SENTENCE).unwrap();
    let seconds = audio.len() as f32 / voice.sample_rate() as f32;
    assert!((1.5..8.0).contains(&seconds), "duration {seconds} s");
    let energy = rms(&audio);
    assert!(energy > 0.02, "rms {energy} is near silence");
    assert!(audio.iter().all(|s| (-1.0..=1.0).contains(s)), "samples outside [-1, 1]");
    write_wav("/tmp/piper_test.wav", &audio, voice.sample_rate());
    eprintln!("piper: {seconds:.2} s of audio, rms {energy:.3}, wrote /tmp/piper_test.wav");
}

#[test]
fn blank_text_gives_no_audio() {
    let mut voice = PiperVoice::load(&paths(), 1).unwrap();
    assert!(voice.synthesize("").unwrap().is_empty());
    assert!(voice.synthesize("  \n\t ").unwrap().is_empty());
}

#[test]
fn unmappable_text_does_not_panic() {
    let mut voice = PiperVoice::load(&paths(), 1).unwrap();
    // Symbols with no phonemes and no ids: either silence or a short utterance, never a panic.
    for text in ["\u{1F527}\u{1F529}", "…", "— ·", "[[ ]]", "\u{0007}"] {
        let audio = voice.synthesize(text).unwrap();
        assert!(audio.iter().all(|s| s.is_finite() && (-1.0..=1.0).contains(s)), "{text:?}");
    }
}

#[test]
fn manual_units_and_part_numbers_are_spoken() {
    let mut voice = PiperVoice::load(&paths(), 1).unwrap();
    let audio = voice.synthesize("Torque to 38 N·m on the RTU-40, P/N 4471-B.").unwrap();
    let seconds = audio.len() as f32 / voice.sample_rate() as f32;
    assert!(seconds > 1.5, "digits and units should be read out, got {seconds} s");
    let phonemes = phonemize("38 N·m, RTU-40", "en-us").unwrap();
    assert!(phonemes.contains("θˈɜːɾi"), "espeak reads the digits: {phonemes}");
}

#[test]
fn several_sentences_are_all_spoken() {
    let mut voice = PiperVoice::load(&paths(), 1).unwrap();
    let one = voice.synthesize("Close the valve.").unwrap();
    let two = voice.synthesize("Close the valve. Then open the bleed screw and wait.").unwrap();
    assert!(two.len() > one.len() * 2, "{} vs {}", two.len(), one.len());
}

#[test]
fn phonemize_gives_ipa_the_voice_knows() {
    let voice = PiperVoice::load(&paths(), 1).unwrap();
    let started = Instant::now();
    let phonemes = phonemize("torque", "en-us").unwrap();
    eprintln!("phonemize(\"torque\") = {phonemes:?} in {:?}", started.elapsed());
    let ipa: Vec<char> = phonemes.chars().filter(|c| !c.is_ascii()).collect();
    assert!(!ipa.is_empty(), "no IPA characters in {phonemes:?}");
    assert!(ipa.iter().all(|&c| voice.ids.contains(c)), "{phonemes:?} has characters outside the map");
    assert!(phonemes.contains('ˈ'), "primary stress kept: {phonemes:?}");
    assert_eq!(phonemize("   ", "en-us").unwrap(), "");
}

#[test]
fn phonemize_keeps_clause_punctuation() {
    let phonemes = phonemize("Check the seal, then stop. Is it tight?", "en-us").unwrap();
    let comma = phonemes.find(", ").expect("comma kept");
    let period = phonemes.find(". ").expect("period kept between sentences");
    assert!(comma < period && phonemes.ends_with('?'), "{phonemes:?}");
    // Framing: BOS, PAD, then a PAD after every phoneme, then EOS.
    let voice = PiperVoice::load(&paths(), 1).unwrap();
    let encoded = voice.ids.encode("ab");
    assert_eq!(encoded.ids, vec![1, 0, 14, 0, 15, 0, 2]);
    assert_eq!(voice.ids.encode("a\u{1F527}").skipped, 1);
}

#[test]
fn rejects_a_voice_name_that_looks_like_a_flag() {
    assert!(phonemize("hello", "--stdout").is_err());
    assert!(EspeakVoice::with_voice("en us").is_err());
    assert!(EspeakVoice::with_voice("xx-nope").is_err());
}

#[test]
fn espeak_fallback_speaks() {
    let mut voice = EspeakVoice::load().unwrap();
    assert_eq!(voice.sample_rate(), 22050);
    let audio = voice.synthesize(SENTENCE).unwrap();
    let seconds = audio.len() as f32 / voice.sample_rate() as f32;
    assert!((1.5..8.0).contains(&seconds), "duration {seconds} s");
    assert!(rms(&audio) > 0.02, "rms {}", rms(&audio));
    assert!(voice.synthesize(" ").unwrap().is_empty());
}

/// Timings for the report (`--ignored`); no assertions on speed.
#[test]
#[ignore]
fn report_timings() {
    let started = Instant::now();
    crate::models::onnx_environment(&paths()).unwrap();
    eprintln!("onnx runtime init: {:?}", started.elapsed());
    for threads in [1, 2] {
        let started = Instant::now();
        let mut voice = PiperVoice::load(&paths(), threads).unwrap();
        let load = started.elapsed();
        voice.synthesize("Warm up.").unwrap();
        let mut best = f64::MAX;
        let mut seconds = 0.0;
        for _ in 0..5 {
            let started = Instant::now();
            let audio = voice.synthesize(SENTENCE).unwrap();
            best = best.min(started.elapsed().as_secs_f64());
            seconds = audio.len() as f64 / voice.sample_rate() as f64;
        }
        eprintln!(
            "intra_threads={threads}: load {load:?}, synthesis {:.0} ms for {seconds:.2} s of audio, RTF {:.3}",
            best * 1e3,
            best / seconds
        );
    }
    let started = Instant::now();
    for _ in 0..10 {
        phonemize(SENTENCE, "en-us").unwrap();
    }
    eprintln!("phonemize: {:?} per sentence", started.elapsed() / 10);
}
