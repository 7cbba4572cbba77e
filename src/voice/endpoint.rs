//! Turn-taking: decides from per-window speech probabilities when the user started and
//! stopped speaking, and collects the utterance in between.
//!
//! Pure logic (no model, no I/O) so every threshold is testable with synthetic input.
//!
//! Silence is counted in samples, not windows: the quiet tail of the last speech window
//! counts, and the partial window that has arrived so far is checked on every frame. So
//! the utterance ends as soon as the configured silence has really passed, not up to two
//! VAD windows later.
//!
//! "Quiet" is relative to the session's own noise floor ([`Endpointer::gate_dbfs`]): next
//! to a running compressor, its steady hum is silence too — it neither reaches the model
//! nor holds a turn open.

use serde::{Deserialize, Serialize};

use super::vad::{SAMPLE_RATE, WINDOW};
use crate::audio::pcm::rms_dbfs;

/// Trailing silence an utterance keeps.
const TAIL_MS: u64 = 200;
/// Granularity of the energy check on window tails: 5 ms.
const QUIET_BLOCK: usize = SAMPLE_RATE as usize / 200;
/// The noise floor is the quietest window of the last ≈ 1.5 s outside speech.
const NOISE_WINDOWS: usize = 47;

/// Thresholds from the pipeline profile's `[vad]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    /// Silero probability at or above which a window is speech.
    pub threshold: f32,
    /// Probability below which a window counts as silence once speaking (hysteresis).
    pub release_threshold: f32,
    /// Windows quieter than the gate are silence without asking the model. The gate sits
    /// `noise_margin_db` above the session's noise floor, but never below this (dBFS;
    /// quiet rooms) ...
    pub energy_gate_dbfs: f32,
    /// ... nor above this, so loud noise never gates speech out.
    pub max_gate_dbfs: f32,
    /// How far above the noise floor the gate sits.
    pub noise_margin_db: f32,
    /// Speech must last this long before `speech_started` (ignores clicks and coughs).
    pub min_speech_ms: u64,
    /// Silence this long after speech ends the utterance.
    pub end_of_speech_ms: u64,
    /// Audio kept from before speech was detected, so first syllables are not lost.
    pub pre_roll_ms: u64,
    /// An utterance is cut here even if the user keeps talking.
    pub max_utterance_ms: u64,
    /// After this much silence the utterance so far is offered for speculative
    /// transcription (`Endpoint::Paused`), so recognition overlaps the rest of the
    /// silence window. 0 turns it off. At least 200 ms, the tail an utterance keeps.
    pub speculate_after_ms: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            release_threshold: 0.35,
            energy_gate_dbfs: -50.0,
            max_gate_dbfs: -30.0,
            noise_margin_db: 10.0,
            min_speech_ms: 160,
            end_of_speech_ms: 480,
            pre_roll_ms: 256,
            max_utterance_ms: 15_000,
            speculate_after_ms: 200,
        }
    }
}

pub const WINDOW_MS: u64 = (WINDOW as u64 * 1000) / SAMPLE_RATE as u64;

#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    SpeechStarted {
        audio_start_ms: u64,
    },
    /// The user paused: `utterance` is what `SpeechStopped` will carry if they stay silent.
    Paused {
        utterance: Vec<f32>,
    },
    SpeechStopped {
        audio_end_ms: u64,
        utterance: Vec<f32>,
    },
}

/// Levels (dBFS) of the recent windows heard outside speech; steady noise is their minimum.
#[derive(Debug)]
struct NoiseFloor {
    levels: [f32; NOISE_WINDOWS],
    next: usize,
    filled: usize,
}

impl NoiseFloor {
    fn new() -> Self {
        Self { levels: [0.0; NOISE_WINDOWS], next: 0, filled: 0 }
    }

    fn observe(&mut self, level_dbfs: f32) {
        self.levels[self.next] = level_dbfs;
        self.next = (self.next + 1) % NOISE_WINDOWS;
        self.filled = (self.filled + 1).min(NOISE_WINDOWS);
    }

