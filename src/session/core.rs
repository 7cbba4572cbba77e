//! A realtime session, whatever carries it. A transport feeds it inbound events (control
//! JSON, PCM16 audio at the declared rate) and the signals of its own background work;
//! it emits through its [`Outbox`]. The WebSocket adapter (`websocket.rs`) is one such
//! transport; another is a new file beside it.
//!
//! The session owns its turn (one in flight), turn-taking (VAD, the evidence an
//! interruption needs, the echo guard), the conversation history and what a resume needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::dialect::Outbox;
use super::echo::{CALIBRATE_UNTIL, EchoGuard};
use super::history::{Exchange, History, heard_part};
use super::interruption::{Verdict, judge};
use super::playback::Playback;
use super::protocol::{
    AudioFormat, ClientEvent, ErrorBody, ItemInfo, ItemRole, ItemText, OPUS_RATES, ResponseStatus, ServerEvent,
    ServerVad, SessionInfo, SessionLimits, SessionUpdate, Timings, TurnDetection, answer_item_id,
};
use super::resume::ResumeState;
use crate::app::App;
use crate::audio::opus::OpusDecoder;
use crate::audio::pcm::rms_dbfs;
use crate::auth::Claims;
use crate::error::ErrorCode;
use crate::limits::{Limit, Refusal};
use crate::metrics::Stage;
use crate::pipeline::Pipeline;
use crate::pipeline::cancel::Cancel;
use crate::pipeline::speculation::Prepare;
use crate::pipeline::turn::{self, Question, SttTask, TurnContext, TurnRecord, transcription_hint};
use crate::voice::endpoint::{Endpoint, EndpointConfig};
use crate::voice::input::VoiceInput;
use crate::voice::vad::WINDOW;
use crate::workers::fair;

/// How long after a frame plays its echo may still arrive (network, the client's jitter
/// buffer, the room).
const ECHO_TAIL: Duration = Duration::from_millis(600);

/// Work a session started in the background, reporting back.
#[derive(Debug)]
pub enum Signal {
    /// The turn tagged `seq` has sent its `response.done`.
    TurnDone(u64),
    /// Speech heard over an answer (candidate `candidate`) was transcribed; `whole` when
    /// the transcript covers the whole utterance.
    Heard { candidate: u64, transcript: String, whole: bool },
    /// Time to judge a candidate held until its answer's echo path was measured.
    Recheck { candidate: u64 },
}

/// The latest turn: running, or finished sending while its answer may still be playing.
struct ActiveTurn {
    cancel: Cancel,
    seq: u64,
    response_id: String,
    question_item: String,
    playback: Arc<Playback>,
    record: Arc<TurnRecord>,
    /// The turn task has ended (its `response.done` is sent).
    finished: bool,
    /// The answer was cut short: microseconds of it the user heard.
    heard_us: Option<u64>,
    /// The client said it stopped playing it (`conversation.item.truncate`).
    truncated: bool,
}

impl ActiveTurn {
    /// Whether the client may still be playing this turn's answer: until its audio has
    /// played out by the playback clock, unless the client said it stopped.
    fn audible(&self) -> bool {
        !self.truncated && (!self.finished || self.playback.playing_until().is_some_and(|t| t > Instant::now()))
    }
}

/// Speech heard while an answer is audible; a turn only once judged an interruption.
struct Candidate {
    id: u64,
    audio_start_ms: u64,
    /// When its speech was detected.
    detected: Instant,
    /// The longest speech measured in it so far.
    speech_ms: u64,
    /// Its loudest window, and the loudest answer audio playing meanwhile (dBFS): speech
    /// never louder than the echo gate was the echo, even if the gate was not yet known.
    loudest_db: f32,
    playing_db: f32,
    /// A transcription of it is running.
    check: Option<JoinHandle<()>>,
    /// It ended (at this `audio_end_ms`) before it was judged.
    ended: Option<u64>,
    /// A transcript that would interrupt, held until the echo path of the answer is
    /// measured (it may be that answer's echo): (transcript, whole).
    held: Option<(String, bool)>,
}

impl Drop for Candidate {
    fn drop(&mut self) {
        if let Some(task) = self.check.take() {
            task.abort();
        }
    }
}

/// What a transport hands a session: where events go, which answer audio may leave, and
/// where background work reports.
pub struct Wiring {
    pub out: Outbox,
    /// The turn whose audio may still be sent; 0 = none. The transport's writer drops
    /// queued audio of any other turn.
    pub audio_gate: Arc<AtomicU64>,
    pub signals: mpsc::Sender<Signal>,
    /// Audio formats the transport itself fixes (WebRTC's are settled in SDP), which
    /// `session.update` may then not change.
    pub fixed_audio: Option<FixedAudio>,
}

/// What closing does to an answer that finished being made but may still be playing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Stop it (the client left, or the session was torn down).
    StopAll,
    /// Let its queued audio play out (a drain waited for it to finish).
    LetAnswerPlay,
}

/// Formats and rates a transport settles for both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedAudio {
    pub input: (AudioFormat, u32),
    pub output: (AudioFormat, u32),
    /// Why, for the client that asks to change them.
    pub by: &'static str,
}

