//! Live microphones (`--scenario mic`): every session streams its microphone for the whole
//! run, as an open phone line does. What it hears is noise (`--noise-dbfs`,
//! `--noise-colour`), the spoken question once per `--interval-secs`, and with
//! `--echo-gain-db` the answer it is sent, played back into the microphone
//! `--echo-delay-ms` late, as a speakerphone without echo cancellation would.
//!
//! It counts what a live microphone must not cause: spurious turns (a turn the server
//! took that nothing the client said explains: noise or echo taken for speech, or a
//! question heard as two) and cleared answers. For every question it measures how long
//! past the question's true end the server decided the user had stopped, in stream time
//! (the server's `audio_end_ms` against the sample where the question ends: independent
//! of any scheduling) and on the client's clock, and the voice-to-voice latency as `talk`
//! does.
//!
//! With `--barge-in-after-ms` the user also interrupts. The phone plays each answer in
//! real time from its first frame (answer audio arrives faster than that); that long
//! after the first frame, if the answer is still playing, the microphone says
//! `--barge-in-text` over it (synthesized once, like the question, at the question's
//! level). One interruption per answer, never over an interruption's own answer, and only
//! when the microphone is free for it: not while a question is being said, nor ending
//! within a second of the next one. The server confirms an interruption once it has
//! transcribed enough words, and clears the answer (`output_audio_buffer.clear` with its
//! `response_id`); the interruption is then a turn of its own, put down to it as a
//! question's turn is to the question (never spurious). Per answer the barge-in is:
//! not attempted (the answer had finished playing or been cleared, or the microphone was
//! busy), confirmed (the clear came: timed from sending the interruption's first frame,
//! which is speech, to receiving it), or missed (the answer played out with no clear).
//! An interrupted answer the server reports `cancelled` still counts as answered.
//!
//! Frames go out on an absolute 20 ms schedule. A frame handed to the socket more than a
//! frame late means the server was not fed a real-time stream: audio bunched up, so
//! silences look shorter or longer than they were and latencies include the load
//! generator's own lag. A run with more than 0.1 % late frames is reported INVALID.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

pub use fieldvox::audio::noise::NoiseColour;
use fieldvox::audio::noise::{Noise, unit_rms};

use crate::session::{FRAME_MS, Plan, ServerTimings, SessionOutcome, Turn, Ws};
use crate::{Args, Speech};

/// Rate of the microphone and of the answer audio (`session::connect` asks for both).
const SAMPLE_RATE: u32 = 16_000;
/// Samples of the default 20 ms frame.
const FRAME_SAMPLES: usize = (SAMPLE_RATE as u64 * FRAME_MS / 1000) as usize;
/// Noise alone before a session's first question, so the server's noise floor settles.
const LEAD_IN: Duration = Duration::from_secs(2);
/// Only a question that ends this long before the hold does is asked (as in `talk`).
const ANSWER_ROOM: Duration = Duration::from_secs(3);
/// After the hold, how long a session keeps streaming for answers still owed.
const DRAIN: Duration = Duration::from_secs(20);
/// A frame handed to the socket more than this after its scheduled time is late.
pub const LATE_AFTER: Duration = Duration::from_millis(20);
/// A run with a larger fraction of late frames is invalid.
pub const MAX_LATE_FRACTION: f64 = 0.001;
/// A speech start this close to a question (stream ms) is the question being heard: a
/// little before its first sample (VAD windows do not align with frames), up to a while
/// after its last (a question ending on a quiet word is detected late).
const HEARD_BEFORE_MS: f64 = 100.0;
const HEARD_AFTER_MS: f64 = 1_500.0;
/// Silence the microphone keeps between a barge-in's end and the next question, so the
/// server hears them as two utterances.
const BARGE_IN_ROOM: Duration = Duration::from_secs(1);
/// A barge-in whose answer played out this long ago with no clear was missed (a clear may
/// still be on its way when the phone's and the server's clocks differ a little).
const MISS_GRACE: Duration = Duration::from_secs(1);
/// `--noise-dbfs`: an RMS level in dBFS, at most 0, or `off` for digital silence.
pub fn parse_noise_dbfs(s: &str) -> Result<f32, String> {
    if matches!(s, "off" | "silence") {
        return Ok(f32::NEG_INFINITY);
    }
    let db: f32 = s.parse().map_err(|_| format!("{s:?} is not a level in dBFS (e.g. -45) or \"off\""))?;
    if db.is_nan() || db > 0.0 {
        return Err(format!("the noise level must be at most 0 dBFS, got {s}"));
    }
    Ok(db)
}

/// Checks the `mic` arguments against the question before any session starts.
pub fn check(args: &Args, speech: &Speech) -> anyhow::Result<()> {
    if speech.rate != SAMPLE_RATE {
        bail!("the question must be {SAMPLE_RATE} Hz audio, got {} Hz", speech.rate);
    }
    let shortest = speech.samples.len() as f64 / f64::from(SAMPLE_RATE) + 1.0;
    // One question at a time, with a pause after it.
    if args.interval_secs.is_nan() || args.interval_secs < shortest {
        bail!("--interval-secs must be at least {shortest:.1} s (the question plus a second) for --scenario mic");
    }
    if args.echo_gain_db.is_some_and(|db| !db.is_finite()) {
        bail!("--echo-gain-db must be a finite number of dB");
    }
    if args.barge_in_after_ms.is_some() && args.barge_in_text.trim().is_empty() {
        bail!("--barge-in-text must say something");
    }
    Ok(())
}

/// One session's microphone, from the command line.
#[derive(Debug, Clone)]
pub struct MicSetup {
    pub colour: NoiseColour,
    /// From the noise generator's raw output to the wanted RMS level; 0 for digital silence.
    pub noise_gain: f32,
    pub echo: Option<EchoSetup>,
    /// Every session hears noise of its own.
    pub seed: u64,
    /// `--barge-in-after-ms`: the user interrupts answers.
    pub barge_in: Option<BargeInSetup>,
    /// `--frame-ms`: audio per message.
    pub frame_ms: u64,
}

/// When and with what the user interrupts an answer.
#[derive(Debug, Clone)]
pub struct BargeInSetup {
    /// From an answer's first audio frame arriving to the interruption's first frame.
    pub after: Duration,
    /// The interruption, 16 kHz, speech from its first sample; shared by all sessions.
    pub speech: Arc<[f32]>,
}

#[derive(Debug, Clone, Copy)]
pub struct EchoSetup {
    /// Linear gain of the answer as the microphone hears it.
    pub gain: f32,
    pub delay_ms: u64,
}

