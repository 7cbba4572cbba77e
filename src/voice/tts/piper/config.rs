//! The Piper voice config (`<voice>.onnx.json`): sample rate, espeak voice, inference scales,
//! phoneme id map and speaker count, validated once at load time.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::models::ModelError;

const MODEL: &str = "piper";

/// Framing symbols every Piper phoneme id map carries.
pub(super) const BOS: &str = "^";
pub(super) const PAD: &str = "_";
pub(super) const EOS: &str = "$";

#[derive(Debug, Clone, Deserialize)]
pub(super) struct VoiceConfig {
    pub audio: AudioConfig,
    pub espeak: EspeakConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    /// Absent in older configs, which were all espeak voices.
    #[serde(default)]
    pub phoneme_type: Option<String>,
    pub phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default = "one")]
    pub num_speakers: u32,
    /// Phoneme sequences the model treats as one symbol (newer piper voices only).
    #[serde(default)]
    pub vowel_clusters: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct AudioConfig {
    pub sample_rate: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct EspeakConfig {
    pub voice: String,
}

/// Piper's defaults when the config leaves a scale out.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct InferenceConfig {
    #[serde(default = "default_noise_scale")]
    pub noise_scale: f32,
    #[serde(default = "default_length_scale")]
    pub length_scale: f32,
    #[serde(default = "default_noise_w")]
    pub noise_w: f32,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self { noise_scale: default_noise_scale(), length_scale: default_length_scale(), noise_w: default_noise_w() }
    }
}

fn one() -> u32 {
    1
}
fn default_noise_scale() -> f32 {
    0.667
}
fn default_length_scale() -> f32 {
    1.0
}
fn default_noise_w() -> f32 {
    0.8
}

impl VoiceConfig {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::load(MODEL, format!("reading {}: {e}", path.display())))?;
        let config: Self = serde_json::from_str(&text)
            .map_err(|e| ModelError::load(MODEL, format!("parsing {}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ModelError> {
        if let Some(kind) = self.phoneme_type.as_deref()
            && kind != "espeak"
        {
            return Err(ModelError::load(MODEL, format!("phoneme_type {kind:?} is not supported (only espeak)")));
        }
        if self.audio.sample_rate == 0 {
            return Err(ModelError::load(MODEL, "audio.sample_rate is 0"));
        }
        for symbol in [BOS, PAD, EOS] {
            if self.phoneme_id_map.get(symbol).is_none_or(Vec::is_empty) {
                return Err(ModelError::load(MODEL, format!("phoneme_id_map has no ids for {symbol:?}")));
            }
        }
        let scales = &self.inference;
        if ![scales.noise_scale, scales.length_scale, scales.noise_w].iter().all(|s| s.is_finite())
            || scales.length_scale <= 0.0
        {
            return Err(ModelError::load(MODEL, format!("invalid inference scales {scales:?}")));
        }
        Ok(())
    }
}
