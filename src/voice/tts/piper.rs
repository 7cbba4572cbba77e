//! Piper text-to-speech: a local VITS voice (ONNX) fed with espeak-ng phonemes.
//!
//! Text is phonemized clause by clause with the `espeak-ng` binary ([`phonemize`]), mapped to
//! the voice's phoneme ids with Piper's framing, and each sentence is run through the ONNX
//! model. [`EspeakVoice`] speaks with espeak-ng alone, for when no Piper voice is configured.
//! Everything here blocks; each worker thread owns its own voice because a session run needs
//! `&mut`.

mod clauses;
mod config;
mod espeak;
mod espeak_voice;
mod ids;
mod phonemize;

use std::time::Instant;

use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

pub use espeak_voice::{DEFAULT_ESPEAK_VOICE, EspeakVoice};

use self::config::VoiceConfig;
use self::ids::PhonemeIds;
use crate::models::{ModelError, ModelPaths};

const MODEL: &str = "piper";

/// Text to IPA phonemes as piper-phonemize would produce them (stress marks kept, clause
/// punctuation kept as phonemes), sentences joined by a space. Blank text gives "".
pub fn phonemize(text: &str, voice: &str) -> Result<String, ModelError> {
    Ok(phonemize::sentences(text, voice)?.join(" "))
}

pub struct PiperVoice {
    session: Session,
    ids: PhonemeIds,
    espeak_voice: String,
    sample_rate: u32,
    /// noise_scale, length_scale, noise_w: the order the model's `scales` input expects.
    scales: [f32; 3],
    /// Present only when the model has a `sid` input.
    speaker_id: Option<i64>,
    output: String,
}

impl PiperVoice {
    /// Loads the Piper voice from `paths`, running inference on `intra_threads` threads
    /// (at least 1) with one inter-op thread.
    pub fn load(paths: &ModelPaths, intra_threads: usize) -> Result<Self, ModelError> {
        let started = Instant::now();
        let (model_path, config_path) = paths.piper_voice()?;
        let config = VoiceConfig::load(&config_path)?;
        espeak::check_voice(&config.espeak.voice)?;
        let environment = crate::models::onnx_environment(paths)?;
        let session = Session::builder(environment)
            .and_then(|b| b.with_intra_threads(intra_threads.max(1)).map_err(Into::into))
            .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
            .and_then(|mut b| b.commit_from_file(&model_path))
            .map_err(|e| ModelError::load(MODEL, format!("{}: {e}", model_path.display())))?;
        let signature = Signature::inspect(&session, config.num_speakers)?;
        let inference = &config.inference;
        let voice = Self {
            ids: PhonemeIds::new(&config),
            espeak_voice: config.espeak.voice.clone(),
            sample_rate: config.audio.sample_rate,
            scales: [inference.noise_scale, inference.length_scale, inference.noise_w],
            speaker_id: signature.speaker_id,
            output: signature.output,
            session,
        };
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            intra_threads,
            sample_rate = voice.sample_rate,
            espeak_voice = %voice.espeak_voice,
            "piper voice loaded"
        );
        Ok(voice)
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Speaks one sentence; mono f32 at `sample_rate()`. Empty/whitespace text gives an
    /// empty Vec. Text spanning several sentences is spoken sentence by sentence, as Piper does.
    pub fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, ModelError> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let sentences = phonemize::sentences(text, &self.espeak_voice)?;
        let mut audio = Vec::new();
        for phonemes in &sentences {
            let encoded = self.ids.encode(phonemes);
            if encoded.skipped > 0 {
                tracing::debug!(skipped = encoded.skipped, "phonemes without ids left out");
            }
            if self.ids.is_empty_utterance(&encoded) {
                continue;
            }
            audio.extend(self.infer(&encoded.ids)?);
        }
        Ok(audio)
    }

    fn infer(&mut self, ids: &[i64]) -> Result<Vec<f32>, ModelError> {
        let started = Instant::now();
        let failed = |e: ort::Error| ModelError::inference(MODEL, e);
        let length = i64::try_from(ids.len()).map_err(|e| ModelError::input(MODEL, e))?;
        let mut inputs = ort::inputs! {
            "input" => Tensor::from_array(([1usize, ids.len()], ids.to_vec())).map_err(failed)?,
            "input_lengths" => Tensor::from_array(([1usize], vec![length])).map_err(failed)?,
            "scales" => Tensor::from_array(([3usize], self.scales.to_vec())).map_err(failed)?,
        };
        if let Some(sid) = self.speaker_id {
            inputs.push(("sid".into(), Tensor::from_array(([1usize], vec![sid])).map_err(failed)?.into()));
        }
        let outputs = self.session.run(inputs).map_err(failed)?;
        let output = outputs
            .get(&self.output)
            .ok_or_else(|| ModelError::inference(MODEL, format!("no output {:?}", self.output)))?;
        let (_, samples) = output.try_extract_tensor::<f32>().map_err(failed)?;
        // The decoder can overshoot slightly; NaN would poison any mixer downstream.
        let audio: Vec<f32> = samples.iter().map(|&s| if s.is_finite() { s.clamp(-1.0, 1.0) } else { 0.0 }).collect();
        tracing::debug!(
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            ids = ids.len(),
            samples = audio.len(),
            "piper sentence synthesized"
        );
        Ok(audio)
    }
}

/// What the model's graph asks for, read from the session rather than assumed.
struct Signature {
    speaker_id: Option<i64>,
    output: String,
}

impl Signature {
    fn inspect(session: &Session, num_speakers: u32) -> Result<Self, ModelError> {
        for input in session.inputs() {
            tracing::debug!(name = input.name(), dtype = %input.dtype(), "piper model input");
        }
        for output in session.outputs() {
            tracing::debug!(name = output.name(), dtype = %output.dtype(), "piper model output");
        }
        let element = |dtype: &ValueType| dtype.tensor_type();
        let find = |name: &str| session.inputs().iter().find(|i| i.name() == name);
        for (name, expected) in [
            ("input", TensorElementType::Int64),
            ("input_lengths", TensorElementType::Int64),
            ("scales", TensorElementType::Float32),
        ] {
            match find(name) {
                Some(input) if element(input.dtype()) == Some(expected) => {}
                Some(input) => {
                    return Err(ModelError::load(
                        MODEL,
                        format!("input {name} is {}, expected {expected:?}", input.dtype()),
                    ));
                }
                None => {
                    let names: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
                    return Err(ModelError::load(MODEL, format!("model has no {name} input (inputs: {names:?})")));
                }
            }
        }
        if let Some(input) =
            session.inputs().iter().find(|i| !matches!(i.name(), "input" | "input_lengths" | "scales" | "sid"))
        {
            return Err(ModelError::load(MODEL, format!("unexpected model input {}", input.name())));
        }
        let speaker_id = find("sid").map(|_| 0);
        if speaker_id.is_none() && num_speakers > 1 {
            tracing::warn!(num_speakers, "multi-speaker config but the model has no sid input");
        }
        let output = session
            .outputs()
            .first()
            .filter(|o| element(o.dtype()) == Some(TensorElementType::Float32))
            .ok_or_else(|| ModelError::load(MODEL, "model has no f32 audio output"))?;
        Ok(Self { speaker_id, output: output.name().to_owned() })
    }
}

#[cfg(test)]
mod tests;