impl MicSetup {
    /// Measures the noise generator once per run (see `raw_rms`). `interruption`: what a
    /// barge-in says (`crate::load_interruption`), needed with `--barge-in-after-ms`.
    pub fn from_args(args: &Args, interruption: Option<&Speech>) -> Self {
        Self {
            colour: args.noise_colour,
            noise_gain: db_to_gain(args.noise_dbfs) / unit_rms(args.noise_colour),
            echo: args.echo_gain_db.map(|db| EchoSetup { gain: db_to_gain(db), delay_ms: args.echo_delay_ms }),
            seed: 0,
            barge_in: args.barge_in_after_ms.zip(interruption).map(|(ms, speech)| BargeInSetup {
                after: Duration::from_millis(ms),
                speech: Arc::from(speech.samples.as_slice()),
            }),
            frame_ms: args.frame_ms,
        }
    }

    pub fn for_session(&self, index: usize) -> Self {
        Self { seed: index as u64, ..self.clone() }
    }
}

/// −∞ dB (digital silence) is a gain of 0.
fn db_to_gain(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

fn samples_in(d: Duration) -> u64 {
    (d.as_secs_f64() * f64::from(SAMPLE_RATE)) as u64
}

/// Stream time (ms since the first frame) of a sample.
fn sample_ms(sample: u64) -> f64 {
    sample as f64 * 1000.0 / f64::from(SAMPLE_RATE)
}

/// One session's microphone: what it sent, and what the server made of it.
#[derive(Debug, Default)]
pub struct MicOutcome {
    pub frames_sent: u64,
    /// Frames handed to the socket more than [`LATE_AFTER`] behind schedule.
    pub frames_late: u64,
    pub worst_late_ms: f64,
    pub questions_asked: usize,
    /// Turns no question or interruption explains: noise or echo taken for speech, a
    /// question heard as two.
    pub spurious_turns: usize,
    /// `output_audio_buffer.clear` events: answers cut off.
    pub clears: usize,
    pub server_errors: usize,
    pub first_error: Option<String>,
    /// Per question heard whole: the server's `audio_end_ms` − the question's last sample,
    /// in stream ms (includes the silence window).
    pub end_of_speech_stream_ms: Vec<f64>,
    /// Per question heard whole: its last frame sent → `speech_stopped` received.
    pub end_of_speech_client_ms: Vec<f64>,
    /// `--barge-in-after-ms`: interruptions said over an answer still playing.
    pub barge_ins_attempted: usize,
    /// Of those, answers the server cleared.
    pub barge_ins_confirmed: usize,
    /// Of those, answers that played out with no clear (the rest: the run ended first).
    pub barge_ins_missed: usize,
    /// Answers not interrupted: played out or cleared before the barge-in was due, or the
    /// microphone was busy with a question then.
    pub barge_ins_not_attempted: usize,
    /// Per confirmed barge-in: its first frame sent → the clear of the answer received.
    pub barge_in_onset_to_clear_ms: Vec<f64>,
}

/// Streams the session's microphone until the hold ends and no answer is owed (or
/// `DRAIN` more has passed), while a reader on the other half of the socket passes on
/// what the server says.
pub async fn stream(ws: &mut Ws, plan: &Plan, outcome: &mut SessionOutcome) -> Result<(), String> {
    let Some(setup) = plan.mic.clone() else {
        return Err("the mic scenario needs a microphone setup".into());
    };
    let mut mic = Mic::new(setup, &plan.speech.samples, LEAD_IN + plan.first_question_offset, plan.interval);
    let (mut mouth, ear) = StreamExt::split(&mut *ws);
    let (heard_tx, mut heard_rx) = mpsc::unbounded_channel();
    let ended = tokio::select! {
        r = speak(&mut mic, &mut mouth, &mut heard_rx, plan.hold_until) => r,
        r = listen(ear, heard_tx) => r,
    };
    // What the reader passed on before the end still counts.
    while let Ok(heard) = heard_rx.try_recv() {
        mic.hear(heard);
    }
    mic.finish(outcome);
    ended
}

/// Sends a frame every `--frame-ms` (20 ms) on an absolute schedule. A frame that is due late goes out
/// at once and the next ones on their own schedule (burst): in total the stream stays
/// real time, as a microphone's buffer would deliver it, and each late frame is counted.
async fn speak(
    mic: &mut Mic<'_>,
    mouth: &mut SplitSink<&mut Ws, Message>,
    heard: &mut UnboundedReceiver<Heard>,
    hold_until: Instant,
) -> Result<(), String> {
    let mut ticker = tokio::time::interval(Duration::from_millis(mic.frame_ms));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        let due = ticker.tick().await.into_std();
        while let Ok(h) = heard.try_recv() {
            mic.hear(h);
        }
        let now = Instant::now();
        mic.ledger.resolve_barge_ins(now, MISS_GRACE);
        if now >= hold_until && (!mic.ledger.owes_answers() || now >= hold_until + DRAIN) {
            return Ok(());
        }
        mic.count_frame(now.saturating_duration_since(due));
        let frame = mic.next_frame(due, hold_until);
        mouth.send(Message::binary(frame.pcm)).await.map_err(|e| format!("connection: {e}"))?;
        let sent = Instant::now();
        if let Some(said) = frame.began {
            mic.ledger.sent_start(said, sent);
        }
        if let Some(said) = frame.ended {
            mic.ledger.sent_end(said, sent);
        }
    }
}

/// Passes on the server's events, stamped with when they arrived.
async fn listen(mut ear: SplitStream<&mut Ws>, heard: UnboundedSender<Heard>) -> Result<(), String> {
    while let Some(msg) = ear.next().await {
        let at = Instant::now();
        let event = match msg.map_err(|e| format!("connection: {e}"))? {
            Message::Binary(pcm) => Heard::Audio { at, pcm },
            Message::Text(text) => match Heard::parse(&text, at) {
                Some(event) => event,
                None => continue,
            },
            Message::Close(f) => return Err(format!("connection: closed {f:?}")),
            _ => continue,
        };
        if heard.send(event).is_err() {
            return Ok(());
        }
    }
    Err("connection: ended".into())
}

/// The server events a microphone's ledger needs.
#[derive(Debug)]
enum Heard {
    SpeechStarted {
        audio_start_ms: u64,
    },
    SpeechStopped {
        at: Instant,
        audio_end_ms: u64,
    },
    Committed,
    ResponseCreated {
        response_id: String,
    },
    ResponseDone {
        response_id: String,
        status: String,
        timings: ServerTimings,
    },
    /// `output_audio_buffer.clear`: stop playing the answer.
    Clear {
        at: Instant,
        response_id: String,
    },
    /// A binary frame of answer audio (PCM16).
    Audio {
        at: Instant,
        pcm: Bytes,
    },
    Error(String),
}

