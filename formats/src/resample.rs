//! Streaming sample-rate conversion between a client's rate and the models' rates.
//!
//! Linear interpolation, after a 4th-order Butterworth low-pass when downsampling: cheap
//! enough to run per frame for thousands of sessions. The low-pass matters: a phone's
//! 48 kHz microphone (and Opus, which codes up to 20 kHz) carries sound far above the
//! 8 kHz the models hear, and what is not removed folds down onto speech (13 kHz lands on
//! 3 kHz); a one-pole filter let half of it through.

/// Converts a continuous stream chunk by chunk, carrying phase across chunks.
#[derive(Debug, Clone)]
pub struct Resampler {
    step: f64,
    /// Position of the next output sample, in input samples, relative to `prev`.
    pos: f64,
    prev: f32,
    lowpass: Option<[Biquad; 2]>,
}

/// One second-order section (RBJ low-pass), transposed direct form II.
#[derive(Debug, Clone)]
struct Biquad {
    b: [f32; 3],
    a: [f32; 2],
    z: [f32; 2],
}

impl Biquad {
    fn lowpass(cutoff_hz: f32, rate_hz: f32, q: f32) -> Self {
        let w0 = 2.0 * std::f32::consts::PI * cutoff_hz / rate_hz;
        let (sin, cos) = w0.sin_cos();
        let alpha = sin / (2.0 * q);
        let a0 = 1.0 + alpha;
        let b1 = (1.0 - cos) / a0;
        Self { b: [b1 / 2.0, b1, b1 / 2.0], a: [-2.0 * cos / a0, (1.0 - alpha) / a0], z: [0.0; 2] }
    }

    fn run(&mut self, x: f32) -> f32 {
        let y = self.b[0] * x + self.z[0];
        self.z[0] = self.b[1] * x - self.a[0] * y + self.z[1];
        self.z[1] = self.b[2] * x - self.a[1] * y;
        y
    }
}

impl Resampler {
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        let step = from_hz as f64 / to_hz as f64;
        // Anti-alias when downsampling: Butterworth (two sections) just under the new
        // Nyquist frequency.
        let lowpass = (from_hz > to_hz).then(|| {
            let (cutoff, rate) = (0.45 * to_hz as f32, from_hz as f32);
            [Biquad::lowpass(cutoff, rate, 0.541_196_1), Biquad::lowpass(cutoff, rate, 1.306_563)]
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
                // The filter rings past full scale on a full-scale edge (up to 1.9× on the
                // worst input); what the models hear stays in PCM16's range.
                Some([first, second]) => second.run(first.run(raw)).clamp(-1.0, 1.0),
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

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|s| s * s).sum::<f32>() / x.len() as f32).sqrt()
    }

    #[test]
    fn sound_above_the_new_nyquist_does_not_fold_into_speech() {
        // 13 kHz at 48 kHz would fold to 3 kHz at 16 kHz, in the middle of speech.
        let folded = resample(&tone(13_000.0, 48_000, 0.5), 48_000, 16_000);
        let speech = resample(&tone(1_000.0, 48_000, 0.5), 48_000, 16_000);
        assert!(rms(&folded[800..]) < 0.02, "13 kHz leaks at rms {}", rms(&folded[800..]));
        assert!(rms(&speech[800..]) > 0.33, "1 kHz passes: rms {}", rms(&speech[800..]));
    }

    #[test]
    fn a_full_scale_edge_rings_but_stays_in_range() {
        let edge: Vec<f32> = (0..4_800).map(|i| if (i / 7) % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let out = resample(&edge, 48_000, 16_000);
        assert!(out.iter().all(|s| s.abs() <= 1.0), "{:?}", out.iter().fold(0.0f32, |m, s| m.max(s.abs())));
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
