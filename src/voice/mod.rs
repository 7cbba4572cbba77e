//! Speech in and out: voice activity, speech-to-text, text-to-speech.

pub mod endpoint;
pub mod input;
pub mod sentences;
pub mod stt;
pub mod tts;
pub mod vad;
