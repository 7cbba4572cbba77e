//! Whether speech heard while an answer plays is an interruption. Next to machinery, on
//! a speakerphone, most sound over an answer is not the user asking for something else:
//! a cough, "okay", the answer's own echo. So an interruption needs more evidence than a
//! turn start: enough speech, then enough transcribed words that are neither backchannels
//! nor the answer's own words coming back.

use serde::{Deserialize, Serialize};

use crate::rag::terms;

/// Profile `[interrupt]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InterruptConfig {
    /// Speech over an answer must last this long before it is transcribed at all.
    pub min_speech_ms: u64,
    /// Words needed that are not backchannels and not echoes of the answer.
    pub min_words: usize,
    /// Acknowledgements that never interrupt.
    pub backchannels: Vec<String>,
    /// While answer audio plays on a phone whose microphone hears it back, windows less
    /// than this (dB) above the measured echo never reach the VAD model.
    pub echo_margin_db: f32,
    /// The echo path's loss (dB; small = a loud speakerphone) assumed while the start of
    /// a session's first answer is being measured. Unset (the default): none assumed;
    /// speech over that first moment is checked against the echo once it is measured.
    pub assumed_echo_loss_db: Option<f32>,
}

impl Default for InterruptConfig {
    fn default() -> Self {
        let backchannels = [
            "okay", "ok", "uh-huh", "uhhuh", "uh", "huh", "um", "umm", "hmm", "mhm", "mm", "mm-hmm", "yeah", "yes",
            "yep", "right", "sure", "alright", "got", "it", "thanks", "thank", "you", "cool", "good", "great", "fine",
            "oh", "ah", "i", "see", "wow", "no", "so",
        ];
        Self {
            min_speech_ms: 400,
            min_words: 1,
            backchannels: backchannels.iter().map(|w| w.to_string()).collect(),
            echo_margin_db: 3.0,
            assumed_echo_loss_db: None,
        }
    }
}

/// What speech over an answer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The user wants something else: stop the answer.
    Interrupt,
    /// Too short to be anything but a noise (never transcribed).
    TooShort,
    /// No words (a cough, a bang).
    NoWords,
    /// Only acknowledgements ("okay", "uh-huh").
    Backchannel,
    /// Fewer new words than the profile's `min_words`.
    TooFewWords,
    /// Mostly the answer's own words: its echo on a speakerphone.
    Echo,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Interrupt => "interrupt",
            Verdict::TooShort => "too_short",
            Verdict::NoWords => "no_words",
            Verdict::Backchannel => "backchannel",
            Verdict::TooFewWords => "too_few_words",
            Verdict::Echo => "echo",
        }
    }
}

/// The spoken words of a transcript: sound annotations ("(coughing)", "[BLANK_AUDIO]",
/// "*sighs*") are not words.
fn words(text: &str) -> Vec<String> {
    let mut spoken = String::with_capacity(text.len());
    let mut depth = 0usize;
    let mut starred = false;
    for c in text.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            '*' => starred = !starred,
            _ if depth == 0 && !starred => spoken.push(c),
            _ => {}
        }
    }
    terms::spoken_words(&spoken)
}

/// A listed acknowledgement, or one run together from them with hyphens as Whisper
/// writes them ("uh-uh", "mm-hmm", "yeah-yeah").
fn is_backchannel(word: &str, backchannels: &[String]) -> bool {
    let listed = |w: &str| backchannels.iter().any(|b| b == w);
    listed(word) || word.split('-').all(|part| !part.is_empty() && listed(part))
}

/// Judges a transcript of speech heard over `answer` (the answer text said so far).
/// `echo_heard`: the microphone is known to hear the answer (see `echo`); only then can
/// the answer's own words be its echo — otherwise a question that reuses them ("what
/// torque for those head bolts?") is the user's.
pub fn judge(transcript: &str, answer: &str, config: &InterruptConfig, echo_heard: bool) -> Verdict {
    let heard = words(transcript);
    if heard.is_empty() {
        return Verdict::NoWords;
    }
    let answer = words(answer);
    let content: Vec<&String> = heard.iter().filter(|w| !is_backchannel(w, &config.backchannels)).collect();
    if content.is_empty() {
        return Verdict::Backchannel;
    }
    let new: Vec<&&String> = content.iter().filter(|w| !answer.contains(w)).collect();
    // A question spoken over the echo is mostly the user's own words; the echo alone is
    // mostly the answer's.
    if echo_heard && new.len() * 2 < content.len() {
        return Verdict::Echo;
    }
    if new.len() < config.min_words {
        return Verdict::TooFewWords;
    }
    Verdict::Interrupt
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "Replace the RTU-40 return air filters every 90 days. From the RTU-40 Service Manual, page 3.";

    #[test]
    fn only_new_words_interrupt() {
        let c = InterruptConfig::default();
        let judge = |t: &str, a: &str, c: &InterruptConfig| judge(t, a, c, true);
        assert_eq!(judge("Stop, what about the oil filter?", ANSWER, &c), Verdict::Interrupt);
        assert_eq!(judge("Stop.", ANSWER, &c), Verdict::Interrupt);
        assert_eq!(judge("Okay.", ANSWER, &c), Verdict::Backchannel);
        assert_eq!(judge("Uh-huh, yeah, right.", ANSWER, &c), Verdict::Backchannel);
        // Whisper's spellings of "uh-huh" over noise, heard on the backchannel benchmark.
        assert_eq!(judge("Uh-uh.", ANSWER, &c), Verdict::Backchannel);
        assert_eq!(judge("Uh, uh, right.", ANSWER, &c), Verdict::Backchannel);
        assert_eq!(judge("Mm-hmm-hmm.", ANSWER, &c), Verdict::Backchannel);
        assert_eq!(judge("Uh-stop.", ANSWER, &c), Verdict::Interrupt, "a hyphenated word with a real part");
        assert_eq!(judge("", ANSWER, &c), Verdict::NoWords);
        assert_eq!(judge(" (coughing) [BLANK_AUDIO] *sighs*", ANSWER, &c), Verdict::NoWords);
        assert_eq!(judge("the return air filters every ninety", ANSWER, &c), Verdict::Echo);
        assert_eq!(judge("filters every 90 days from the manual", ANSWER, &c), Verdict::Echo);
        let strict = InterruptConfig { min_words: 3, ..InterruptConfig::default() };
        assert_eq!(judge("Stop.", ANSWER, &strict), Verdict::TooFewWords);
        assert_eq!(judge("Stop, what about the oil", ANSWER, &strict), Verdict::Interrupt);
    }

    #[test]
    fn without_an_echo_the_answers_words_are_the_users() {
        let c = InterruptConfig::default();
        let question = "What size are the RTU-40 return air filters?";
        assert_eq!(judge(question, ANSWER, &c, true), Verdict::Echo);
        assert_eq!(judge(question, ANSWER, &c, false), Verdict::Interrupt);
        assert_eq!(judge("okay", ANSWER, &c, false), Verdict::Backchannel);
    }
}
