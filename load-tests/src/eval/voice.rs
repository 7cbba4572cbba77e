//! Questions spoken by voices that are not the server's own (espeak-ng variants and
//! Debian's flite), optionally over steady background noise, as 16 kHz mono samples.

use std::process::Command;

use anyhow::{Context, bail};

/// Output sample rate of every voice here (what the server's recogniser runs at).
pub const RATE: u32 = 16_000;

/// A synthetic speaker: `espeak-ng:<voice>` or `flite:<voice>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Voice {
    Espeak(String),
    Flite(String),
}

impl std::str::FromStr for Voice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("espeak-ng", v)) if !v.is_empty() => Ok(Voice::Espeak(v.to_string())),
            Some(("flite", v)) if !v.is_empty() => Ok(Voice::Flite(v.to_string())),
            _ => Err(format!("unknown voice {s:?}: use espeak-ng:<voice> or flite:<voice>")),
        }
    }
}

impl std::fmt::Display for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Voice::Espeak(v) => write!(f, "espeak-ng:{v}"),
            Voice::Flite(v) => write!(f, "flite:{v}"),
        }
    }
}

impl Voice {
    /// Speaks `text`; 16 kHz mono.
    pub fn speak(&self, text: &str) -> anyhow::Result<Vec<f32>> {
        let file = tempfile::Builder::new().prefix("fieldvox-eval-").suffix(".wav").tempfile()?;
        let path = file.path();
        let status = match self {
            Voice::Espeak(v) => {
                Command::new("espeak-ng").args(["-v", v, "-s", "150", "-w"]).arg(path).arg(text).status()
            }
            Voice::Flite(v) => Command::new("flite").args(["-voice", v, "-t", text, "-o"]).arg(path).status(),
        }
        .with_context(|| format!("running {self} (is it installed? scripts/setup.sh installs it)"))?;
        if !status.success() {
            bail!("{self} failed for {text:?}");
        }
        let (samples, rate) = fieldvox::audio::wav::read_mono(path)?;
        Ok(fieldvox::audio::resample::resample(&samples, rate, RATE))
    }
}

/// Adds steady pink-ish noise at `dbfs` (RMS) over the whole signal. Deterministic: the
/// same seed gives the same noise, so runs compare.
pub fn add_noise(samples: &mut [f32], dbfs: f32, seed: u64) {
    let target = 10f32.powf(dbfs / 20.0);
    let mut state = seed | 1;
    let mut white = move || {
        // xorshift64*: uniform in [-1, 1).
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    // Paul Kellet's economy pink filter.
    let (mut b0, mut b1, mut b2) = (0f32, 0f32, 0f32);
    let noise: Vec<f32> = (0..samples.len())
        .map(|_| {
            let w = white();
            b0 = 0.99765 * b0 + w * 0.0990460;
            b1 = 0.96300 * b1 + w * 0.2965164;
            b2 = 0.57000 * b2 + w * 1.0526913;
            b0 + b1 + b2 + w * 0.1848
        })
        .collect();
    let rms = (noise.iter().map(|x| x * x).sum::<f32>() / noise.len().max(1) as f32).sqrt();
    if rms > 0.0 {
        for (s, n) in samples.iter_mut().zip(noise) {
            *s = (*s + n * target / rms).clamp(-1.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_has_the_requested_level() {
        let mut silence = vec![0.0; 16_000];
        add_noise(&mut silence, -35.0, 7);
        let level = fieldvox::audio::pcm::rms_dbfs(&silence);
        assert!((level + 35.0).abs() < 0.5, "{level}");
        let mut again = vec![0.0; 16_000];
        add_noise(&mut again, -35.0, 7);
        assert_eq!(silence, again, "deterministic");
    }

    #[test]
    fn voices_parse_and_print() {
        let v: Voice = "flite:slt".parse().unwrap();
        assert_eq!(v, Voice::Flite("slt".into()));
        assert_eq!(v.to_string(), "flite:slt");
        assert!("piper:joe".parse::<Voice>().is_err());
    }
}
