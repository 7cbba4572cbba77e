//! Whisper speech-to-text: loads the CTranslate2 Whisper model (tiny.en, fp16 `model.bin`)
//! into candle and turns 16 kHz mono PCM into a trimmed transcript with greedy decoding.
//!
//! Pieces: `ct2` reads the container, `weights` renames and splits its tensors for candle's
//! Whisper and derives the `Config` from their shapes, `mel` computes the log-mel features,
//! `decoder` is a KV-cached text decoder on the same weights (candle's encoder is used as is).
//!
//! Speed: by default the encoder runs over a window fitted to the utterance (see
//! [`EncoderWindow`]) instead of Whisper's full 30 s. Blocking and single-threaded from the
//! caller's view; candle's CPU matmuls split work over rayon: `RAYON_NUM_THREADS` sets the
//! split (default: physical cores) and the global rayon pool runs it, so a caller can confine
//! a call to its own pool with `pool.install(|| whisper.transcribe(..))`.

mod decoder;
mod mel;
mod weights;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::{self as wh, Config, model as wm};
use tokenizers::Tokenizer;

use fieldvox_formats::ct2;

use crate::models::ModelError;

/// The sample rate `transcribe` expects.
pub const SAMPLE_RATE: u32 = 16_000;

const MODEL: &str = "whisper";

/// Fitted windows cover the audio plus 1 s of trailing silence, rounded up to 10 s: shorter
/// windows (2–5 s) made tiny.en truncate one-word answers and loop on some sentences.
const FITTED_MARGIN_FRAMES: usize = 100;
const FITTED_ROUND_FRAMES: usize = 1000;

/// A decode whose distinct token trigrams fall below this share of all trigrams is a
/// repetition loop (Whisper's own guard is a zlib compression ratio above 2.4).
const MIN_DISTINCT_TRIGRAMS: f32 = 0.5;

/// Windows quieter than this RMS (−60 dBFS, below a typical microphone's noise floor) hold no
/// speech; the model is not run on them, since Whisper tends to "hear" a word in pure silence.
const SILENCE_RMS: f32 = 1e-3;

/// Decoding stops after this many text tokens per second of audio (plus a floor): well above
/// real speech (~3–5 tokens/s) and only reached by a repetition loop.
const MAX_TOKENS_PER_SECOND: usize = 12;
const MIN_TOKEN_BUDGET: usize = 16;
/// Tokens of hint context at most: enough for a tenant's codes, little decoder time.
const MAX_HINT_TOKENS: usize = 96;

/// How much of Whisper's 30 s input window the encoder processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderWindow {
    /// The full 30 s (3000 mel frames), as Whisper was trained.
    Full,
    /// The utterance plus 1 s, rounded up to 10 s (so 1000 frames for a short question);
    /// a doubtful result (loop, low confidence) is redone on the full window.
    Fitted,
}

/// The options CTranslate2 keeps in `config.json` that decoding needs.
#[derive(Debug, serde::Deserialize)]
struct Ct2Config {
    #[serde(default)]
    suppress_ids: Vec<u32>,
    #[serde(default)]
    suppress_ids_begin: Vec<u32>,
}

/// Greedy decoding result for one window.
struct Decoded {
    tokens: Vec<u32>,
    avg_logprob: f32,
    no_speech_prob: f32,
    /// Stopped by the token budget rather than end-of-text.
    hit_budget: bool,
}

impl Decoded {
    /// OpenAI's silence rule: likely no speech, and what was decoded is not confident.
    fn is_silence(&self) -> bool {
        self.no_speech_prob > wh::NO_SPEECH_THRESHOLD as f32 && self.avg_logprob < wh::LOGPROB_THRESHOLD as f32
    }

    /// Signs of a failed decode: a loop, or text the model itself doubts.
    fn looks_degenerate(&self) -> bool {
        let trigrams: Vec<&[u32]> = self.tokens.windows(3).collect();
        let distinct = trigrams.iter().collect::<std::collections::HashSet<_>>().len();
        let looping = trigrams.len() >= 8 && (distinct as f32) < MIN_DISTINCT_TRIGRAMS * trigrams.len() as f32;
        self.hit_budget || looping || self.avg_logprob < wh::LOGPROB_THRESHOLD as f32
    }
}

