//! Whisper's text decoder with a self-attention key/value cache, on the same weights candle's
//! model loads.
//!
//! candle's `TextDecoder` re-runs every token of the sequence at each step (it caches only the
//! cross-attention keys and values), so step `n` costs `n` tokens through every layer. Here
//! each step feeds one new token and attends to cached keys and values, which keeps a step
//! at roughly the cost of reading the weights once. Weights are stored transposed
//! (`in × out`, contiguous) because that is the layout the CPU matmul reads fastest.

use std::collections::HashMap;

use candle_core::{D, Result, Tensor};
use candle_transformers::models::whisper::Config;

/// `y = x · W + b` with `W` stored `in × out`.
struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn load(map: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        let weight = get(map, &format!("{prefix}.weight"))?;
        let bias = map.get(&format!("{prefix}.bias")).cloned();
        Ok(Self { weight_t: weight.t()?.contiguous()?, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight_t)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(map: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        Ok(Self { weight: get(map, &format!("{prefix}.weight"))?, bias: get(map, &format!("{prefix}.bias"))? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, 1e-5)
    }
}

fn get(map: &HashMap<String, Tensor>, name: &str) -> Result<Tensor> {
    map.get(name).cloned().ok_or_else(|| candle_core::Error::Msg(format!("missing decoder tensor {name}")))
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    out: Linear,
}

impl Attention {
    fn load(map: &HashMap<String, Tensor>, prefix: &str) -> Result<Self> {
        Ok(Self {
            query: Linear::load(map, &format!("{prefix}.q_proj"))?,
            key: Linear::load(map, &format!("{prefix}.k_proj"))?,
            value: Linear::load(map, &format!("{prefix}.v_proj"))?,
            out: Linear::load(map, &format!("{prefix}.out_proj"))?,
        })
    }
}

struct Block {
    attn_ln: LayerNorm,
    attn: Attention,
    cross_ln: LayerNorm,
    cross: Attention,
    mlp_ln: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// Per-window decoding state: cross-attention keys/values of the audio and the growing
/// self-attention cache, all shaped `(heads, positions, head_dim)`.
pub struct DecoderState {
    cross_kv: Vec<(Tensor, Tensor)>,
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// Tokens already fed (the position of the next one).
    position: usize,
}

pub struct TextDecoder {
    pub(super) token_embedding: Tensor,
    positions: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
    n_head: usize,
}

impl TextDecoder {
    /// Builds the decoder from the candle-named tensors (`model.decoder.*`).
    pub fn load(map: &HashMap<String, Tensor>, config: &Config) -> Result<Self> {
        let p = "model.decoder";
        let blocks = (0..config.decoder_layers)
            .map(|i| {
                let b = format!("{p}.layers.{i}");
                Ok(Block {
                    attn_ln: LayerNorm::load(map, &format!("{b}.self_attn_layer_norm"))?,
                    attn: Attention::load(map, &format!("{b}.self_attn"))?,
                    cross_ln: LayerNorm::load(map, &format!("{b}.encoder_attn_layer_norm"))?,
                    cross: Attention::load(map, &format!("{b}.encoder_attn"))?,
                    mlp_ln: LayerNorm::load(map, &format!("{b}.final_layer_norm"))?,
                    fc1: Linear::load(map, &format!("{b}.fc1"))?,
                    fc2: Linear::load(map, &format!("{b}.fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: get(map, &format!("{p}.embed_tokens.weight"))?,
            positions: get(map, &format!("{p}.embed_positions.weight"))?,
            blocks,
            ln: LayerNorm::load(map, &format!("{p}.layer_norm"))?,
            n_head: config.decoder_attention_heads,
        })
    }

    /// `(seq, d)` → `(heads, seq, head_dim)`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (seq, d) = x.dims2()?;
        x.reshape((seq, self.n_head, d / self.n_head))?.transpose(0, 1)?.contiguous()
    }

    /// Starts a window: projects the encoder output `(1, frames/2, d)` to each layer's
    /// cross-attention keys and values once.
    pub fn start(&self, audio_features: &Tensor) -> Result<DecoderState> {
        let xa = audio_features.squeeze(0)?;
        let cross_kv = self
            .blocks
            .iter()
            .map(|b| {
                Ok((self.split_heads(&b.cross.key.forward(&xa)?)?, self.split_heads(&b.cross.value.forward(&xa)?)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderState { cross_kv, self_kv: vec![None; self.blocks.len()], position: 0 })
    }

    /// Scaled dot-product attention of `q` over `k`/`v` (all `(heads, ·, head_dim)`), with a
    /// causal mask when several new queries arrive at once; returns `(seq, d)`.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, causal_offset: Option<usize>) -> Result<Tensor> {
        let (heads, seq, head_dim) = q.dims3()?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(offset) = causal_offset.filter(|_| seq > 1) {
            let keys = k.dim(1)?;
            let mask: Vec<f32> = (0..seq)
                .flat_map(|i| (0..keys).map(move |j| if j > offset + i { f32::NEG_INFINITY } else { 0.0 }))
                .collect();
            scores = scores.broadcast_add(&Tensor::from_vec(mask, (seq, keys), q.device())?)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        weights.matmul(v)?.transpose(0, 1)?.reshape((seq, heads * head_dim))
    }

    /// Feeds `tokens` at the next positions; returns their final hidden states `(seq, d)`.
    pub fn forward(&self, state: &mut DecoderState, tokens: &[u32]) -> Result<Tensor> {
        let offset = state.position;
        let ids = Tensor::new(tokens, self.token_embedding.device())?;
        let mut x = self.token_embedding.index_select(&ids, 0)?.broadcast_add(&self.positions.narrow(
            0,
            offset,
            tokens.len(),
        )?)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let h = block.attn_ln.forward(&x)?;
            let q = self.split_heads(&block.attn.query.forward(&h)?)?;
            let k = self.split_heads(&block.attn.key.forward(&h)?)?;
            let v = self.split_heads(&block.attn.value.forward(&h)?)?;
            let (k, v) = match state.self_kv[i].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                None => (k, v),
            };
            let a = self.attend(&q, &k, &v, Some(offset))?;
            state.self_kv[i] = Some((k, v));
            x = (x + block.attn.out.forward(&a)?)?;

            let h = block.cross_ln.forward(&x)?;
            let q = self.split_heads(&block.cross.query.forward(&h)?)?;
            let (ck, cv) = &state.cross_kv[i];
            let a = self.attend(&q, ck, cv, None)?;
            x = (x + block.cross.out.forward(&a)?)?;

            // Whisper's MLP uses the exact (erf) GELU.
            let h = block.fc1.forward(&block.mlp_ln.forward(&x)?)?.gelu_erf()?;
            x = (x + block.fc2.forward(&h)?)?;
        }
        state.position += tokens.len();
        self.ln.forward(&x)
    }

    /// Vocabulary logits of one hidden state row `(1, d)` (output projection tied to the
    /// token embedding).
    pub fn logits(&self, hidden: &Tensor) -> Result<Vec<f32>> {
        hidden.matmul(&self.token_embedding.t()?)?.squeeze(0)?.to_vec1::<f32>()
    }

    /// Row `index` of `hidden` as `(1, d)`.
    pub fn row(hidden: &Tensor, index: usize) -> Result<Tensor> {
        hidden.narrow(D::Minus2, index, 1)
    }
}
