//! Speech-to-text engines.

pub mod openai;
pub mod whisper;