impl Heard {
    /// `None` for events the ledger does not need (transcripts, text, citations, …).
    fn parse(text: &str, at: Instant) -> Option<Heard> {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return Some(Heard::Error(format!("unreadable event: {e}"))),
        };
        let ms = |field: &str| v[field].as_u64().unwrap_or_default();
        let text_of = |field: &str| v[field].as_str().unwrap_or_default().to_string();
        Some(match v["type"].as_str().unwrap_or_default() {
            "input_audio_buffer.speech_started" => Heard::SpeechStarted { audio_start_ms: ms("audio_start_ms") },
            "input_audio_buffer.speech_stopped" => Heard::SpeechStopped { at, audio_end_ms: ms("audio_end_ms") },
            "input_audio_buffer.committed" => Heard::Committed,
            "response.created" => Heard::ResponseCreated { response_id: text_of("response_id") },
            "response.done" => Heard::ResponseDone {
                response_id: text_of("response_id"),
                // A failed response says why.
                status: match v["error"]["code"].as_str() {
                    Some(code) => format!("{} ({code})", text_of("status")),
                    None => text_of("status"),
                },
                timings: ServerTimings::from_json(&v["timings"]),
            },
            "output_audio_buffer.clear" => Heard::Clear { at, response_id: text_of("response_id") },
            "error" => Heard::Error(format!("error event: {}", v["error"]["code"])),
            _ => return None,
        })
    }
}

/// The sending side of one session: its noise, the question when one is due, a barge-in
/// when one is due, its echo.
struct Mic<'a> {
    speech: &'a [f32],
    question_length: Duration,
    noise: Noise,
    echo: Option<Echo>,
    /// What a barge-in says.
    interruption: Option<Arc<[f32]>>,
    ledger: Ledger,
    /// The frame being made (reused).
    frame: Vec<f32>,
    frame_ms: u64,
    /// Stream position of the next frame, in samples.
    position: u64,
    next_question: u64,
    interval: u64,
    /// The question or interruption being mixed in: its index in the ledger and its first
    /// sample.
    mixing: Option<(usize, u64)>,
    frames_sent: u64,
    frames_late: u64,
    worst_late: Duration,
}

/// A frame for the socket (PCM16), and what it begins and ends (ledger indexes).
struct Frame {
    pcm: Vec<u8>,
    began: Option<usize>,
    ended: Option<usize>,
}

impl<'a> Mic<'a> {
    fn new(setup: MicSetup, speech: &'a [f32], first_question: Duration, interval: Duration) -> Self {
        let (barge_in_after, interruption) = match setup.barge_in {
            Some(b) => (Some(b.after), Some(b.speech)),
            None => (None, None),
        };
        Self {
            speech,
            question_length: Duration::from_secs_f64(speech.len() as f64 / f64::from(SAMPLE_RATE)),
            noise: Noise::new(setup.colour, setup.seed, setup.noise_gain),
            echo: setup.echo.map(Echo::new),
            interruption,
            ledger: Ledger { barge_in_after, ..Ledger::default() },
            frame: vec![0.0; (u64::from(SAMPLE_RATE) * setup.frame_ms / 1000) as usize],
            frame_ms: setup.frame_ms,
            position: 0,
            next_question: samples_in(first_question),
            interval: samples_in(interval).max(FRAME_SAMPLES as u64),
            mixing: None,
            frames_sent: 0,
            frames_late: 0,
            worst_late: Duration::ZERO,
        }
    }

    fn hear(&mut self, heard: Heard) {
        if let Some(echo) = self.echo.as_mut() {
            match &heard {
                Heard::Audio { pcm, .. } => echo.play(pcm),
                Heard::Clear { .. } => echo.stop(),
                _ => {}
            }
        }
        self.ledger.record(heard);
    }

    fn count_frame(&mut self, late: Duration) {
        self.frames_sent += 1;
        if late > LATE_AFTER {
            self.frames_late += 1;
        }
        self.worst_late = self.worst_late.max(late);
    }

    /// The next frame, due at `due`, with the question or interruption it begins or ends.
    fn next_frame(&mut self, due: Instant, hold_until: Instant) -> Frame {
        let at = self.position;
        let mut began = None;
        if self.mixing.is_none() && at >= self.next_question {
            self.next_question += self.interval;
            // Only a question that can be answered before the hold ends.
            if due + self.question_length + ANSWER_ROOM <= hold_until {
                let question = self.ledger.ask(at, self.speech.len());
                self.mixing = Some((question, at));
                began = Some(question);
            }
        }
        if let Some(len) = self.interruption.as_ref().map(|i| i.len()) {
            // Free: nothing being said, and silence after the interruption before the next
            // question (one that will be asked: it can be answered before the hold ends).
            let until_next = self.next_question.saturating_sub(at);
            let next_asked = due
                + Duration::from_secs_f64(until_next as f64 / f64::from(SAMPLE_RATE))
                + self.question_length
                + ANSWER_ROOM
                <= hold_until;
            let free = self.mixing.is_none() && (!next_asked || len as u64 + samples_in(BARGE_IN_ROOM) <= until_next);
            if let Some(interruption) = self.ledger.barge_in(due, at, len, free) {
                self.mixing = Some((interruption, at));
                began = Some(interruption);
            }
        }
        self.noise.fill(&mut self.frame);
        let mut ended = None;
        if let Some((said, start)) = self.mixing {
            let samples: &[f32] = match self.ledger.asked[said].said {
                Said::Question => self.speech,
                Said::Interruption => self.interruption.as_deref().unwrap_or_default(),
            };
            // Within it: mixing stops at the frame that reaches its end.
            let from = (at - start) as usize;
            let to = (from + self.frame.len()).min(samples.len());
            for (s, q) in self.frame.iter_mut().zip(&samples[from.min(to)..to]) {
                *s += q;
            }
            if to == samples.len() {
                ended = Some(said);
                self.mixing = None;
            }
        }
        if let Some(echo) = self.echo.as_mut() {
            echo.mix_into(&mut self.frame);
        }
        self.position += self.frame.len() as u64;
        let mut pcm = Vec::with_capacity(self.frame.len() * 2);
        fieldvox::audio::pcm::encode_pcm16(&self.frame, &mut pcm);
        Frame { pcm, began, ended }
    }

