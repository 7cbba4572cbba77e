//! Turn-taking: decides from per-window speech probabilities when the user started and
//! stopped speaking, and collects the utterance in between.
//!
//! Pure logic (no model, no I/O) so every threshold is testable with synthetic input.

use serde::{Deserialize, Serialize};

use super::vad::{SAMPLE_RATE, WINDOW};

/// Thresholds from the pipeline profile's `[vad]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    /// Silero probability at or above which a window is speech.
    pub threshold: f32,
    /// Probability below which a window counts as silence once speaking (hysteresis).
    pub release_threshold: f32,
    /// Windows quieter than this (dBFS) are silence without asking the model.
    pub energy_gate_dbfs: f32,
    /// Speech must last this long before `speech_started` (ignores clicks and coughs).
    pub min_speech_ms: u64,
    /// Silence this long after speech ends the utterance.
    pub end_of_speech_ms: u64,
    /// Audio kept from before speech was detected, so first syllables are not lost.
    pub pre_roll_ms: u64,
    /// An utterance is cut here even if the user keeps talking.
    pub max_utterance_ms: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            release_threshold: 0.35,
            energy_gate_dbfs: -50.0,
            min_speech_ms: 160,
            end_of_speech_ms: 480,
            pre_roll_ms: 256,
            max_utterance_ms: 15_000,
        }
    }
}

pub const WINDOW_MS: u64 = (WINDOW as u64 * 1000) / SAMPLE_RATE as u64;

#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    SpeechStarted { audio_start_ms: u64 },
    SpeechStopped { audio_end_ms: u64, utterance: Vec<f32> },
}

#[derive(Debug)]
pub struct Endpointer {
    config: EndpointConfig,
    /// Milliseconds of audio seen so far in this stream.
    elapsed_ms: u64,
    speaking: bool,
    /// Recent audio while not speaking: pre-roll plus the speech candidate.
    recent: Vec<f32>,
    speech_windows: u64,
    silence_windows: u64,
    utterance: Vec<f32>,
}

