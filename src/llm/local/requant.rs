//! Re-encodes GGUF weights whose quantization has no SIMD kernel in candle.
//!
//! candle's CPU matmul for Q4_1 (the SmolLM2 file's type) is scalar on x86, which
//! makes a 135M model crawl; Q8_0 has AVX2/VNNI kernels. Converting once at load
//! costs a fraction of a second and a little memory (Q8_0 holds Q4_1's 16 levels
//! per block almost exactly), so answers stay the same in substance.

use std::io::Cursor;

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};

use crate::models::ModelError;

const MODEL: &str = "smollm2";

/// Quantizations without a fast CPU kernel in candle, and the one they become.
const SLOW: [GgmlDType; 3] = [GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1];
const FAST: GgmlDType = GgmlDType::Q8_0;

/// The GGUF rewritten in memory with fast quantizations, ready to be read again;
/// `None` when every tensor is already fast.
pub fn to_fast_gguf<R: std::io::Read + std::io::Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
) -> Result<Option<Cursor<Vec<u8>>>, ModelError> {
    if !content.tensor_infos.values().any(|info| SLOW.contains(&info.ggml_dtype)) {
        return Ok(None);
    }
    let device = Device::Cpu;
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    let mut converted = 0usize;
    for (name, info) in &content.tensor_infos {
        let tensor = content.tensor(reader, name, &device).map_err(|e| ModelError::load(MODEL, e))?;
        let tensor = if SLOW.contains(&info.ggml_dtype) {
            converted += 1;
            let dense = tensor.dequantize(&device).map_err(|e| ModelError::load(MODEL, e))?;
            QTensor::quantize(&dense, FAST).map_err(|e| ModelError::load(MODEL, e))?
        } else {
            tensor
        };
        tensors.push((name.as_str(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensor_refs).map_err(|e| ModelError::load(MODEL, e))?;
    out.set_position(0);
    tracing::debug!(converted, to = ?FAST, "weights requantized for fast cpu kernels");
    Ok(Some(out))
}
