//! Expands the GGUF's quantized weights to f32 before the model is built.
//!
//! candle's quantized CPU matmul rounds every activation to 8 bits, and Q4_1 (the
//! SmolLM2 file's type) has no SIMD kernel on x86. For a 135M model that rounding
//! is enough to flip greedy choices (checked against a float reference: "The
//! capital of France is Paris." became "L'Étoile, ..."), while f32 weights cost
//! only ~650 MB and make the prompt pass several times faster. The values are the
//! file's own dequantized weights, so nothing is lost.

use std::io::Cursor;

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};

use crate::models::ModelError;

const MODEL: &str = "smollm2";

/// Room for the header, metadata (vocabulary and merges) and alignment padding.
const METADATA_SLACK: usize = 8 << 20;

/// The GGUF rewritten in memory with f32 tensors, positioned to be read again;
/// `None` when it holds no quantized tensor.
pub fn dense_gguf<R: std::io::Read + std::io::Seek>(
    content: &gguf_file::Content,
    reader: &mut R,
) -> Result<Option<Cursor<Vec<u8>>>, ModelError> {
    let is_quantized = |dtype: GgmlDType| dtype != GgmlDType::F32;
    if !content.tensor_infos.values().any(|info| is_quantized(info.ggml_dtype)) {
        return Ok(None);
    }
    let device = Device::Cpu;
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for (name, info) in &content.tensor_infos {
        let tensor = content.tensor(reader, name, &device).map_err(|e| ModelError::load(MODEL, e))?;
        let tensor = if is_quantized(info.ggml_dtype) {
            let dense = tensor.dequantize(&device).map_err(|e| ModelError::load(MODEL, e))?;
            QTensor::quantize(&dense, GgmlDType::F32).map_err(|e| ModelError::load(MODEL, e))?
        } else {
            tensor
        };
        tensors.push((name.as_str(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    // Sized up front: growing a several-hundred-MB buffer by doubling copies it repeatedly.
    let tensor_bytes: usize = tensor_refs.iter().map(|(_, t)| t.storage_size_in_bytes()).sum();
    let mut out = Cursor::new(Vec::with_capacity(tensor_bytes + METADATA_SLACK));
    gguf_file::write(&mut out, &metadata, &tensor_refs).map_err(|e| ModelError::load(MODEL, e))?;
    out.set_position(0);
    Ok(Some(out))
}
