//! llama.cpp as the local LLM's engine (`[llm] engine = "llama-cpp"`, cargo feature
//! `llama-cpp`): the same GGUF file, fed the same prompt ids as candle.
//!
//! The context borrows its model, and both live as long as the worker that owns them, so
//! the model is leaked once per worker (a few hundred MB, loaded at start, never unloaded).

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{LogOptions, send_logs_to_tracing};

use super::engine::{Forward, PREFILL_CHUNK};
use crate::models::ModelError;

const MODEL: &str = "smollm2";

/// llama.cpp's process-wide state: initialised once, never freed.
fn backend() -> Result<&'static LlamaBackend, ModelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            send_logs_to_tracing(LogOptions::default().with_logs_enabled(false));
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::load(MODEL, e))
}

pub struct LlamaCppEngine {
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    /// The ids whose keys and values are in the cache, positions 0.. in order.
    cached: Vec<u32>,
}

impl LlamaCppEngine {
    /// Loads `gguf` with a context of `context_len` positions and `threads` CPU threads.
    pub fn load(gguf: &Path, context_len: usize, threads: usize) -> Result<Self, ModelError> {
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(0);
        let model = LlamaModel::load_from_file(backend, gguf, &params).map_err(|e| ModelError::load(MODEL, e))?;
        let model: &'static LlamaModel = Box::leak(Box::new(model));
        let threads = i32::try_from(threads.max(1)).unwrap_or(1);
        let n_ctx = u32::try_from(context_len).ok().and_then(NonZeroU32::new);
        let chunk = PREFILL_CHUNK as u32;
        let params = LlamaContextParams::default()
            .with_n_ctx(n_ctx)
            .with_n_batch(chunk)
            .with_n_ubatch(chunk)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model.new_context(backend, params).map_err(|e| ModelError::load(MODEL, e))?;
        Ok(Self { ctx, batch: LlamaBatch::new(PREFILL_CHUNK, 1), cached: Vec::new() })
    }

    /// Decodes `ids` from position `pos`; logits only for the very last one.
    fn run(&mut self, ids: &[u32], pos: usize, last: bool) -> Result<(), ModelError> {
        for (n, chunk) in ids.chunks(PREFILL_CHUNK).enumerate() {
            self.batch.clear();
            let start = pos + n * PREFILL_CHUNK;
            for (i, &id) in chunk.iter().enumerate() {
                let p = start + i;
                let wants_logits = last && p + 1 == pos + ids.len();
                let token = LlamaToken(i32::try_from(id).map_err(|e| ModelError::input(MODEL, e))?);
                let p = i32::try_from(p).map_err(|e| ModelError::input(MODEL, e))?;
                self.batch.add(token, p, &[0], wants_logits).map_err(|e| ModelError::inference(MODEL, e))?;
            }
            self.ctx.decode(&mut self.batch).map_err(|e| ModelError::inference(MODEL, e))?;
        }
        self.cached.extend_from_slice(ids);
        Ok(())
    }

    fn last_logits(&self) -> Vec<f32> {
        self.ctx.get_logits_ith(self.batch.n_tokens() - 1).to_vec()
    }
}

impl Forward for LlamaCppEngine {
    /// Keeps whatever the cache shares with `prompt` (at least the pinned prefix when it
    /// is unchanged) and reads only the rest.
    fn prefill(&mut self, prompt: &[u32], _pinned: usize) -> Result<(Vec<f32>, usize), ModelError> {
        if prompt.is_empty() {
            return Err(ModelError::input(MODEL, "empty prompt"));
        }
        let shared = self.cached.iter().zip(prompt).take_while(|(a, b)| a == b).count().min(prompt.len() - 1);
        let from = u32::try_from(shared).map_err(|e| ModelError::input(MODEL, e))?;
        self.ctx.clear_kv_cache_seq(Some(0), Some(from), None).map_err(|e| ModelError::inference(MODEL, e))?;
        self.cached.truncate(shared);
        self.run(&prompt[shared..], shared, true)?;
        Ok((self.last_logits(), prompt.len() - shared))
    }

    fn step(&mut self, token: u32, pos: usize) -> Result<Vec<f32>, ModelError> {
        if pos != self.cached.len() {
            return Err(ModelError::inference(MODEL, format!("step at {pos}, cache holds {}", self.cached.len())));
        }
        self.run(&[token], pos, true)?;
        Ok(self.last_logits())
    }
}
