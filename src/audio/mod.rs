//! Audio plumbing: PCM16 conversion, sample-rate conversion, WAV files, recordings in any
//! common format, Opus, test noise.

pub use fieldvox_formats::{pcm, resample};
pub mod decode;
pub mod noise;
pub mod opus;
pub mod wav;
