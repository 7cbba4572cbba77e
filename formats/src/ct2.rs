//! Reader for the CTranslate2 `model.bin` container (binary version 6).
//!
//! Layout, all integers little-endian:
//! `u32 version`, `string spec_name`, `u32 revision`, `u32 n_variables`, then per variable
//! `string name`, `u8 rank`, `u32 dims[rank]`, `u8 dtype`, `u32 n_bytes`, `n_bytes` of data;
//! then `u32 n_aliases` and per alias `string alias`, `string target`.
//! A string is `u16 len` (bytes including a trailing NUL), the UTF-8 bytes, then the NUL.
//! Data is written back to back with no alignment, so values are decoded with byte reads.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::model::ModelError;

const MODEL: &str = "whisper";

/// The only container version this reader understands.
pub const SUPPORTED_VERSION: u32 = 6;

/// Element types, numbered as CTranslate2's `DataType` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl Ct2Dtype {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named variable: its shape, type and where its bytes sit in the file buffer.
#[derive(Debug, Clone)]
pub struct Ct2Variable {
    pub shape: Vec<usize>,
    pub dtype: Ct2Dtype,
    bytes: Range<usize>,
}

/// A parsed `model.bin`: header fields plus every variable, with aliases resolved on lookup.
pub struct Ct2Model {
    pub version: u32,
    pub spec_name: String,
    pub revision: u32,
    data: Vec<u8>,
    variables: HashMap<String, Ct2Variable>,
    aliases: HashMap<String, String>,
}

impl std::fmt::Debug for Ct2Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ct2Model")
            .field("version", &self.version)
            .field("spec_name", &self.spec_name)
            .field("revision", &self.revision)
            .field("variables", &self.variables.len())
            .field("aliases", &self.aliases)
            .finish()
    }
}

/// Cursor over the file buffer; every read is bounds-checked so a truncated file is an error.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| ModelError::load(MODEL, format!("model.bin truncated at byte {}", self.pos)))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ModelError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, ModelError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self) -> Result<String, ModelError> {
        let len = usize::from(self.u16()?);
        let raw = self.take(len)?;
        // The stored length counts the trailing NUL.
        let text = raw
            .strip_suffix(&[0])
            .ok_or_else(|| ModelError::load(MODEL, format!("unterminated string before byte {}", self.pos)))?;
        String::from_utf8(text.to_vec())
            .map_err(|e| ModelError::load(MODEL, format!("non-UTF-8 name in model.bin: {e}")))
    }
}

