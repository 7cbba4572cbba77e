//! Audio plumbing: PCM16 conversion, sample-rate conversion, WAV files.

pub use fieldvox_formats::{pcm, resample};
pub mod wav;