    /// Until the ring has wrapped, its first `filled` slots are the ones written.
    fn floor(&self) -> Option<f32> {
        self.levels[..self.filled].iter().copied().reduce(f32::min)
    }
}

#[derive(Debug)]
pub struct Endpointer {
    config: EndpointConfig,
    noise: NoiseFloor,
    /// The current energy gate (dBFS), from `noise` and the config.
    gate_dbfs: f32,
    /// While an answer plays on a speakerphone its echo reaches the microphone: the gate
    /// is raised to at least this (dBFS), set by the session from the outgoing level.
    echo_gate_dbfs: Option<f32>,
    /// Milliseconds of audio seen so far in this stream.
    elapsed_ms: u64,
    speaking: bool,
    /// Recent audio while not speaking: pre-roll plus the speech candidate.
    recent: Vec<f32>,
    speech_windows: u64,
    /// Silence since the last speech, in samples.
    silence: usize,
    /// Whether this pause was already offered for speculation.
    paused: bool,
    utterance: Vec<f32>,
    /// Samples of pre-roll at the start of `utterance` (heard before speech was detected).
    pre_roll_len: usize,
}

impl Endpointer {
    pub fn new(config: EndpointConfig) -> Self {
        Self {
            gate_dbfs: config.energy_gate_dbfs,
            echo_gate_dbfs: None,
            config,
            noise: NoiseFloor::new(),
            elapsed_ms: 0,
            speaking: false,
            recent: Vec::new(),
            speech_windows: 0,
            silence: 0,
            paused: false,
            utterance: Vec::new(),
            pre_roll_len: 0,
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Windows quieter than this (dBFS) are silence: the caller need not ask the model.
    pub fn gate_dbfs(&self) -> f32 {
        self.echo_gate_dbfs.map_or(self.gate_dbfs, |echo| echo.max(self.gate_dbfs))
    }

    /// The session's noise floor (dBFS): the quietest recent window outside speech.
    pub fn noise_floor_dbfs(&self) -> f32 {
        self.noise.floor().unwrap_or(self.config.energy_gate_dbfs - self.config.noise_margin_db)
    }

    /// Raises the gate to `gate_dbfs` while answer audio may be echoing back (`None` when
    /// nothing plays).
    pub fn set_echo_gate(&mut self, gate_dbfs: Option<f32>) {
        self.echo_gate_dbfs = gate_dbfs;
    }

    /// Milliseconds of speech in the current utterance so far (0 when not speaking).
    pub fn speech_ms(&self) -> u64 {
        if !self.speaking {
            return 0;
        }
        samples_to_ms(self.utterance.len().saturating_sub(self.silence + self.pre_roll_len))
    }

    /// The current utterance so far, if the user is speaking.
    pub fn utterance_so_far(&self) -> Option<Vec<f32>> {
        self.speaking.then(|| self.trimmed())
    }

    /// Called once per window with its level, before [`push`](Self::push): whether the
    /// window may be speech (is at or above the gate, so worth asking the model). Outside
    /// speech and echo the level also feeds the noise floor (a long utterance, or an
    /// answer's echo, must not raise it).
    pub fn may_be_speech(&mut self, level_dbfs: f32) -> bool {
        let above = level_dbfs >= self.gate_dbfs();
        if !self.speaking && self.echo_gate_dbfs.is_none() {
            self.noise.observe(level_dbfs);
            if let Some(floor) = self.noise.floor() {
                let c = &self.config;
                self.gate_dbfs = (floor + c.noise_margin_db).min(c.max_gate_dbfs).max(c.energy_gate_dbfs);
            }
        }
        above
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
            self.silence = 0;
            self.utterance = std::mem::take(&mut self.recent);
            self.pre_roll_len = self.utterance.len().saturating_sub(self.speech_windows as usize * WINDOW);
            let start = self.elapsed_ms.saturating_sub(self.speech_windows * WINDOW_MS);
            return Some(Endpoint::SpeechStarted { audio_start_ms: start });
        }
        None
    }

    fn push_speaking(&mut self, window: &[f32], prob: f32) -> Option<Endpoint> {
        self.utterance.extend_from_slice(window);
        self.silence = if prob < self.config.release_threshold {
            self.silence + window.len()
        } else {
            // Speech, but it may have stopped partway through the window.
            quiet_tail(window, self.gate_dbfs())
        };
        let too_long = samples_to_ms(self.utterance.len()) >= self.config.max_utterance_ms;
        if self.silence >= ms_to_samples(self.config.end_of_speech_ms) || too_long {
            return Some(self.finish(0));
        }
        if self.silence < window.len() {
            self.paused = false; // speech again: a later pause is a new one
        }
        let speculate = self.config.speculate_after_ms.max(TAIL_MS);
        if self.config.speculate_after_ms > 0 && !self.paused && self.silence >= ms_to_samples(speculate) {
            self.paused = true;
            return Some(Endpoint::Paused { utterance: self.trimmed() });
        }
        None
    }

    /// Checks the start of the next window (`partial`, fewer than a window's samples):
    /// if it is all quiet and completes the silence, the utterance ends now rather than
    /// when the window is full.
    pub fn check_partial(&mut self, partial: &[f32]) -> Option<Endpoint> {
        if !self.speaking || partial.is_empty() {
            return None;
        }
        let quiet = quiet_tail(partial, self.gate_dbfs());
        if quiet == partial.len() && self.silence + quiet >= ms_to_samples(self.config.end_of_speech_ms) {
            // The partial samples stay with the input for their window; they are not counted twice.
            return Some(self.finish(samples_to_ms(partial.len())));
        }
        None
    }

    /// Ends the utterance now (push-to-talk commit). `None` if nothing was said.
    pub fn commit(&mut self) -> Option<Endpoint> {
        if self.speaking { Some(self.finish(0)) } else { None }
    }

    /// Drops everything buffered (`input_audio_buffer.clear`).
    pub fn clear(&mut self) {
        self.speaking = false;
        self.recent = Vec::new();
        self.utterance = Vec::new();
        self.speech_windows = 0;
        self.silence = 0;
        self.paused = false;
    }

    /// The utterance with at most `TAIL_MS` of its trailing silence: enough for the
    /// recogniser, less to decode, and the same whether cut now or later in the pause.
    fn trimmed(&self) -> Vec<f32> {
        let trailing = self.silence.min(self.utterance.len());
        let keep_tail = ms_to_samples(TAIL_MS).min(trailing);
        self.utterance[..self.utterance.len() - trailing + keep_tail].to_vec()
    }

    /// `extra_ms`: audio seen beyond the last full window.
    fn finish(&mut self, extra_ms: u64) -> Endpoint {
        let utterance = self.trimmed();
        self.clear();
        Endpoint::SpeechStopped { audio_end_ms: self.elapsed_ms + extra_ms, utterance }
    }
}

/// Samples at the end of `samples` whose 10 ms blocks (aligned to the end) are below `gate_dbfs`.
fn quiet_tail(samples: &[f32], gate_dbfs: f32) -> usize {
    let mut quiet = 0;
    for block in samples.rchunks(QUIET_BLOCK) {
        if rms_dbfs(block) >= gate_dbfs {
            break;
        }
        quiet += block.len();
    }
    quiet
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

    /// Start and stop events (pauses are checked separately).
    fn run(e: &mut Endpointer, probs: &[f32]) -> Vec<Endpoint> {
        probs
            .iter()
            .enumerate()
            .filter_map(|(i, &p)| e.push(&[i as f32; WINDOW], p))
            .filter(|ev| !matches!(ev, Endpoint::Paused { .. }))
            .collect()
    }

    #[test]
    fn a_pause_offers_exactly_the_utterance_that_stopping_gives() {
        let mut e = Endpointer::new(EndpointConfig::default());
        let mut events = Vec::new();
        for (i, p) in [vec![0.9; 10], vec![0.0; 20]].concat().into_iter().enumerate() {
            events.extend(e.push(&[i as f32 + 1.0; WINDOW], p));
        }
        let paused: Vec<_> = events.iter().filter(|e| matches!(e, Endpoint::Paused { .. })).collect();
        assert_eq!(paused.len(), 1, "one offer per pause: {}", events.len());
        let (Endpoint::Paused { utterance: early }, Some(Endpoint::SpeechStopped { utterance: last, .. })) =
            (paused[0], events.last())
        else {
            panic!()
        };
        assert_eq!(early, last, "speculation is valid when the user stays silent");

        // Speech after the pause: the next pause is offered again.
        let mut e = Endpointer::new(EndpointConfig::default());
        let probs = [vec![0.9; 10], vec![0.0; 8], vec![0.9; 5], vec![0.0; 8]].concat();
        let pauses = probs
            .iter()
            .filter_map(|&p| e.push(&[0.5; WINDOW], p))
            .filter(|ev| matches!(ev, Endpoint::Paused { .. }))
            .count();
        assert_eq!(pauses, 2);
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
    fn silence_is_counted_in_samples() {
        let mut e = Endpointer::new(EndpointConfig::default());
        let loud = [0.5f32; WINDOW];
        let mut half_quiet = [0.5f32; WINDOW];
        half_quiet[WINDOW - 320..].fill(0.0); // speech stops 20 ms before the window ends
        for _ in 0..10 {
            e.push(&loud, 0.9);
        }
        assert!(e.push(&half_quiet, 0.9).is_none());
        // 480 ms = 7680 samples: 320 from the speech window + 14 silent windows = 7488 ...
        for _ in 0..14 {
            assert!(!matches!(e.push(&[0.0; WINDOW], 0.0), Some(Endpoint::SpeechStopped { .. })));
        }
        // ... so 192 more quiet samples complete it, before the 15th window is full.
        assert!(e.check_partial(&[0.0; 100]).is_none(), "not enough yet");
        assert!(e.check_partial(&[0.3; 200]).is_none(), "not quiet");
        let Some(Endpoint::SpeechStopped { utterance, .. }) = e.check_partial(&[0.0; 200]) else { panic!() };
        // 11 windows of speech minus its 320 quiet samples, plus 200 ms of tail.
        assert_eq!(utterance.len(), 11 * WINDOW - 320 + ms_to_samples(200));
        assert!(e.check_partial(&[0.0; 200]).is_none(), "only once");
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

    /// White noise at `dbfs` RMS, deterministic (xorshift).
    fn noise(dbfs: f32, samples: usize, mut seed: u32) -> Vec<f32> {
        let amplitude = 10f32.powf(dbfs / 20.0) * 3f32.sqrt(); // uniform in ±a has RMS a/√3
        (0..samples)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed as f32 / u32::MAX as f32 * 2.0 - 1.0) * amplitude
            })
            .collect()
    }

