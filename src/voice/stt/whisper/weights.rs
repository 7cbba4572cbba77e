//! Maps CTranslate2 Whisper variables onto the names and layout candle's Whisper model loads,
//! and derives the model `Config` from the tensor shapes.
//!
//! CTranslate2 fuses projections: self-attention `linear_0` is Q, K and V stacked along the
//! output rows, cross-attention has `linear_0` = Q and `linear_1` = K and V stacked; the
//! output projection is the last linear. The fusion gives K a bias (zeros from the converter);
//! candle's K has none, and dropping it is exact anyway because a key bias adds the same
//! `q·b` to every score of a query, which softmax cancels.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_transformers::models::whisper::Config;

use crate::models::ModelError;
use fieldvox_formats::ct2::Ct2Model;

const MODEL: &str = "whisper";

fn candle_err(context: &str, e: candle_core::Error) -> ModelError {
    ModelError::load(MODEL, format!("{context}: {e}"))
}

/// Number of `{prefix}/layer_N/` blocks present.
fn count_layers(model: &Ct2Model, prefix: &str) -> usize {
    let head = format!("{prefix}/layer_");
    model
        .names()
        .filter_map(|n| n.strip_prefix(&head))
        .filter_map(|rest| rest.split('/').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn dim(model: &Ct2Model, name: &str, axis: usize) -> Result<usize, ModelError> {
    let var = model.variable(name)?;
    var.shape
        .get(axis)
        .copied()
        .ok_or_else(|| ModelError::load(MODEL, format!("{name} has shape {:?}, no axis {axis}", var.shape)))
}

fn positive(model: &Ct2Model, name: &str) -> Result<usize, ModelError> {
    let v = model.scalar_int(name)?;
    usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| ModelError::load(MODEL, format!("{name} = {v}")))
}

/// The candle `Config`, read off the stored shapes and head counts.
pub fn derive_config(model: &Ct2Model, suppress_tokens: Vec<u32>) -> Result<Config, ModelError> {
    let vocab_size = dim(model, "decoder/embeddings/weight", 0)?;
    let d_model = dim(model, "decoder/embeddings/weight", 1)?;
    let config = Config {
        num_mel_bins: dim(model, "encoder/conv1/weight", 1)?,
        max_source_positions: dim(model, "encoder/position_encodings/encodings", 0)?,
        d_model,
        encoder_attention_heads: positive(model, "encoder/num_heads")?,
        encoder_layers: count_layers(model, "encoder"),
        vocab_size,
        max_target_positions: dim(model, "decoder/position_encodings/encodings", 0)?,
        decoder_attention_heads: positive(model, "decoder/num_heads")?,
        decoder_layers: count_layers(model, "decoder"),
        suppress_tokens,
    };
    if config.encoder_layers == 0 || config.decoder_layers == 0 {
        return Err(ModelError::load(MODEL, "model.bin has no encoder or decoder layers"));
    }
    for heads in [config.encoder_attention_heads, config.decoder_attention_heads] {
        if d_model % heads != 0 {
            return Err(ModelError::load(MODEL, format!("d_model {d_model} not divisible by {heads} heads")));
        }
    }
    Ok(config)
}

/// Builds the name → tensor map that `candle_transformers` Whisper loads from.
struct Mapper<'a> {
    model: &'a Ct2Model,
    d_model: usize,
    out: HashMap<String, Tensor>,
}

impl Mapper<'_> {
    fn copy(&mut self, from: &str, to: String) -> Result<(), ModelError> {
        let t = self.model.tensor_f32(from)?;
        self.out.insert(to, t);
        Ok(())
    }

    /// A linear layer: `weight` and `bias` under the same prefix.
    fn linear(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.copy(&format!("{from}/weight"), format!("{to}.weight"))?;
        self.copy(&format!("{from}/bias"), format!("{to}.bias"))
    }

    fn layer_norm(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.copy(&format!("{from}/gamma"), format!("{to}.weight"))?;
        self.copy(&format!("{from}/beta"), format!("{to}.bias"))
    }

    /// Splits a fused linear whose output rows stack `targets.len()` projections of `d_model`.
    /// A target without a bias (Whisper's K) gets only its weight.
    fn split_linear(&mut self, from: &str, targets: &[(&str, bool)]) -> Result<(), ModelError> {
        let d = self.d_model;
        let weight = self.model.tensor_f32(&format!("{from}/weight"))?;
        let bias = self.model.tensor_f32(&format!("{from}/bias"))?;
        let rows = weight.dim(0).map_err(|e| candle_err(from, e))?;
        if rows != d * targets.len() {
            return Err(ModelError::load(
                MODEL,
                format!("{from}: {rows} rows, expected {} fused projections of {d}", targets.len()),
            ));
        }
        for (i, (to, has_bias)) in targets.iter().enumerate() {
            let w = weight.narrow(0, i * d, d).and_then(|t| t.contiguous());
            self.out.insert(format!("{to}.weight"), w.map_err(|e| candle_err(from, e))?);
            if *has_bias {
                let b = bias.narrow(0, i * d, d).and_then(|t| t.contiguous());
                self.out.insert(format!("{to}.bias"), b.map_err(|e| candle_err(from, e))?);
            }
        }
        Ok(())
    }

    fn self_attention(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.split_linear(
            &format!("{from}/linear_0"),
            &[(&format!("{to}.q_proj"), true), (&format!("{to}.k_proj"), false), (&format!("{to}.v_proj"), true)],
        )?;
        self.linear(&format!("{from}/linear_1"), &format!("{to}.out_proj"))
    }

    fn cross_attention(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.linear(&format!("{from}/linear_0"), &format!("{to}.q_proj"))?;
        self.split_linear(
            &format!("{from}/linear_1"),
            &[(&format!("{to}.k_proj"), false), (&format!("{to}.v_proj"), true)],
        )?;
        self.linear(&format!("{from}/linear_2"), &format!("{to}.out_proj"))
    }

    fn ffn(&mut self, from: &str, to: &str) -> Result<(), ModelError> {
        self.linear(&format!("{from}/linear_0"), &format!("{to}.fc1"))?;
        self.linear(&format!("{from}/linear_1"), &format!("{to}.fc2"))?;
        self.layer_norm(&format!("{from}/layer_norm"), &format!("{to}.final_layer_norm"))
    }
}

