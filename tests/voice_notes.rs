//! `POST /v1/ask` with the real models: a voice note recorded on a phone, in each container
//! a phone writes (made here from one spoken question with ffmpeg), answered with its
//! transcript, citations and answer audio; and the files that must be refused clearly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::*;
use serde_json::Value;

const QUESTION: &str = "What torque for the compressor head bolts on the RTU-40?";

/// A folder of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        Self(temp_dir("voice-notes"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The question as a phone would record it: 44.1 kHz stereo WAV, a pause either side.
fn recorded_question(dir: &Scratch) -> PathBuf {
    let rate = 44_100;
    let mut mono = vec![0.0; rate as usize / 2];
    mono.extend(speak_flite(QUESTION, rate));
    mono.extend(vec![0.0; rate as usize / 2]);
    let path = dir.path("question.wav");
    let spec =
        hound::WavSpec { channels: 2, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(&path, spec).expect("wav");
    for s in mono {
        let v = (s.clamp(-1.0, 1.0) * 32767.0) as i16;
        w.write_sample(v).expect("left");
        w.write_sample(v).expect("right");
    }
    w.finalize().expect("wav written");
    path
}

/// `source` re-encoded by ffmpeg with `args` into `name`.
fn ffmpeg(dir: &Scratch, source: &Path, args: &[&str], name: &str) -> PathBuf {
    let out = dir.path(name);
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(source)
        .args(args)
        .arg(&out)
        .status()
        .expect("ffmpeg runs (scripts/setup.sh installs it)");
    assert!(status.success(), "ffmpeg {args:?} → {name} failed");
    out
}

/// Posts a voice note (`audio` None: a form without the file).
async fn ask(audio: Option<Vec<u8>>, filename: &str, fields: &[(&str, &str)], token: Option<&str>) -> (u16, Value) {
    let h = harness();
    let mut form = reqwest::multipart::Form::new();
    if let Some(bytes) = audio {
        form = form.part("audio", reqwest::multipart::Part::bytes(bytes).file_name(filename.to_string()));
    }
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    let mut request = reqwest::Client::new().post(format!("http://{}/v1/ask", h.addr)).multipart(form);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn answer_audio(body: &Value) -> Vec<u8> {
    let data = body["audio"]["data"].as_str().expect("answer audio");
    base64::engine::general_purpose::STANDARD.decode(data).expect("base64")
}

#[tokio::test]
async fn a_voice_note_in_every_container_is_answered_with_its_source_and_audio() {
    let h = harness();
    let token = h.token(TENANT_A);
    let dir = Scratch::new();
    let wav = recorded_question(&dir);
    let notes = [
        (wav.clone(), "wav"),
        (ffmpeg(&dir, &wav, &["-c:a", "libmp3lame", "-b:a", "128k"], "q.mp3"), "mp3"),
        (ffmpeg(&dir, &wav, &["-c:a", "aac", "-b:a", "64k"], "q.m4a"), "aac"),
        (ffmpeg(&dir, &wav, &["-c:a", "libopus", "-b:a", "24k"], "q.opus"), "opus"),
        (ffmpeg(&dir, &wav, &["-c:a", "libvorbis"], "q.ogg"), "vorbis"),
        (ffmpeg(&dir, &wav, &["-c:a", "flac"], "q.flac"), "flac"),
    ];
    for (path, codec) in notes {
        let bytes = std::fs::read(&path).expect("note");
        // Named as a phone might: the server reads the bytes, not the name.
        let (status, body) = ask(Some(bytes), "recording.bin", &[("equipment", "RTU-40")], Some(&token)).await;
        assert_eq!(status, 200, "{codec}: {body}");
        assert_eq!(body["recording"]["codec"], codec, "{body}");
        let seconds = body["recording"]["seconds"].as_f64().unwrap_or_default();
        assert!((3.0..8.0).contains(&seconds), "{codec}: the question is ~4 s, heard {seconds}");
        let transcript = body["transcript"].as_str().unwrap_or_default().to_lowercase();
        // flite's "torque" is heard as "org" whatever the container; the rest must come through.
        assert!(transcript.contains("compressor") && transcript.contains("rtu-40"), "{codec}: {transcript}");
        assert_eq!(body["status"], "completed", "{codec}: {body}");
        assert!(body["answer"].as_str().unwrap_or_default().contains("38"), "{codec}: {body}");
        assert_eq!(body["citations"][0]["title"], MANUAL_TITLE, "{codec}: {body}");
        assert_eq!(body["citations"][0]["page"], 3, "{codec}: {body}");
        assert!(body["timings"]["stt_ms"].as_f64().is_some(), "{codec}: {body}");
        assert_eq!(body["audio"]["format"], "wav", "WAV unless asked: {codec}");
        let answer = fieldvox::audio::decode::decode(answer_audio(&body), 120).expect("a WAV answer");
        assert_eq!(answer.codec, "wav");
        assert!(answer.seconds() > 1.0, "{codec}: a second of answer at least");
    }
    // The same note from another company's technician: their manuals, not acme's.
    let bytes = std::fs::read(&wav).expect("note");
    let (status, body) = ask(Some(bytes), "q.wav", &[], Some(&h.token(TENANT_B))).await;
    assert_eq!(status, 200, "{body}");
    let answer = body["answer"].as_str().unwrap_or_default();
    assert!(!answer.contains("38") && !answer.contains("RTU-40 Service Manual"), "tenant B heard A's facts: {body}");
}

#[tokio::test]
async fn the_answer_comes_back_as_ogg_opus_when_asked_and_says_the_fact() {
    let h = harness();
    let dir = Scratch::new();
    let bytes = std::fs::read(recorded_question(&dir)).expect("note");
    let (status, body) = ask(Some(bytes), "q.wav", &[("answer_audio", "ogg_opus")], Some(&h.token(TENANT_A))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["audio"]["format"], "ogg_opus", "{body}");
    let file = answer_audio(&body);
    let seconds = body["audio"]["seconds"].as_f64().unwrap_or_default();
    // About a tenth of the PCM16 it replaces.
    assert!((file.len() as f64) < seconds * 22_050.0 * 2.0 / 5.0, "{} bytes for {seconds} s", file.len());
    let heard_back = fieldvox::audio::decode::decode(file, 120).expect("the Ogg Opus answer decodes");
    assert_eq!(heard_back.codec, "opus");
    assert!((heard_back.seconds() - seconds).abs() < 0.1, "{} s decoded, {seconds} s sent", heard_back.seconds());
    // Transcribed back with the same recogniser, the answer states the torque.
    let pipeline = h.app.pipelines.get(None).expect("default pipeline");
    let said = pipeline.stt.transcribe(heard_back.samples, String::new()).await.expect("stt").to_lowercase();
    assert!(said.contains("38") || said.contains("thirty-eight") || said.contains("thirty eight"), "{said}");
}

#[tokio::test]
async fn files_that_are_not_whole_recordings_are_refused_with_stable_codes() {
    let h = harness();
    let token = h.token(TENANT_A);
    let dir = Scratch::new();
    let wav = recorded_question(&dir);

    // An image renamed to .wav.
    let png = ffmpeg(&dir, &wav, &["-filter_complex", "showwavespic=s=320x120", "-frames:v", "1"], "wave.png");
    let (status, body) = ask(Some(std::fs::read(png).expect("png")), "question.wav", &[], Some(&token)).await;
    assert_eq!((status, body["error"].as_str()), (415, Some("unsupported_media_type")), "{body}");

    // Uploads cut short: the header promises more than the file holds.
    for (path, name) in [(wav.clone(), "wav"), (ffmpeg(&dir, &wav, &["-c:a", "flac"], "q.flac"), "flac")] {
        let bytes = std::fs::read(path).expect("note");
        let cut = bytes[..bytes.len() / 3].to_vec();
        let (status, body) = ask(Some(cut), "q", &[], Some(&token)).await;
        assert_eq!((status, body["error"].as_str()), (422, Some("invalid_recording")), "{name}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains("cut short"), "{name}: {body}");
    }
    // An M4A cut before its index is not a readable recording at all.
    let m4a = std::fs::read(ffmpeg(&dir, &wav, &["-c:a", "aac"], "q.m4a")).expect("m4a");
    let (status, body) = ask(Some(m4a[..m4a.len() / 2].to_vec()), "q.m4a", &[], Some(&token)).await;
    assert!(matches!(status, 415 | 422), "{status} {body}");

    // Longer than `ask.max_seconds` (60): refused from the header, before decoding.
    let long = dir.path("long.wav");
    fieldvox::audio::wav::write_mono(&long, &vec![0.0; 8_000 * 61], 8_000).expect("wav");
    let (status, body) = ask(Some(std::fs::read(long).expect("long")), "long.wav", &[], Some(&token)).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("recording_too_long")), "{body}");

    // Two seconds of silence: nothing to answer.
    let quiet = dir.path("quiet.wav");
    fieldvox::audio::wav::write_mono(&quiet, &vec![0.0; 16_000 * 2], 16_000).expect("wav");
    let (status, body) = ask(Some(std::fs::read(quiet).expect("quiet")), "quiet.wav", &[], Some(&token)).await;
    assert_eq!((status, body["error"].as_str()), (422, Some("no_speech")), "{body}");

    // No file, an unknown answer format, no token.
    let (status, body) = ask(None, "", &[("equipment", "RTU-40")], Some(&token)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    let bytes = std::fs::read(&wav).expect("note");
    let (status, body) = ask(Some(bytes.clone()), "q.wav", &[("answer_audio", "mp3")], Some(&token)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    // A few bytes: refused before its body is read, a large one would meet a closed socket.
    let (status, _) = ask(Some(bytes[..64].to_vec()), "q.wav", &[], None).await;
    assert_eq!(status, 401);
}
