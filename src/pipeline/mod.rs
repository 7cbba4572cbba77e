//! Pipeline profiles and the voice turn they drive.
//!
//! A profile (`pipelines/<name>.toml`) picks the STT, LLM and TTS providers, the system
//! prompt, turn-taking thresholds and retrieval depth. Engines are built once at start-up
//! and shared: two profiles that both use Whisper share one Whisper pool.

pub mod cancel;
pub mod engines;
pub mod followup;
pub mod profile;
pub mod providers;
pub mod speculation;
pub mod turn;

pub use engines::{Pipeline, Pipelines};
pub use profile::Profile;