    /// A 300 Hz tone at about -20 dBFS, standing in for speech.
    fn voice(samples: usize) -> Vec<f32> {
        (0..samples).map(|i| 0.14 * (i as f32 * 300.0 * std::f32::consts::TAU / SAMPLE_RATE as f32).sin()).collect()
    }

    /// Feeds `audio` window by window as a session does: a window under the gate is
    /// silence without the model; the others get `model`'s probability. Returns each
    /// start or stop event with the number of windows fed when it came.
    fn feed(e: &mut Endpointer, audio: &[f32], model: impl Fn(&[f32]) -> f32) -> Vec<(usize, Endpoint)> {
        let mut out = Vec::new();
        for (i, window) in audio.chunks_exact(WINDOW).enumerate() {
            let prob = if e.may_be_speech(rms_dbfs(window)) { model(window) } else { 0.0 };
            if let Some(ev) = e.push(window, prob).filter(|ev| !matches!(ev, Endpoint::Paused { .. })) {
                out.push((i + 1, ev));
            }
        }
        out
    }

    /// A stand-in for the VAD model: sure about the tone, unsure (0.4, above the release
    /// threshold) about noise, as Silero can be about a compressor's hum.
    fn unsure_about_noise(window: &[f32]) -> f32 {
        if rms_dbfs(window) > -30.0 { 0.9 } else { 0.4 }
    }

