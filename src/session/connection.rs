//! One WebSocket session: a reader loop that owns the session state, and a writer task
//! that owns the socket's sending half. The session lives exactly as long as the reader
//! loop; dropping it cancels everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use base64::Engine as _;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::protocol::{
    AudioFormat, ClientEvent, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, ServerEvent, SessionInfo, SessionLimits, SessionUpdate,
};
use super::{Outbound, SessionGuard};
use crate::app::App;
use crate::audio::pcm::rms_dbfs;
use crate::auth::Claims;
use crate::error::ErrorCode;
use crate::pipeline::Pipeline;
use crate::pipeline::turn::{self, Question, SttTask, TurnContext, transcription_hint};
use crate::voice::endpoint::Endpoint;
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

struct ActiveTurn {
    cancel: Arc<AtomicBool>,
    seq: u64,
    response_id: String,
}

struct Session {
    app: Arc<App>,
    id: String,
    claims: Claims,
    out: mpsc::Sender<Outbound>,
    /// The turn whose audio may still be sent; 0 = none.
    audio_gate: Arc<AtomicU64>,
    input_rate: Option<u32>,
    output_rate: u32,
    equipment: Option<String>,
    pipeline: Arc<Pipeline>,
    /// Created on the first audio frame: sessions that never talk carry no audio state.
    voice: Option<VoiceInput>,
    turn: Option<ActiveTurn>,
    /// Transcription started during the user's pause, for the utterance of this length.
    speculation: Option<(usize, SttTask)>,
    next_seq: u64,
    turn_done: mpsc::Sender<u64>,
}

pub async fn run(socket: WebSocket, app: Arc<App>, claims: Claims, guard: SessionGuard) {
    let span = tracing::info_span!("session", session_id = %guard.id, tenant = %claims.tenant, user = %claims.sub);
    serve(socket, app, claims, guard).instrument(span).await
}

