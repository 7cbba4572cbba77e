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
    let mono = interleaved.chunks(channels).map(|c| c.iter().sum::<f32>() / channels as f32).collect();
    Ok((mono, spec.sample_rate))
}

/// Writes mono f32 samples as 16-bit PCM.
pub fn write_mono(path: &Path, samples: &[f32], rate: u32) -> Result<(), WavError> {
    let err = |e: hound::Error| WavError::Write { path: path.display().to_string(), reason: e.to_string() };
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec).map_err(err)?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16).map_err(err)?;
    }
    w.finalize().map_err(err)
}
