//! Where the local model files live, and the one ONNX Runtime every ONNX model shares.
//!
//! Weights are fetched ahead of time by `python3 models/fetch.py` into the models
//! directory; nothing here downloads. A missing file is an error that names the command.

use std::path::PathBuf;
use std::sync::OnceLock;

pub use fieldvox_formats::model::{FETCH_COMMAND, ModelError};

/// Paths of every local model file, relative to one models directory
/// (the `dest` entries of `models/manifest.toml`).
#[derive(Debug, Clone)]
pub struct ModelPaths {
    pub root: PathBuf,
}

impl ModelPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `$FIELDVOX_MODELS_DIR`, else `~/.cache/fieldvox/models` (where the fetch step puts them).
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("FIELDVOX_MODELS_DIR") {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".cache/fieldvox/models")
    }

    /// The path of `rel`, or [`ModelError::Missing`] if the fetch step has not put it there.
    pub fn file(&self, rel: &str) -> Result<PathBuf, ModelError> {
        let path = self.root.join(rel);
        if path.is_file() { Ok(path) } else { Err(ModelError::Missing { path }) }
    }

    pub fn onnxruntime(&self) -> Result<PathBuf, ModelError> {
        self.file("onnxruntime/libonnxruntime.so.1.31.1")
    }
    pub fn silero_vad(&self) -> Result<PathBuf, ModelError> {
        self.file("silero/silero_vad.onnx")
    }
    /// Directory holding `model.onnx` and the tokenizer files of all-MiniLM-L6-v2.
    pub fn minilm_dir(&self) -> Result<PathBuf, ModelError> {
        self.file("minilm/model.onnx")?;
        Ok(self.root.join("minilm"))
    }
    /// Directory `dir` holding a CTranslate2 Whisper (`whisper-tiny.en`, `whisper-base`).
    pub fn whisper_dir(&self, dir: &str) -> Result<PathBuf, ModelError> {
        self.file(&format!("{dir}/model.bin"))?;
        Ok(self.root.join(dir))
    }
    pub fn smollm2_gguf(&self) -> Result<PathBuf, ModelError> {
        self.file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    }
    /// The Piper voice (`.onnx`) and its config (`.onnx.json`).
    pub fn piper_voice(&self) -> Result<(PathBuf, PathBuf), ModelError> {
        Ok((self.file("piper/en_US-joe-medium.onnx")?, self.file("piper/en_US-joe-medium.onnx.json")?))
    }
}

static ORT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loaded once from the fetched shared library.
/// Every ONNX model (Silero, MiniLM, Piper) builds its session in it.
pub fn onnx_environment(paths: &ModelPaths) -> Result<&'static ort::environment::Environment, ModelError> {
    let lib = paths.onnxruntime()?;
    let env = ORT.get_or_init(|| {
        // fastembed reads this too; keep it on the same library.
        // SAFETY: set once, before any ONNX Runtime thread exists.
        unsafe { std::env::set_var("ORT_DYLIB_PATH", &lib) };
        ort::init_from(&lib)
            .map_err(|e| e.to_string())
            .and_then(|b| b.with_name("fieldvox").build().map_err(|e| e.to_string()))
    });
    env.as_ref().map_err(|e| ModelError::load("onnxruntime", e))
}

/// Loads ONNX Runtime if it is not loaded yet.
pub fn init_onnxruntime(paths: &ModelPaths) -> Result<(), ModelError> {
    onnx_environment(paths).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_model_names_the_fetch_command() {
        let paths = ModelPaths::new("/nonexistent/models");
        let err = paths.whisper_dir("whisper-tiny.en").unwrap_err();
        assert!(matches!(err, ModelError::Missing { .. }));
        let text = err.to_string();
        assert!(text.contains("whisper-tiny.en/model.bin") && text.contains(FETCH_COMMAND), "{text}");
    }
}
