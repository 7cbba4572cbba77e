//! The formats fieldvox reads from outside: whatever a client, an identity provider, an
//! admin's upload or a model file may contain, these parsers turn into typed values or a
//! typed error, never a panic. Each has a fuzz target in `../fuzz`.

pub mod code;
pub mod ct2;
pub mod document;
pub mod gguf_tokenizer;
pub mod html;
pub mod model;
pub mod pcm;
pub mod protocol;
pub mod resample;
pub mod token;