/// Whisper tiny.en (or any CTranslate2 Whisper export) ready to transcribe.
pub struct Whisper {
    /// candle's audio encoder; decoding uses our KV-cached decoder on the same weights.
    encoder: wm::AudioEncoder,
    decoder: decoder::TextDecoder,
    tokenizer: Tokenizer,
    config: Config,
    log_mel: mel::LogMel,
    device: Device,
    /// `<|startoftranscript|>` then, for multilingual models only, language and task, then
    /// `<|notimestamps|>`.
    prompt: Vec<u32>,
    /// `<|startofprev|>`: what follows it (until the prompt) is context the transcript is
    /// likely to use, such as the tenant's codes.
    start_of_prev: Option<u32>,
    /// Context for the current call: `<|startofprev|>` and the hint's tokens, or nothing.
    context: Vec<u32>,
    eot: u32,
    no_speech: Option<u32>,
    /// Never sampled: the model's non-speech symbols and every special token but end-of-text.
    suppress: Vec<u32>,
    /// Not sampled as the first token (a leading blank or an immediate end-of-text).
    suppress_begin: Vec<u32>,
    window: EncoderWindow,
}

fn required(dir: &Path, name: &str) -> Result<std::path::PathBuf, ModelError> {
    let path = dir.join(name);
    if path.is_file() { Ok(path) } else { Err(ModelError::Missing { path }) }
}

fn load_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::load(MODEL, e)
}

fn infer_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::inference(MODEL, e)
}

fn token_id(tokenizer: &Tokenizer, token: &str) -> Result<u32, ModelError> {
    tokenizer.token_to_id(token).ok_or_else(|| load_err(format!("tokenizer has no {token}")))
}

/// Log-softmax normaliser of `logits` (ignores `-inf` entries).
fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln()
}

/// Index and value of the largest logit.
fn argmax(logits: &[f32]) -> Option<(usize, f32)> {
    logits.iter().copied().enumerate().fold(None, |best, (i, v)| match best {
        Some((_, b)) if b >= v => best,
        _ => Some((i, v)),
    })
}

