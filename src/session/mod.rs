//! Realtime sessions: the wire protocol, the connection manager and the per-session task.

pub mod connection;
pub mod manager;
pub mod protocol;

pub use manager::{SessionGuard, SessionManager};

use protocol::ServerEvent;

/// What a session's writer sends to the client.
/// Events are serialized by the producer, so a queued item is a few words, not a whole
/// event: the queue's storage is part of every idle session's footprint.
#[derive(Debug)]
pub enum Outbound {
    /// A JSON event.
    Event(String),
    /// PCM16 answer audio of the turn tagged `seq`; dropped if that turn was cancelled.
    Audio { seq: u64, bytes: bytes::Bytes },
    /// Close the socket with a WebSocket close code.
    Close { code: u16, reason: String },
}

impl Outbound {
    pub fn event(event: &ServerEvent) -> Self {
        Outbound::Event(event.to_json())
    }
}
