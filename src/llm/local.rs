//! The in-process LLM: SmolLM2-135M-Instruct (GGUF, Q4_1) on the CPU.
//!
//! Owns the tokenizer, the chat prompt and greedy (deterministic) decoding, streaming
//! the answer; the transformer itself is an [`engine`] chosen per profile. Engines keep
//! the KV cache of the system message between calls, and of the last prompt read, so a
//! prompt read ahead ([`LocalLlm::read`]) is not read again.
//!
//! CPU threads: candle's matmuls split across `RAYON_NUM_THREADS` threads (default: the
//! physical cores, or the CPUs listed in `CANDLE_CPU_MASK`) on the global rayon pool;
//! llama.cpp gets the same number of threads of its own.

mod chatml;
mod dense;
pub mod engine;
mod grounded;
#[cfg(feature = "llama-cpp")]
mod llama_cpp;
mod text_stream;

use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_transformers::models::quantized_llama::MAX_SEQ_LEN;

pub use engine::LlmEngine;
pub use grounded::{DEFAULT_SYSTEM_PROMPT, grounded_user_message};

use fieldvox_formats::gguf_tokenizer::GgufTokenizer;

use crate::llm::ChatMessage;
use crate::models::ModelError;
use engine::Forward;
use text_stream::TextStream;

const MODEL: &str = "smollm2";

pub struct LocalLlm {
    engine: Box<dyn Forward>,
    tokenizer: GgufTokenizer,
    /// Positions the model can attend over (prompt plus answer).
    context_len: usize,
    /// Ids that end the answer: end of turn, end of text, or any other chat marker.
    stop_ids: Vec<u32>,
}

/// What one `generate` call did, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// Prompt tokens read this call (the rest came from the kept KV cache).
    pub prompt_read: usize,
    pub generated: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

impl LocalLlm {
    /// Loads weights and tokenizer from a llama-architecture GGUF file into `engine`.
    pub fn load(gguf: &Path, engine: LlmEngine) -> Result<Self, ModelError> {
        let started = Instant::now();
        if !gguf.is_file() {
            return Err(ModelError::Missing { path: gguf.to_path_buf() });
        }
        let file = std::fs::File::open(gguf).map_err(|e| ModelError::load(MODEL, e))?;
        let mut reader = std::io::BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| ModelError::load(MODEL, e))?;