impl Whisper {
    /// Loads `model.bin`, `config.json` and `tokenizer.json` from a CTranslate2 Whisper dir.
    pub fn load(model_dir: &Path) -> Result<Self, ModelError> {
        let started = Instant::now();
        let model_bin = required(model_dir, "model.bin")?;
        let config_json = required(model_dir, "config.json")?;
        let tokenizer_json = required(model_dir, "tokenizer.json")?;

        let ct2 = ct2::Ct2Model::open(&model_bin)?;
        if ct2.spec_name != "WhisperSpec" {
            return Err(load_err(format!("model.bin holds a {}, not a WhisperSpec", ct2.spec_name)));
        }
        let ct2_config: Ct2Config =
            std::fs::read(&config_json).map_err(load_err).and_then(|b| serde_json::from_slice(&b).map_err(load_err))?;

        let config = weights::derive_config(&ct2, ct2_config.suppress_ids.clone())?;
        let drift = weights::encoder_position_mismatch(&ct2, &config)?;
        if drift > 1e-2 {
            return Err(load_err(format!("encoder positions are not Whisper sinusoids (max diff {drift})")));
        }
        let tensors = weights::candle_tensors(&ct2, &config)?;
        drop(ct2);
        let device = Device::Cpu;
        let decoder = decoder::TextDecoder::load(&tensors, &config).map_err(load_err)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        // Only candle's encoder is kept; its decoder (and the untransposed weights) are freed.
        let encoder = wm::Whisper::load(&vb, config.clone()).map_err(load_err)?.encoder;

        let tokenizer = Tokenizer::from_file(&tokenizer_json).map_err(load_err)?;
        let sot = token_id(&tokenizer, wh::SOT_TOKEN)?;
        let eot = token_id(&tokenizer, wh::EOT_TOKEN)?;
        let no_timestamps = token_id(&tokenizer, wh::NO_TIMESTAMPS_TOKEN)?;
        let no_speech = wh::NO_SPEECH_TOKENS.iter().find_map(|t| tokenizer.token_to_id(t));
        let start_of_prev = tokenizer.token_to_id("<|startofprev|>");
        // OpenAI's rule: English-only checkpoints have a 51864-token vocabulary and take no
        // language or task token; multilingual ones (>= 51865) need `<|en|><|transcribe|>`.
        let multilingual = config.vocab_size >= 51_865;
        let mut prompt = vec![sot];
        if multilingual {
            prompt.push(token_id(&tokenizer, "<|en|>")?);
            prompt.push(token_id(&tokenizer, wh::TRANSCRIBE_TOKEN)?);
        }
        prompt.push(no_timestamps);

        // Special tokens sit after end-of-text (language, task, timestamp tokens...).
        let vocab = u32::try_from(config.vocab_size).map_err(load_err)?;
        let mut suppress: Vec<u32> = ct2_config.suppress_ids.iter().copied().filter(|&t| t < vocab).collect();
        suppress.extend(eot + 1..vocab);
        suppress.sort_unstable();
        suppress.dedup();
        let suppress_begin = ct2_config.suppress_ids_begin.iter().copied().filter(|&t| t < vocab).collect();

        let log_mel =
            mel::LogMel::new(SAMPLE_RATE, wh::N_FFT, wh::HOP_LENGTH, config.num_mel_bins, &device).map_err(load_err)?;
        let load_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            load_ms,
            d_model = config.d_model,
            encoder_layers = config.encoder_layers,
            decoder_layers = config.decoder_layers,
            vocab = config.vocab_size,
            multilingual,
            "whisper loaded"
        );
        Ok(Self {
            encoder,
            decoder,
            tokenizer,
            config,
            log_mel,
            device,
            prompt,
            start_of_prev,
            context: Vec::new(),
            eot,
            no_speech,
            suppress,
            suppress_begin,
            window: EncoderWindow::Fitted,
        })
    }

    /// Chooses how much of the 30 s window the encoder runs over (default: `Fitted`).
    pub fn with_window(mut self, window: EncoderWindow) -> Self {
        self.window = window;
        self
    }

    /// Mono f32 samples at 16 kHz in [-1, 1]; returns the trimmed transcript ("" for silence).
    /// Audio longer than 30 s is transcribed in consecutive 30 s windows.
    pub fn transcribe(&mut self, pcm_16k: &[f32]) -> Result<String, ModelError> {
        self.transcribe_with_hint(pcm_16k, "")
    }

    /// As `transcribe`, primed with words the speaker is likely to use (Whisper's previous
    /// text context): codes like "HX-FLT-0440" are then written as printed.
    pub fn transcribe_with_hint(&mut self, pcm_16k: &[f32], hint: &str) -> Result<String, ModelError> {
        if pcm_16k.iter().any(|s| !s.is_finite()) {
            return Err(ModelError::input(MODEL, "samples must be finite"));
        }
        self.context.clear();
        if let Some(start) = self.start_of_prev
            && !hint.trim().is_empty()
        {
            let encoded = self.tokenizer.encode(format!(" {}", hint.trim()), false).map_err(infer_err)?;
            let ids = encoded.get_ids();
            // OpenAI keeps the last half of the text context; so do we.
            let keep = (self.config.max_target_positions / 2).saturating_sub(1).min(MAX_HINT_TOKENS);
            self.context.push(start);
            self.context.extend_from_slice(&ids[ids.len().saturating_sub(keep)..]);
        }
        let mut parts = Vec::new();
        for chunk in pcm_16k.chunks(wh::N_SAMPLES) {
            let text = self.transcribe_window(chunk, true)?;
            if !text.is_empty() {
                parts.push(text);
            }
        }
        Ok(parts.join(" "))
    }

    /// A quick draft: one pass on the fitted window, a doubtful result kept as it is (no
    /// retry on the full window, which costs seconds). For deciding what speech over an
    /// answer was, where speed matters more than every word.
    pub fn transcribe_draft(&mut self, pcm_16k: &[f32]) -> Result<String, ModelError> {
        if pcm_16k.iter().any(|s| !s.is_finite()) {
            return Err(ModelError::input(MODEL, "samples must be finite"));
        }
        self.context.clear();
        let window = &pcm_16k[..pcm_16k.len().min(wh::N_SAMPLES)];
        self.transcribe_window(window, false)
    }

    /// Encoder frames to run for `samples` of audio under the current window policy.
    fn frames_for(&self, samples: usize) -> usize {
        let max = 2 * self.config.max_source_positions;
        match self.window {
            EncoderWindow::Full => max,
            EncoderWindow::Fitted => {
                let audio = samples.div_ceil(wh::HOP_LENGTH);
                let frames = (audio + FITTED_MARGIN_FRAMES).div_ceil(FITTED_ROUND_FRAMES) * FITTED_ROUND_FRAMES;
                frames.min(max)
            }
        }
    }

    /// `retry`: redo a doubtful result on the full window.
    fn transcribe_window(&mut self, pcm: &[f32], retry: bool) -> Result<String, ModelError> {
        let energy = pcm.iter().map(|s| s * s).sum::<f32>() / pcm.len().max(1) as f32;
        if energy.sqrt() < SILENCE_RMS {
            tracing::debug!(rms = energy.sqrt(), "whisper window below the silence level");
            return Ok(String::new());
        }
        let full = 2 * self.config.max_source_positions;
        let frames = self.frames_for(pcm.len());
        let mut decoded = self.run_window(pcm, frames)?;
        // A shortened window is an approximation: redo a doubtful result the way Whisper was
        // trained (30 s) rather than return it.
        if retry && frames < full && !decoded.is_silence() && decoded.looks_degenerate() {
            tracing::debug!(frames, tokens = decoded.tokens.len(), "whisper retrying on the full window");
            decoded = self.run_window(pcm, full)?;
        }
        if decoded.is_silence() {
            return Ok(String::new());
        }
        let text = self.tokenizer.decode(&decoded.tokens, true).map_err(infer_err)?;
        Ok(text.trim().to_string())
    }

    /// Features, encoder and greedy decoding of one window of `frames` mel frames.
    fn run_window(&mut self, pcm: &[f32], frames: usize) -> Result<Decoded, ModelError> {
        let started = Instant::now();
        let mel = self.log_mel.compute(pcm, frames, &self.device).map_err(infer_err)?;
        let mel_ms = started.elapsed().as_millis() as u64;

        let features = self.encoder.forward(&mel, true).map_err(infer_err)?;
        let encode_ms = started.elapsed().as_millis() as u64 - mel_ms;

        let seconds = pcm.len() / SAMPLE_RATE as usize + 1;
        let budget = (MIN_TOKEN_BUDGET + MAX_TOKENS_PER_SECOND * seconds)
            .min(self.config.max_target_positions / 2)
            .min(self.config.max_target_positions.saturating_sub(self.context.len() + self.prompt.len()));
        let decoded = self.decode(&features, budget).map_err(infer_err)?;
        let decode_ms = started.elapsed().as_millis() as u64 - mel_ms - encode_ms;
        tracing::debug!(
            mel_ms,
            encode_ms,
            decode_ms,
            frames,
            tokens = decoded.tokens.len(),
            avg_logprob = decoded.avg_logprob,
            no_speech_prob = decoded.no_speech_prob,
            "whisper window decoded"
        );
        Ok(decoded)
    }

    /// Greedy decoding from the prompt until end-of-text or `budget` tokens.
    fn decode(&self, features: &Tensor, budget: usize) -> candle_core::Result<Decoded> {
        let mut state = self.decoder.start(features)?;
        let mut tokens = [self.context.as_slice(), self.prompt.as_slice()].concat();
        let mut feed = tokens.clone();
        // The start-of-transcript position, where the no-speech probability is read.
        let sot_row = self.context.len();
        let mut sum_logprob = 0f32;
        let mut scored = 0usize;
        let mut no_speech_prob = 0f32;
        let mut ended = false;
        for step in 0..budget {
            let hidden = self.decoder.forward(&mut state, &feed)?;
            if step == 0
                && let Some(ns) = self.no_speech
            {
                // Read at the start-of-transcript position, before any suppression.
                let first = self.decoder.logits(&decoder::TextDecoder::row(&hidden, sot_row)?)?;
                if let Some(&l) = first.get(ns as usize) {
                    no_speech_prob = (l - log_sum_exp(&first)).exp();
                }
            }
            let last = hidden.dim(0)? - 1;
            let mut logits = self.decoder.logits(&decoder::TextDecoder::row(&hidden, last)?)?;
            let banned = self.suppress.iter().chain(if step == 0 { self.suppress_begin.iter() } else { [].iter() });
            for &t in banned {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
            let Some((best, value)) = argmax(&logits) else {
                break;
            };
            sum_logprob += value - log_sum_exp(&logits);
            scored += 1;
            let best = best as u32;
            if best == self.eot {
                ended = true;
                break;
            }
            tokens.push(best);
            feed = vec![best];
        }
        let generated = tokens.split_off(self.context.len() + self.prompt.len());
        Ok(Decoded {
            hit_budget: !ended,
            tokens: generated,
            avg_logprob: if scored == 0 { 0.0 } else { sum_logprob / scored as f32 },
            no_speech_prob,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ModelPaths;

    fn model_dir() -> std::path::PathBuf {
        ModelPaths::new(ModelPaths::default_root()).whisper_dir("whisper-tiny.en").unwrap()
    }

    /// Linear-interpolation resampler, enough for test speech.
    fn resample_linear(input: &[f32], from: u32, to: u32) -> Vec<f32> {
        if input.is_empty() {
            return Vec::new();
        }
        let ratio = f64::from(from) / f64::from(to);
        let out_len = (input.len() as f64 / ratio).floor() as usize;
        (0..out_len)
            .map(|i| {
                let pos = i as f64 * ratio;
                let j = pos.floor() as usize;
                let frac = (pos - j as f64) as f32;
                let a = input[j.min(input.len() - 1)];
                let b = input[(j + 1).min(input.len() - 1)];
                a + (b - a) * frac
            })
            .collect()
    }

    /// Speaks `text` with espeak-ng and returns it as 16 kHz mono f32.
    fn speak(text: &str, tag: &str) -> Vec<f32> {
        let path = std::env::temp_dir().join(format!("fieldvox-whisper-{}-{tag}.wav", std::process::id()));
        let status = std::process::Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&path)
            .arg(text)
            .status()
            .expect("espeak-ng must be installed");
        assert!(status.success());
        let mut reader = hound::WavReader::open(&path).unwrap();
        let spec = reader.spec();
        assert_eq!(spec.channels, 1);
        assert_eq!(spec.bits_per_sample, 16);
        let samples: Vec<f32> = reader.samples::<i16>().map(|s| f32::from(s.unwrap()) / 32768.0).collect();
        std::fs::remove_file(&path).ok();
        resample_linear(&samples, spec.sample_rate, SAMPLE_RATE)
    }

    #[test]
    fn reads_ct2_container() {
        let model = ct2::Ct2Model::open(&model_dir().join("model.bin")).unwrap();
        assert_eq!(model.version, 6);
        assert_eq!(model.spec_name, "WhisperSpec");
        assert!(model.revision >= 1);
        assert_eq!(model.alias_target("decoder/projection/weight"), Some("decoder/embeddings/weight"));
        assert_eq!(model.variable("decoder/embeddings/weight").unwrap().dtype, ct2::Ct2Dtype::F16);
        assert_eq!(model.scalar_int("encoder/num_heads").unwrap(), 6);
        // fp16 decoding and shape handling must reproduce Whisper's sinusoidal positions.
        let config = weights::derive_config(&model, vec![]).unwrap();
        let drift = weights::encoder_position_mismatch(&model, &config).unwrap();
        assert!(drift < 2e-3, "encoder positions drift {drift}");
    }

    #[test]
    fn derives_tiny_en_config_from_shapes() {
        let model = ct2::Ct2Model::open(&model_dir().join("model.bin")).unwrap();
        let c = weights::derive_config(&model, vec![]).unwrap();
        assert_eq!(
            (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads, c.decoder_attention_heads),
            (384, 4, 4, 6, 6)
        );
        assert_eq!(
            (c.vocab_size, c.num_mel_bins, c.max_source_positions, c.max_target_positions),
            (51_864, 80, 1500, 448)
        );
        let tensors = weights::candle_tensors(&model, &c).unwrap();
        let q = &tensors["model.encoder.layers.0.self_attn.q_proj.weight"];
        assert_eq!(q.dims(), &[384, 384]);
        assert!(tensors.contains_key("model.decoder.layers.3.encoder_attn.v_proj.bias"));
        assert!(!tensors.contains_key("model.decoder.layers.3.encoder_attn.k_proj.bias"));
    }

    /// Our KV-cached decoder must reproduce candle's full-recompute decoder step by step
    /// (teacher-forced on candle's choices), up to candle's tanh-approximated GELU.
    #[test]
    fn kv_cached_decoder_matches_candle_decoder() {
        let device = Device::Cpu;
        let model = ct2::Ct2Model::open(&model_dir().join("model.bin")).unwrap();
        let config = weights::derive_config(&model, vec![]).unwrap();
        let tensors = weights::candle_tensors(&model, &config).unwrap();
        let ours = decoder::TextDecoder::load(&tensors, &config).unwrap();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let mut reference = wm::Whisper::load(&vb, config.clone()).unwrap();

        let pcm = speak("Replace the filter drier before charging", "decoder");
        let mel = mel::LogMel::new(SAMPLE_RATE, 400, 160, 80, &device).unwrap().compute(&pcm, 1000, &device).unwrap();
        let features = reference.encoder.forward(&mel, true).unwrap();

        let mut state = ours.start(&features).unwrap();
        let mut tokens = vec![50_257u32, 50_362]; // <|startoftranscript|><|notimestamps|>
        let mut feed = tokens.clone();
        let mut worst = 0f32;
        for step in 0..8 {
            let input = Tensor::new(tokens.as_slice(), &device).unwrap().unsqueeze(0).unwrap();
            let h = reference.decoder.forward(&input, &features, step == 0).unwrap();
            let last = h.narrow(1, tokens.len() - 1, 1).unwrap();
            let expected: Vec<f32> =
                reference.decoder.final_linear(&last).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let hidden = ours.forward(&mut state, &feed).unwrap();
            let row = decoder::TextDecoder::row(&hidden, hidden.dim(0).unwrap() - 1).unwrap();
            let got = ours.logits(&row).unwrap();
            assert_eq!(got.len(), expected.len());
            worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
            // Follow text tokens only (below <|endoftext|>) so every step is compared.
            let next = argmax(&expected[..50_256]).unwrap().0 as u32;
            assert_eq!(argmax(&got[..50_256]).unwrap().0 as u32, next, "step {step}");
            tokens.push(next);
            feed = vec![next];
        }
        assert!(worst < 0.1, "logits differ by {worst}");
    }

    #[test]
    fn mel_filterbank_shape_and_row_sums() {
        let filters = mel::mel_filters(SAMPLE_RATE, 400, 80);
        assert_eq!(filters.len(), 80 * 201);
        assert!(filters.iter().all(|&w| w >= 0.0));
        let bin_hz = 8000.0 / 200.0;
        let mut peaks = Vec::new();
        let mut areas = Vec::new();
        for (m, row) in filters.chunks(201).enumerate() {
            let sum: f32 = row.iter().sum();
            // Slaney normalisation: each triangle has unit area in Hz, so sum × bin width ≈ 1
            // (up to how the 40 Hz bins sample each triangle).
            let area = sum * bin_hz;
            assert!((area - 1.0).abs() < 0.1, "row {m} area {area}");
            areas.push(area);
            peaks.push(argmax(row).unwrap().0);
        }
        assert!(peaks.windows(2).all(|p| p[0] <= p[1]), "filter centres must rise: {peaks:?}");
        // Linear below 1 kHz: the first centre sits at 200/3 × (45.245/81) ≈ 37 Hz, in bin 1.
        assert_eq!(peaks[0], 1);
        assert_eq!(filters[0], 0.0);
    }

    #[test]
    fn log_mel_matches_candle_reference() {
        let pcm = speak("Check the compressor oil level", "mel");
        let device = Device::Cpu;
        let ours = mel::LogMel::new(SAMPLE_RATE, 400, 160, 80, &device)
            .unwrap()
            .compute(&pcm, wh::N_FRAMES, &device)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // candle's frames start at i·hop: reflect-pad half a window in front so they are centred.
        let mut padded: Vec<f32> = (1..=200).rev().map(|i| pcm[i]).collect();
        padded.extend_from_slice(&pcm);
        let config = Config {
            num_mel_bins: 80,
            max_source_positions: 1500,
            d_model: 384,
            encoder_attention_heads: 6,
            encoder_layers: 4,
            vocab_size: 51_864,
            max_target_positions: 448,
            decoder_attention_heads: 6,
            decoder_layers: 4,
            suppress_tokens: vec![],
        };
        let filters = mel::mel_filters(SAMPLE_RATE, 400, 80);
        let theirs = candle_transformers::models::whisper::audio::pcm_to_mel(&config, &padded, &filters);
        let n_len = theirs.len() / 80;
        // whisper.cpp's transform (candle's) folds the mirrored half of the spectrum into each
        // bin, doubling the power: +log10(2)/4 after normalisation.
        let shift = 2f32.log10() / 4.0;
        let mut worst = 0f32;
        for (m, row) in ours.iter().enumerate() {
            assert_eq!(row.len(), wh::N_FRAMES);
            for (i, v) in row.iter().enumerate() {
                worst = worst.max((v + shift - theirs[m * n_len + i]).abs());
            }
        }
        assert!(worst < 2e-3, "log-mel differs from candle's by {worst}");
        // Speech must span the normalised range (not all clamped).
        let flat: Vec<f32> = ours.concat();
        let (lo, hi) = flat.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!((hi - lo - 2.0).abs() < 1e-4, "range {lo}..{hi}");
    }

    #[test]
    fn transcribes_espeak_question() {
        let pcm = speak("What torque for the compressor head bolts?", "question");
        let mut whisper = Whisper::load(&model_dir()).unwrap();
        let text = whisper.transcribe(&pcm).unwrap();
        eprintln!("transcript: {text:?}");
        let lower = text.to_lowercase();
        assert!(lower.contains("torque"), "{text}");
        assert!(lower.contains("compressor"), "{text}");
    }

    #[test]
    fn whisper_base_is_asked_for_english_and_transcribes_the_question() {
        let dir = ModelPaths::new(ModelPaths::default_root()).whisper_dir("whisper-base").unwrap();
        let mut whisper = Whisper::load(&dir).unwrap();
        assert_eq!(whisper.prompt.len(), 4, "multilingual: start, language, task, no timestamps");
        let pcm = speak("What torque for the compressor head bolts?", "base");
        let text = whisper.transcribe(&pcm).unwrap();
        let lower = text.to_lowercase();
        assert!(lower.contains("torque") && lower.contains("compressor"), "{text}");
        assert_eq!(whisper.transcribe(&vec![0.0; SAMPLE_RATE as usize]).unwrap(), "", "silence is no words");
    }

    #[test]
    fn a_hint_primes_without_appearing_in_the_transcript() {
        let pcm = speak("What torque for the compressor head bolts?", "hinted");
        let mut whisper = Whisper::load(&model_dir()).unwrap();
        let hinted = whisper.transcribe_with_hint(&pcm, "RTU-40, GK-4471-B, HX-FLT-0440").unwrap();
        let lower = hinted.to_lowercase();
        assert!(lower.contains("torque") && lower.contains("compressor"), "{hinted}");
        assert!(!hinted.contains("GK-4471-B") && !hinted.contains("HX-FLT-0440"), "context leaked: {hinted}");
        // The hint belongs to its call: silence after it is still silence.
        assert_eq!(whisper.transcribe_with_hint(&vec![0.0; SAMPLE_RATE as usize], "RTU-40").unwrap(), "");
        whisper.transcribe(&pcm).unwrap();
        assert!(whisper.context.is_empty(), "a plain call carries no hint");
    }

    #[test]
    fn silence_gives_empty_transcript() {
        let mut whisper = Whisper::load(&model_dir()).unwrap();
        assert_eq!(whisper.transcribe(&vec![0.0; SAMPLE_RATE as usize]).unwrap(), "");
        assert_eq!(whisper.transcribe(&[]).unwrap(), "");
    }

    /// Above the energy gate, the model's own no-speech probability must keep noise silent.
    #[test]
    fn quiet_noise_gives_empty_transcript() {
        let mut seed = 12_345u32;
        let noise: Vec<f32> = (0..2 * SAMPLE_RATE as usize)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.02
            })
            .collect();
        let rms = (noise.iter().map(|s| s * s).sum::<f32>() / noise.len() as f32).sqrt();
        assert!(rms > SILENCE_RMS, "noise must reach the model (rms {rms})");
        let mut whisper = Whisper::load(&model_dir()).unwrap();
        assert_eq!(whisper.transcribe(&noise).unwrap(), "");
    }

    #[test]
    fn rejects_non_finite_samples() {
        let mut whisper = Whisper::load(&model_dir()).unwrap();
        let err = whisper.transcribe(&[0.0, f32::NAN]).unwrap_err();
        assert!(matches!(err, ModelError::Input { .. }), "{err}");
    }

    #[test]
    fn degenerate_decodes_are_detected() {
        let decoded = |tokens: Vec<u32>, avg_logprob: f32, hit_budget: bool| Decoded {
            tokens,
            avg_logprob,
            no_speech_prob: 0.0,
            hit_budget,
        };
        let sentence: Vec<u32> = (100..112).collect();
        assert!(!decoded(sentence.clone(), -0.3, false).looks_degenerate());
        let looped: Vec<u32> = sentence.iter().copied().cycle().take(60).collect();
        assert!(decoded(looped, -0.1, false).looks_degenerate());
        assert!(decoded(sentence.clone(), -1.5, false).looks_degenerate());
        assert!(decoded(sentence, -0.3, true).looks_degenerate());
        let silence = Decoded { tokens: vec![], avg_logprob: -1.2, no_speech_prob: 0.9, hit_budget: false };
        assert!(silence.is_silence());
    }

    #[test]
    fn whisper_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Whisper>();
    }

    #[test]
    fn missing_model_dir_is_missing() {
        let dir = std::env::temp_dir().join("fieldvox-no-such-whisper-dir");
        match Whisper::load(&dir) {
            Err(ModelError::Missing { path }) => assert!(path.starts_with(&dir)),
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("loaded from a missing dir"),
        }
    }

    /// Measures load and both encoder windows on a ~3 s utterance (numbers go to stderr; no
    /// timing assertions), and checks that both windows give a correct transcript.
    #[test]
    fn full_and_fitted_windows_agree() {
        let pcm = speak("What torque for the compressor head bolts?", "windows");
        let started = Instant::now();
        let whisper = Whisper::load(&model_dir()).unwrap();
        eprintln!("load: {} ms, audio {:.2} s", started.elapsed().as_millis(), pcm.len() as f32 / 16_000.0);
        let mut whisper = whisper.with_window(EncoderWindow::Full);
        for window in [EncoderWindow::Full, EncoderWindow::Fitted, EncoderWindow::Full, EncoderWindow::Fitted] {
            whisper.window = window;
            let started = Instant::now();
            let text = whisper.transcribe(&pcm).unwrap();
            eprintln!("{window:?}: {} ms -> {text:?}", started.elapsed().as_millis());
            let lower = text.to_lowercase();
            assert!(lower.contains("torque") && lower.contains("compressor"), "{window:?}: {text}");
        }
    }
}

