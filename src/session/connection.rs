//! One WebSocket session: a reader loop that owns the session state, and a writer task
//! that owns the socket's sending half. The session lives exactly as long as the reader
//! loop; dropping it cancels everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use base64::Engine as _;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::dialect::{Dialect, Outbox};
use super::protocol::{
    AudioFormat, ClientEvent, ServerEvent, ServerVad, SessionInfo, SessionLimits, SessionUpdate, TurnDetection,
};
use super::{Outbound, SessionGuard};
use crate::app::App;
use crate::audio::pcm::rms_dbfs;
use crate::auth::Claims;
use crate::error::ErrorCode;
use crate::pipeline::Pipeline;
use crate::pipeline::cancel::Cancel;
use crate::pipeline::turn::{self, Playback, Question, SttTask, TurnContext, transcription_hint};
use crate::voice::endpoint::{Endpoint, EndpointConfig};
use crate::voice::input::VoiceInput;

/// Outbound messages buffered per session before the turn waits for the client.
const OUTBOUND_QUEUE: usize = 256;
/// A client that does not take a message for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub const TRANSPORT: &str = "websocket";

pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// The latest turn: running, or finished sending while its answer may still be playing.
struct ActiveTurn {
    cancel: Cancel,
    seq: u64,
    response_id: String,
    playback: Arc<Playback>,
    /// The turn task has ended (its `response.done` is sent).
    finished: bool,
}

impl ActiveTurn {
    /// Whether the client may still be playing this turn's answer.
    fn audible(&self) -> bool {
        !self.finished || self.playback.playing_until().is_some_and(|t| t > Instant::now())
    }
}

struct Session {
    app: Arc<App>,
    id: String,
    claims: Claims,
    out: Outbox,
    /// The turn whose audio may still be sent; 0 = none.
    audio_gate: Arc<AtomicU64>,
    input_rate: Option<u32>,
    output_rate: u32,
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
    next_seq: u64,
    turn_done: mpsc::Sender<u64>,
}

pub async fn run(socket: WebSocket, app: Arc<App>, claims: Claims, guard: SessionGuard, dialect: Dialect) {
    let span = tracing::info_span!(
        "session", session_id = %guard.id, tenant = %claims.tenant, user = %claims.sub, dialect = ?dialect
    );
    serve(socket, app, claims, guard, dialect).instrument(span).await
}

