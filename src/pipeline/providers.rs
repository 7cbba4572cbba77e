//! The providers a pipeline is built from, each behind one async interface.
//! Local engines run on worker pools; HTTP providers run on the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::error::ErrorCode;
use crate::llm::{AnswerRequest, LlmError, extractive, local, openai, prompt};
use crate::models::ModelError;
use crate::voice::stt::openai::OpenAiTranscriber;
use crate::voice::stt::whisper::Whisper;
use crate::voice::tts::openai::OpenAiSpeech;
use crate::voice::tts::piper::{EspeakVoice, PiperVoice};
use crate::workers::{PoolError, WorkerPool};

pub enum SttProvider {
    /// Whisper tiny.en, local, one model per worker thread.
    Whisper(WorkerPool<Whisper>),
    /// Any OpenAI-compatible transcription endpoint.
    OpenAi(OpenAiTranscriber),
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Llm(#[from] LlmError),
}

impl StageError {
    /// The stable code a client sees: a full queue is `overloaded` (retry shortly), not
    /// a broken model.
    pub fn code(&self) -> ErrorCode {
        match self {
            StageError::Pool(PoolError::Overloaded(_)) | StageError::Llm(LlmError::Pool(PoolError::Overloaded(_))) => {
                ErrorCode::Overloaded
            }
            _ => ErrorCode::ModelUnavailable,
        }
    }
}

impl SttProvider {
    /// Transcribes mono 16 kHz audio; `hint` lists words the speaker is likely to use
    /// (the tenant's codes), or is empty.
    pub async fn transcribe(&self, pcm_16k: Vec<f32>, hint: String) -> Result<String, StageError> {
        match self {
            SttProvider::Whisper(pool) => Ok(pool.run(move |w| w.transcribe_with_hint(&pcm_16k, &hint)).await??),
            SttProvider::OpenAi(client) => Ok(client.transcribe(&pcm_16k, &hint).await?),
        }
    }
}

pub enum TtsProvider {
    /// Piper VITS voice, local ONNX with espeak-ng phonemes.
    Piper(WorkerPool<PiperVoice>),
    /// espeak-ng alone: robotic but tiny.
    Espeak(WorkerPool<EspeakVoice>),
    /// Any OpenAI-compatible speech endpoint.
    OpenAi(OpenAiSpeech),
}

/// Synthesized speech for one sentence.
pub struct Speech {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

impl TtsProvider {
    pub async fn synthesize(&self, text: String) -> Result<Speech, StageError> {
        let speech = match self {
            TtsProvider::Piper(pool) => {
                pool.run(move |v| v.synthesize(&text).map(|samples| Speech { samples, sample_rate: v.sample_rate() }))
                    .await?
            }
            TtsProvider::Espeak(pool) => {
                pool.run(move |v| v.synthesize(&text).map(|samples| Speech { samples, sample_rate: v.sample_rate() }))
                    .await?
            }
            TtsProvider::OpenAi(client) => {
                client.synthesize(&text).await.map(|samples| Speech { samples, sample_rate: client.sample_rate })
            }
        };
        Ok(speech?)
    }
}

pub enum LlmProvider {
    /// SmolLM2-135M-Instruct on the CPU.
    Local(WorkerPool<local::LocalLlm>),
    /// Reads out the best passage.
    Extractive,
    /// Any OpenAI-compatible chat completions endpoint.
    OpenAi(openai::OpenAiChat),
}

impl LlmProvider {
    /// True for language models, whose sentences must pass the grounding check; the
    /// extractive answerer only reads sentences of the manuals.
    pub fn is_generative(&self) -> bool {
        !matches!(self, LlmProvider::Extractive)
    }

    /// Streams the answer's text pieces into `tx`. Stops early, without error, when
    /// `cancel` is set (barge-in) or the receiver is dropped.
    pub async fn stream(
        &self,
        req: AnswerRequest,
        tx: mpsc::Sender<String>,
        cancel: Arc<AtomicBool>,
    ) -> Result<(), LlmError> {
        match self {
            LlmProvider::Extractive => {
                if let Some(answer) = extractive::answer(&req) {
                    let _ = tx.send(answer).await;
                }
                Ok(())
            }
            LlmProvider::Local(pool) => {
                let messages = prompt::messages(&req);
                let max_tokens = req.max_tokens;
                pool.run(move |llm| {
                    let mut on_text =
                        |piece: &str| !cancel.load(Ordering::Relaxed) && tx.blocking_send(piece.to_string()).is_ok();
                    llm.generate(&messages, max_tokens, &mut on_text).map(|_| ())
                })
                .await??;
                Ok(())
            }
            LlmProvider::OpenAi(client) => client.stream(prompt::messages(&req), req.max_tokens, tx, cancel).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_is_overloaded_not_a_broken_model() {
        assert_eq!(StageError::Pool(PoolError::Overloaded("stt")).code(), ErrorCode::Overloaded);
        assert_eq!(StageError::Llm(LlmError::Pool(PoolError::Overloaded("llm"))).code(), ErrorCode::Overloaded);
        assert_eq!(StageError::Pool(PoolError::Stopped("stt")).code(), ErrorCode::ModelUnavailable);
        assert_eq!(StageError::Llm(LlmError::Provider("503".into())).code(), ErrorCode::ModelUnavailable);
    }
}
