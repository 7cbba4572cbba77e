//! The transformer behind the local LLM: prompt ids in, next-token logits out.
//!
//! Engines, chosen per profile (`[llm] engine`), all reading the same GGUF file:
//! - `candle`: candle with the weights expanded to f32 (see `dense`): exact, memory-bound.
//! - `candle-quantized`: candle's quantized CPU path on the file's own Q4_1 weights.
//! - `llama-cpp`: llama.cpp (`llama-cpp-2`), in builds with the `llama-cpp` feature.
//!
//! Every engine keeps the KV cache of the prompt's pinned prefix (the profile's system
//! message) between calls, so a turn reads only the tokens after it, and the last whole
//! prompt it read, so a prompt read ahead (during the user's pause) is not read again.

use std::io::{Read, Seek};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use serde::{Deserialize, Serialize};

use super::dense;
use crate::models::ModelError;

const MODEL: &str = "smollm2";

/// Prompt tokens per forward pass: bounds the attention scratch memory of long prompts.
pub const PREFILL_CHUNK: usize = 512;

/// Which engine runs the local model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LlmEngine {
    /// The fastest engine this build has: llama.cpp when built in, else candle. Measured
    /// side by side, llama.cpp writes 8× faster and answers as well (README, "Answer quality").
    #[default]
    Auto,
    /// candle on f32 weights expanded from the file.
    Candle,
    /// candle's quantized kernels on the file's weights as stored.
    CandleQuantized,
    /// llama.cpp through the `llama-cpp-2` crate (cargo feature `llama-cpp`).
    LlamaCpp,
}

impl LlmEngine {
    /// `Auto` made concrete for this build.
    pub fn resolve(self) -> Self {
        match self {
            LlmEngine::Auto if cfg!(feature = "llama-cpp") => LlmEngine::LlamaCpp,
            LlmEngine::Auto => LlmEngine::Candle,
            engine => engine,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LlmEngine::Auto => "auto",
            LlmEngine::Candle => "candle",
            LlmEngine::CandleQuantized => "candle-quantized",
            LlmEngine::LlamaCpp => "llama-cpp",
        }
    }

    /// The name of its worker pool in logs and `/metrics`.
    pub fn pool(self) -> &'static str {
        match self.resolve() {
            LlmEngine::Auto | LlmEngine::Candle => "llm",
            LlmEngine::CandleQuantized => "llm-candle-quantized",
            LlmEngine::LlamaCpp => "llm-llama-cpp",
        }
    }

    /// Whether this build can run the engine.
    pub fn is_built(self) -> bool {
        self != LlmEngine::LlamaCpp || cfg!(feature = "llama-cpp")
    }
}

/// Prompt in, logits out; implemented by each engine.
pub trait Forward: Send {
    /// Logits for the token after `prompt`, reusing the cached KV of the first `pinned`
    /// tokens when they are the same as the previous call's; and how many tokens it read.
    fn prefill(&mut self, prompt: &[u32], pinned: usize) -> Result<(Vec<f32>, usize), ModelError>;
    /// Logits for the token after `token`, which sits at position `pos`.
    fn step(&mut self, token: u32, pos: usize) -> Result<Vec<f32>, ModelError>;
}

/// candle's llama, on dense or quantized weights.
pub struct CandleEngine {
    model: ModelWeights,
    device: Device,
    /// The pinned prefix's ids and the model holding its KV cache (tensors are shared,
    /// so the copy costs no weights).
    pinned: Option<(Vec<u32>, ModelWeights)>,
    /// The last whole prompt read: its ids, the model holding its KV cache, its logits.
    last: Option<(Vec<u32>, ModelWeights, Vec<f32>)>,
    /// Prompt tokens per forward pass.
    chunk: usize,
}

impl CandleEngine {
    pub fn load<R: Read + Seek>(
        content: gguf_file::Content,
        reader: &mut R,
        quantized: bool,
    ) -> Result<Self, ModelError> {
        let device = Device::Cpu;
        let dense = if quantized { None } else { dense::dense_gguf(&content, reader)? };
        let model = match dense {
            Some(mut dense) => gguf_file::Content::read(&mut dense)
                .and_then(|content| ModelWeights::from_gguf(content, &mut dense, &device)),
            None => ModelWeights::from_gguf(content, reader, &device),
        }
        .map_err(|e| ModelError::load(MODEL, e))?;
        Ok(Self { model, device, pinned: None, last: None, chunk: PREFILL_CHUNK })
    }

    fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Tensor, ModelError> {
        let input =
            Tensor::new(ids, &self.device).and_then(|t| t.unsqueeze(0)).map_err(|e| ModelError::inference(MODEL, e))?;
        self.model.forward(&input, pos).map_err(|e| ModelError::inference(MODEL, e))
    }

    /// Reads prompts `chunk` tokens per forward pass.
    pub fn with_chunk(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(1);
        self
    }

    /// Runs `ids` from position `pos`, `chunk` tokens per pass.
    fn run(&mut self, ids: &[u32], mut pos: usize) -> Result<Option<Tensor>, ModelError> {
        let mut logits = None;
        for piece in ids.chunks(self.chunk) {
            logits = Some(self.forward(piece, pos)?);
            pos += piece.len();
        }
        Ok(logits)
    }
}

impl Forward for CandleEngine {
    fn prefill(&mut self, prompt: &[u32], pinned: usize) -> Result<(Vec<f32>, usize), ModelError> {
        if let Some((ids, model, logits)) = &self.last
            && ids.as_slice() == prompt
        {
            self.model = model.clone();
            return Ok((logits.clone(), 0));
        }
        // Keep at least one token to run, so there are fresh logits.
        let pinned = pinned.min(prompt.len().saturating_sub(1));
        let (head, tail) = prompt.split_at(pinned);
        let mut read = tail.len();
        match &self.pinned {
            Some((ids, model)) if ids.as_slice() == head => self.model = model.clone(),
            _ => {
                read += head.len();
                // Position 0 makes every layer drop its cache; clearing also frees it early.
                self.model.clear_kv_cache();
                self.run(head, 0)?;
                self.pinned = (!head.is_empty()).then(|| (head.to_vec(), self.model.clone()));
            }
        }
        let logits = self.run(tail, pinned)?.ok_or_else(|| ModelError::input(MODEL, "empty prompt"))?;
        let logits = to_vec(&logits)?;
        self.last = Some((prompt.to_vec(), self.model.clone(), logits.clone()));
        Ok((logits, read))
    }

    fn step(&mut self, token: u32, pos: usize) -> Result<Vec<f32>, ModelError> {
        let logits = self.forward(&[token], pos)?;
        to_vec(&logits)
    }
}

fn to_vec(logits: &Tensor) -> Result<Vec<f32>, ModelError> {
    logits
        .flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1())
        .map_err(|e| ModelError::inference(MODEL, e))
}
