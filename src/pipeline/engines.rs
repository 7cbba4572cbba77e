//! Builds every profile's providers once, sharing local model pools between profiles.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::profile::{self, LlmKind, Profile, ProfileError, SttKind, TtsKind, WhisperModel};
use super::providers::{LlmProvider, SttProvider, TtsProvider};
use crate::config::Config;
use crate::llm::LlmError;
use crate::llm::local::{LlmEngine, LocalLlm};
use crate::llm::openai::OpenAiChat;
use crate::models::ModelError;
use crate::voice::stt::openai::OpenAiTranscriber;
use crate::voice::stt::whisper::Whisper;
use crate::voice::tts::openai::OpenAiSpeech;
use crate::voice::tts::piper::{EspeakVoice, PiperVoice};
use crate::workers::{WorkerPool, gate};

/// One profile with its providers.
pub struct Pipeline {
    pub profile: Profile,
    pub stt: Arc<SttProvider>,
    pub llm: Arc<LlmProvider>,
    pub tts: Arc<TtsProvider>,
}

pub struct Pipelines {
    by_name: BTreeMap<String, Arc<Pipeline>>,
    default: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("profile {profile}: {reason}")]
    Provider { profile: String, reason: String },
}

/// Local pools built so far, so profiles share them.
#[derive(Default)]
struct Shared {
    stt: BTreeMap<(SttKind, WhisperModel), Arc<SttProvider>>,
    tts: BTreeMap<TtsKind, Arc<TtsProvider>>,
    local_llm: BTreeMap<LlmEngine, Arc<LlmProvider>>,
    extractive: Option<Arc<LlmProvider>>,
}

impl Pipelines {
    /// Loads every profile in the configured directory and the models they need (blocking).
    pub fn load(config: &Config) -> Result<Self, EngineError> {
        let profiles = profile::load_dir(&config.pipelines.dir)?;
        if !profiles.contains_key(&config.pipelines.default) {
            return Err(ProfileError::MissingDefault(config.pipelines.default.clone()).into());
        }
        let mut shared = Shared::default();
        let mut by_name = BTreeMap::new();
        for (name, profile) in profiles {
            let pipeline = build(config, &mut shared, profile)?;
            tracing::info!(pipeline = %name, "pipeline ready");
            by_name.insert(name, Arc::new(pipeline));
        }
        Ok(Self { by_name, default: config.pipelines.default.clone() })
    }

    /// The named profile, or the default when `name` is `None`.
    pub fn get(&self, name: Option<&str>) -> Option<Arc<Pipeline>> {
        self.by_name.get(name.unwrap_or(&self.default)).cloned()
    }

    /// The profile a client asked for by name: a selectable one, or the default.
    pub fn select(&self, name: &str) -> Option<Arc<Pipeline>> {
        self.get(Some(name)).filter(|p| p.profile.selectable || name == self.default)
    }

    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The names a client may select.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.iter().filter(|(n, p)| p.profile.selectable || **n == self.default).map(|(n, _)| n.as_str())
    }
}

fn build(config: &Config, shared: &mut Shared, profile: Profile) -> Result<Pipeline, EngineError> {
    let name = profile.name.clone();
    let provider_err = move |reason: String| EngineError::Provider { profile: name.clone(), reason };
    let paths = config.model_paths();
    let w = &config.workers;
    let stt_key = (profile.stt.provider, profile.stt.model);
    let stt = match shared.stt.get(&stt_key) {
        Some(p) => p.clone(),
        None => {
            let provider = match profile.stt.provider {
                SttKind::Whisper => {
                    let model = profile.stt.model;
                    let dir = paths.whisper_dir(model.dir())?;
                    // Whisper's matrix products run on every core.
                    let pool = WorkerPool::spawn(model.pool(), w.stt, w.into(), move |_| Whisper::load(&dir))?
                        .gated(gate::cores());
                    SttProvider::Whisper(pool)
                }
                SttKind::Openai => {
                    let e = &profile.stt.endpoint;
                    let (url, model, key) = e.resolve().map_err(&provider_err)?;
                    SttProvider::OpenAi(OpenAiTranscriber::new(&url, key, &model, e.timeout())?)
                }
            };
            let provider = Arc::new(provider);
            // Local models are shared; HTTP providers are per profile (their endpoints differ).
            if profile.stt.provider != SttKind::Openai {
                shared.stt.insert(stt_key, provider.clone());
            }
            provider
        }
    };
    let tts = match shared.tts.get(&profile.tts.provider) {
        Some(p) => p.clone(),
        None => {
            let threads = w.piper_threads();
            let provider = match profile.tts.provider {
                TtsKind::Piper => {
                    let paths = paths.clone();
                    TtsProvider::Piper(
                        WorkerPool::spawn("tts", w.tts, w.into(), move |_| PiperVoice::load(&paths, threads))?
                            .gated(threads),
                    )
                }
                TtsKind::Espeak => TtsProvider::Espeak(
                    WorkerPool::spawn("tts-espeak", w.tts, w.into(), |_| EspeakVoice::load())?.gated(1),
                ),
                TtsKind::Openai => {
                    let t = &profile.tts;
                    let (url, model, key) = t.endpoint.resolve().map_err(&provider_err)?;
                    TtsProvider::OpenAi(OpenAiSpeech::new(
                        &url,
                        key,
                        &model,
                        &t.voice,
                        t.sample_rate,
                        t.endpoint.timeout(),
                    )?)
                }
            };
            let provider = Arc::new(provider);
            if profile.tts.provider != TtsKind::Openai {
                shared.tts.insert(profile.tts.provider, provider.clone());
            }
            provider
        }
    };
    let llm = match profile.llm.provider {
        LlmKind::Local => {
            let engine = profile.llm.engine.resolve();
            match shared.local_llm.get(&engine) {
                Some(p) => p.clone(),
                None => {
                    let gguf = paths.smollm2_gguf()?;
                    // Outside the gate: a generation holds its worker while its sentences
                    // are spoken, and gating it would make speech wait for the whole answer.
                    let pool =
                        WorkerPool::spawn(engine.pool(), w.llm, w.into(), move |_| LocalLlm::load(&gguf, engine))?;
                    let provider = Arc::new(LlmProvider::Local(pool));
                    shared.local_llm.insert(engine, provider.clone());
                    provider
                }
            }
        }
        LlmKind::Extractive => shared.extractive.get_or_insert_with(|| Arc::new(LlmProvider::Extractive)).clone(),
        LlmKind::Openai => {
            let e = &profile.llm.endpoint;
            let (url, model, key) = e.resolve().map_err(&provider_err)?;
            let client =
                OpenAiChat::new(&url, key, &model, e.timeout()).map_err(|e: LlmError| provider_err(e.to_string()))?;
            Arc::new(LlmProvider::OpenAi(client))
        }
    };
    Ok(Pipeline { profile, stt, llm, tts })
}
