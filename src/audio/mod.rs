//! Audio plumbing: PCM16 conversion, sample-rate conversion, WAV files, test noise.

pub use fieldvox_formats::{pcm, resample};
pub mod noise;
pub mod wav;
