//! The TOML shape of a pipeline profile.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::llm::local::LlmEngine;
pub use crate::rag::evidence::EvidenceConfig;
pub use crate::rag::retrieve::RetrievalConfig;
pub use crate::session::history::{ConversationConfig, Rewrite};
pub use crate::session::interruption::InterruptConfig;
use crate::voice::endpoint::EndpointConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Set from the file name.
    #[serde(skip)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Whether clients may pick this profile with `session.update`. Test profiles (the
    /// load-test reference, which calls a local test port) say `false`: they serve only
    /// as the server's `pipelines.default`.
    #[serde(default = "selectable_by_default")]
    pub selectable: bool,
    #[serde(default)]
    pub vad: EndpointConfig,
    /// What it takes to interrupt an answer (barge-in evidence, echo guard).
    #[serde(default)]
    pub interrupt: InterruptConfig,
    /// History kept for follow-up questions, partial transcripts.
    #[serde(default)]
    pub conversation: ConversationConfig,
    #[serde(default)]
    pub stt: SttConfig,
    #[serde(default)]
    pub retrieval: RetrievalConfig,
    #[serde(default)]
    pub evidence: EvidenceConfig,
    pub llm: LlmConfig,
    #[serde(default)]
    pub tts: TtsConfig,
}

fn selectable_by_default() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SttKind {
    Whisper,
    /// Any OpenAI-compatible `/v1/audio/transcriptions`.
    Openai,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SttConfig {
    pub provider: SttKind,
    /// Which local Whisper (`provider = "whisper"`).
    pub model: WhisperModel,
    /// Prime recognition with the tenant's codes (equipment ids, fault codes, part numbers).
    /// Off by default: on the answer-quality benchmark it made Whisper tiny.en repeat codes
    /// from the hint on unclear speech (README, "Answer quality").
    pub vocabulary_hint: bool,
    #[serde(default)]
    pub endpoint: HttpProvider,
}

impl Default for SttConfig {
    fn default() -> Self {
        Self {
            provider: SttKind::Whisper,
            model: WhisperModel::TinyEn,
            vocabulary_hint: false,
            endpoint: HttpProvider::default(),
        }
    }
}

/// The local Whisper models shipped (models/manifest.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WhisperModel {
    /// English only, 39 M parameters.
    #[serde(rename = "tiny.en")]
    TinyEn,
    /// Multilingual (asked for English), 74 M parameters: about twice tiny.en's work.
    #[serde(rename = "base")]
    Base,
}

impl WhisperModel {
    /// Its directory under the models directory.
    pub fn dir(self) -> &'static str {
        match self {
            WhisperModel::TinyEn => "whisper-tiny.en",
            WhisperModel::Base => "whisper-base",
        }
    }

    /// The name of its worker pool in logs and `/metrics`.
    pub fn pool(self) -> &'static str {
        match self {
            WhisperModel::TinyEn => "stt",
            WhisperModel::Base => "stt-base",
        }
    }
}

/// Where an HTTP provider lives; the key comes from an environment variable, never the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpProvider {
    /// API root such as `http://127.0.0.1:8000/v1`.
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// Name of the environment variable holding the API key.
    pub api_key_env: Option<String>,
    pub timeout_ms: Option<u64>,
}

impl HttpProvider {
    /// (base_url, model, api key) or a reason why this provider cannot be used.
    pub fn resolve(&self) -> Result<(String, String, Option<String>), String> {
        let (Some(url), Some(model)) = (&self.base_url, &self.model) else {
            return Err("an HTTP provider needs base_url and model".into());
        };
        let key = match &self.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))?),
            None => None,
        };
        Ok((url.clone(), model.clone(), key))
    }

    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms.unwrap_or(30_000))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LlmKind {
    /// SmolLM2-135M-Instruct GGUF on the CPU.
    Local,
    /// Reads the best passage; no model.
    Extractive,
    /// Any OpenAI-compatible chat completions endpoint.
    Openai,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: LlmKind,
    /// For `local`: the engine that runs the model (README, "Answer quality").
    #[serde(default)]
    pub engine: LlmEngine,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    #[serde(default)]
    pub system_prompt: String,
    /// Answer when retrieval finds nothing (no model call is made).
    #[serde(default = "default_no_answer")]
    pub no_answer: String,
    /// For `openai`: where the endpoint is.
    #[serde(default)]
    pub endpoint: HttpProvider,
}

fn default_max_tokens() -> usize {
    80
}
fn default_no_answer() -> String {
    "I could not find that in your manuals.".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TtsKind {
    Piper,
    Espeak,
    /// Any OpenAI-compatible `/v1/audio/speech` returning PCM16.
    Openai,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsConfig {
    pub provider: TtsKind,
    /// For `openai`: voice name and the rate of the PCM it returns.
    pub voice: String,
    pub sample_rate: u32,
    #[serde(default)]
    pub endpoint: HttpProvider,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self { provider: TtsKind::Piper, voice: "alloy".into(), sample_rate: 24_000, endpoint: HttpProvider::default() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read pipeline profiles in {dir}: {reason}")]
    Read { dir: String, reason: String },
    #[error("pipeline profile {file} is invalid: {reason}")]
    Invalid { file: String, reason: String },
    #[error("default pipeline {0:?} has no profile file")]
    MissingDefault(String),
}

/// Reads every `*.toml` in `dir`, keyed by file stem.
pub fn load_dir(dir: &Path) -> Result<BTreeMap<String, Profile>, ProfileError> {
    let read_err = |e: std::io::Error| ProfileError::Read { dir: dir.display().to_string(), reason: e.to_string() };
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        let invalid = |reason: String| ProfileError::Invalid { file: path.display().to_string(), reason };
        let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
        let mut profile: Profile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let http_sections = [
            (profile.stt.provider == SttKind::Openai, &profile.stt.endpoint, "stt"),
            (profile.llm.provider == LlmKind::Openai, &profile.llm.endpoint, "llm"),
            (profile.tts.provider == TtsKind::Openai, &profile.tts.endpoint, "tts"),
        ];
        for (used, http, section) in http_sections {
            if used && (http.base_url.is_none() || http.model.is_none()) {
                return Err(invalid(format!("{section} provider \"openai\" needs base_url and model")));
            }
        }
        if profile.retrieval.top_k == 0 || profile.retrieval.top_k > 20 {
            return Err(invalid("retrieval.top_k must be between 1 and 20".into()));
        }
        profile.name = name.clone();
        out.insert(name, profile);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let profiles = load_dir(&dir).unwrap();
        let fa = &profiles["field-assistant"];
        assert_eq!(fa.llm.provider, LlmKind::Extractive, "the default answers from the manuals' own sentences");
        assert_eq!(fa.tts.provider, TtsKind::Piper);
        let llm = &profiles["local-llm"];
        assert_eq!(llm.llm.provider, LlmKind::Local);
        assert!(!llm.llm.system_prompt.is_empty());
        assert_eq!(profiles["extractive"].llm.provider, LlmKind::Extractive);
    }

    #[test]
    fn rejects_bad_profiles() {
        let dir = std::env::temp_dir().join(format!("fieldvox-profiles-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("x.toml"), "[llm]\nprovider = \"openai\"\n[llm.endpoint]\nmodel = \"m\"\n").unwrap();
        assert!(matches!(load_dir(&dir), Err(ProfileError::Invalid { .. })));
        std::fs::write(dir.join("x.toml"), "[llm]\nprovider = \"local\"\nbogus = 1\n").unwrap();
        assert!(matches!(load_dir(&dir), Err(ProfileError::Invalid { .. })));
    }
}