pub struct Session {
    app: Arc<App>,
    id: Uuid,
    claims: Claims,
    out: Outbox,
    audio_gate: Arc<AtomicU64>,
    signals: mpsc::Sender<Signal>,
    input_rate: Option<u32>,
    output_rate: u32,
    input_format: AudioFormat,
    output_format: AudioFormat,
    /// Decodes the client's Opus packets, made on the first (per input rate).
    opus_in: Option<OpusDecoder>,
    fixed_audio: Option<FixedAudio>,
    equipment: Option<String>,
    turn_detection: TurnDetection,
    pipeline: Arc<Pipeline>,
    /// Created on the first audio frame: sessions that never talk carry no audio state.
    voice: Option<VoiceInput>,
    turn: Option<ActiveTurn>,
    /// Transcription started during the user's pause, for the utterance of this length.
    speculation: Option<(usize, SttTask)>,
    /// A committed question waiting for `response.create`, with its item id.
    awaiting_response: Option<(String, Question)>,
    /// The user item being spoken, and the transcript sent for it so far as deltas.
    speaking: Option<(String, Arc<Mutex<String>>)>,
    candidate: Option<Candidate>,
    echo: EchoGuard,
    next_seq: u64,
    history: History,
    /// Seconds of the last utterance committed as a question.
    heard_secs: f64,
    /// Over the audio allowance until then: speech is not transcribed ahead of its end.
    audio_refused_until: Option<Instant>,
}

impl Session {
    /// Opens a session (or takes back a resumed one) and sends `session.created`.
    pub async fn open(
        app: Arc<App>,
        claims: Claims,
        id: Uuid,
        pipeline: Arc<Pipeline>,
        wiring: Wiring,
        resumed: Option<ResumeState>,
    ) -> Self {
        let dialect = wiring.out.dialect();
        let mut s = Session {
            app,
            id,
            claims,
            out: wiring.out,
            audio_gate: wiring.audio_gate,
            signals: wiring.signals,
            input_rate: dialect.default_input_rate(),
            output_rate: dialect.default_output_rate(),
            input_format: AudioFormat::Pcm16,
            output_format: AudioFormat::Pcm16,
            opus_in: None,
            fixed_audio: wiring.fixed_audio,
            equipment: None,
            turn_detection: TurnDetection::ServerVad(ServerVad::default()),
            pipeline,
            voice: None,
            turn: None,
            speculation: None,
            awaiting_response: None,
            speaking: None,
            candidate: None,
            echo: EchoGuard::new(0.0, None),
            next_seq: 1,
            history: History::default(),
            heard_secs: 0.0,
            audio_refused_until: None,
        };
        let resuming = resumed.is_some();
        let unfinished = resumed.and_then(|state| s.restore(state));
        if let Some(fixed) = s.fixed_audio {
            (s.input_format, s.output_format) = (fixed.input.0, fixed.output.0);
            (s.input_rate, s.output_rate) = (Some(fixed.input.1), fixed.output.1);
        }
        s.echo = s.echo_guard();
        let mut session = s.info();
        session.resume_token = Some(s.app.resumer.token(s.id, &s.claims));
        session.resumed = resuming;
        s.send(ServerEvent::SessionCreated { session }).await;
        if let Some(response_id) = unfinished {
            // The answer in progress when the socket dropped did not finish.
            let (status, text, timings) = (ResponseStatus::Cancelled, String::new(), Timings::default());
            s.send(ServerEvent::ResponseDone { response_id, status, text, timings, error: None }).await;
        }
        s
    }

    fn echo_guard(&self) -> EchoGuard {
        let interrupt = &self.pipeline.profile.interrupt;
        EchoGuard::new(interrupt.echo_margin_db, interrupt.assumed_echo_loss_db)
    }

    /// Applies a resumed session's state; returns its unfinished response, if any.
    fn restore(&mut self, state: ResumeState) -> Option<String> {
        if let Some(p) = self.app.pipelines.get(Some(&state.pipeline)) {
            self.pipeline = p;
        }
        self.input_rate = state.input_rate;
        self.output_rate = state.output_rate;
        self.input_format = state.input_format;
        self.output_format = state.output_format;
        self.equipment = state.equipment;
        self.turn_detection = state.turn_detection.map_or(TurnDetection::Manual, TurnDetection::ServerVad);
        self.history = state.history;
        tracing::info!(turns = self.history.len(), "session resumed");
        state.unfinished_response
    }

    /// Whether an answer is still being made (its `response.done` not yet sent).
    pub fn is_answering(&self) -> bool {
        self.turn.as_ref().is_some_and(|t| !t.finished)
    }

    /// Tells the client the server is shutting down (`session.going_away`); true when the
    /// session may end at once, false while an answer is still being made.
    pub async fn go_away(&self) -> bool {
        let drain_ms = self.app.config.server.shutdown_grace_ms;
        self.send(ServerEvent::GoingAway { reason: "server is shutting down".into(), drain_ms }).await;
        !self.is_answering()
    }

    /// Ends the session: stops its work, and returns what a resume would restore.
    pub async fn close(self) -> ResumeState {
        self.close_with(Closing::StopAll).await
    }

    /// [`close`](Self::close), with a policy for an answer that finished but still plays.
    pub async fn close_with(mut self, closing: Closing) -> ResumeState {
        let unfinished =
            self.turn.as_ref().filter(|t| !t.finished && t.record.created()).map(|t| t.response_id.clone());
        let let_play = closing == Closing::LetAnswerPlay && self.turn.as_ref().is_some_and(|t| t.finished);
        if let_play {
            // Its audio is queued already: kept for the history, not stopped.
            if let Some(turn) = self.turn.take() {
                self.archive(turn);
            }
        } else {
            self.cancel_turn().await;
        }
        self.drop_speculation();
        self.candidate = None;
        if let Some((_, Question::Transcribing(task))) = self.awaiting_response.take() {
            task.abort();
        }
        ResumeState {
            session_id: self.id,
            tenant: self.claims.tenant.clone(),
            user: self.claims.sub.clone(),
            pipeline: self.pipeline.profile.name.clone(),
            input_rate: self.input_rate,
            output_rate: self.output_rate,
            input_format: self.input_format,
            output_format: self.output_format,
            equipment: self.equipment.clone(),
            turn_detection: self.turn_detection.server_vad().cloned(),
            history: std::mem::take(&mut self.history),
            unfinished_response: unfinished,
        }
    }

