//! Audio plumbing: PCM16 conversion, sample-rate conversion, WAV files.

pub mod pcm;
pub mod resample;
pub mod wav;
