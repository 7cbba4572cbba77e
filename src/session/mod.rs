//! Realtime sessions: the transport-neutral session core (turns, turn-taking, history,
//! resume), the WebSocket and WebRTC transports, the wire protocol and its dialects, and the
//! connection manager.

pub mod core;
pub mod dialect;
pub mod echo;
pub mod history;
pub mod interruption;
pub mod manager;
pub mod openai;
pub mod playback;
pub mod resume;
pub mod webrtc;
pub mod websocket;
pub use fieldvox_formats::protocol;

pub use manager::{SessionGuard, SessionManager};

/// What a session's writer sends to the client.
/// Events are serialized by the producer, so a queued item is a few words, not a whole
/// event: the queue's storage is part of every idle session's footprint.
#[derive(Debug)]
pub enum Outbound {
    /// A JSON event.
    Event(String),
    /// PCM16 answer audio of the turn tagged `seq`; dropped if that turn was cancelled.
    Audio { seq: u64, bytes: bytes::Bytes },
    /// The same, as a JSON event (the OpenAI dialect's base64 audio delta).
    AudioEvent { seq: u64, json: String },
    /// Close the socket with a WebSocket close code.
    Close { code: u16, reason: String },
}