async fn serve(socket: WebSocket, app: Arc<App>, claims: Claims, guard: SessionGuard) {
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
        out,
        audio_gate,
        input_rate: None,
        output_rate: 16_000,
        equipment: None,
        pipeline,
        voice: None,
        turn: None,
        speculation: None,
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
                if s.turn.as_ref().is_some_and(|t| t.seq == seq) {
                    s.turn = None;
                }
                if draining && s.turn.is_none() {
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
                if s.turn.is_none() {
                    break Some((close::GOING_AWAY, "server is shutting down"));
                }
            }
        }
    };
    s.cancel_turn().await;
    if let Some((code, reason)) = close_reason {
        let _ = s.out.send(Outbound::Close { code, reason: reason.into() }).await;
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
            Outbound::Audio { seq, bytes } => {
                // Audio of a cancelled turn never leaves, even if it was already queued.
                if audio_gate.load(Ordering::Acquire) != seq {
                    continue;
                }
                Message::Binary(bytes)
            }
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
        let _ = self.out.send(Outbound::event(&event)).await;
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
            ClientEvent::SessionUpdate(update) => self.on_update(update).await,
            ClientEvent::AudioAppend { audio } => match base64::engine::general_purpose::STANDARD.decode(audio) {
                Ok(bytes) => self.on_audio_bytes(&bytes).await,
                Err(e) => self.error(ErrorCode::InvalidAudio, format!("audio is not valid base64: {e}")).await,
            },
            ClientEvent::AudioCommit => {
                let ended = self.voice.as_mut().and_then(|v| v.endpointer.commit());
                match ended {
                    Some(Endpoint::SpeechStopped { audio_end_ms, utterance }) => {
                        self.utterance_ended(audio_end_ms, utterance).await
                    }
                    _ => self.error(ErrorCode::EmptyQuestion, "no speech in the input audio buffer").await,
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
                self.start_turn(Question::Text(text)).await;
            }
            ClientEvent::ResponseCancel => self.cancel_turn().await,
            ClientEvent::ItemTruncate { item_id, audio_end_ms } => {
                tracing::debug!(%item_id, audio_end_ms, "client truncated playback");
            }
            ClientEvent::Ping => self.send(ServerEvent::Pong).await,
        }
    }

    async fn on_update(&mut self, update: SessionUpdate) {
        for format in [&update.input_audio_format, &update.output_audio_format].into_iter().flatten() {
            if format != "pcm16" {
                return self
                    .error(
                        ErrorCode::UnsupportedAudioFormat,
                        format!("audio format {format:?} is not supported; use \"pcm16\""),
                    )
                    .await;
            }
        }
        for rate in [update.input_sample_rate, update.output_sample_rate].into_iter().flatten() {
            if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
                return self
                    .error(
                        ErrorCode::UnsupportedAudioFormat,
                        format!("sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE}"),
                    )
                    .await;
            }
        }
        if let Some(name) = update.pipeline.as_deref() {
            match self.app.pipelines.get(Some(name)) {
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
        if update.input_sample_rate.is_some() || update.input_audio_format.is_some() || self.input_rate.is_none() {
            let rate = update.input_sample_rate.or(self.input_rate).unwrap_or(16_000);
            if self.input_rate != Some(rate) {
                self.voice = None;
            }
            self.input_rate = Some(rate);
        }
        if let Some(rate) = update.output_sample_rate {
            self.output_rate = rate;
        }
        if let Some(e) = update.equipment {
            let e = e.trim();
            self.equipment = (!e.is_empty() && e != "*").then(|| e.to_string());
        }
        self.send(ServerEvent::SessionUpdated { session: self.info() }).await;
    }

    async fn on_audio_bytes(&mut self, bytes: &[u8]) {
        let Some(rate) = self.input_rate else {
            return self
                .error(ErrorCode::AudioFormatNotSet, "send session.update with the input audio format before audio")
                .await;
        };
        let voice = self.voice.get_or_insert_with(|| VoiceInput::new(rate, self.pipeline.profile.vad.clone()));
        if let Err(e) = voice.push_pcm16(bytes) {
            return self.error(ErrorCode::InvalidAudio, e.to_string()).await;
        }
        while let Some(window) = self.voice.as_mut().and_then(VoiceInput::next_window) {
            let prob = self.speech_probability(window).await;
            let Some(voice) = self.voice.as_mut() else { return };
            match voice.endpointer.push(&window, prob) {
                None => {}
                Some(Endpoint::SpeechStarted { audio_start_ms }) => {
                    // Barge-in: the user talks over an answer, so stop it and drop its audio.
                    self.cancel_turn().await;
                    self.drop_speculation();
                    self.send(ServerEvent::SpeechStarted { audio_start_ms }).await;
                }
                Some(Endpoint::Paused { utterance }) => self.speculate(utterance),
                Some(Endpoint::SpeechStopped { audio_end_ms, utterance }) => {
                    self.utterance_ended(audio_end_ms, utterance).await
                }
            }
        }
        // The silence may already be complete inside the window that is still filling.
        let ended = self.voice.as_mut().and_then(VoiceInput::check_partial);
        if let Some(Endpoint::SpeechStopped { audio_end_ms, utterance }) = ended {
            self.utterance_ended(audio_end_ms, utterance).await;
        }
    }

    /// Starts transcribing what was said so far while the silence window runs out.
    fn speculate(&mut self, utterance: Vec<f32>) {
        self.drop_speculation();
        let pipeline = self.pipeline.clone();
        let kb = self.app.kb.clone();
        let tenant = self.claims.tenant.clone();
        let len = utterance.len();
        self.speculation = Some((
            len,
            tokio::spawn(async move {
                let hint = transcription_hint(&kb, &tenant, &pipeline).await;
                pipeline.stt.transcribe(utterance, hint).await
            }),
        ));
    }

    fn drop_speculation(&mut self) {
        if let Some((_, task)) = self.speculation.take() {
            task.abort();
        }
    }

    /// The user stopped: answer, reusing the speculative transcription when it covered
    /// exactly this utterance (they stayed silent after the pause).
    async fn utterance_ended(&mut self, audio_end_ms: u64, utterance: Vec<f32>) {
        self.send(ServerEvent::SpeechStopped { audio_end_ms }).await;
        let question = match self.speculation.take() {
            Some((len, task)) if len == utterance.len() => Question::Transcribing(task),
            other => {
                if let Some((_, task)) = other {
                    task.abort();
                }
                Question::Audio(utterance)
            }
        };
        self.start_turn(question).await;
    }

    /// Silero's probability, or 0 without asking it when the window is below the energy gate.
    async fn speech_probability(&mut self, window: [f32; crate::voice::vad::WINDOW]) -> f32 {
        let Some(voice) = self.voice.as_mut() else { return 0.0 };
        if rms_dbfs(&window) < voice.endpointer.config().energy_gate_dbfs {
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

    async fn start_turn(&mut self, question: Question) {
        self.cancel_turn().await;
        let ended_at = Instant::now();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.audio_gate.store(seq, Ordering::Release);
        let cancel = Arc::new(AtomicBool::new(false));
        let response_id = format!("resp_{}", uuid::Uuid::new_v4().simple());
        let ctx = TurnContext {
            tenant: self.claims.tenant.clone(),
            equipment: self.equipment.clone(),
            pipeline: self.pipeline.clone(),
            kb: self.app.kb.clone(),
            metrics: self.app.metrics.clone(),
            out: self.out.clone(),
            output_rate: self.output_rate,
            cancel: cancel.clone(),
            audio_seq: seq,
            response_id: response_id.clone(),
        };
        let done = self.turn_done.clone();
        tokio::spawn(async move {
            turn::run(ctx, question, ended_at).await;
            let _ = done.send(seq).await;
        });
        self.turn = Some(ActiveTurn { cancel, seq, response_id });
    }

    /// Stops the active turn and tells the client to drop any answer audio it buffered.
    async fn cancel_turn(&mut self) {
        let Some(turn) = self.turn.take() else { return };
        turn.cancel.store(true, Ordering::Release);
        self.audio_gate.store(0, Ordering::Release);
        tracing::info!(response_id = %turn.response_id, "turn cancelled");
        self.send(ServerEvent::OutputAudioClear { response_id: turn.response_id }).await;
    }
}
