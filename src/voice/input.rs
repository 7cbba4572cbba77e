//! A session's incoming speech: converts the client's audio to 16 kHz, cuts it into VAD
//! windows and carries the VAD and endpointer state. Created on the first audio frame,
//! so a session that never talks holds none of it.

use super::endpoint::{Endpoint, EndpointConfig, Endpointer};
use super::vad::{SAMPLE_RATE, VadState, WINDOW};
use crate::audio::pcm::{PcmError, decode_pcm16};
use crate::audio::resample::Resampler;

pub struct VoiceInput {
    resampler: Resampler,
    /// Decoded samples of the current frame, at the client's rate (reused).
    scratch: Vec<f32>,
    /// 16 kHz samples not yet cut into a window.
    pending: Vec<f32>,
    pub vad: VadState,
    pub endpointer: Endpointer,
}

impl VoiceInput {
    pub fn new(input_rate: u32, config: EndpointConfig) -> Self {
        Self {
            resampler: Resampler::new(input_rate, SAMPLE_RATE),
            scratch: Vec::new(),
            pending: Vec::with_capacity(WINDOW * 2),
            vad: VadState::default(),
            endpointer: Endpointer::new(config),
        }
    }

    /// Adds a PCM16 frame at the client's rate, reusing one decode buffer.
    pub fn push_pcm16(&mut self, bytes: &[u8]) -> Result<(), PcmError> {
        self.scratch.clear();
        decode_pcm16(bytes, &mut self.scratch)?;
        self.resampler.process(&self.scratch, &mut self.pending);
        Ok(())
    }

    /// The next full 32 ms window, if one is buffered.
    pub fn next_window(&mut self) -> Option<[f32; WINDOW]> {
        if self.pending.len() < WINDOW {
            return None;
        }
        let mut window = [0.0; WINDOW];
        window.copy_from_slice(&self.pending[..WINDOW]);
        self.pending.drain(..WINDOW);
        Some(window)
    }

    /// Ends the utterance if the silence completes inside the window still filling.
    pub fn check_partial(&mut self) -> Option<Endpoint> {
        self.endpointer.check_partial(&self.pending)
    }

    pub fn clear(&mut self) {
        self.pending.clear();
        self.endpointer.clear();
        self.vad = VadState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_at_16k_from_any_rate() {
        let mut v = VoiceInput::new(48_000, EndpointConfig::default());
        let frame = [0x10u8, 0x02].repeat(480 * 3); // 30 ms at 48 kHz = 480 samples at 16 kHz
        v.push_pcm16(&frame).unwrap();
        assert!(v.next_window().is_none());
        v.push_pcm16(&frame).unwrap();
        assert!(v.next_window().is_some());
        assert!(v.next_window().is_none());
    }
}