    pub async fn send(&self, event: ServerEvent) {
        self.out.event(&event).await;
    }

    async fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.app.metrics.error(code);
        let message = message.into();
        tracing::debug!(code = code.as_str(), %message, "client error");
        self.send(ServerEvent::error(code, message)).await;
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.to_string(),
            tenant: self.claims.tenant.clone(),
            input_audio_format: self.input_format,
            input_sample_rate: self.input_rate.unwrap_or(16_000),
            output_audio_format: self.output_format,
            output_sample_rate: self.output_rate,
            equipment: self.equipment.clone(),
            pipeline: self.pipeline.profile.name.clone(),
            turn_detection: self.turn_detection.server_vad().cloned(),
            limits: SessionLimits {
                max_frame_bytes: self.app.config.server.max_frame_bytes,
                max_utterance_ms: self.pipeline.profile.vad.max_utterance_ms,
            },
            resume_token: None,
            resumed: false,
        }
    }

    /// Background work reporting back.
    pub async fn on_signal(&mut self, signal: Signal) {
        match signal {
            Signal::TurnDone(seq) => {
                // Kept while its answer plays: talking over it must still stop it.
                if let Some(turn) = self.turn.as_mut().filter(|t| t.seq == seq) {
                    turn.finished = true;
                }
            }
            Signal::Heard { candidate, transcript, whole } => self.judge_candidate(candidate, transcript, whole).await,
            Signal::Recheck { candidate } => {
                // No microphone window came to end the measurement: end it with what came.
                if let Some(turn) = self.turn.as_ref() {
                    let floor = self.voice.as_ref().map_or(f32::NEG_INFINITY, |v| v.endpointer.noise_floor_dbfs());
                    self.echo.settle(turn.seq, floor);
                }
                if self.candidate.as_ref().is_some_and(|c| c.id == candidate) {
                    self.judge_held().await;
                }
            }
        }
    }

    /// A JSON control event.
    pub async fn on_text(&mut self, text: &str) {
        let event = match ClientEvent::parse(text) {
            Ok(e) => e,
            Err(e) => return self.error(e.code(), e.message()).await,
        };
        match event {
            ClientEvent::SessionUpdate(update) => self.on_update(*update).await,
            ClientEvent::AudioAppend { audio } => match base64::engine::general_purpose::STANDARD.decode(audio) {
                Ok(bytes) => self.on_audio(&bytes).await,
                Err(e) => self.error(ErrorCode::InvalidAudio, format!("audio is not valid base64: {e}")).await,
            },
            ClientEvent::AudioCommit => {
                let manual = self.turn_detection == TurnDetection::Manual;
                let ended = match self.voice.as_mut() {
                    Some(v) if manual => v.take_held().map(|utterance| (None, utterance)),
                    Some(v) => match v.endpointer.commit() {
                        Some(Endpoint::SpeechStopped { audio_end_ms, utterance }) => {
                            Some((Some(audio_end_ms), utterance))
                        }
                        _ => None,
                    },
                    None => None,
                };
                self.candidate = None;
                match ended {
                    Some((audio_end_ms, utterance)) => self.utterance_ended(audio_end_ms, utterance).await,
                    None => self.error(ErrorCode::EmptyQuestion, "no speech in the input audio buffer").await,
                }
            }
            ClientEvent::AudioClear => {
                if let Some(v) = self.voice.as_mut() {
                    v.clear();
                }
                self.drop_speculation();
                self.candidate = None;
                self.speaking = None;
                self.send(ServerEvent::AudioCleared).await;
            }
            ClientEvent::ItemCreate(item) => {
                let text = item.item.text();
                if text.trim().is_empty() {
                    return self.error(ErrorCode::EmptyQuestion, "the question has no text").await;
                }
                let item_id = new_item_id();
                self.announce_user_item(&item_id).await;
                if self.out.dialect().typed_question_responds() {
                    self.start_turn(item_id, Question::Text(text)).await;
                } else {
                    self.await_response(item_id, Question::Text(text));
                }
            }
            ClientEvent::ResponseCreate => match self.awaiting_response.take() {
                Some((item_id, question)) => self.start_turn(item_id, question).await,
                None => {
                    self.error(
                        ErrorCode::EmptyQuestion,
                        "nothing to answer: commit the input audio or create a question item first",
                    )
                    .await
                }
            },
            ClientEvent::ResponseCancel => self.cancel_turn().await,
            ClientEvent::ItemTruncate { item_id, audio_end_ms } => self.truncate(&item_id, audio_end_ms).await,
            ClientEvent::ItemRetrieve { item_id } => self.retrieve(item_id).await,
            ClientEvent::Ping => self.send(ServerEvent::Pong).await,
        }
    }

    /// The client says how much of an answer it played: the history keeps only that.
    async fn truncate(&mut self, item_id: &str, audio_end_ms: u64) {
        let heard_us = audio_end_ms.saturating_mul(1000);
        let is = |response_id: &str| response_id == item_id || answer_item_id(response_id) == item_id;
        if let Some(turn) = self.turn.as_mut().filter(|t| is(&t.response_id)) {
            turn.heard_us = Some(turn.heard_us.map_or(heard_us, |h| h.min(heard_us)));
            turn.truncated = true;
            return;
        }
        // The talk page and older clients name the response; OpenAI's name the item.
        if self.history.truncate(item_id, heard_us) || self.history.truncate(&answer_item_id(item_id), heard_us) {
            return;
        }
        self.error(ErrorCode::InvalidEvent, format!("no answer item {item_id:?} in this conversation")).await;
    }

    /// Sends what the conversation holds for an item. The exchange in progress is read as
    /// it would be archived now.
    async fn retrieve(&mut self, item_id: String) {
        let current = self.turn.as_ref().and_then(|t| {
            let exchange = exchange_of(t)?;
            match &item_id {
                id if *id == exchange.question_item => Some((ItemRole::User, exchange.question)),
                id if *id == exchange.answer_item || *id == t.response_id => {
                    Some((ItemRole::Assistant, exchange.answer))
                }
                _ => None,
            }
        });
        let held = current.or_else(|| {
            let id = if item_id.starts_with("resp_") { answer_item_id(&item_id) } else { item_id.clone() };
            self.history.item(&id).map(|(role, text)| (role, text.to_string()))
        });
        match held {
            Some((role, text)) => {
                self.send(ServerEvent::ItemRetrieved { item: ItemText { id: item_id, role, text } }).await
            }
            None => self.error(ErrorCode::InvalidEvent, format!("no item {item_id:?} in this conversation")).await,
        }
    }

    async fn on_update(&mut self, update: SessionUpdate) {
        let changes = match update.changes() {
            Ok(c) => c,
            Err(e) => return self.error(e.code, e.message).await,
        };
        // The formats and rates it leaves the session with must go together; if not,
        // nothing of it is applied.
        let input_format = changes.input_format.unwrap_or(self.input_format);
        let output_format = changes.output_format.unwrap_or(self.output_format);
        let input_rate = changes.input_rate.or(self.input_rate).unwrap_or(16_000);
        let output_rate = changes.output_rate.unwrap_or(self.output_rate);
        if let Some(fixed) = self.fixed_audio
            && (fixed.input != (input_format, input_rate) || fixed.output != (output_format, output_rate))
        {
            let (i, o) = (fixed.input, fixed.output);
            let message = format!(
                "audio on this transport is set by {}: {} at {} Hz in, {} at {} Hz out",
                fixed.by,
                i.0.name(),
                i.1,
                o.0.name(),
                o.1
            );
            return self.error(ErrorCode::UnsupportedAudioFormat, message).await;
        }
        for (side, format, rate) in [("input", input_format, input_rate), ("output", output_format, output_rate)] {
            if !format.takes_rate(rate) {
                let message = format!(
                    "{side} audio {} cannot be {rate} Hz; Opus takes {OPUS_RATES:?} (set {side}_sample_rate)",
                    format.name()
                );
                return self.error(ErrorCode::UnsupportedAudioFormat, message).await;
            }
        }
        if let Some(name) = changes.pipeline.as_deref() {
            match self.app.pipelines.select(name) {
                Some(p) => {
                    self.pipeline = p;
                    self.voice = None;
                    self.echo = self.echo_guard();
                }
                None => {
                    let known: Vec<&str> = self.app.pipelines.names().collect();
                    return self
                        .error(ErrorCode::UnknownPipeline, format!("no pipeline {name:?}; known: {}", known.join(", ")))
                        .await;
                }
            }
        }
        // A native client that names no rate is at 16 kHz once it has declared a format.
        if self.input_rate != Some(input_rate) || self.input_format != input_format {
            self.voice = None;
            self.opus_in = None;
        }
        self.input_rate = Some(input_rate);
        self.input_format = input_format;
        self.output_rate = output_rate;
        self.output_format = output_format;
        if let Some(e) = changes.equipment {
            let e = e.trim();
            self.equipment = (!e.is_empty() && e != "*").then(|| e.to_string());
        }
        if let Some(detection) = changes.turn_detection {
            // The endpointer is rebuilt with the new thresholds at the next audio frame.
            self.voice = None;
            self.drop_speculation();
            self.candidate = None;
            self.turn_detection = detection;
        }
        self.send(ServerEvent::SessionUpdated { session: self.info() }).await;
        if !changes.ignored.is_empty() {
            let fields = changes.ignored.join(", ");
            self.error(ErrorCode::UnsupportedField, format!("session fields not supported, ignored: {fields}")).await;
        }
    }

    /// The profile's turn-taking thresholds with the client's server-VAD settings applied.
    fn endpoint_config(&self) -> EndpointConfig {
        let mut config = self.pipeline.profile.vad.clone();
        if let Some(vad) = self.turn_detection.server_vad() {
            if let Some(t) = vad.threshold {
                config.threshold = t;
                config.release_threshold = config.release_threshold.min(t);
            }
            if let Some(ms) = vad.silence_duration_ms {
                config.end_of_speech_ms = ms;
            }
            if let Some(ms) = vad.prefix_padding_ms {
                config.pre_roll_ms = ms;
            }
        }
        config
    }

    /// One binary frame of the client's audio: PCM16, or one Opus packet, at the
    /// session's input rate.
    pub async fn on_audio(&mut self, bytes: &[u8]) {
        let Some(rate) = self.input_rate else {
            return self
                .error(ErrorCode::AudioFormatNotSet, "send session.update with the input audio format before audio")
                .await;
        };
        self.ensure_voice(rate);
        let pushed = match self.input_format {
            AudioFormat::Pcm16 => match self.voice.as_mut() {
                Some(voice) => voice.push_pcm16(bytes).map_err(|e| e.to_string()),
                None => Ok(()),
            },
            AudioFormat::Opus => self.push_opus(bytes, rate),
        };
        if let Err(e) = pushed {
            return self.error(ErrorCode::InvalidAudio, e).await;
        }
        self.listen().await;
    }

    /// Audio a transport decoded itself (WebRTC's, through its jitter buffer), mono at
    /// the session's input rate.
    pub async fn on_samples(&mut self, samples: &[f32]) {
        let Some(rate) = self.input_rate else { return };
        self.ensure_voice(rate);
        if let Some(voice) = self.voice.as_mut() {
            voice.push_samples(samples);
        }
        self.listen().await;
    }

    /// The voice input is made on the first audio: sessions that never talk carry none.
    fn ensure_voice(&mut self, rate: u32) {
        if self.voice.is_none() {
            self.voice = Some(VoiceInput::new(rate, self.endpoint_config()));
        }
    }

    /// Turn-taking over the audio just heard: windows through the VAD and endpointer.
    async fn listen(&mut self) {
        let Some(voice) = self.voice.as_mut() else { return };
        if self.turn_detection == TurnDetection::Manual {
            // No VAD: everything until the client's commit is the question.
            voice.hold();
            return;
        }
        while let Some(window) = self.voice.as_mut().and_then(VoiceInput::next_window) {
            let level = rms_dbfs(&window);
            self.follow_echo(level).await;
            let prob = self.speech_probability(window, level).await;
            let Some(voice) = self.voice.as_mut() else { return };
            let ended = voice.endpointer.push(&window, prob);
            match ended {
                None => self.weigh_candidate(),
                Some(Endpoint::SpeechStarted { audio_start_ms }) => self.speech_started(audio_start_ms).await,
                Some(Endpoint::Paused { utterance }) => {
                    if let Some(c) = self.candidate.as_ref() {
                        // A pause is more evidence, unless a check is already running.
                        if c.check.is_none() {
                            self.check_candidate(utterance, false);
                        }
                    } else {
                        self.speculate(utterance);
                    }
                }
                Some(Endpoint::SpeechStopped { audio_end_ms, utterance }) => {
                    self.speech_stopped(audio_end_ms, utterance).await
                }
            }
        }
        // The silence may already be complete inside the window that is still filling.
        let ended = self.voice.as_mut().and_then(VoiceInput::check_partial);
        if let Some(Endpoint::SpeechStopped { audio_end_ms, utterance }) = ended {
            self.speech_stopped(audio_end_ms, utterance).await;
        }
    }

    /// Decodes one Opus packet into the voice input.
    fn push_opus(&mut self, packet: &[u8], rate: u32) -> Result<(), String> {
        if self.opus_in.is_none() {
            self.opus_in = Some(OpusDecoder::at(rate, 1).map_err(|e| format!("no Opus decoder at {rate} Hz: {e}"))?);
        }
        let (Some(decoder), Some(voice)) = (self.opus_in.as_mut(), self.voice.as_mut()) else { return Ok(()) };
        let samples = decoder.decode(packet).map_err(|e| format!("not an Opus packet: {e}"))?;
        voice.push_samples(samples);
        Ok(())
    }

    /// Per microphone window at `level`: the echo gate for it, the loudness of speech
    /// heard over the answer, and a verdict held for the echo measurement, which this
    /// window may have ended.
    async fn follow_echo(&mut self, level: f32) {
        let (echo_gate, playing) = self.echo_gate(level);
        if let Some(v) = self.voice.as_mut() {
            v.endpointer.set_echo_gate(echo_gate);
        }
        if let Some(c) = self.candidate.as_mut() {
            c.loudest_db = c.loudest_db.max(level);
            c.playing_db = c.playing_db.max(playing.unwrap_or(f32::NEG_INFINITY));
            if c.held.is_some() {
                self.judge_held().await;
            }
        }
    }

    /// Whether the echo path of the answer playing now is known (true when none plays).
    fn echo_measured(&self) -> bool {
        self.turn.as_ref().is_none_or(|t| t.playback.first_audio().is_none() || self.echo.measured(t.seq))
    }

    /// The gate the answer's echo cannot pass, and the level of the answer playing (a
    /// microphone window at `mic_db` also measures the echo path at an answer's start);
    /// no gate when nothing plays or no echo comes back.
    fn echo_gate(&mut self, mic_db: f32) -> (Option<f32>, Option<f32>) {
        let Some(turn) = self.turn.as_ref() else { return (None, None) };
        let Some(first) = turn.playback.first_audio() else { return (None, None) };
        let now = Instant::now();
        let playing = turn.playback.level_between(now.checked_sub(ECHO_TAIL).unwrap_or(now), now);
        let floor = self.voice.as_ref().map_or(f32::NEG_INFINITY, |v| v.endpointer.noise_floor_dbfs());
        self.echo.observe(turn.seq, now.saturating_duration_since(first), playing, mic_db, floor);
        (playing.and_then(|p| self.echo.gate(p)), playing)
    }

    /// Silero's probability, or 0 without asking it when the window is below the gate.
    async fn speech_probability(&mut self, window: [f32; WINDOW], level: f32) -> f32 {
        let Some(voice) = self.voice.as_mut() else { return 0.0 };
        // Quieter than the session's noise (or echo) gate: silence, without a model call.
        if !voice.endpointer.may_be_speech(level) {
            return 0.0;
        }
        // The state travels to the VAD thread and back; on failure the stream restarts fresh.
        match self.app.vad.score(window, std::mem::take(&mut voice.vad)).await {
            Ok((prob, state)) => {
                if let Some(v) = self.voice.as_mut() {
                    v.vad = state;
                }
                prob
            }
            Err(e) => {
                tracing::warn!(error = %e, "vad unavailable");
                self.app.metrics.error(ErrorCode::Overloaded);
                0.0
            }
        }
    }

    async fn speech_started(&mut self, audio_start_ms: u64) {
        self.drop_speculation();
        let interrupts = self.turn_detection.server_vad().is_some_and(|v| v.interrupt_response);
        if interrupts && self.turn.as_ref().is_some_and(ActiveTurn::audible) {
            // Over an answer: not a turn until the evidence says so; the answer plays on.
            let id = self.next_seq;
            self.next_seq += 1;
            let detected = Instant::now();
            self.candidate = Some(Candidate {
                id,
                audio_start_ms,
                detected,
                speech_ms: 0,
                loudest_db: f32::NEG_INFINITY,
                playing_db: f32::NEG_INFINITY,
                check: None,
                ended: None,
                held: None,
            });
            return;
        }
        if interrupts {
            self.cancel_turn().await;
        }
        self.user_speaks(audio_start_ms).await;
    }

    /// A new user item begins: `speech_started` with its id ready for partial transcripts.
    async fn user_speaks(&mut self, audio_start_ms: u64) {
        self.speaking = Some((new_item_id(), Arc::default()));
        self.send(ServerEvent::SpeechStarted { audio_start_ms }).await;
    }

    /// Measures the speech over an answer; once long enough, has it transcribed.
    fn weigh_candidate(&mut self) {
        let (Some(c), Some(voice)) = (self.candidate.as_mut(), self.voice.as_ref()) else { return };
        c.speech_ms = c.speech_ms.max(voice.endpointer.speech_ms());
        let min = self.pipeline.profile.interrupt.min_speech_ms;
        if c.check.is_some() || c.ended.is_some() || c.speech_ms < min {
            return;
        }
        if let Some(utterance) = voice.endpointer.utterance_so_far() {
            self.check_candidate(utterance, false);
        }
    }

    /// Transcribes speech heard over the answer; the verdict comes back as a signal.
    fn check_candidate(&mut self, utterance: Vec<f32>, whole: bool) {
        let Some(c) = self.candidate.as_mut() else { return };
        if !whole && c.speech_ms < self.pipeline.profile.interrupt.min_speech_ms {
            return;
        }
        let candidate = c.id;
        let pipeline = self.pipeline.clone();
        let signals = self.signals.clone();
        let task = fair::spawn(async move {
            let transcript = match pipeline.stt.transcribe_draft(utterance).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "speech over the answer not transcribed");
                    String::new()
                }
            };
            let _ = signals.send(Signal::Heard { candidate, transcript, whole }).await;
        });
        if let Some(old) = c.check.replace(task) {
            old.abort();
        }
    }

    /// Decides what speech heard over an answer was.
    async fn judge_candidate(&mut self, candidate: u64, transcript: String, whole: bool) {
        let Some(c) = self.candidate.as_mut().filter(|c| c.id == candidate) else { return };
        if c.ended.is_some() && !whole {
            return; // the check of the whole utterance is on its way
        }
        c.check = None;
        let played = self.turn.as_ref().map(played_so_far).unwrap_or_default();
        let under_gate = self.echo.gate(c.playing_db).is_some_and(|gate| c.loudest_db < gate);
        let verdict = if under_gate {
            Verdict::Echo
        } else {
            judge(&transcript, &played, &self.pipeline.profile.interrupt, self.echo.hears_echo())
        };
        if verdict == Verdict::Interrupt && !self.echo_measured() {
            // The answer only just started: it may be its own echo, known in a moment.
            if let Some(c) = self.candidate.as_mut() {
                c.held = Some((transcript, whole));
            }
            let into = self.turn.as_ref().and_then(|t| t.playback.first_audio()).map(|t| t.elapsed());
            let wait = CALIBRATE_UNTIL.saturating_sub(into.unwrap_or_default()) + Duration::from_millis(50);
            let signals = self.signals.clone();
            fair::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = signals.send(Signal::Recheck { candidate }).await;
            });
            return;
        }
        if verdict != Verdict::Interrupt {
            if whole {
                self.candidate = None;
                self.app.metrics.speech_over_answer(verdict.as_str());
                tracing::info!(verdict = verdict.as_str(), %transcript, "speech over the answer did not interrupt it");
            }
            return; // else: more evidence may come (the next pause, the end)
        }
        let Some(mut c) = self.candidate.take() else { return };
        self.app.metrics.speech_over_answer(verdict.as_str());
        self.cancel_turn().await;
        let reaction_ms = c.detected.elapsed().as_secs_f64() * 1000.0;
        self.app.metrics.stage(Stage::BargeIn, reaction_ms);
        tracing::info!(%transcript, reaction_ms, "interrupted by the user");
        self.user_speaks(c.audio_start_ms).await;
        if let Some(audio_end_ms) = c.ended.take() {
            self.heard_secs = audio_end_ms.saturating_sub(c.audio_start_ms) as f64 / 1000.0;
            // The whole question was heard already: its transcript is the question.
            if self.admit_audio(Some(audio_end_ms)).await {
                let heard: SttTask = fair::spawn(async move { Ok(transcript) });
                self.commit_question(Some(audio_end_ms), Question::Transcribing(heard)).await;
            }
        }
    }

    /// Judges the candidate's verdict held for the echo measurement, once that is done.
    async fn judge_held(&mut self) {
        if !self.echo_measured() {
            return;
        }
        let Some(c) = self.candidate.as_mut() else { return };
        let id = c.id;
        if let Some((transcript, whole)) = c.held.take() {
            self.judge_candidate(id, transcript, whole).await;
        }
    }

    async fn speech_stopped(&mut self, audio_end_ms: u64, utterance: Vec<f32>) {
        let min = self.pipeline.profile.interrupt.min_speech_ms;
        if let Some(c) = self.candidate.as_mut() {
            if c.speech_ms < min {
                // A cough, a knock: too short to be anything, and not worth a transcription.
                self.candidate = None;
                self.app.metrics.speech_over_answer(Verdict::TooShort.as_str());
                return;
            }
            c.ended = Some(audio_end_ms);
            self.check_candidate(utterance, true);
            return;
        }
        self.utterance_ended(Some(audio_end_ms), utterance).await;
    }

    /// Starts transcribing what was said so far while the silence window runs out, then
    /// searching what it heard, so the turn finds both done if the user stays silent.
    fn speculate(&mut self, utterance: Vec<f32>) {
        self.drop_speculation();
        if self.audio_refused_until.is_some_and(|t| Instant::now() < t) {
            return; // its end will be refused too: transcribing it would be wasted work
        }
        let partial = self.speaking.clone().filter(|_| self.pipeline.profile.conversation.partial_transcripts);
        let prepare = Prepare {
            kb: self.app.kb.clone(),
            pipeline: self.pipeline.clone(),
            tenant: self.claims.tenant.clone(),
            equipment: self.equipment.clone(),
            history: self.history.exchanges().cloned().collect(),
        };
        self.speculation = Some((utterance.len(), self.transcribe(utterance, partial, Some(prepare))));
    }

    /// Transcribes on a task of its own; with `partial`, sends what is new in the
    /// transcript as a delta of that user item; with `prepare`, prepares the turn on it.
    fn transcribe(
        &self,
        utterance: Vec<f32>,
        partial: Option<(String, Arc<Mutex<String>>)>,
        prepare: Option<Prepare>,
    ) -> SttTask {
        let pipeline = self.pipeline.clone();
        let kb = self.app.kb.clone();
        let tenant = self.claims.tenant.clone();
        let out = self.out.clone();
        fair::spawn(async move {
            let hint = transcription_hint(&kb, &tenant, &pipeline).await;
            let heard = pipeline.stt.transcribe(utterance, hint).await;
            if let (Ok(text), Some((item_id, sent))) = (&heard, partial)
                && let Some(delta) = new_part(text, &sent)
            {
                out.event(&ServerEvent::TranscriptionDelta { item_id, delta }).await;
            }
            if let (Ok(text), Some(prepare)) = (&heard, prepare) {
                // On this task, so a turn that takes this transcript finds the search done
                // instead of racing it; speech that goes on aborts both.
                prepare.run(text.clone()).await;
            }
            heard
        })
    }

    fn drop_speculation(&mut self) {
        if let Some((_, task)) = self.speculation.take() {
            task.abort();
        }
    }

    /// The user stopped (`audio_end_ms` when the VAD or the endpointer saw it) or the
    /// client committed. A transcription started during the pause is reused when it
    /// covered exactly this utterance (the user stayed silent after the pause).
    async fn utterance_ended(&mut self, audio_end_ms: Option<u64>, utterance: Vec<f32>) {
        self.heard_secs = utterance.len() as f64 / f64::from(crate::voice::vad::SAMPLE_RATE);
        if !self.admit_audio(audio_end_ms).await {
            self.drop_speculation();
            return;
        }
        let transcription = match self.speculation.take() {
            Some((len, task)) if len == utterance.len() => task,
            other => {
                if let Some((_, task)) = other {
                    task.abort();
                }
                self.transcribe(utterance, None, None)
            }
        };
        self.commit_question(audio_end_ms, Question::Transcribing(transcription)).await;
    }

    /// Charges the utterance just heard (`heard_secs`) to the audio allowance. Refused, it
    /// is not transcribed: the speech ends there, with the error saying when to retry.
    async fn admit_audio(&mut self, audio_end_ms: Option<u64>) -> bool {
        let heard_ms = (self.heard_secs * 1000.0).round() as u64;
        if self.admit(Limit::AudioSeconds, heard_ms).await {
            return true;
        }
        if let Some(audio_end_ms) = audio_end_ms {
            self.send(ServerEvent::SpeechStopped { audio_end_ms }).await;
        }
        self.speaking = None;
        false
    }

    /// Charges `cost` to the user's and tenant's allowance of `limit`. Sends what is left
    /// (`rate_limits.updated`); refused, also the `error` saying which limit and when to
    /// retry. The session stays open either way.
    async fn admit(&mut self, limit: Limit, cost: u64) -> bool {
        match self.app.limits.charge(limit, &self.claims, cost).await {
            Ok(standing) => {
                if limit == Limit::AudioSeconds {
                    self.audio_refused_until = None;
                }
                if !standing.is_empty() {
                    self.send(ServerEvent::RateLimitsUpdated { rate_limits: standing }).await;
                }
                true
            }
            Err(refusal) => {
                let code = ErrorCode::from(&refusal);
                self.app.metrics.error(code);
                let retry_after = refusal.retry_after();
                if limit == Limit::AudioSeconds {
                    self.audio_refused_until = Some(Instant::now() + retry_after);
                }
                let mut error = ErrorBody::new(code, refusal.to_string()).retry_after(Some(retry_after));
                error.limit = Some(limit.as_str().into());
                self.send(ServerEvent::Error { error }).await;
                if let Refusal::Limited { standing, .. } = refusal {
                    self.send(ServerEvent::RateLimitsUpdated { rate_limits: standing }).await;
                }
                false
            }
        }
    }

    /// The utterance becomes a user item, answered now or on `response.create`.
    async fn commit_question(&mut self, audio_end_ms: Option<u64>, question: Question) {
        if let Some(audio_end_ms) = audio_end_ms {
            self.send(ServerEvent::SpeechStopped { audio_end_ms }).await;
        }
        let item_id = self.speaking.take().map_or_else(new_item_id, |(id, _)| id);
        self.send(ServerEvent::Committed { item_id: item_id.clone() }).await;
        self.announce_user_item(&item_id).await;
        match self.turn_detection.server_vad() {
            Some(vad) if vad.create_response => self.start_turn(item_id, question).await,
            _ => self.await_response(item_id, question),
        }
    }

    async fn announce_user_item(&self, item_id: &str) {
        let item = ItemInfo { id: item_id.to_string(), role: ItemRole::User, response_id: None };
        self.send(ServerEvent::ItemCreated { item }).await;
    }

    /// Holds a question for `response.create` (speech keeps transcribing meanwhile).
    fn await_response(&mut self, item_id: String, question: Question) {
        if let Some((_, Question::Transcribing(old))) = self.awaiting_response.replace((item_id, question)) {
            old.abort();
        }
    }

    async fn start_turn(&mut self, item_id: String, question: Question) {
        if !self.admit(Limit::Turns, 1).await {
            if let Question::Transcribing(task) = question {
                task.abort();
            }
            return; // the answer playing, if any, plays on
        }
        self.cancel_turn().await;
        self.candidate = None;
        let ended_at = Instant::now();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.audio_gate.store(seq, Ordering::Release);
        let cancel = Cancel::default();
        let playback = Arc::new(Playback::default());
        let record = Arc::new(TurnRecord::default());
        let response_id = format!("resp_{}", Uuid::new_v4().simple());
        let audio_in_secs = match &question {
            Question::Transcribing(_) => self.heard_secs,
            Question::Text(_) => 0.0,
        };
        let ctx = TurnContext {
            tenant: self.claims.tenant.clone(),
            user: self.claims.sub.clone(),
            session: self.id,
            audio_in_secs,
            equipment: self.equipment.clone(),
            pipeline: self.pipeline.clone(),
            kb: self.app.kb.clone(),
            metrics: self.app.metrics.clone(),
            out: self.out.clone(),
            item_id: item_id.clone(),
            output_rate: self.output_rate,
            output_format: self.output_format,
            cancel: cancel.clone(),
            audio_seq: seq,
            playback: playback.clone(),
            response_id: response_id.clone(),
            history: self.history.exchanges().cloned().collect(),
            record: record.clone(),
        };
        let done = self.signals.clone();
        fair::spawn(async move {
            turn::run(ctx, question, ended_at).await;
            let _ = done.send(Signal::TurnDone(seq)).await;
        });
        self.turn = Some(ActiveTurn {
            cancel,
            seq,
            response_id,
            question_item: item_id,
            playback,
            record,
            finished: false,
            heard_us: None,
            truncated: false,
        });
    }

    /// Stops the active turn and tells the client to drop any answer audio it buffered.
    /// A finished turn whose answer has been played out needs nothing; one still being
    /// played gets the clear too, so stale audio never plays over a new question. Either
    /// way the exchange goes into the history, holding what was heard of the answer.
    async fn cancel_turn(&mut self) {
        let Some(mut turn) = self.turn.take() else { return };
        if turn.audible() {
            turn.cancel.cancel();
            self.audio_gate.store(0, Ordering::Release);
            let heard_us = turn.playback.heard_us(Instant::now());
            turn.heard_us = Some(turn.heard_us.map_or(heard_us, |h| h.min(heard_us)));
            tracing::info!(response_id = %turn.response_id, finished = turn.finished, heard_us, "answer stopped");
            self.send(ServerEvent::OutputAudioClear { response_id: turn.response_id.clone() }).await;
        }
        self.archive(turn);
    }

    fn archive(&mut self, turn: ActiveTurn) {
        // A turn cut short before its question was heard leaves nothing.
        if let Some(exchange) = exchange_of(&turn) {
            self.history.push(exchange, &self.pipeline.profile.conversation);
        }
    }
}

