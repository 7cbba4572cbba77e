//! Text-to-speech engines.

pub mod openai;
pub mod piper;
