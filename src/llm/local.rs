//! The in-process LLM: SmolLM2-135M-Instruct (GGUF, Q4_1) on the CPU with candle.
//!
//! Owns loading the weights and tokenizer from one GGUF file and streaming a
//! greedy (deterministic) answer to a ChatML conversation. Every call starts
//! from an empty KV cache. Weights are expanded to f32 at load (see `dense`).
//!
//! CPU threads: candle's f32 matmuls split across `RAYON_NUM_THREADS` threads
//! (default: the physical cores, or the CPUs listed in `CANDLE_CPU_MASK`) on the
//! global rayon pool. Decoding is memory-bound, so one thread decodes about as
//! fast as two; more threads only shorten the prompt pass.

mod chatml;
mod dense;
mod grounded;
mod text_stream;

use std::path::Path;
use std::time::Instant;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};

pub use grounded::{DEFAULT_SYSTEM_PROMPT, grounded_user_message};

use fieldvox_formats::gguf_tokenizer::GgufTokenizer;

use crate::llm::ChatMessage;
use crate::models::ModelError;
use text_stream::TextStream;

const MODEL: &str = "smollm2";

/// Prompt tokens per forward pass: bounds the attention scratch memory of long prompts.
const PREFILL_CHUNK: usize = 512;

pub struct LocalLlm {
    model: ModelWeights,
    tokenizer: GgufTokenizer,
    device: Device,
    /// Positions the model can attend over (prompt plus answer).
    context_len: usize,
    /// Ids that end the answer: end of turn, end of text, or any other chat marker.
    stop_ids: Vec<u32>,
}

impl LocalLlm {
    /// Loads weights and tokenizer from a llama-architecture GGUF file.
    pub fn load(gguf: &Path) -> Result<Self, ModelError> {
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
        // candle precomputes rotary tables for MAX_SEQ_LEN positions only.
        let context_len = trained_context.min(MAX_SEQ_LEN);
        let mut stop_ids = tokenizer.control_ids().to_vec();
        stop_ids.extend(tokenizer.eos_id());

        let device = Device::Cpu;
        let model = match dense::dense_gguf(&content, &mut reader)? {
            Some(mut dense) => gguf_file::Content::read(&mut dense)
                .and_then(|content| ModelWeights::from_gguf(content, &mut dense, &device)),
            None => ModelWeights::from_gguf(content, &mut reader, &device),
        }
        .map_err(|e| ModelError::load(MODEL, e))?;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(elapsed_ms, context_len, path = %gguf.display(), "local llm loaded");
        Ok(Self { model, tokenizer, device, context_len, stop_ids })
    }

    /// Positions available to one `generate` call (prompt plus answer).
    pub fn context_len(&self) -> usize {
        self.context_len
    }

    /// Streams the answer; `on_text` gets each new piece and returns false to stop early.
    /// Returns the number of generated tokens.
    ///
    /// A conversation longer than the context keeps its system message and its
    /// most recent text; [`ModelError::Input`] if even that leaves no room.
    pub fn generate(
        &mut self,
        messages: &[ChatMessage],
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<usize, ModelError> {
        let Some(budget) = self.context_len.checked_sub(max_tokens) else {
            return Err(ModelError::input(
                MODEL,
                format!("max_tokens {max_tokens} exceeds the context of {}", self.context_len),
            ));
        };
        let prompt = chatml::prompt_ids(&self.tokenizer, messages, budget)?;
        tracing::trace!(?prompt, "prompt ids");
        if max_tokens == 0 {
            return Ok(0);
        }

        let started = Instant::now();
        let mut logits = self.prefill(&prompt, PREFILL_CHUNK)?;
        let mut pos = prompt.len();
        let prefill_ms = started.elapsed().as_millis() as u64;

        let mut stream = TextStream::default();
        let mut generated = 0;
        let mut first_token_ms = None;
        let mut cancelled = false;
        loop {
            let next = argmax(&logits)?;
            if self.stop_ids.contains(&next) {
                break;
            }
            generated += 1;
            first_token_ms.get_or_insert_with(|| started.elapsed().as_millis() as u64);
            if let Some(piece) = stream.push(&self.tokenizer, next)?
                && !on_text(&piece)
            {
                cancelled = true;
                break;
            }
            if generated >= max_tokens {
                break;
            }
            logits = self.forward(&[next], pos)?;
            pos += 1;
        }
        if !cancelled && let Some(rest) = stream.finish(&self.tokenizer)? {
            on_text(&rest);
        }

        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(
            prompt_tokens = prompt.len(),
            generated,
            prefill_ms,
            first_token_ms,
            elapsed_ms,
            cancelled,
            "local llm generated"
        );
        Ok(generated)
    }

    /// Runs the prompt from an empty cache, `chunk` tokens per pass; logits for the next token.
    fn prefill(&mut self, prompt: &[u32], chunk: usize) -> Result<Tensor, ModelError> {
        // Position 0 makes every layer drop its cache; clearing also frees it early.
        self.model.clear_kv_cache();
        let mut logits = None;
        let mut pos = 0;
        for piece in prompt.chunks(chunk.max(1)) {
            logits = Some(self.forward(piece, pos)?);
            pos += piece.len();
        }
        logits.ok_or_else(|| ModelError::input(MODEL, "empty prompt"))
    }

    /// Logits for the token after `ids`, which start at position `pos`.
    fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Tensor, ModelError> {
        let input =
            Tensor::new(ids, &self.device).and_then(|t| t.unsqueeze(0)).map_err(|e| ModelError::inference(MODEL, e))?;
        self.model.forward(&input, pos).map_err(|e| ModelError::inference(MODEL, e))
    }
}

/// Greedy choice; ties go to the lowest id so runs are reproducible.
fn argmax(logits: &Tensor) -> Result<u32, ModelError> {
    let values: Vec<f32> = logits
        .flatten_all()
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec1())
        .map_err(|e| ModelError::inference(MODEL, e))?;
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
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

    /// One loaded model shared by the tests, which take turns on the 2 cores.
    fn llm() -> MutexGuard<'static, LocalLlm> {
        static LLM: OnceLock<Mutex<LocalLlm>> = OnceLock::new();
        LLM.get_or_init(|| {
            let path = ModelPaths::new(ModelPaths::default_root()).smollm2_gguf().unwrap();
            let started = Instant::now();
            let llm = LocalLlm::load(&path).unwrap();
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
            .unwrap();
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
            .unwrap();
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

    #[test]
    fn chunked_prefill_matches_a_single_pass() {
        let mut llm = llm();
        let messages = rtu40_messages("What torque for the compressor head bolts on the RTU-40?");
        let prompt = chatml::prompt_ids(&llm.tokenizer, &messages, llm.context_len()).unwrap();
        let whole: Vec<f32> = llm.prefill(&prompt, prompt.len()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let chunked: Vec<f32> = llm.prefill(&prompt, 7).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let max_diff = whole.iter().zip(&chunked).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max_diff < 1e-3, "chunked prefill drifts by {max_diff}");
        assert_eq!(
            argmax(&Tensor::new(whole.as_slice(), &Device::Cpu).unwrap()).unwrap(),
            argmax(&Tensor::new(chunked.as_slice(), &Device::Cpu).unwrap()).unwrap()
        );
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
        let everything = chatml::prompt_ids(tok, &messages, usize::MAX).unwrap();
        let budget = 80;
        let ids = chatml::prompt_ids(tok, &messages, budget).unwrap();
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