/// Where a decoding step's time goes (not a test of behaviour: run by hand, README
/// "Benchmarks"): `cargo test --lib decode_step_costs -- --ignored --nocapture`.
#[cfg(test)]
mod decode_costs {
    use super::*;
    use crate::models::ModelPaths;

    #[test]
    #[ignore]
    fn decode_step_costs() {
        let dir = ModelPaths::new(ModelPaths::default_root()).whisper_dir("whisper-tiny.en").unwrap();
        let whisper = Whisper::load(&dir).unwrap();
        let decoder = &whisper.decoder;
        let hidden = Tensor::randn(0f32, 1.0, (1, 384), &Device::Cpu).unwrap();
        let features = Tensor::randn(0f32, 1.0, (1, 500, 384), &Device::Cpu).unwrap();
        let ms_per = |started: Instant, n: u32| started.elapsed().as_secs_f64() * 1000.0 / f64::from(n);
        for _ in 0..3 {
            let started = Instant::now();
            for _ in 0..10 {
                decoder.logits(&hidden).unwrap();
            }
            let logits = ms_per(started, 10);
            let mut state = decoder.start(&features).unwrap();
            decoder.forward(&mut state, &[50257, 50362]).unwrap();
            let started = Instant::now();
            for token in 0..10 {
                decoder.forward(&mut state, &[400 + token]).unwrap();
            }
            eprintln!("per written token: output layer {logits:.1} ms, decoder layers {:.1} ms", ms_per(started, 10));
        }
    }
}
