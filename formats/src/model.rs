//! The error every model reader and engine reports.

use std::path::PathBuf;

/// The command that fetches every local model; quoted in errors.
pub const FETCH_COMMAND: &str = "python3 models/fetch.py";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file missing: {path} (run `{FETCH_COMMAND}` to fetch the local models)")]
    Missing { path: PathBuf },
    #[error("{model} failed to load: {reason}")]
    Load { model: &'static str, reason: String },
    #[error("{model} inference failed: {reason}")]
    Inference { model: &'static str, reason: String },
    #[error("invalid input for {model}: {reason}")]
    Input { model: &'static str, reason: String },
}

impl ModelError {
    pub fn load(model: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Load { model, reason: reason.to_string() }
    }
    pub fn inference(model: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Inference { model, reason: reason.to_string() }
    }
    pub fn input(model: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Input { model, reason: reason.to_string() }
    }
}
