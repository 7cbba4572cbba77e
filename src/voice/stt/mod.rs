//! Speech-to-text engines.

pub mod whisper;
pub mod openai;