    #[test]
    fn steady_noise_neither_reaches_the_model_nor_holds_a_turn_open() {
        let second = SAMPLE_RATE as usize;
        let question = |background: &dyn Fn(usize, u32) -> Vec<f32>| {
            let mut audio = background(2 * second, 1);
            let speech: Vec<f32> = voice(second).iter().zip(background(second, 2)).map(|(v, n)| v + n).collect();
            audio.extend(speech);
            audio.extend(background(2 * second, 3));
            audio
        };
        let silent = |n: usize, _: u32| vec![0.0; n];
        let hum = |n: usize, seed: u32| noise(-45.0, n, seed);

        let mut quiet_room = Endpointer::new(EndpointConfig::default());
        let quiet = feed(&mut quiet_room, &question(&silent), unsure_about_noise);
        let mut field = Endpointer::new(EndpointConfig::default());
        let noisy = feed(&mut field, &question(&hum), unsure_about_noise);
        assert!(field.gate_dbfs() > -40.0, "the gate rose above the hum: {}", field.gate_dbfs());

        // One utterance each, starting and ending at the same window.
        assert_eq!(quiet.len(), 2, "{quiet:?}");
        assert_eq!(noisy.len(), 2, "{noisy:?}");
        assert_eq!(quiet[0].0, noisy[0].0, "speech starts as in silence");
        let (Endpoint::SpeechStopped { audio_end_ms: q, .. }, Endpoint::SpeechStopped { audio_end_ms: n, .. }) =
            (&quiet[1].1, &noisy[1].1)
        else {
            panic!("{quiet:?} {noisy:?}")
        };
        assert!(n.abs_diff(*q) < 20, "the hum delays the end of speech: {n} ms vs {q} ms");

        // With the fixed -50 dBFS gate of before, the hum reaches the model and the turn
        // never ends while it runs.
        let fixed = EndpointConfig { max_gate_dbfs: -50.0, ..EndpointConfig::default() };
        let before = feed(&mut Endpointer::new(fixed), &question(&hum), unsure_about_noise);
        assert_eq!(before.len(), 1, "{before:?}");
    }

