//! The espeak-ng fallback voice: robotic but always available, used when no Piper voice is
//! configured. Same shape as [`super::PiperVoice`], at espeak's own sample rate.

use std::time::Instant;

use super::espeak;
use crate::models::ModelError;

const MODEL: &str = "espeak-ng";

pub struct EspeakVoice {
    voice: String,
    sample_rate: u32,
}

/// The voice the fallback speaks with, matching the Piper voice's accent.
pub const DEFAULT_ESPEAK_VOICE: &str = "en-us";

impl EspeakVoice {
    /// The fallback voice in [`DEFAULT_ESPEAK_VOICE`].
    pub fn load() -> Result<Self, ModelError> {
        Self::with_voice(DEFAULT_ESPEAK_VOICE)
    }

    /// Checks that espeak-ng runs with `voice` (e.g. `en-us`) and learns its sample rate.
    pub fn with_voice(voice: &str) -> Result<Self, ModelError> {
        espeak::check_voice(voice)?;
        let started = Instant::now();
        let probe = parse_wav(&espeak::wav("a", voice)?)?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            sample_rate = probe.sample_rate,
            voice,
            "espeak voice loaded"
        );
        Ok(Self { voice: voice.to_owned(), sample_rate: probe.sample_rate })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Speaks `text`; mono f32 in [-1, 1] at `sample_rate()`. Blank text gives an empty Vec.
    pub fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, ModelError> {
        let text = espeak::clean_text(text);
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let wav = parse_wav(&espeak::wav(&text, &self.voice)?)?;
        if wav.sample_rate != self.sample_rate {
            return Err(ModelError::inference(
                MODEL,
                format!("sample rate changed from {} to {}", self.sample_rate, wav.sample_rate),
            ));
        }
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            samples = wav.samples.len(),
            "espeak synthesized"
        );
        Ok(wav.samples)
    }
}

struct Wav {
    sample_rate: u32,
    samples: Vec<f32>,
}

/// Reads the 16-bit PCM WAV espeak writes to a pipe. Its sizes are placeholders (espeak
/// cannot seek back to fill them in), so the data runs to the end of the stream.
fn parse_wav(bytes: &[u8]) -> Result<Wav, ModelError> {
    let bad = |reason: &str| ModelError::inference(MODEL, format!("unreadable WAV output: {reason}"));
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("no RIFF/WAVE header"));
    }
    let mut format: Option<(u16, u16, u32, u16)> = None;
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]) as usize;
        let body = at + 8;
        if id == b"fmt " {
            let fmt = bytes.get(body..body + 16).ok_or_else(|| bad("short fmt chunk"))?;
            let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
            let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
            format = Some((u16_at(0), u16_at(2), rate, u16_at(14)));
        } else if id == b"data" {
            let (tag, channels, sample_rate, bits) = format.ok_or_else(|| bad("data before fmt"))?;
            if tag != 1 || bits != 16 || channels == 0 {
                return Err(bad(&format!("unsupported format tag {tag}, {bits} bits, {channels} channels")));
            }
            let end = body.saturating_add(size).min(bytes.len());
            let frame = 2 * usize::from(channels);
            // Keep the first channel of each frame; espeak writes mono anyway.
            let samples = bytes[body..end]
                .chunks_exact(frame)
                .map(|f| f32::from(i16::from_le_bytes([f[0], f[1]])) / 32768.0)
                .collect();
            return Ok(Wav { sample_rate, samples });
        }
        at = body.saturating_add(size + (size & 1));
    }
    Err(bad("no data chunk"))
}