    fn finish(self, outcome: &mut SessionOutcome) {
        let mut ledger = self.ledger;
        ledger.close();
        let spurious_turns = ledger.spurious_turns();
        let barge_ins = |state: fn(BargeIn) -> bool| ledger.asked.iter().filter(|q| state(q.barge_in)).count();
        outcome.mic = Some(MicOutcome {
            frames_sent: self.frames_sent,
            frames_late: self.frames_late,
            worst_late_ms: self.worst_late.as_secs_f64() * 1000.0,
            questions_asked: ledger.asked.iter().filter(|q| q.said == Said::Question).count(),
            spurious_turns,
            clears: ledger.clears,
            server_errors: ledger.errors,
            first_error: ledger.first_error,
            end_of_speech_stream_ms: ledger.eos_stream_ms,
            end_of_speech_client_ms: ledger.eos_client_ms,
            barge_ins_attempted: barge_ins(|b| {
                matches!(b, BargeIn::Attempted { .. } | BargeIn::Confirmed | BargeIn::Missed)
            }),
            barge_ins_confirmed: barge_ins(|b| b == BargeIn::Confirmed),
            barge_ins_missed: barge_ins(|b| b == BargeIn::Missed),
            barge_ins_not_attempted: barge_ins(|b| b == BargeIn::NotAttempted),
            barge_in_onset_to_clear_ms: ledger.onset_to_clear_ms,
        });
        outcome.turns.extend(ledger.turns);
        outcome.failed_turns.extend(ledger.failures);
    }
}

/// The session's loudspeaker as its own microphone hears it: answer audio plays in real
/// time from when it arrived (to the frame), reaches the microphone `delay` later and
/// `gain` weaker, and stops when the server says to drop it.
#[derive(Debug)]
pub struct Echo {
    /// Applied to PCM16 sample values.
    gain: f32,
    delay: usize,
    queue: VecDeque<i16>,
}

impl Echo {
    pub fn new(setup: EchoSetup) -> Self {
        Self {
            gain: setup.gain / 32768.0,
            delay: (setup.delay_ms * u64::from(SAMPLE_RATE) / 1000) as usize,
            queue: VecDeque::new(),
        }
    }

    /// Queues answer audio (PCM16) behind what still plays; a quiet speaker starts it
    /// after the delay.
    pub fn play(&mut self, pcm: &[u8]) {
        if self.queue.is_empty() {
            self.queue.resize(self.delay, 0);
        }
        self.queue.extend(pcm.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])));
    }

    pub fn stop(&mut self) {
        self.queue.clear();
        self.queue.shrink_to(0);
    }

    /// Adds the next frame's worth of echo to `frame`.
    pub fn mix_into(&mut self, frame: &mut [f32]) {
        let n = frame.len().min(self.queue.len());
        for (s, e) in frame.iter_mut().zip(self.queue.drain(..n)) {
            *s += f32::from(e) * self.gain;
        }
        // A played-out answer gives its memory back: idle speakers hold none.
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue.shrink_to(0);
        }
    }
}

/// What a stretch of speech mixed into the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    Question,
    /// A barge-in over a question's answer (the question's `BargeIn::Attempted` names it).
    Interruption,
}

/// The barge-in over a question's answer (`--barge-in-after-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BargeIn {
    /// Barge-in is off, or this is an interruption: its answer is never interrupted.
    Off,
    /// Due `after` the answer's first audio.
    Waiting,
    /// When due, the answer had finished playing or been cleared, or the microphone was busy.
    NotAttempted,
    /// Said over the answer still playing (its index in the ledger); no clear yet.
    Attempted { interruption: usize },
    /// The answer was cleared after the interruption's first frame went out.
    Confirmed,
    /// The answer played out with no clear.
    Missed,
}

/// One question or interruption mixed into the stream, and what became of it.
#[derive(Debug)]
struct Asked {
    said: Said,
    /// Stream time of its first sample and of just past its last.
    start_ms: f64,
    end_ms: f64,
    /// When the frame with its first sample had gone out.
    start_sent: Option<Instant>,
    /// When the frame with its last sample had gone out.
    end_sent: Option<Instant>,
    /// A speech start was put down to it.
    heard: bool,
    stopped: bool,
    response_id: Option<String>,
    first_audio: Option<Instant>,
    /// Until when the phone plays the answer audio received so far: in real time from its
    /// first frame, a frame arriving after the last has played starting when it arrives.
    plays_until: Option<Instant>,
    /// When the clear of its answer arrived.
    cleared: Option<Instant>,
    barge_in: BargeIn,
    /// Answered, or failed for good.
    settled: bool,
}

impl Asked {
    fn new(said: Said, start_sample: u64, len: usize, barge_in: BargeIn) -> Self {
        Self {
            said,
            start_ms: sample_ms(start_sample),
            end_ms: sample_ms(start_sample + len as u64),
            start_sent: None,
            end_sent: None,
            heard: false,
            stopped: false,
            response_id: None,
            first_audio: None,
            plays_until: None,
            cleared: None,
            barge_in,
            settled: false,
        }
    }

    /// Its answer is still playing on the phone at `at`: not cleared, and more audio to
    /// come (no `response.done` yet) or some still to play.
    fn answer_playing(&self, at: Instant) -> bool {
        self.cleared.is_none() && (!self.settled || self.plays_until.is_some_and(|t| t > at))
    }
}

/// The question or interruption a speech start at `audio_start_ms` (stream time) belongs
/// to: one being mixed in or just finished, not yet heard. `None`: nothing the client said
/// explains it.
fn explaining(asked: &[Asked], audio_start_ms: f64) -> Option<usize> {
    asked
        .iter()
        .position(|q| !q.heard && (q.start_ms - HEARD_BEFORE_MS..=q.end_ms + HEARD_AFTER_MS).contains(&audio_start_ms))
}

/// What the server heard, set against what the client said.
#[derive(Debug, Default)]
struct Ledger {
    /// Questions and interruptions, in the order they were said.
    asked: Vec<Asked>,
    /// `--barge-in-after-ms`: from an answer's first audio to its interruption.
    barge_in_after: Option<Duration>,
    /// The question or interruption the server's latest turn was put down to; `None`
    /// after a spurious start.
    turn: Option<usize>,
    /// The question or interruption whose answer audio is arriving.
    answering: Option<usize>,
    speech_starts: usize,
    unexplained_starts: usize,
    commits: usize,
    responses: usize,
    clears: usize,
    errors: usize,
    first_error: Option<String>,
    eos_stream_ms: Vec<f64>,
    eos_client_ms: Vec<f64>,
    onset_to_clear_ms: Vec<f64>,
    turns: Vec<Turn>,
    failures: Vec<String>,
}

