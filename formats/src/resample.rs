//! Streaming sample-rate conversion between a client's rate and the models' rates.
//!
//! Linear interpolation after a one-pole low-pass when downsampling: cheap enough to
//! run per frame for thousands of sessions, and speech models do not need more.

/// Converts a continuous stream chunk by chunk, carrying phase across chunks.
#[derive(Debug, Clone)]
pub struct Resampler {
    step: f64,
    /// Position of the next output sample, in input samples, relative to `prev`.
    pos: f64,
    prev: f32,
    lowpass: Option<(f32, f32)>,
}

impl Resampler {
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        let step = from_hz as f64 / to_hz as f64;
        // Anti-alias when downsampling: one-pole filter near the new Nyquist frequency.
        let lowpass = (from_hz > to_hz).then(|| {
            let cutoff = 0.45 * to_hz as f32;
            let alpha = 1.0 - (-2.0 * std::f32::consts::PI * cutoff / from_hz as f32).exp();
            (alpha, 0.0)
        });
        Self { step, pos: 1.0, prev: 0.0, lowpass }
    }

    pub fn is_identity(&self) -> bool {
        self.step == 1.0
    }

    /// Appends the converted samples of `input` to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        out.reserve((input.len() as f64 / self.step) as usize + 1);
        for &raw in input {
            let x = match &mut self.lowpass {
                Some((alpha, state)) => {
                    *state += *alpha * (raw - *state);
                    *state
                }
                None => raw,
            };
            // Emit every output sample that falls between prev (0.0) and x (1.0).
            while self.pos <= 1.0 {
                let t = self.pos as f32;
                out.push(self.prev + (x - self.prev) * t);
                self.pos += self.step;
            }
            self.pos -= 1.0;
            self.prev = x;
        }
    }
}

/// Converts a whole buffer at once.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Vec<f32> {
    let mut out = Vec::new();
    Resampler::new(from_hz, to_hz).process(input, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    fn zero_crossings(x: &[f32]) -> usize {
        x.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count()
    }

    #[test]
    fn keeps_duration_and_pitch() {
        for (from, to) in [(48_000, 16_000), (22_050, 16_000), (8_000, 16_000), (16_000, 24_000)] {
            let input = tone(440.0, from, 1.0);
            let out = resample(&input, from, to);
            assert!((out.len() as i64 - to as i64).abs() <= 2, "{from}->{to}: {} samples", out.len());
            // 440 Hz for one second has ~880 zero crossings whatever the rate.
            let zc = zero_crossings(&out[100..]) as i64;
            assert!((zc - 880).abs() < 10, "{from}->{to}: {zc} crossings");
        }
    }

    #[test]
    fn chunked_equals_whole() {
        let input = tone(300.0, 48_000, 0.5);
        let whole = resample(&input, 48_000, 16_000);
        let mut r = Resampler::new(48_000, 16_000);
        let mut chunked = Vec::new();
        for c in input.chunks(960) {
            r.process(c, &mut chunked);
        }
        assert_eq!(whole.len(), chunked.len());
        assert!(whole.iter().zip(&chunked).all(|(a, b)| (a - b).abs() < 1e-6));
    }
}