async fn serve(socket: WebSocket, app: Arc<App>, claims: Claims, guard: SessionGuard, dialect: Dialect) {
    let Some(pipeline) = app.pipelines.get(None) else {
        tracing::error!("default pipeline missing");
        return;
    };
    let (sink, mut stream) = socket.split();
    let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let audio_gate = Arc::new(AtomicU64::new(0));
    let mut writer = tokio::spawn(write_loop(sink, out_rx, audio_gate.clone()));
    let mut writer_done = false;
    let (turn_done, mut turn_done_rx) = mpsc::channel(4);
    let id = guard.id.to_string();
    let mut s = Session {
        app: app.clone(),
        id,
        claims,
        out: Outbox::new(out, dialect),
        audio_gate,
        input_rate: dialect.default_input_rate(),
        output_rate: dialect.default_output_rate(),
        equipment: None,
        turn_detection: TurnDetection::ServerVad(ServerVad::default()),
        pipeline,
        voice: None,
        turn: None,
        speculation: None,
        awaiting_response: None,
        next_seq: 1,
        turn_done,
    };
    tracing::info!("session opened");
    s.send(ServerEvent::SessionCreated { session: s.info() }).await;

    let mut drain = app.sessions.drain_signal();
    let mut draining = false;
    let idle = Duration::from_millis(app.config.server.idle_timeout_ms);
    let close_reason = loop {
        tokio::select! {
            msg = tokio::time::timeout(idle, stream.next()) => {
                let msg = match msg {
                    Err(_) => break Some((close::POLICY, "idle timeout")),
                    Ok(None) => break None,
                    Ok(Some(Err(e))) => {
                        let text = e.to_string();
                        if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                            app.metrics.error(ErrorCode::FrameTooLarge.as_str());
                            break Some((close::TOO_BIG, "frame exceeds max_frame_bytes"));
                        }
                        tracing::debug!(error = %text, "socket error");
                        break None;
                    }
                    Ok(Some(Ok(m))) => m,
                };
                // Handlers are boxed: their state (audio windows, VAD state) then exists only
                // while a message is handled, not in every idle session's future.
                match msg {
                    Message::Text(text) => Box::pin(s.on_text(&text)).await,
                    Message::Binary(bytes) => Box::pin(s.on_audio_bytes(&bytes)).await,
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            // The writer gave up on a client that stopped reading: end the session too.
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break None;
            }
            Some(seq) = turn_done_rx.recv() => {
                // Kept while its answer plays: talking over it must still stop it.
                if let Some(turn) = s.turn.as_mut().filter(|t| t.seq == seq) {
                    turn.finished = true;
                }
                if draining && s.turn.as_ref().is_none_or(|t| t.finished) {
                    break Some((close::GOING_AWAY, "server is shutting down"));
                }
            }
            changed = drain.changed(), if !draining => {
                if changed.is_err() || !*drain.borrow() {
                    continue;
                }
                draining = true;
                let drain_ms = app.config.server.shutdown_grace_ms;
                s.send(ServerEvent::GoingAway { reason: "server is shutting down".into(), drain_ms }).await;
                if s.turn.as_ref().is_none_or(|t| t.finished) {
                    break Some((close::GOING_AWAY, "server is shutting down"));
                }
            }
        }
    };
    s.cancel_turn().await;
    s.drop_speculation();
    if let Some((_, Question::Transcribing(task))) = s.awaiting_response.take() {
        task.abort();
    }
    if let Some((code, reason)) = close_reason {
        s.out.close(code, reason).await;
    }
    drop(s);
    if !writer_done {
        let _ = writer.await;
    }
    tracing::info!(reason = ?close_reason.map(|c| c.1), "session closed");
    drop(guard);
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    audio_gate: Arc<AtomicU64>,
) {
    while let Some(item) = rx.recv().await {
        let msg = match item {
            Outbound::Event(json) => Message::Text(Utf8Bytes::from(json)),
            // Audio of a cancelled turn never leaves, even if it was already queued.
            Outbound::Audio { seq, .. } | Outbound::AudioEvent { seq, .. }
                if audio_gate.load(Ordering::Acquire) != seq =>
            {
                continue;
            }
            Outbound::Audio { bytes, .. } => Message::Binary(bytes),
            Outbound::AudioEvent { json, .. } => Message::Text(Utf8Bytes::from(json)),
            Outbound::Close { code, reason } => {
                let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
                let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
                return;
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!("client too slow to read; disconnecting");
                return;
            }
        }
    }
    let _ = sink.close().await;
}

impl Session {
    async fn send(&self, event: ServerEvent) {
        self.out.event(&event).await;
    }

    async fn error(&self, code: ErrorCode, message: impl Into<String>) {
        self.app.metrics.error(code.as_str());
        let message = message.into();
        tracing::debug!(code = code.as_str(), %message, "client error");
        self.send(ServerEvent::error(code, message)).await;
    }

    fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            tenant: self.claims.tenant.clone(),
            input_audio_format: AudioFormat::Pcm16,
            input_sample_rate: self.input_rate.unwrap_or(16_000),
            output_audio_format: AudioFormat::Pcm16,
            output_sample_rate: self.output_rate,
            equipment: self.equipment.clone(),
            pipeline: self.pipeline.profile.name.clone(),
            turn_detection: self.turn_detection.server_vad().cloned(),
            limits: SessionLimits {
                max_frame_bytes: self.app.config.server.max_frame_bytes,
                max_utterance_ms: self.pipeline.profile.vad.max_utterance_ms,
            },
        }
    }

    async fn on_text(&mut self, text: &str) {
        let event = match ClientEvent::parse(text) {
            Ok(e) => e,
            Err(e) => return self.error(e.code(), e.message()).await,
        };
        match event {
            ClientEvent::SessionUpdate(update) => self.on_update(*update).await,
            ClientEvent::AudioAppend { audio } => match base64::engine::general_purpose::STANDARD.decode(audio) {
                Ok(bytes) => self.on_audio_bytes(&bytes).await,
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
                self.send(ServerEvent::AudioCleared).await;
            }
            ClientEvent::ItemCreate(item) => {
                let text = item.item.text();
                if text.trim().is_empty() {
                    return self.error(ErrorCode::EmptyQuestion, "the question has no text").await;
                }
                let item_id = new_item_id();
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
            ClientEvent::ItemTruncate { item_id, audio_end_ms } => {
                tracing::debug!(%item_id, audio_end_ms, "client truncated playback");
            }
            ClientEvent::Ping => self.send(ServerEvent::Pong).await,
        }
    }

    async fn on_update(&mut self, update: SessionUpdate) {
        let changes = match update.changes() {
            Ok(c) => c,
            Err(e) => return self.error(e.code, e.message).await,
        };
        if let Some(name) = changes.pipeline.as_deref() {
            match self.app.pipelines.select(name) {
                Some(p) => {
                    self.pipeline = p;
                    self.voice = None;
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
        let rate = changes.input_rate.or(self.input_rate).unwrap_or(16_000);
        if self.input_rate != Some(rate) {
            self.voice = None;
        }
        self.input_rate = Some(rate);
        if let Some(rate) = changes.output_rate {
            self.output_rate = rate;
        }
        if let Some(e) = changes.equipment {
            let e = e.trim();
            self.equipment = (!e.is_empty() && e != "*").then(|| e.to_string());
        }
        if let Some(detection) = changes.turn_detection {
            // The endpointer is rebuilt with the new thresholds at the next audio frame.
            self.voice = None;
            self.drop_speculation();
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

    async fn on_audio_bytes(&mut self, bytes: &[u8]) {
        let Some(rate) = self.input_rate else {
            return self
                .error(ErrorCode::AudioFormatNotSet, "send session.update with the input audio format before audio")
                .await;
        };
        if self.voice.is_none() {
            self.voice = Some(VoiceInput::new(rate, self.endpoint_config()));
        }
        let Some(voice) = self.voice.as_mut() else { return };
        if let Err(e) = voice.push_pcm16(bytes) {
            return self.error(ErrorCode::InvalidAudio, e.to_string()).await;
        }
        if self.turn_detection == TurnDetection::Manual {
            // No VAD: everything until the client's commit is the question.
            voice.hold();
            return;
        }
        while let Some(window) = self.voice.as_mut().and_then(VoiceInput::next_window) {
            let prob = self.speech_probability(window).await;
            let Some(voice) = self.voice.as_mut() else { return };
            match voice.endpointer.push(&window, prob) {
                None => {}
                Some(Endpoint::SpeechStarted { audio_start_ms }) => {
                    // Barge-in: the user talks over an answer, so stop it and drop its audio.
                    if self.turn_detection.server_vad().is_some_and(|v| v.interrupt_response) {
                        self.cancel_turn().await;
                    }
                    self.drop_speculation();
                    self.send(ServerEvent::SpeechStarted { audio_start_ms }).await;
                }
                Some(Endpoint::Paused { utterance }) => self.speculate(utterance),
                Some(Endpoint::SpeechStopped { audio_end_ms, utterance }) => {
                    self.utterance_ended(Some(audio_end_ms), utterance).await
                }
            }
        }
        // The silence may already be complete inside the window that is still filling.
        let ended = self.voice.as_mut().and_then(VoiceInput::check_partial);
        if let Some(Endpoint::SpeechStopped { audio_end_ms, utterance }) = ended {
            self.utterance_ended(Some(audio_end_ms), utterance).await;
        }
    }

    /// Starts transcribing what was said so far while the silence window runs out.
    fn speculate(&mut self, utterance: Vec<f32>) {
        self.drop_speculation();
        self.speculation = Some((utterance.len(), self.transcribe(utterance)));
    }

    /// Transcribes on a task of its own.
    fn transcribe(&self, utterance: Vec<f32>) -> SttTask {
        let pipeline = self.pipeline.clone();
        let kb = self.app.kb.clone();
        let tenant = self.claims.tenant.clone();
        tokio::spawn(async move {
            let hint = transcription_hint(&kb, &tenant, &pipeline).await;
            pipeline.stt.transcribe(utterance, hint).await
        })
    }

    fn drop_speculation(&mut self) {
        if let Some((_, task)) = self.speculation.take() {
            task.abort();
        }
    }

    /// The user stopped (`audio_end_ms` when the VAD or the endpointer saw it) or the
    /// client committed: the utterance becomes a user item, answered now or on
    /// `response.create`. A transcription started during the pause is reused when it
    /// covered exactly this utterance (the user stayed silent after the pause).
    async fn utterance_ended(&mut self, audio_end_ms: Option<u64>, utterance: Vec<f32>) {
        if let Some(audio_end_ms) = audio_end_ms {
            self.send(ServerEvent::SpeechStopped { audio_end_ms }).await;
        }
        let item_id = new_item_id();
        self.send(ServerEvent::Committed { item_id: item_id.clone() }).await;
        let transcription = match self.speculation.take() {
            Some((len, task)) if len == utterance.len() => task,
            other => {
                if let Some((_, task)) = other {
                    task.abort();
                }
                self.transcribe(utterance)
            }
        };
        let question = Question::Transcribing(transcription);
        match self.turn_detection.server_vad() {
            Some(vad) if vad.create_response => self.start_turn(item_id, question).await,
            _ => self.await_response(item_id, question),
        }
    }

    /// Holds a question for `response.create` (speech keeps transcribing meanwhile).
    fn await_response(&mut self, item_id: String, question: Question) {
        if let Some((_, Question::Transcribing(old))) = self.awaiting_response.replace((item_id, question)) {
            old.abort();
        }
    }

    /// Silero's probability, or 0 without asking it when the window is below the energy gate.
    async fn speech_probability(&mut self, window: [f32; crate::voice::vad::WINDOW]) -> f32 {
        let Some(voice) = self.voice.as_mut() else { return 0.0 };
        // Quieter than the session's noise gate: silence, without a model call.
        if !voice.endpointer.may_be_speech(rms_dbfs(&window)) {
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
                self.app.metrics.error(ErrorCode::Overloaded.as_str());
                0.0
            }
        }
    }

    async fn start_turn(&mut self, item_id: String, question: Question) {
        self.cancel_turn().await;
        let ended_at = Instant::now();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.audio_gate.store(seq, Ordering::Release);
        let cancel = Cancel::default();
        let playback = Arc::new(Playback::default());
        let response_id = format!("resp_{}", uuid::Uuid::new_v4().simple());
        let ctx = TurnContext {
            tenant: self.claims.tenant.clone(),
            equipment: self.equipment.clone(),
            pipeline: self.pipeline.clone(),
            kb: self.app.kb.clone(),
            metrics: self.app.metrics.clone(),
            out: self.out.clone(),
            item_id,
            output_rate: self.output_rate,
            cancel: cancel.clone(),
            audio_seq: seq,
            playback: playback.clone(),
            response_id: response_id.clone(),
        };
        let done = self.turn_done.clone();
        tokio::spawn(async move {
            turn::run(ctx, question, ended_at).await;
            let _ = done.send(seq).await;
        });
        self.turn = Some(ActiveTurn { cancel, seq, response_id, playback, finished: false });
    }

    /// Stops the active turn and tells the client to drop any answer audio it buffered.
    /// A finished turn whose answer has been played out needs nothing; one still being
    /// played gets the clear too, so stale audio never plays over a new question.
    async fn cancel_turn(&mut self) {
        let Some(turn) = self.turn.take() else { return };
        if !turn.audible() {
            return;
        }
        turn.cancel.cancel();
        self.audio_gate.store(0, Ordering::Release);
        tracing::info!(response_id = %turn.response_id, finished = turn.finished, "answer stopped");
        self.send(ServerEvent::OutputAudioClear { response_id: turn.response_id }).await;
    }
}

fn new_item_id() -> String {
    format!("item_{}", uuid::Uuid::new_v4().simple())
}
