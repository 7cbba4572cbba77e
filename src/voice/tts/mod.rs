//! Text-to-speech engines.

pub mod piper;
pub mod openai;