impl Ledger {
    /// A question starts at `start_sample`, `len` samples long; returns its index.
    fn ask(&mut self, start_sample: u64, len: usize) -> usize {
        let barge_in = if self.barge_in_after.is_some() { BargeIn::Waiting } else { BargeIn::Off };
        self.asked.push(Asked::new(Said::Question, start_sample, len, barge_in));
        self.asked.len() - 1
    }

    /// At the frame at stream sample `at`, due at `due`: the barge-in due by then, if one
    /// is. Said (an interruption `len` samples long is added, and its index returned) when
    /// the microphone is `free` and the answer still plays; else not attempted.
    fn barge_in(&mut self, due: Instant, at: u64, len: usize, free: bool) -> Option<usize> {
        let after = self.barge_in_after?;
        let k = self
            .asked
            .iter()
            .position(|q| q.barge_in == BargeIn::Waiting && q.first_audio.is_some_and(|t| t + after <= due))?;
        if !free || !self.asked[k].answer_playing(due) {
            self.asked[k].barge_in = BargeIn::NotAttempted;
            return None;
        }
        self.asked.push(Asked::new(Said::Interruption, at, len, BargeIn::Off));
        let interruption = self.asked.len() - 1;
        self.asked[k].barge_in = BargeIn::Attempted { interruption };
        Some(interruption)
    }

    fn sent_start(&mut self, said: usize, at: Instant) {
        if let Some(q) = self.asked.get_mut(said) {
            q.start_sent = Some(at);
        }
    }

    fn sent_end(&mut self, said: usize, at: Instant) {
        if let Some(q) = self.asked.get_mut(said) {
            q.end_sent = Some(at);
        }
    }

    /// Barge-ins whose answer has played out, `grace` ago, with no clear were missed.
    fn resolve_barge_ins(&mut self, now: Instant, grace: Duration) {
        for q in &mut self.asked {
            let played_out = q.settled && q.plays_until.is_none_or(|t| t + grace <= now);
            if matches!(q.barge_in, BargeIn::Attempted { .. }) && q.cleared.is_none() && played_out {
                q.barge_in = BargeIn::Missed;
            }
        }
    }

