//! Coloured noise for test signals: the load generator's microphones stand next to fans,
//! engines and wind, and the tests put an answer next to them too. Seeded, made a frame
//! at a time (a generator keeps filter state, never a buffer of noise), the same on every
//! machine.

/// Samples per 20 ms at 16 kHz: the frame `unit_rms` measures with.
const FRAME: usize = 320;

/// Brown noise is integrated white noise; the leak keeps it from drifting (corner ≈ 13 Hz).
const BROWN_LEAK: f32 = 0.995;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseColour {
    /// Equal energy per octave: fans, ventilation, distant traffic.
    Pink,
    /// Flat spectrum: hiss.
    White,
    /// Energy falling 6 dB per octave: rumble of engines and wind.
    Brown,
}

impl NoiseColour {
    pub fn name(self) -> &'static str {
        match self {
            NoiseColour::Pink => "pink",
            NoiseColour::White => "white",
            NoiseColour::Brown => "brown",
        }
    }
}

/// Seeded noise of one colour, made a frame at a time: a session keeps filter state,
/// never a buffer of noise.
#[derive(Debug, Clone)]
pub struct Noise {
    colour: NoiseColour,
    gain: f32,
    rng: u64,
    pink: [f32; 7],
    brown: f32,
}

impl Noise {
    pub fn new(colour: NoiseColour, seed: u64, gain: f32) -> Self {
        Self { colour, gain, rng: splitmix64(seed).max(1), pink: [0.0; 7], brown: 0.0 }
    }

    /// Overwrites `out` with the next samples.
    pub fn fill(&mut self, out: &mut [f32]) {
        if self.gain == 0.0 {
            out.fill(0.0);
            return;
        }
        match self.colour {
            NoiseColour::White => {
                for s in out.iter_mut() {
                    *s = self.white() * self.gain;
                }
            }
            NoiseColour::Pink => {
                for s in out.iter_mut() {
                    *s = self.pink() * self.gain;
                }
            }
            NoiseColour::Brown => {
                for s in out.iter_mut() {
                    *s = self.brown() * self.gain;
                }
            }
        }
    }

    /// Uniform in [−1, 1): xorshift64*, the same on every machine.
    fn white(&mut self) -> f32 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        let top24 = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        top24 as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// Paul Kellet's refined pink filter (≈ −3 dB per octave over the speech band).
    fn pink(&mut self) -> f32 {
        let w = self.white();
        let b = &mut self.pink;
        b[0] = 0.99886 * b[0] + w * 0.055_517_9;
        b[1] = 0.99332 * b[1] + w * 0.075_075_9;
        b[2] = 0.969 * b[2] + w * 0.153_852;
        b[3] = 0.8665 * b[3] + w * 0.310_486;
        b[4] = 0.55 * b[4] + w * 0.532_952;
        b[5] = -0.7616 * b[5] - w * 0.016_898;
        let out = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + w * 0.5362;
        b[6] = w * 0.115_926;
        out
    }

    fn brown(&mut self) -> f32 {
        let w = self.white();
        self.brown = BROWN_LEAK * self.brown + w;
        self.brown
    }
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The long-run RMS of a colour's unscaled generator (gain 1), measured over 16 s of it: the
/// filters' gains differ, and measuring is simpler and surer than deriving them.
pub fn unit_rms(colour: NoiseColour) -> f32 {
    const FRAMES: usize = 800;
    let mut noise = Noise::new(colour, u64::MAX / 3, 1.0);
    let mut frame = [0.0f32; FRAME];
    let mut sum = 0.0f64;
    for _ in 0..FRAMES {
        noise.fill(&mut frame);
        sum += frame.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>();
    }
    (sum / (FRAMES * FRAME) as f64).sqrt() as f32
}

/// A generator of `colour` whose long-run RMS is `dbfs`.
pub fn at_dbfs(colour: NoiseColour, seed: u64, dbfs: f32) -> Noise {
    Noise::new(colour, seed, 10f32.powf(dbfs / 20.0) / unit_rms(colour))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level_dbfs(samples: &[f32]) -> f64 {
        let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
        10.0 * (sum / samples.len() as f64).log10()
    }

    #[test]
    fn every_colour_holds_its_level() {
        for colour in [NoiseColour::Pink, NoiseColour::White, NoiseColour::Brown] {
            let mut noise = Noise::new(colour, 7, 10f32.powf(-45.0 / 20.0) / unit_rms(colour));
            let mut samples = vec![0.0f32; FRAME * 500]; // 10 s, a frame at a time
            for frame in samples.chunks_mut(FRAME) {
                noise.fill(frame);
            }
            let dbfs = level_dbfs(&samples);
            assert!((dbfs + 45.0).abs() < 1.0, "{colour:?} noise at {dbfs:.2} dBFS");
        }
        let first_frame = |seed| {
            let mut frame = [0.0f32; FRAME];
            Noise::new(NoiseColour::Pink, seed, 1.0).fill(&mut frame);
            frame
        };
        assert_eq!(first_frame(3), first_frame(3), "a seed gives the same noise on every run");
        assert_ne!(first_frame(3), first_frame(4), "every session hears its own");
        let mut silent = [1.0f32; FRAME];
        Noise::new(NoiseColour::Brown, 1, 0.0).fill(&mut silent);
        assert!(silent.iter().all(|&s| s == 0.0), "off is digital silence");
    }
}