/// Slack on what may have played: the client's buffer, the echo's way back, the speech
/// still being transcribed.
const PLAYED_SLACK: Duration = Duration::from_millis(1_500);

/// The words of an answer that can have played by now: all its echo can repeat. A
/// question asked as the answer starts reuses its words, but they have not played yet.
fn played_so_far(turn: &ActiveTurn) -> String {
    let said = turn.record.said.lock().map(|s| s.clone()).unwrap_or_default();
    let sent = turn.playback.sent_us();
    if sent == 0 {
        return String::new();
    }
    let played = turn.playback.heard_us(Instant::now()) + PLAYED_SLACK.as_micros() as u64;
    heard_part(&said, played as f64 / sent as f64)
}

/// The exchange a turn makes: its question, and of its answer what was heard.
fn exchange_of(turn: &ActiveTurn) -> Option<Exchange> {
    let (question, standalone) = turn.record.question.lock().ok().and_then(|q| q.clone())?;
    let said = turn.record.said.lock().map(|s| s.clone()).unwrap_or_default();
    let mut exchange = Exchange {
        question_item: turn.question_item.clone(),
        question,
        standalone,
        answer_item: answer_item_id(&turn.response_id),
        answer: said.clone(),
        said,
        answer_audio_us: turn.playback.sent_us(),
    };
    if let Some(heard_us) = turn.heard_us {
        exchange.truncate(heard_us);
    }
    Some(exchange)
}

/// What `text` adds to the transcript already sent (`sent`), updating it; `None` when
/// nothing new, or when the recogniser changed its mind about earlier words (the
/// completed transcript will have the final say).
fn new_part(text: &str, sent: &Mutex<String>) -> Option<String> {
    let mut sent = sent.lock().ok()?;
    let text = text.trim();
    let rest = text.strip_prefix(sent.as_str())?;
    if rest.trim().is_empty() {
        return None;
    }
    let delta = rest.to_string();
    *sent = text.to_string();
    Some(delta)
}

fn new_item_id() -> String {
    format!("item_{}", Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_transcripts_only_append() {
        let sent = Mutex::new(String::new());
        assert_eq!(new_part(" What torque", &sent).as_deref(), Some("What torque"));
        assert_eq!(new_part("What torque for the head bolts", &sent).as_deref(), Some(" for the head bolts"));
        assert_eq!(new_part("What torque for the head bolts", &sent), None, "nothing new");
        assert_eq!(new_part("Watt torque", &sent), None, "a changed mind waits for the final transcript");
    }
}