impl Endpointer {
    pub fn new(config: EndpointConfig) -> Self {
        Self {
            config,
            elapsed_ms: 0,
            speaking: false,
            recent: Vec::new(),
            speech_windows: 0,
            silence_windows: 0,
            utterance: Vec::new(),
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Feeds one 32 ms window and its speech probability.
    pub fn push(&mut self, window: &[f32], prob: f32) -> Option<Endpoint> {
        self.elapsed_ms += WINDOW_MS;
        if self.speaking {
            return self.push_speaking(window, prob);
        }
        self.recent.extend_from_slice(window);
        if prob >= self.config.threshold {
            self.speech_windows += 1;
        } else {
            self.speech_windows = 0;
        }
        let keep = ms_to_samples(self.config.pre_roll_ms) + self.speech_windows as usize * WINDOW;
        if self.recent.len() > keep {
            let excess = self.recent.len() - keep;
            self.recent.drain(..excess);
        }
        if self.speech_windows * WINDOW_MS >= self.config.min_speech_ms.max(WINDOW_MS) {
            self.speaking = true;
            self.silence_windows = 0;
            self.utterance = std::mem::take(&mut self.recent);
            let start = self.elapsed_ms.saturating_sub(self.speech_windows * WINDOW_MS);
            return Some(Endpoint::SpeechStarted { audio_start_ms: start });
        }
        None
    }

    fn push_speaking(&mut self, window: &[f32], prob: f32) -> Option<Endpoint> {
        self.utterance.extend_from_slice(window);
        if prob < self.config.release_threshold {
            self.silence_windows += 1;
        } else {
            self.silence_windows = 0;
        }
        let ended = self.silence_windows * WINDOW_MS >= self.config.end_of_speech_ms;
        let too_long = samples_to_ms(self.utterance.len()) >= self.config.max_utterance_ms;
        if ended || too_long {
            if ended {
                // Keep ~200 ms of the trailing silence: enough for the recogniser, less to decode.
                let trailing = self.silence_windows as usize * WINDOW;
                let keep_tail = ms_to_samples(200).min(trailing);
                let new_len = self.utterance.len() - trailing + keep_tail;
                self.utterance.truncate(new_len);
            }
            return Some(self.finish());
        }
        None
    }

    /// Ends the utterance now (push-to-talk commit). `None` if nothing was said.
    pub fn commit(&mut self) -> Option<Endpoint> {
        if self.speaking { Some(self.finish()) } else { None }
    }

    /// Drops everything buffered (`input_audio_buffer.clear`).
    pub fn clear(&mut self) {
        self.speaking = false;
        self.recent = Vec::new();
        self.utterance = Vec::new();
        self.speech_windows = 0;
        self.silence_windows = 0;
    }

    fn finish(&mut self) -> Endpoint {
        let utterance = std::mem::take(&mut self.utterance);
        self.clear();
        Endpoint::SpeechStopped { audio_end_ms: self.elapsed_ms, utterance }
    }
}

fn ms_to_samples(ms: u64) -> usize {
    (ms * SAMPLE_RATE as u64 / 1000) as usize
}

fn samples_to_ms(samples: usize) -> u64 {
    samples as u64 * 1000 / SAMPLE_RATE as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(e: &mut Endpointer, probs: &[f32]) -> Vec<Endpoint> {
        probs.iter().enumerate().filter_map(|(i, &p)| e.push(&[i as f32; WINDOW], p)).collect()
    }

    #[test]
    fn detects_an_utterance_with_pre_roll() {
        let mut e = Endpointer::new(EndpointConfig::default());
        // 10 silent windows, 20 speech, 20 silent.
        let probs: Vec<f32> = [vec![0.0; 10], vec![0.9; 20], vec![0.0; 20]].concat();
        let events = run(&mut e, &probs);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[0], Endpoint::SpeechStarted { audio_start_ms: 10 * WINDOW_MS });
        let Endpoint::SpeechStopped { utterance, audio_end_ms } = &events[1] else { panic!() };
        // end_of_speech 480 ms = 15 windows of silence after speech.
        assert_eq!(*audio_end_ms, (30 + 15) * WINDOW_MS);
        // Pre-roll windows 2..10 are kept, so the first sample is from window 2.
        assert_eq!(utterance[0], 2.0);
        // 8 pre-roll + 20 speech + 200 ms (6 windows) of tail.
        assert_eq!(utterance.len(), (8 + 20) * WINDOW + ms_to_samples(200));
        assert!(!e.is_speaking());
    }

    #[test]
    fn ignores_short_blips_and_bridges_short_pauses() {
        let mut e = Endpointer::new(EndpointConfig::default());
        assert!(run(&mut e, &[0.0, 0.9, 0.9, 0.0, 0.9, 0.0]).is_empty(), "a 64 ms blip is not speech");
        // Speech, a 256 ms pause (8 windows), more speech, then the end.
        let probs: Vec<f32> = [vec![0.9; 10], vec![0.1; 8], vec![0.9; 10], vec![0.0; 16]].concat();
        let events = run(&mut e, &probs);
        assert_eq!(events.len(), 2, "one utterance despite the pause: {events:?}");
    }

    #[test]
    fn cuts_at_max_length_and_commits_on_demand() {
        let config = EndpointConfig { max_utterance_ms: 1000, ..Default::default() };
        let mut e = Endpointer::new(config);
        let events = run(&mut e, &[0.9; 40]);
        let Some(Endpoint::SpeechStopped { utterance, .. }) = events.get(1) else { panic!("{events:?}") };
        assert_eq!(samples_to_ms(utterance.len()), 1024, "cut at the first window past 1 s");
        // Talking on starts a new utterance.
        assert!(matches!(events.get(2), Some(Endpoint::SpeechStarted { .. })));
        let mut e = Endpointer::new(EndpointConfig::default());
        assert!(e.commit().is_none());
        run(&mut e, &[0.9; 10]);
        assert!(matches!(e.commit(), Some(Endpoint::SpeechStopped { .. })));
    }
}
