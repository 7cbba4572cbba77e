//! The WebSocket transport: a reader loop that feeds the session core, and a writer task
//! that owns the socket's sending half. The session lives exactly as long as the reader
//! loop; when it ends, the session's state is parked for a resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::core::{Session, Wiring};
use super::dialect::{Dialect, Outbox};
use super::resume::ResumeState;
use super::{Outbound, SessionGuard};
use crate::app::App;
use crate::auth::Claims;
use crate::error::ErrorCode;
use crate::workers::fair;

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

pub async fn run(
    socket: WebSocket,
    app: Arc<App>,
    claims: Claims,
    guard: SessionGuard,
    dialect: Dialect,
    resumed: Option<ResumeState>,
) {
    let span = tracing::info_span!(
        "session", session_id = %guard.id, tenant = %claims.tenant, user = %claims.sub, dialect = ?dialect
    );
    // Every model job the session submits waits in its tenant's backlog (fair queuing).
    let tenant = claims.tenant.clone();
    fair::on_behalf_of(&tenant, serve(socket, app, claims, guard, dialect, resumed).instrument(span)).await
}

async fn serve(
    socket: WebSocket,
    app: Arc<App>,
    claims: Claims,
    guard: SessionGuard,
    dialect: Dialect,
    resumed: Option<ResumeState>,
) {
    let Some(pipeline) = app.pipelines.get(None) else {
        tracing::error!("default pipeline missing");
        return;
    };
    let (sink, mut stream) = socket.split();
    let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let out = Outbox::new(out, dialect);
    let audio_gate = Arc::new(AtomicU64::new(0));
    let mut writer = tokio::spawn(write_loop(sink, out_rx, audio_gate.clone()));
    let mut writer_done = false;
    let (signals, mut signals_rx) = mpsc::channel(8);
    tracing::info!(resumed = resumed.is_some(), "session opened");
    let wiring = Wiring { out: out.clone(), audio_gate, signals, fixed_audio: None };
    let mut s = Session::open(app.clone(), claims, guard.id, pipeline, wiring, resumed).await;

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
                            app.metrics.error(ErrorCode::FrameTooLarge);
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
                    Message::Binary(bytes) => Box::pin(s.on_audio(&bytes)).await,
                    Message::Close(_) => break None,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            // The writer gave up on a client that stopped reading: end the session too.
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break None;
            }
            Some(signal) = signals_rx.recv() => {
                Box::pin(s.on_signal(signal)).await;
                if draining && !s.is_answering() {
                    break Some((close::GOING_AWAY, "server is shutting down"));
                }
            }
            changed = drain.changed(), if !draining => {
                if changed.is_err() || !*drain.borrow() {
                    continue;
                }
                draining = true;
                if s.go_away().await {
                    break Some((close::GOING_AWAY, "server is shutting down"));
                }
            }
        }
    };
    let state = s.close().await;
    if let Some((code, reason)) = close_reason {
        out.close(code, reason).await;
    }
    drop(out);
    if !writer_done {
        let _ = writer.await;
    }
    tracing::info!(reason = ?close_reason.map(|c| c.1), "session closed");
    // Unregistered first: a resume may register the same id at once.
    drop(guard);
    if !draining {
        app.resumer.park(state).await;
    }
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