        let tokenizer = GgufTokenizer::from_gguf(&content)?;
        let trained_context = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |n| n as usize);
        // candle precomputes rotary tables for MAX_SEQ_LEN positions only; every engine
        // gets the same context so they answer the same prompts.
        let context_len = trained_context.min(MAX_SEQ_LEN);
        let mut stop_ids = tokenizer.control_ids().to_vec();
        stop_ids.extend(tokenizer.eos_id());

        let engine: Box<dyn Forward> = match engine.resolve() {
            LlmEngine::Auto | LlmEngine::Candle => Box::new(engine::CandleEngine::load(content, &mut reader, false)?),
            LlmEngine::CandleQuantized => Box::new(engine::CandleEngine::load(content, &mut reader, true)?),
            #[cfg(feature = "llama-cpp")]
            LlmEngine::LlamaCpp => Box::new(llama_cpp::LlamaCppEngine::load(gguf, context_len, cpu_threads())?),
            #[cfg(not(feature = "llama-cpp"))]
            LlmEngine::LlamaCpp => {
                return Err(ModelError::load(
                    MODEL,
                    "this build has no llama.cpp engine (build with `--features llama-cpp`)",
                ));
            }
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(elapsed_ms, context_len, path = %gguf.display(), "local llm loaded");
        Ok(Self { engine, tokenizer, context_len, stop_ids })
    }

    /// Positions available to one `generate` call (prompt plus answer).
    pub fn context_len(&self) -> usize {
        self.context_len
    }

    /// The prompt ids for `messages`, leaving room for `max_tokens`.
    fn prompt(&self, messages: &[ChatMessage], max_tokens: usize) -> Result<chatml::Prompt, ModelError> {
        let Some(budget) = self.context_len.checked_sub(max_tokens) else {
            return Err(ModelError::input(
                MODEL,
                format!("max_tokens {max_tokens} exceeds the context of {}", self.context_len),
            ));
        };
        chatml::prompt_ids(&self.tokenizer, messages, budget)
    }

    /// Reads the prompt that `generate(messages, max_tokens, ..)` would read, ahead of
    /// time: that call then starts writing at once. Returns the tokens read.
    pub fn read(&mut self, messages: &[ChatMessage], max_tokens: usize) -> Result<usize, ModelError> {
        let prompt = self.prompt(messages, max_tokens)?;
        let (_, read) = self.engine.prefill(&prompt.ids, prompt.pinned)?;
        Ok(read)
    }

    /// Streams the answer; `on_text` gets each new piece and returns false to stop early.
    ///
    /// A conversation longer than the context keeps its system message and its
    /// most recent text; [`ModelError::Input`] if even that leaves no room.
    pub fn generate(
        &mut self,
        messages: &[ChatMessage],
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, ModelError> {
        let prompt = self.prompt(messages, max_tokens)?;
        tracing::trace!(ids = ?prompt.ids, "prompt ids");
        let mut run = Generation { prompt_tokens: prompt.ids.len(), ..Generation::default() };
        if max_tokens == 0 {
            return Ok(run);
        }

        let started = Instant::now();
        let (mut logits, read) = self.engine.prefill(&prompt.ids, prompt.pinned)?;
        run.prompt_read = read;
        let mut pos = prompt.ids.len();
        run.prefill_ms = started.elapsed().as_secs_f64() * 1000.0;

        let mut stream = TextStream::default();
        let mut cancelled = false;
        loop {
            let next = argmax(&logits)?;
            if self.stop_ids.contains(&next) {
                break;
            }
            run.generated += 1;
            if let Some(piece) = stream.push(&self.tokenizer, next)?
                && !on_text(&piece)
            {
                cancelled = true;
                break;
            }
            if run.generated >= max_tokens {
                break;
            }
            logits = self.engine.step(next, pos)?;
            pos += 1;
        }
        if !cancelled && let Some(rest) = stream.finish(&self.tokenizer)? {
            on_text(&rest);
        }

        run.decode_ms = started.elapsed().as_secs_f64() * 1000.0 - run.prefill_ms;
        tracing::debug!(
            prompt_tokens = run.prompt_tokens,
            prompt_read = run.prompt_read,
            generated = run.generated,
            prefill_ms = run.prefill_ms,
            decode_ms = run.decode_ms,
            cancelled,
            "local llm generated"
        );
        Ok(run)
    }
}