impl Ct2Model {
    /// Reads and parses the whole file (one read; the weights are converted afterwards).
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing { path: path.to_path_buf() });
        }
        let data =
            std::fs::read(path).map_err(|e| ModelError::load(MODEL, format!("reading {}: {e}", path.display())))?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, ModelError> {
        let mut cur = Cursor { buf: &data, pos: 0 };
        let version = cur.u32()?;
        if version != SUPPORTED_VERSION {
            return Err(ModelError::load(
                MODEL,
                format!("CTranslate2 binary version {version} (only {SUPPORTED_VERSION} is supported)"),
            ));
        }
        let spec_name = cur.string()?;
        let revision = cur.u32()?;
        let count = cur.u32()?;
        let mut variables = HashMap::new();
        for _ in 0..count {
            let name = cur.string()?;
            let rank = cur.u8()?;
            let shape = (0..rank).map(|_| cur.u32().map(|d| d as usize)).collect::<Result<Vec<_>, _>>()?;
            let type_id = cur.u8()?;
            let dtype = Ct2Dtype::from_id(type_id)
                .ok_or_else(|| ModelError::load(MODEL, format!("{name}: unknown dtype id {type_id}")))?;
            let n_bytes = cur.u32()? as usize;
            // Checked: a hostile header can name dimensions whose product overflows, even
            // beside a zero dimension (tensor code multiplies them in any order).
            let nonzero = shape.iter().filter(|&&d| d != 0).try_fold(dtype.size(), |n, &d| n.checked_mul(d));
            let size = nonzero.map(|n| if shape.contains(&0) { 0 } else { n });
            if size != Some(n_bytes) {
                return Err(ModelError::load(
                    MODEL,
                    format!("{name}: {n_bytes} bytes do not match shape {shape:?} of {dtype:?}"),
                ));
            }
            let start = cur.pos;
            cur.take(n_bytes)?;
            variables.insert(name, Ct2Variable { shape, dtype, bytes: start..cur.pos });
        }
        let n_aliases = cur.u32()?;
        let mut aliases = HashMap::new();
        for _ in 0..n_aliases {
            let alias = cur.string()?;
            let target = cur.string()?;
            // An alias points at a stored variable and never hides one (so lookups are unambiguous).
            if variables.contains_key(&alias) || !variables.contains_key(&target) {
                return Err(ModelError::load(
                    MODEL,
                    format!("alias {alias:?} -> {target:?} does not name one variable"),
                ));
            }
            aliases.insert(alias, target);
        }
        if cur.pos != data.len() {
            return Err(ModelError::load(
                MODEL,
                format!("{} trailing bytes after the alias table", data.len() - cur.pos),
            ));
        }
        Ok(Self { version, spec_name, revision, data, variables, aliases })
    }

    /// Names of the stored variables (aliases excluded).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.variables.keys().map(String::as_str)
    }

    /// The variable an alias points to, if `name` is an alias.
    pub fn alias_target(&self, name: &str) -> Option<&str> {
        self.aliases.get(name).map(String::as_str)
    }

    /// A variable by name, following one level of aliasing (CTranslate2 never chains them).
    pub fn variable(&self, name: &str) -> Result<&Ct2Variable, ModelError> {
        let resolved = self.aliases.get(name).map_or(name, String::as_str);
        self.variables.get(resolved).ok_or_else(|| ModelError::load(MODEL, format!("model.bin has no variable {name}")))
    }

    fn bytes(&self, var: &Ct2Variable) -> &[u8] {
        &self.data[var.bytes.clone()]
    }

    /// An integer scalar (CTranslate2 stores options such as `num_heads` as 0-d tensors).
    pub fn scalar_int(&self, name: &str) -> Result<i64, ModelError> {
        let var = self.variable(name)?;
        if !var.shape.is_empty() {
            return Err(ModelError::load(MODEL, format!("{name} is not a scalar")));
        }
        let b = self.bytes(var);
        Ok(match var.dtype {
            Ct2Dtype::I8 => i64::from(b[0] as i8),
            Ct2Dtype::I16 => i64::from(i16::from_le_bytes([b[0], b[1]])),
            Ct2Dtype::I32 => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            other => {
                return Err(ModelError::load(MODEL, format!("{name} is {other:?}, not an integer")));
            }
        })
    }

    /// A floating-point variable widened to f32, as a CPU candle tensor of the stored shape.
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor, ModelError> {
        let var = self.variable(name)?;
        let dtype = match var.dtype {
            Ct2Dtype::F32 => DType::F32,
            Ct2Dtype::F16 => DType::F16,
            Ct2Dtype::Bf16 => DType::BF16,
            other => {
                // int8/int16 weights come with per-row scales (quantized models): not handled here.
                return Err(ModelError::load(
                    MODEL,
                    format!("{name} is {other:?}; quantized CTranslate2 models are not supported"),
                ));
            }
        };
        // candle copies the (unaligned, little-endian) bytes and widens them in optimised code.
        Tensor::from_raw_buffer(self.bytes(var), dtype, &var.shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| ModelError::load(MODEL, format!("{name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut out = ((s.len() + 1) as u16).to_le_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out.push(0);
        out
    }

    /// A container with one variable of `shape` (f32) holding `n_bytes` zero bytes.
    fn container(shape: &[u32], n_bytes: u32) -> Vec<u8> {
        let mut out = SUPPORTED_VERSION.to_le_bytes().to_vec();
        out.extend(string("WhisperSpec"));
        out.extend(1u32.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        out.extend(string("w"));
        out.push(shape.len() as u8);
        shape.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.push(0);
        out.extend(n_bytes.to_le_bytes());
        out.extend(std::iter::repeat_n(0, n_bytes as usize));
        out.extend(0u32.to_le_bytes());
        out
    }

    #[test]
    fn reads_a_variable_whose_size_matches_its_shape() {
        let model = Ct2Model::parse(container(&[2, 3], 24)).unwrap();
        assert_eq!(model.variable("w").unwrap().shape, vec![2, 3]);
        assert_eq!(model.tensor_f32("w").unwrap().dims(), &[2, 3]);
    }

    #[test]
    fn refuses_dimensions_whose_product_overflows() {
        // 2^32-1 to the fourth power, times 4 bytes, wraps to a small number in 64 bits
        // unless checked (found by fuzzing: a panic in debug builds).
        let shape = [u32::MAX; 4];
        let err = Ct2Model::parse(container(&shape, 4)).unwrap_err();
        assert!(err.to_string().contains("do not match shape"), "{err}");
        assert!(Ct2Model::parse(container(&[2, 3], 20)).is_err());
        // Zero elements, but dimensions that overflow when multiplied in another order.
        assert!(Ct2Model::parse(container(&[0, u32::MAX, u32::MAX, u32::MAX], 0)).is_err());
        assert_eq!(Ct2Model::parse(container(&[0, 3], 0)).unwrap().variable("w").unwrap().shape, vec![0, 3]);
    }

    #[test]
    fn aliases_must_name_a_stored_variable_and_not_hide_one() {
        let with_alias = |alias: &str, target: &str| {
            let mut bytes = container(&[1], 4);
            bytes.truncate(bytes.len() - 4);
            bytes.extend(1u32.to_le_bytes());
            bytes.extend(string(alias));
            bytes.extend(string(target));
            Ct2Model::parse(bytes)
        };
        assert_eq!(with_alias("v", "w").unwrap().variable("v").unwrap().shape, vec![1]);
        assert!(with_alias("v", "missing").is_err());
        assert!(with_alias("w", "w").is_err());
    }
}
