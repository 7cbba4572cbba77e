//! A client's binary audio frames at any accepted rate: decoded and resampled to the
//! models' 16 kHz frame by frame, exactly as a whole-buffer conversion would, with every
//! sample finite and in range. The first two bytes pick the client's rate and how the
//! stream is cut into frames.
#![no_main]

use fieldvox_formats::pcm::{PcmError, decode_pcm16, encode_pcm16, rms_dbfs};
use fieldvox_formats::protocol::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
use fieldvox_formats::resample::{Resampler, resample};
use libfuzzer_sys::fuzz_target;

const MODEL_RATE: u32 = 16_000;

fuzz_target!(|data: &[u8]| {
    let [rate_pick, cut, stream @ ..] = data else { return };
    let rates = [MIN_SAMPLE_RATE, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, MAX_SAMPLE_RATE];
    let rate = rates[usize::from(*rate_pick) % rates.len()];
    let frame_len = usize::from(*cut).max(1);

    let mut streamed = Resampler::new(rate, MODEL_RATE);
    let (mut decoded, mut out, mut frame_samples) = (Vec::new(), Vec::new(), Vec::new());
    for frame in stream.chunks(frame_len) {
        frame_samples.clear();
        match decode_pcm16(frame, &mut frame_samples) {
            Ok(()) => assert_eq!(frame_samples.len() * 2, frame.len()),
            Err(PcmError::OddLength(n)) => {
                assert!(n % 2 == 1 && n == frame.len());
                continue;
            }
        }
        assert!(frame_samples.iter().all(|s| (-1.0..=1.0).contains(s)));
        let level = rms_dbfs(&frame_samples);
        assert!((-120.0..=0.1).contains(&level), "level {level}");
        streamed.process(&frame_samples, &mut out);
        decoded.extend_from_slice(&frame_samples);
    }
    assert!(out.iter().all(|s| s.is_finite() && s.abs() <= 1.0 + 1e-6));
    let whole = resample(&decoded, rate, MODEL_RATE);
    assert_eq!(whole.len(), out.len());
    assert!(whole.iter().zip(&out).all(|(a, b)| (a - b).abs() < 1e-5));
    let expected = decoded.len() as f64 * f64::from(MODEL_RATE) / f64::from(rate);
    assert!((out.len() as f64 - expected).abs() <= 2.0, "{} samples for {expected}", out.len());

    // The answer path: samples back to PCM16 and again. Encoding scales by 32767 and decoding
    // by 32768 (so full scale never clips), hence up to one and a half steps of error.
    let mut bytes = Vec::new();
    encode_pcm16(&out, &mut bytes);
    let mut again = Vec::new();
    decode_pcm16(&bytes, &mut again).expect("even length");
    assert!(again.iter().zip(&out).all(|(a, b)| (a - b.clamp(-1.0, 1.0)).abs() <= 1.5 / 32_768.0 + 1e-7));
});