/// Every tensor candle's `Whisper::load` asks for, keyed by its (Hugging Face style) name.
pub fn candle_tensors(model: &Ct2Model, config: &Config) -> Result<HashMap<String, Tensor>, ModelError> {
    // candle ties the output projection to the token embedding; accept only a tied model.
    if model.alias_target("decoder/projection/weight") != Some("decoder/embeddings/weight") {
        return Err(ModelError::load(MODEL, "decoder projection is not tied to the token embedding"));
    }
    let mut m = Mapper { model, d_model: config.d_model, out: HashMap::new() };

    m.linear("encoder/conv1", "model.encoder.conv1")?;
    m.linear("encoder/conv2", "model.encoder.conv2")?;
    for i in 0..config.encoder_layers {
        let (from, to) = (format!("encoder/layer_{i}"), format!("model.encoder.layers.{i}"));
        m.self_attention(&format!("{from}/self_attention"), &format!("{to}.self_attn"))?;
        m.layer_norm(&format!("{from}/self_attention/layer_norm"), &format!("{to}.self_attn_layer_norm"))?;
        m.ffn(&format!("{from}/ffn"), &to)?;
    }
    m.layer_norm("encoder/layer_norm", "model.encoder.layer_norm")?;

    m.copy("decoder/embeddings/weight", "model.decoder.embed_tokens.weight".into())?;
    m.copy("decoder/position_encodings/encodings", "model.decoder.embed_positions.weight".into())?;
    for i in 0..config.decoder_layers {
        let (from, to) = (format!("decoder/layer_{i}"), format!("model.decoder.layers.{i}"));
        m.self_attention(&format!("{from}/self_attention"), &format!("{to}.self_attn"))?;
        m.layer_norm(&format!("{from}/self_attention/layer_norm"), &format!("{to}.self_attn_layer_norm"))?;
        m.cross_attention(&format!("{from}/attention"), &format!("{to}.encoder_attn"))?;
        m.layer_norm(&format!("{from}/attention/layer_norm"), &format!("{to}.encoder_attn_layer_norm"))?;
        m.ffn(&format!("{from}/ffn"), &to)?;
    }
    m.layer_norm("decoder/layer_norm", "model.decoder.layer_norm")?;
    Ok(m.out)
}

/// Whisper's fixed sinusoidal encoder positions (what candle computes instead of loading them):
/// row `t` is `[sin(t·w_0..), cos(t·w_0..)]` with `w_i = 10000^(-i/(d/2-1))`.
pub fn sinusoids(length: usize, channels: usize) -> Vec<f32> {
    let half = channels / 2;
    let step = (10_000f64).ln() / (half.saturating_sub(1).max(1)) as f64;
    let mut out = vec![0f32; length * channels];
    for t in 0..length {
        for i in 0..half {
            let angle = t as f64 * (-(i as f64) * step).exp();
            out[t * channels + i] = angle.sin() as f32;
            out[t * channels + half + i] = angle.cos() as f32;
        }
    }
    out
}

/// Largest difference between the stored encoder positions and the sinusoids candle will use;
/// a large value means the model is not the Whisper architecture candle implements.
pub fn encoder_position_mismatch(model: &Ct2Model, config: &Config) -> Result<f32, ModelError> {
    let stored = model.tensor_f32("encoder/position_encodings/encodings")?;
    let stored: Vec<f32> =
        stored.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| candle_err("encoder positions", e))?;
    let expected = sinusoids(config.max_source_positions, config.d_model);
    if stored.len() != expected.len() {
        return Err(ModelError::load(MODEL, "encoder positions have an unexpected size"));
    }
    Ok(stored.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max))
}
