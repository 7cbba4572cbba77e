//! WAV files in and out (test fixtures, the load generator, debugging).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WavError {
    #[error("cannot read WAV {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write WAV {path}: {reason}")]
    Write { path: String, reason: String },
}

/// Reads a WAV file as mono f32 (channels averaged) and its sample rate.
pub fn read_mono(path: &Path) -> Result<(Vec<f32>, u32), WavError> {
    let err = |e: hound::Error| WavError::Read { path: path.display().to_string(), reason: e.to_string() };
    let mut reader = hound::WavReader::open(path).map_err(err)?;
    let spec = reader.spec();
    let channels = spec.channels.max(1) as usize;
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>().map_err(err)?,
        hound::SampleFormat::Int => {
            let scale = (1i64 << (spec.bits_per_sample.saturating_sub(1))) as f32;
            reader.samples::<i32>().map(|s| s.map(|v| v as f32 / scale)).collect::<Result<_, _>>().map_err(err)?
        }
    };
    let mut mono = Vec::with_capacity(interleaved.len() / channels);
    super::decode::downmix_into(&interleaved, channels, &mut mono);
    Ok((mono, spec.sample_rate))
}

/// Writes mono f32 samples as a 16-bit PCM WAV file.
pub fn write_mono(path: &Path, samples: &[f32], rate: u32) -> Result<(), WavError> {
    let err = |reason: String| WavError::Write { path: path.display().to_string(), reason };
    let bytes = encode_mono(samples, rate).map_err(|e| err(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| err(e.to_string()))
}

/// Mono f32 samples as the bytes of a 16-bit PCM WAV file.
pub fn encode_mono(samples: &[f32], rate: u32) -> Result<Vec<u8>, hound::Error> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut cursor = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let mut w = hound::WavWriter::new(&mut cursor, spec)?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
    }
    w.finalize()?;
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let path = std::env::temp_dir().join(format!("fieldvox-wav-{}.wav", uuid::Uuid::new_v4()));
        let tone: Vec<f32> = (0..1600).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
        write_mono(&path, &tone, 16_000).unwrap();
        let (back, rate) = read_mono(&path).unwrap();
        assert_eq!((back.len(), rate), (1600, 16_000));
        assert!(tone.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-3));
        assert!(matches!(read_mono(&path.with_extension("missing")), Err(WavError::Read { .. })));
    }
}
