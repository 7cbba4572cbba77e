//! Language models that answer from cited passages, behind one streaming interface.
//!
//! Providers: the local SmolLM2 GGUF (`local`), an extractive answerer that reads the best
//! passage (`extractive`), and any OpenAI-compatible `/v1/chat/completions` (`openai`).

pub mod extractive;
pub mod grounding;
pub mod local;
pub mod openai;
pub mod prompt;

use serde::{Deserialize, Serialize};

use crate::models::ModelError;
use crate::rag::evidence::Evidence;
use crate::rag::retrieve::Passage;
use crate::workers::PoolError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

/// What the answerer gets for one turn.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    pub system_prompt: String,
    pub question: String,
    pub passages: Vec<Passage>,
    /// The sentences of `passages` that answer the question, best first (never empty:
    /// without evidence the turn says it found nothing and asks no model).
    pub evidence: Vec<Evidence>,
    pub max_tokens: usize,
    /// The conversation so far, oldest first: (question, the part of the answer heard).
    pub history: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("llm provider request failed: {0}")]
    Provider(String),
}
