//! The providers a pipeline is built from, each behind one async interface.
//! Local engines run on worker pools; HTTP providers run on the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::llm::{AnswerRequest, ChatMessage, LlmError, extractive, local, openai, prompt};
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

impl SttProvider {
    /// Transcribes mono 16 kHz audio; `hint` lists words the speaker is likely to use
    /// (the tenant's codes), or is empty.
    pub async fn transcribe(&self, pcm_16k: Vec<f32>, hint: String) -> Result<String, StageError> {
        match self {
            SttProvider::Whisper(pool) => Ok(pool.run(move |w| w.transcribe_with_hint(&pcm_16k, &hint)).await??),
            SttProvider::OpenAi(client) => Ok(client.transcribe(&pcm_16k, &hint).await?),
        }
    }

    /// A quick draft transcript (no second pass): what speech over an answer was.
    pub async fn transcribe_draft(&self, pcm_16k: Vec<f32>) -> Result<String, StageError> {
        match self {
            SttProvider::Whisper(pool) => Ok(pool.run(move |w| w.transcribe_draft(&pcm_16k)).await??),
            SttProvider::OpenAi(client) => Ok(client.transcribe(&pcm_16k, "").await?),
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
            _ => self.stream_messages(prompt::messages(&req), req.max_tokens, tx, cancel).await,
        }
    }

    /// Streams a language model's reply to `messages` (nothing for the extractive answerer).
    async fn stream_messages(
        &self,
        messages: Vec<ChatMessage>,
        max_tokens: usize,
        tx: mpsc::Sender<String>,
        cancel: Arc<AtomicBool>,
    ) -> Result<(), LlmError> {
        match self {
            LlmProvider::Extractive => Ok(()),
            LlmProvider::Local(pool) => {
                pool.run(move |llm| {
                    let mut on_text =
                        |piece: &str| !cancel.load(Ordering::Relaxed) && tx.blocking_send(piece.to_string()).is_ok();
                    llm.generate(&messages, max_tokens, &mut on_text)
                        .map(|run| crate::metrics::llm_tokens(run.generated))
                })
                .await??;
                Ok(())
            }
            LlmProvider::OpenAi(client) => client.stream(messages, max_tokens, tx, cancel).await,
        }
    }

    /// Reads the prompt of `req` ahead of the turn that will answer it, so the local
    /// model starts writing at once (a no-op for the other answerers).
    pub async fn read_ahead(&self, req: &AnswerRequest) -> Result<(), LlmError> {
        if let LlmProvider::Local(pool) = self {
            let (messages, max_tokens) = (prompt::messages(req), req.max_tokens);
            pool.run(move |llm| llm.read(&messages, max_tokens)).await??;
        }
        Ok(())
    }

    /// A language model's whole reply to `messages` (empty for the extractive answerer).
    pub async fn complete(
        &self,
        messages: Vec<ChatMessage>,
        max_tokens: usize,
        cancel: Arc<AtomicBool>,
    ) -> Result<String, LlmError> {
        let (tx, mut rx) = mpsc::channel::<String>(64);
        let collect = async {
            let mut text = String::new();
            while let Some(piece) = rx.recv().await {
                text.push_str(&piece);
            }
            text
        };
        let (done, text) = tokio::join!(self.stream_messages(messages, max_tokens, tx, cancel), collect);
        done.map(|_| text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::workers::MIN_RETRY;

    #[test]
    fn a_full_queue_is_overloaded_not_a_broken_model() {
        assert_eq!(
            StageError::Pool(PoolError::Overloaded { pool: "stt", retry_after: MIN_RETRY }).code(),
            ErrorCode::Overloaded
        );
        assert_eq!(
            StageError::Llm(LlmError::Pool(PoolError::Overloaded { pool: "llm", retry_after: MIN_RETRY })).code(),
            ErrorCode::Overloaded
        );
        assert_eq!(StageError::Pool(PoolError::Stopped("stt")).code(), ErrorCode::ModelUnavailable);
        assert_eq!(StageError::Llm(LlmError::Provider("503".into())).code(), ErrorCode::ModelUnavailable);
    }
}