/// Threads for an engine with its own pool: as many as candle's rayon pool uses.
pub fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Greedy choice; ties go to the lowest id so runs are reproducible.
fn argmax(logits: &[f32]) -> Result<u32, ModelError> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.and_then(|(i, _)| u32::try_from(i).ok()).ok_or_else(|| ModelError::inference(MODEL, "no finite logits"))
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use super::*;
    use crate::llm::Role;
    use crate::models::ModelPaths;
    use engine::PREFILL_CHUNK;

    /// One loaded model shared by the tests, which take turns on the 2 cores.
    fn llm() -> MutexGuard<'static, LocalLlm> {
        static LLM: OnceLock<Mutex<LocalLlm>> = OnceLock::new();
        LLM.get_or_init(|| {
            let path = ModelPaths::new(ModelPaths::default_root()).smollm2_gguf().unwrap();
            let started = Instant::now();
            let llm = LocalLlm::load(&path, LlmEngine::Candle).unwrap();
            eprintln!("load: {} ms", started.elapsed().as_millis());
            Mutex::new(llm)
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn message(role: Role, content: &str) -> ChatMessage {
        ChatMessage { role, content: content.to_owned() }
    }

    fn rtu40_messages(question: &str) -> Vec<ChatMessage> {
        let passages = [
            (
                "RTU-40 Service Manual, page 12".to_owned(),
                "The compressor head bolts on the RTU-40 are tightened to 38 N·m in a star pattern. \
                 Replacement gasket part number is GK-4471-B."
                    .to_owned(),
            ),
            ("RTU-40 Service Manual, page 3".to_owned(), "The RTU-40 rooftop unit uses R-410A refrigerant.".to_owned()),
        ];
        vec![
            message(Role::System, DEFAULT_SYSTEM_PROMPT),
            message(Role::User, &grounded_user_message(&passages, question)),
        ]
    }

    /// The whole streamed answer and its token count.
    fn answer(llm: &mut LocalLlm, messages: &[ChatMessage], max_tokens: usize) -> (String, usize) {
        let mut text = String::new();
        let started = Instant::now();
        let mut first_piece_ms = None;
        let tokens = llm
            .generate(messages, max_tokens, &mut |piece| {
                first_piece_ms.get_or_insert(started.elapsed().as_millis());
                text.push_str(piece);
                true
            })
            .unwrap()
            .generated;
        let total_ms = started.elapsed().as_millis();
        eprintln!("{tokens} tokens in {total_ms} ms (first piece {first_piece_ms:?} ms): {text:?}");
        (text, tokens)
    }

    #[test]
    fn llm_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<LocalLlm>();
    }

    #[test]
    fn tokenizer_round_trips_text_and_keeps_control_tokens_whole() {
        let llm = llm();
        let tok = &llm.tokenizer;
        for text in [
            "What torque for the compressor head bolts on the RTU-40?",
            "Tighten to 38 N·m — star pattern.\n\n  Part GK-4471-B, R-410A (≈ 2.5 kg) ✅ naïve 東京",
            "  leading spaces, trailing tab\t",
        ] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(tok.decode(&ids).unwrap(), text);
        }
        let im_start = tok.encode("<|im_start|>").unwrap();
        assert_eq!(im_start, vec![tok.control_id("<|im_start|>").unwrap()]);
        assert_eq!(im_start, vec![1]);
        assert_eq!(tok.encode("<|im_end|>").unwrap(), vec![2]);
        // SmolLM2 splits numbers into single digits.
        assert_eq!(tok.encode("4471").unwrap().len(), 4);
        // Content is encoded literally: a forged marker stays text.
        let literal = tok.encode_literal("<|im_end|>").unwrap();
        assert!(literal.len() > 1 && !literal.contains(&2));
        assert_eq!(tok.decode(&literal).unwrap(), "<|im_end|>");
    }

    #[test]
    fn streams_only_whole_characters() {
        let llm = llm();
        let tok = &llm.tokenizer;
        let text = "Torque ✅ 38 N·m — 東京 naïve";
        let ids = tok.encode(text).unwrap();
        // Some tokens carry part of a character, so the stream must hold them back.
        assert!(ids.iter().any(|id| tok.decode(&[*id]).unwrap().contains(char::REPLACEMENT_CHARACTER)));
        let mut stream = TextStream::default();
        let mut pieces = Vec::new();
        for id in ids {
            pieces.extend(stream.push(tok, id).unwrap());
        }
        pieces.extend(stream.finish(tok).unwrap());
        assert!(pieces.iter().all(|p| !p.contains(char::REPLACEMENT_CHARACTER)), "{pieces:?}");
        assert!(pieces.len() > 1);
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn answers_torque_from_the_passage() {
        let mut llm = llm();
        let messages = rtu40_messages("What torque for the compressor head bolts on the RTU-40?");
        let (text, tokens) = answer(&mut llm, &messages, 64);
        assert!(text.contains("38"), "answer without the torque: {text:?}");
        assert!(tokens > 0 && tokens <= 64);
    }

    #[test]
    fn answers_gasket_part_number_from_the_passage() {
        let mut llm = llm();
        let messages = rtu40_messages("What is the part number of the replacement gasket?");
        let (text, _) = answer(&mut llm, &messages, 64);
        assert!(text.contains("GK-4471-B"), "answer without the part number: {text:?}");
    }

    #[test]
    fn stops_when_the_callback_declines() {
        let mut llm = llm();
        let messages = rtu40_messages("What torque for the compressor head bolts on the RTU-40?");
        let mut pieces = Vec::new();
        let tokens = llm
            .generate(&messages, 64, &mut |piece| {
                pieces.push(piece.to_owned());
                false
            })
            .unwrap()
            .generated;
        assert_eq!(pieces.len(), 1);
        assert!((1..=2).contains(&tokens), "generated {tokens} tokens after cancelling");
    }

    #[test]
    fn respects_max_tokens_and_is_deterministic_across_calls() {
        let mut llm = llm();
        let messages = vec![
            message(Role::System, "You are a helpful assistant."),
            message(Role::User, "Write a long story about a technician repairing a rooftop unit."),
        ];
        let (short, short_tokens) = answer(&mut llm, &messages, 5);
        assert_eq!(short_tokens, 5);
        let (long, long_tokens) = answer(&mut llm, &messages, 20);
        assert_eq!(long_tokens, 20);
        // Greedy decoding with a fresh KV cache: the short answer is a prefix of the long one.
        assert!(!short.is_empty() && long.starts_with(&short), "{short:?} vs {long:?}");
        let (again, _) = answer(&mut llm, &messages, 20);
        assert_eq!(again, long);
    }

    /// The test model's engine on its own, reading prompts `chunk` tokens at a time.
    fn candle_engine(chunk: usize) -> engine::CandleEngine {
        let path = ModelPaths::new(ModelPaths::default_root()).smollm2_gguf().unwrap();
        let mut reader = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let content = gguf_file::Content::read(&mut reader).unwrap();
        engine::CandleEngine::load(content, &mut reader, false).unwrap().with_chunk(chunk)
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)
    }

    #[test]
    fn chunked_prefill_and_the_kept_system_prefix_match_a_fresh_single_pass() {
        let (torque, gasket) = {
            let llm = llm();
            let prompt = |q: &str| chatml::prompt_ids(&llm.tokenizer, &rtu40_messages(q), llm.context_len()).unwrap();
            (prompt("What torque for the compressor head bolts on the RTU-40?"), prompt("Which gasket part number?"))
        };
        assert!(
            torque.pinned > 10
                && torque.pinned == gasket.pinned
                && torque.ids[..torque.pinned] == gasket.ids[..gasket.pinned]
        );

        let mut whole = candle_engine(PREFILL_CHUNK);
        let (fresh, read) = whole.prefill(&gasket.ids, 0).unwrap();
        assert_eq!(read, gasket.ids.len());

        let mut chunked = candle_engine(7);
        let (first, read) = chunked.prefill(&torque.ids, torque.pinned).unwrap();
        assert_eq!(read, torque.ids.len(), "nothing kept yet");
        // The second question reads only what follows the system message.
        let (kept, read) = chunked.prefill(&gasket.ids, gasket.pinned).unwrap();
        assert_eq!(read, gasket.ids.len() - gasket.pinned);
        assert!(max_diff(&fresh, &kept) < 1e-3, "kept prefix drifts by {}", max_diff(&fresh, &kept));
        assert_eq!(argmax(&fresh).unwrap(), argmax(&kept).unwrap());
        assert!(max_diff(&first, &kept) > 1e-2, "a different question gives different logits");
    }

    #[test]
    fn a_prompt_read_ahead_is_not_read_again_and_answers_the_same() {
        let mut llm = llm();
        let messages = rtu40_messages("Which refrigerant does the RTU-40 use?");
        let (fresh, _) = answer(&mut llm, &messages, 24);
        // Another prompt in between, so nothing of this one is left in the cache.
        answer(&mut llm, &rtu40_messages("What torque?"), 4);
        let read = llm.read(&messages, 24).unwrap();
        assert!(read > 0);
        let mut text = String::new();
        let run = llm.generate(&messages, 24, &mut |piece| {
            text.push_str(piece);
            true
        });
        assert_eq!(run.unwrap().prompt_read, 0, "the prompt was read ahead");
        assert_eq!(text, fresh);
    }

    /// llama.cpp reads the same file and prompt ids: it finds the same fact, and keeps
    /// the system message's cache between calls as candle does.
    #[cfg(feature = "llama-cpp")]
    #[test]
    fn llama_cpp_reads_the_same_prompt_and_keeps_the_system_prefix() {
        let path = ModelPaths::new(ModelPaths::default_root()).smollm2_gguf().unwrap();
        let mut llama = LocalLlm::load(&path, LlmEngine::LlamaCpp).unwrap();
        let messages = rtu40_messages("What torque for the compressor head bolts on the RTU-40?");
        let (text, tokens) = answer(&mut llama, &messages, 64);
        assert!(text.contains("38") && tokens > 0, "{text:?}");
        let second = llama
            .generate(&rtu40_messages("What is the part number of the replacement gasket?"), 64, &mut |_| true)
            .unwrap();
        let pinned = chatml::prompt_ids(&llama.tokenizer, &messages, llama.context_len()).unwrap().pinned;
        assert!(second.prompt_read <= second.prompt_tokens - pinned, "read {second:?}");
    }

    #[test]
    fn answers_like_the_float_reference() {
        // A numpy forward pass over the file's dequantized weights answers "The capital of
        // France is Paris."; 8-bit activation rounding made this model say "L'Étoile, ...".
        let mut llm = llm();
        let messages = vec![
            message(Role::System, "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
            message(Role::User, "What is the capital of France?"),
        ];
        let (text, _) = answer(&mut llm, &messages, 16);
        assert!(text.starts_with("The capital of France is Paris"), "{text:?}");
    }

    #[test]
    fn rejects_requests_that_cannot_fit_the_context() {
        let mut llm = llm();
        let messages = rtu40_messages("What torque?");
        let too_many = llm.context_len() + 1;
        let err = llm.generate(&messages, too_many, &mut |_| true).unwrap_err();
        assert!(matches!(err, ModelError::Input { .. }), "{err}");
        assert!(matches!(llm.generate(&[], 8, &mut |_| true).unwrap_err(), ModelError::Input { .. }));
    }

    #[test]
    fn long_conversations_keep_the_system_message_and_the_tail() {
        let llm = llm();
        let tok = &llm.tokenizer;
        let system = message(Role::System, "Answer briefly.");
        let filler = "The unit was serviced last spring. ".repeat(40);
        let messages = vec![
            system.clone(),
            message(Role::User, "An old question about fans?"),
            message(Role::Assistant, "An old answer."),
            message(Role::User, &format!("{filler}Question: what torque?")),
        ];
        let everything = chatml::prompt_ids(tok, &messages, usize::MAX).unwrap().ids;
        let budget = 80;
        let ids = chatml::prompt_ids(tok, &messages, budget).unwrap().ids;
        assert!(ids.len() <= budget && ids.len() < everything.len());
        let text = tok.decode(&ids).unwrap();
        // Control tokens are dropped by decode: check the layout by ids and text.
        assert_eq!(ids[0], 1);
        assert!(text.starts_with("system\nAnswer briefly."), "{text:?}");
        assert!(text.ends_with("Question: what torque?\nassistant\n"), "{text:?}");
        assert!(!text.contains("old question"));
        assert!(everything.len() > budget && tok.decode(&everything).unwrap().contains("old question"));
        // The system prompt alone exceeds a tiny budget.
        let err = chatml::prompt_ids(tok, &messages, 10).unwrap_err();
        assert!(matches!(err, ModelError::Input { .. }), "{err}");
    }
}
