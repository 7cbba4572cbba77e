//! A session's incoming speech: converts the client's audio to 16 kHz, cuts it into VAD
//! windows and carries the VAD and endpointer state. Created on the first audio frame,
//! so a session that never talks holds none of it.

use super::endpoint::{Endpoint, EndpointConfig, Endpointer};
use super::vad::{SAMPLE_RATE, VadState, WINDOW};
use crate::audio::pcm::{PcmError, decode_pcm16, rms_dbfs};
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

    /// Adds decoded samples at the client's rate (an Opus packet's).
    pub fn push_samples(&mut self, samples: &[f32]) {
        self.resampler.process(samples, &mut self.pending);
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

    /// Turn detection off: the audio since the last commit is kept whole, up to
    /// `max_utterance_ms`; past that the oldest is dropped (the end of a question
    /// matters more than its start).
    pub fn hold(&mut self) {
        let max = (self.endpointer.config().max_utterance_ms * SAMPLE_RATE as u64 / 1000) as usize;
        if self.pending.len() > max {
            let excess = self.pending.len() - max;
            self.pending.drain(..excess);
        }
    }

    /// Takes the held audio for a commit; `None` if no window of it is above the energy
    /// gate (nothing was said, and silence makes recognisers invent words).
    pub fn take_held(&mut self) -> Option<Vec<f32>> {
        let held = std::mem::take(&mut self.pending);
        let gate = self.endpointer.config().energy_gate_dbfs;
        held.chunks(WINDOW).any(|w| rms_dbfs(w) >= gate).then_some(held)
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

    #[test]
    fn held_audio_keeps_the_newest_and_silence_is_no_question() {
        let config = EndpointConfig { max_utterance_ms: 100, ..EndpointConfig::default() };
        let mut v = VoiceInput::new(16_000, config);
        v.push_pcm16(&[0u8; 3_200 * 2]).unwrap(); // 200 ms of digital silence
        v.hold();
        assert_eq!(v.pending.len(), 1_600, "held audio is capped at max_utterance_ms");
        assert!(v.take_held().is_none(), "silence is not a question");
        let loud: Vec<u8> = (0..1_600).flat_map(|i| if i % 2 == 0 { 8_000i16 } else { -8_000 }.to_le_bytes()).collect();
        v.push_pcm16(&loud).unwrap();
        v.hold();
        assert_eq!(v.take_held().map(|h| h.len()), Some(1_600));
        assert!(v.take_held().is_none(), "a commit empties the buffer");
    }
}