    fn record(&mut self, heard: Heard) {
        match heard {
            Heard::SpeechStarted { audio_start_ms } => {
                self.speech_starts += 1;
                self.turn = explaining(&self.asked, audio_start_ms as f64);
                match self.turn {
                    Some(k) => self.asked[k].heard = true,
                    None => self.unexplained_starts += 1,
                }
            }
            Heard::SpeechStopped { at, audio_end_ms } => {
                let Some(k) = self.turn else { return };
                let q = &mut self.asked[k];
                if q.stopped {
                    return;
                }
                q.stopped = true;
                // End of speech is measured on questions only.
                if q.said != Said::Question {
                    return;
                }
                // Stopped before the question was all sent: it was heard as two turns
                // (the second counts as spurious), and there is no end to measure from.
                let audio_end_ms = audio_end_ms as f64;
                let Some(sent) = q.end_sent.filter(|_| audio_end_ms >= q.end_ms) else { return };
                self.eos_stream_ms.push(audio_end_ms - q.end_ms);
                self.eos_client_ms.push(at.saturating_duration_since(sent).as_secs_f64() * 1000.0);
            }
            Heard::Committed => self.commits += 1,
            Heard::ResponseCreated { response_id } => {
                self.responses += 1;
                self.answering = self.turn.filter(|&k| self.asked[k].response_id.is_none());
                if let Some(k) = self.answering {
                    self.asked[k].response_id = Some(response_id);
                }
            }
            Heard::Audio { at, pcm } => {
                if let Some(k) = self.answering {
                    let q = &mut self.asked[k];
                    q.first_audio.get_or_insert(at);
                    let length = Duration::from_secs_f64((pcm.len() / 2) as f64 / f64::from(SAMPLE_RATE));
                    q.plays_until = Some(q.plays_until.map_or(at, |t| t.max(at)) + length);
                }
            }
            Heard::Clear { at, response_id } => {
                self.clears += 1;
                self.answering = None;
                let cleared = self
                    .asked
                    .iter()
                    .position(|q| !response_id.is_empty() && q.response_id.as_deref() == Some(response_id.as_str()));
                let Some(k) = cleared else { return };
                self.asked[k].cleared.get_or_insert(at);
                if let BargeIn::Attempted { interruption } = self.asked[k].barge_in {
                    // A clear before the interruption went out stopped the answer for
                    // another reason: the barge-in came too late to be one.
                    self.asked[k].barge_in = match self.asked[interruption].start_sent {
                        Some(onset) if at >= onset => {
                            self.onset_to_clear_ms.push(at.duration_since(onset).as_secs_f64() * 1000.0);
                            BargeIn::Confirmed
                        }
                        _ => BargeIn::NotAttempted,
                    };
                }
            }
            Heard::ResponseDone { response_id, status, timings } => {
                let Some(q) = self
                    .asked
                    .iter_mut()
                    .find(|q| !q.settled && q.response_id.as_deref() == Some(response_id.as_str()))
                else {
                    return;
                };
                q.settled = true;
                // An answer stopped by the barge-in was answered as far as it was heard.
                let interrupted = matches!(q.barge_in, BargeIn::Attempted { .. } | BargeIn::Confirmed);
                match (q.said, status.as_str(), q.end_sent, q.first_audio) {
                    (Said::Question, "completed", Some(end), Some(audio)) => self.turns.push(Turn {
                        client_v2v_ms: audio.saturating_duration_since(end).as_secs_f64() * 1000.0,
                        server: timings,
                    }),
                    (Said::Question, "cancelled", Some(end), Some(audio)) if interrupted => self.turns.push(Turn {
                        client_v2v_ms: audio.saturating_duration_since(end).as_secs_f64() * 1000.0,
                        server: timings,
                    }),
                    (Said::Question, "completed", _, _) => self.failures.push("response without audio".into()),
                    (Said::Question, status, _, _) => self.failures.push(format!("response {status}")),
                    // An interruption's answer is expected, not timed as a question's.
                    (Said::Interruption, "completed", _, Some(_)) => {}
                    (Said::Interruption, "completed", _, None) => {
                        self.failures.push("response to an interruption without audio".into())
                    }
                    (Said::Interruption, status, _, _) => {
                        self.failures.push(format!("response to an interruption {status}"))
                    }
                }
            }
            Heard::Error(e) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e);
                }
            }
        }
    }

    /// Whether the session should keep streaming: a question's answer is owed, or its
    /// barge-in undecided; or an interruption the server took is not answered yet.
    fn owes_answers(&self) -> bool {
        self.asked.iter().any(|q| match q.said {
            Said::Question => {
                !q.settled
                    || matches!(q.barge_in, BargeIn::Attempted { .. })
                    || (q.barge_in == BargeIn::Waiting && q.first_audio.is_some())
            }
            Said::Interruption => q.heard && !q.settled,
        })
    }

    /// Turns nothing said explains: speech starts put down to no question or
    /// interruption, and any commit or response beyond the speech starts that could have
    /// caused them.
    fn spurious_turns(&self) -> usize {
        self.unexplained_starts
            + self.commits.saturating_sub(self.speech_starts)
            + self.responses.saturating_sub(self.commits)
    }

    /// Questions still open at the end fail, with why, as do interruptions the server
    /// took but did not answer; barge-ins over answers that have played out were missed.
    fn close(&mut self) {
        self.resolve_barge_ins(Instant::now(), Duration::ZERO);
        for q in self.asked.iter().filter(|q| !q.settled) {
            let failure = match (q.said, q.heard, &q.response_id) {
                (Said::Question, false, _) => "question never heard (no speech_started)",
                (Said::Question, true, None) => "question heard, no response before the run ended",
                (Said::Question, true, Some(_)) => "answer not done before the run ended",
                // The server not taking an interruption is a missed barge-in, not a failure.
                (Said::Interruption, false, _) => continue,
                (Said::Interruption, true, None) => "interruption heard, no response before the run ended",
                (Said::Interruption, true, Some(_)) => "answer to an interruption not done before the run ended",
            };
            self.failures.push(failure.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn echo_plays_late_and_quieter_and_stops_on_clear() {
        let gain = db_to_gain(-6.0);
        let mut echo = Echo::new(EchoSetup { gain, delay_ms: 60 });
        // One frame of answer at half scale.
        let pcm: Vec<u8> = std::iter::repeat_n(16_384i16.to_le_bytes(), FRAME_SAMPLES).flatten().collect();
        echo.play(&pcm);
        let mut frames = vec![[0.0f32; FRAME_SAMPLES]; 5];
        for frame in &mut frames {
            echo.mix_into(frame);
        }
        // 60 ms is three frames of quiet, then the answer 6 dB down, then quiet again.
        assert!(frames[..3].iter().flatten().all(|&s| s == 0.0));
        assert!(frames[3].iter().all(|&s| (s - 0.5 * gain).abs() < 1e-6), "{}", frames[3][0]);
        assert!(frames[4].iter().all(|&s| s == 0.0));

        // Audio arriving while the speaker plays follows on without a second delay; a
        // clear drops what has not played.
        echo.play(&pcm);
        echo.play(&pcm);
        let mut frames = vec![[0.0f32; FRAME_SAMPLES]; 5];
        for frame in &mut frames[..4] {
            echo.mix_into(frame);
        }
        echo.stop();
        echo.mix_into(&mut frames[4]);
        assert!(frames[3].iter().all(|&s| s > 0.0));
        assert!(frames[4].iter().all(|&s| s == 0.0));
        assert!(echo.queue.is_empty());
    }

    #[test]
    fn the_question_is_mixed_in_on_schedule_and_its_end_reported() {
        let setup = MicSetup {
            colour: NoiseColour::Pink,
            noise_gain: 0.0,
            echo: None,
            seed: 0,
            barge_in: None,
            frame_ms: FRAME_MS,
        };
        let speech = vec![0.5f32; FRAME_SAMPLES + 80];
        // First question at 100 ms: frame 5.
        let mut mic = Mic::new(setup.clone(), &speech, Duration::from_millis(100), Duration::from_secs(10));
        let hold = Instant::now() + Duration::from_secs(3600);
        let frames: Vec<_> = (0..8).map(|_| mic.next_frame(Instant::now(), hold)).collect();
        let sample =
            |frame: usize, i: usize| i16::from_le_bytes([frames[frame].pcm[2 * i], frames[frame].pcm[2 * i + 1]]);
        assert!((0..FRAME_SAMPLES).all(|i| sample(4, i) == 0));
        assert_eq!((sample(5, 0), sample(5, FRAME_SAMPLES - 1)), (16_384, 16_384));
        assert_eq!((sample(6, 79), sample(6, 80)), (16_384, 0));
        let begins: Vec<_> = frames.iter().map(|f| f.began).collect();
        assert_eq!(begins, [None, None, None, None, None, Some(0), None, None]);
        let ends: Vec<_> = frames.iter().map(|f| f.ended).collect();
        assert_eq!(ends, [None, None, None, None, None, None, Some(0), None]);
        assert_eq!(mic.ledger.asked.len(), 1);
        assert_eq!((mic.ledger.asked[0].start_ms, mic.ledger.asked[0].end_ms), (100.0, 125.0));
        assert_eq!(mic.ledger.asked[0].barge_in, BargeIn::Off, "no barge-in unless asked for");

        // A question that could not be answered before the hold ends is not asked.
        let mut mic = Mic::new(setup, &speech, Duration::ZERO, Duration::from_secs(10));
        let _ = mic.next_frame(Instant::now(), Instant::now() + Duration::from_secs(1));
        assert!(mic.ledger.asked.is_empty());
    }

    #[test]
    fn a_question_explains_one_speech_start_near_it() {
        let mut ledger = Ledger::default();
        ledger.ask(32_000, 48_000); // 2000..5000 ms
        assert_eq!(explaining(&ledger.asked, 1_950.0), Some(0));
        assert_eq!(explaining(&ledger.asked, 6_400.0), Some(0));
        assert_eq!(explaining(&ledger.asked, 1_800.0), None);
        assert_eq!(explaining(&ledger.asked, 6_600.0), None);
        ledger.asked[0].heard = true;
        assert_eq!(explaining(&ledger.asked, 2_100.0), None, "a question is heard once");
    }

    #[test]
    fn turns_are_put_down_to_questions_or_counted_spurious() {
        let mut ledger = Ledger::default();
        let question = ledger.ask(32_000, 48_000); // 2000..5000 ms
        let t0 = Instant::now();
        ledger.sent_end(question, t0);
        let after = |ms| t0 + Duration::from_millis(ms);
        let done = |id: &str| Heard::ResponseDone {
            response_id: id.into(),
            status: "completed".into(),
            timings: ServerTimings::default(),
        };
        for heard in [
            Heard::SpeechStarted { audio_start_ms: 2_050 },
            Heard::SpeechStopped { at: after(530), audio_end_ms: 5_520 },
            Heard::Committed,
            Heard::ResponseCreated { response_id: "r1".into() },
            Heard::Audio { at: after(900), pcm: Bytes::new() },
            Heard::Audio { at: after(1_000), pcm: Bytes::new() },
            done("r1"),
            // The answer's echo taken for speech: a turn no question explains.
            Heard::SpeechStarted { audio_start_ms: 7_000 },
            Heard::Clear { at: after(2_000), response_id: "r1".into() },
            Heard::SpeechStopped { at: after(3_000), audio_end_ms: 7_800 },
            Heard::Committed,
            Heard::ResponseCreated { response_id: "r2".into() },
            done("r2"),
        ] {
            ledger.record(heard);
        }
        assert_eq!((ledger.spurious_turns(), ledger.clears), (1, 1));
        assert_eq!(ledger.turns.len(), 1);
        assert!((ledger.turns[0].client_v2v_ms - 900.0).abs() < 1e-6);
        assert_eq!(ledger.eos_stream_ms, [520.0]);
        assert!((ledger.eos_client_ms[0] - 530.0).abs() < 1e-6);
        assert!(!ledger.owes_answers() && ledger.failures.is_empty());

        // A question never heard fails at the end; a commit without a start is spurious.
        let mut ledger = Ledger::default();
        ledger.ask(0, 16_000);
        ledger.record(Heard::Committed);
        assert!(ledger.owes_answers());
        ledger.close();
        assert_eq!((ledger.spurious_turns(), ledger.failures.len()), (1, 1));
    }

    /// One second of answer audio (16 kHz PCM16).
    fn one_second() -> Bytes {
        Bytes::from(vec![0u8; 2 * SAMPLE_RATE as usize])
    }

    #[test]
    fn a_barge_in_is_timed_to_the_clear_and_its_turn_is_expected() {
        let mut ledger = Ledger { barge_in_after: Some(Duration::from_millis(500)), ..Ledger::default() };
        let question = ledger.ask(32_000, 48_000); // 2000..5000 ms
        let t0 = Instant::now();
        let after = |ms| t0 + Duration::from_millis(ms);
        ledger.sent_end(question, t0);
        for heard in [
            Heard::SpeechStarted { audio_start_ms: 2_050 },
            Heard::SpeechStopped { at: after(500), audio_end_ms: 5_500 },
            Heard::Committed,
            Heard::ResponseCreated { response_id: "r1".into() },
            // A second of answer arrives at once: it plays until 1900 ms.
            Heard::Audio { at: after(900), pcm: one_second() },
            Heard::ResponseDone { response_id: "r1".into(), status: "completed".into(), timings: Default::default() },
        ] {
            ledger.record(heard);
        }
        assert_eq!(ledger.asked[question].plays_until, Some(after(1_900)));
        // Due 500 ms after the answer's first audio, not before.
        assert_eq!(ledger.barge_in(after(1_380), 100_000, 32_000, true), None);
        assert!(ledger.owes_answers(), "the barge-in is still to come");
        let interruption = ledger.barge_in(after(1_400), 100_800, 32_000, true).expect("a barge-in");
        assert_eq!(ledger.asked[question].barge_in, BargeIn::Attempted { interruption });
        assert_eq!((ledger.asked[interruption].start_ms, ledger.asked[interruption].end_ms), (6_300.0, 8_300.0));
        assert_eq!(ledger.barge_in(after(1_420), 101_120, 32_000, true), None, "one per answer");
        ledger.sent_start(interruption, after(1_410));
        assert!(ledger.owes_answers(), "the clear is awaited");
        ledger.resolve_barge_ins(after(1_800), MISS_GRACE);
        assert!(matches!(ledger.asked[question].barge_in, BargeIn::Attempted { .. }));

        // The server clears the answer, then the interruption is a turn of its own.
        for heard in [
            Heard::Clear { at: after(1_760), response_id: "r1".into() },
            Heard::SpeechStarted { audio_start_ms: 6_320 },
            Heard::SpeechStopped { at: after(3_000), audio_end_ms: 8_800 },
            Heard::Committed,
            Heard::ResponseCreated { response_id: "r2".into() },
            Heard::Audio { at: after(3_400), pcm: one_second() },
            Heard::ResponseDone { response_id: "r2".into(), status: "completed".into(), timings: Default::default() },
        ] {
            ledger.record(heard);
        }
        assert_eq!(ledger.asked[question].barge_in, BargeIn::Confirmed);
        assert_eq!(ledger.onset_to_clear_ms.len(), 1);
        assert!((ledger.onset_to_clear_ms[0] - 350.0).abs() < 1e-6);
        assert!(ledger.asked[interruption].heard);
        assert_eq!((ledger.spurious_turns(), ledger.clears), (0, 1));
        // The question's answer is timed; the interruption's is expected, never interrupted.
        assert_eq!((ledger.turns.len(), ledger.eos_stream_ms.len()), (1, 1));
        assert_eq!(ledger.asked[interruption].barge_in, BargeIn::Off);
        assert_eq!(ledger.barge_in(after(9_000), 400_000, 32_000, true), None);
        assert!(!ledger.owes_answers() && ledger.failures.is_empty());
    }

    #[test]
    fn a_barge_in_is_missed_or_not_attempted() {
        let answered = |audio: Bytes| {
            let mut ledger = Ledger { barge_in_after: Some(Duration::from_millis(500)), ..Ledger::default() };
            ledger.ask(32_000, 48_000);
            let t0 = Instant::now();
            ledger.sent_end(0, t0);
            for heard in [
                Heard::SpeechStarted { audio_start_ms: 2_050 },
                Heard::SpeechStopped { at: t0, audio_end_ms: 5_500 },
                Heard::Committed,
                Heard::ResponseCreated { response_id: "r1".into() },
                Heard::Audio { at: t0, pcm: audio },
            ] {
                ledger.record(heard);
            }
            (ledger, t0)
        };
        let done =
            Heard::ResponseDone { response_id: "r1".into(), status: "completed".into(), timings: Default::default() };
        let after = |t0: Instant, ms| t0 + Duration::from_millis(ms);

        // Said over the answer, never cleared: missed once the answer has played out.
        let (mut ledger, t0) = answered(one_second());
        let interruption = ledger.barge_in(after(t0, 500), 0, 16_000, true);
        assert!(interruption.is_some());
        ledger.record(done);
        ledger.resolve_barge_ins(after(t0, 1_500), MISS_GRACE);
        assert!(matches!(ledger.asked[0].barge_in, BargeIn::Attempted { .. }), "a clear may be on its way");
        ledger.resolve_barge_ins(after(t0, 2_000), MISS_GRACE);
        assert_eq!(ledger.asked[0].barge_in, BargeIn::Missed);
        // The server did not take it as a turn either: no failure, nothing owed.
        ledger.close();
        assert!(!ledger.owes_answers() && ledger.failures.is_empty());

        // A short answer had played out when the barge-in was due.
        let (mut ledger, t0) = answered(Bytes::from(vec![0u8; 6_400])); // 200 ms
        ledger.record(Heard::ResponseDone {
            response_id: "r1".into(),
            status: "completed".into(),
            timings: Default::default(),
        });
        assert_eq!(ledger.barge_in(after(t0, 500), 0, 16_000, true), None);
        assert_eq!((ledger.asked[0].barge_in, ledger.asked.len()), (BargeIn::NotAttempted, 1));

        // Still coming (no response.done) but the microphone is busy: not attempted.
        let (mut ledger, t0) = answered(Bytes::from(vec![0u8; 6_400]));
        assert_eq!(ledger.barge_in(after(t0, 500), 0, 16_000, false), None);
        assert_eq!(ledger.asked[0].barge_in, BargeIn::NotAttempted);

        // Cleared for another reason before the interruption went out.
        let (mut ledger, t0) = answered(one_second());
        let interruption = ledger.barge_in(after(t0, 500), 0, 16_000, true).expect("a barge-in");
        ledger.record(Heard::Clear { at: after(t0, 510), response_id: "r1".into() });
        ledger.sent_start(interruption, after(t0, 520));
        assert_eq!(ledger.asked[0].barge_in, BargeIn::NotAttempted);
        assert!(ledger.onset_to_clear_ms.is_empty());
    }

    #[test]
    fn a_barge_in_is_mixed_in_over_the_answer() {
        let t0 = Instant::now();
        let frame_due = |i: u64| t0 + Duration::from_millis(i * FRAME_MS);
        let setup = MicSetup {
            colour: NoiseColour::Pink,
            noise_gain: 0.0,
            echo: None,
            seed: 0,
            barge_in: Some(BargeInSetup {
                after: Duration::from_millis(50),
                speech: Arc::from(vec![0.25f32; FRAME_SAMPLES + 10]),
            }),
            frame_ms: FRAME_MS,
        };
        let speech = vec![0.5f32; FRAME_SAMPLES];
        let mut mic = Mic::new(setup, &speech, Duration::ZERO, Duration::from_secs(10));
        let hold = t0 + Duration::from_secs(3600);
        let question = mic.next_frame(frame_due(0), hold);
        assert_eq!((question.began, question.ended), (Some(0), Some(0)));
        mic.hear(Heard::SpeechStarted { audio_start_ms: 0 });
        mic.hear(Heard::ResponseCreated { response_id: "r1".into() });
        mic.hear(Heard::Audio { at: frame_due(1), pcm: one_second() });
        // Due at 20 + 50 ms: the frame due at 80 ms begins it.
        let frames: Vec<_> = (1..7).map(|i| mic.next_frame(frame_due(i), hold)).collect();
        let first = |f: &Frame| i16::from_le_bytes([f.pcm[0], f.pcm[1]]);
        assert_eq!(frames.iter().map(first).collect::<Vec<_>>(), [0, 0, 0, 8_192, 8_192, 0]);
        assert_eq!(frames.iter().map(|f| f.began).collect::<Vec<_>>(), [None, None, None, Some(1), None, None]);
        assert_eq!(frames.iter().map(|f| f.ended).collect::<Vec<_>>(), [None, None, None, None, Some(1), None]);
        assert_eq!(mic.ledger.asked[1].said, Said::Interruption);
        assert_eq!(mic.ledger.asked[1].start_ms, 80.0);
        assert_eq!(mic.ledger.asked[0].barge_in, BargeIn::Attempted { interruption: 1 });
    }

    #[test]
    fn server_events_are_read() {
        let at = Instant::now();
        let stopped = Heard::parse(r#"{"type":"input_audio_buffer.speech_stopped","audio_end_ms":5520}"#, at);
        assert!(matches!(stopped, Some(Heard::SpeechStopped { audio_end_ms: 5520, .. })));
        let done = r#"{"type":"response.done","response_id":"r","status":"completed","text":"",
            "timings":{"voice_to_voice_ms":12.5,"total_ms":30}}"#;
        let Some(Heard::ResponseDone { response_id, status, timings }) = Heard::parse(done, at) else {
            panic!("not a response.done")
        };
        assert_eq!((response_id.as_str(), status.as_str(), timings.voice_to_voice_ms), ("r", "completed", Some(12.5)));
        let clear = Heard::parse(r#"{"type":"output_audio_buffer.clear","response_id":"r"}"#, at);
        assert!(matches!(&clear, Some(Heard::Clear { response_id, .. }) if response_id == "r"));
        assert!(Heard::parse(r#"{"type":"response.output_text.delta","delta":"x"}"#, at).is_none());
        assert!(matches!(Heard::parse("{oops", at), Some(Heard::Error(_))));
    }

    #[test]
    fn the_command_line_takes_negative_levels_and_off() {
        let args = crate::Args::parse_from(["fieldvox-load", "--scenario", "mic"]);
        assert_eq!((args.noise_dbfs, args.noise_colour, args.echo_gain_db), (-45.0, NoiseColour::Pink, None));
        let args = crate::Args::parse_from([
            "fieldvox-load",
            "--scenario",
            "mic",
            "--noise-dbfs",
            "-50.5",
            "--noise-colour",
            "brown",
            "--echo-gain-db",
            "-6",
        ]);
        assert_eq!((args.noise_dbfs, args.noise_colour, args.echo_gain_db), (-50.5, NoiseColour::Brown, Some(-6.0)));
        assert_eq!(args.barge_in_after_ms, None);
        let barge = crate::Args::parse_from(["fieldvox-load", "--scenario", "mic", "--barge-in-after-ms", "1500"]);
        assert_eq!(
            (barge.barge_in_after_ms, barge.barge_in_text.as_str()),
            (Some(1500), "Stop. What about the oil filter?")
        );
        let silent = crate::Args::parse_from(["fieldvox-load", "--scenario", "mic", "--noise-dbfs", "off"]);
        assert_eq!(silent.noise_dbfs, f32::NEG_INFINITY);
        for bad in ["3", "loud", "NaN"] {
            assert!(parse_noise_dbfs(bad).is_err(), "{bad}");
        }
    }
}