    #[test]
    fn the_gate_follows_the_noise_and_never_gates_speech_out() {
        let second = SAMPLE_RATE as usize;
        let mut e = Endpointer::new(EndpointConfig::default());
        assert_eq!(e.gate_dbfs(), -50.0);
        feed(&mut e, &noise(-45.0, 2 * second, 7), |_| 0.0);
        let hum_gate = e.gate_dbfs();
        assert!((-38.0..=-34.0).contains(&hum_gate), "{hum_gate}");
        // A long answer-length utterance does not raise the floor.
        feed(&mut e, &voice(5 * second), |_| 0.9);
        assert!(e.is_speaking());
        assert_eq!(e.gate_dbfs(), hum_gate);
        // The machine stops: within 1.5 s of quiet the gate is back down.
        let mut e = Endpointer::new(EndpointConfig::default());
        feed(&mut e, &noise(-45.0, 2 * second, 8), |_| 0.0);
        feed(&mut e, &vec![0.0; 2 * second], |_| 0.0);
        assert_eq!(e.gate_dbfs(), -50.0);
        // Loud noise: the gate stops at max_gate_dbfs, under speech.
        feed(&mut e, &noise(-25.0, 2 * second, 9), |_| 0.0);
        assert_eq!(e.gate_dbfs(), -30.0);
    }
}
