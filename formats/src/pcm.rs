//! 16-bit little-endian PCM <-> f32 samples in [-1, 1].

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcmError {
    #[error("PCM16 frame has an odd number of bytes ({0})")]
    OddLength(usize),
}

/// Appends the samples of `bytes` to `out`.
pub fn decode_pcm16(bytes: &[u8], out: &mut Vec<f32>) -> Result<(), PcmError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(PcmError::OddLength(bytes.len()));
    }
    out.extend(bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0));
    Ok(())
}

/// Appends `samples` to `out` as PCM16, clipping to the representable range.
pub fn encode_pcm16(samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Root-mean-square level in dBFS (full-scale sine ≈ -3 dBFS); -120 for silence.
pub fn rms_dbfs(samples: &[f32]) -> f32 {
    if samples.is_empty() {
        return -120.0;
    }
    let mean_sq = samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32;
    if mean_sq <= 1e-12 { -120.0 } else { 10.0 * mean_sq.log10() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_clips() {
        let mut bytes = Vec::new();
        encode_pcm16(&[0.0, 0.5, -0.5, 2.0, -2.0], &mut bytes);
        let mut back = Vec::new();
        decode_pcm16(&bytes, &mut back).unwrap();
        assert_eq!(back.len(), 5);
        assert!((back[1] - 0.5).abs() < 1e-3 && (back[2] + 0.5).abs() < 1e-3);
        assert!(back[3] > 0.999 && back[4] < -0.999);
        assert_eq!(decode_pcm16(&[1, 2, 3], &mut back), Err(PcmError::OddLength(3)));
    }

    #[test]
    fn levels() {
        assert_eq!(rms_dbfs(&[0.0; 100]), -120.0);
        let loud: Vec<f32> = (0..1600).map(|i| (i as f32 * 0.1).sin()).collect();
        assert!((rms_dbfs(&loud) + 3.0).abs() < 0.5);
    }
}
