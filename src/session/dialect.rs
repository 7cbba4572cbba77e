//! The two wire dialects a client may speak, chosen once at connect, and the session's
//! outbox that writes every event in the chosen one.
//!
//! - **Native** (the default and the fast path): answer audio travels as binary frames.
//! - **OpenAI**: the OpenAI Realtime API's current event and session shapes, with answer
//!   audio as base64 `response.output_audio.delta` events, so the official SDKs and
//!   browser clients written for it work unchanged.

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio::sync::mpsc;

use super::Outbound;
use super::openai;
use super::protocol::ServerEvent;

/// Subprotocol of the native dialect.
pub const NATIVE_SUBPROTOCOL: &str = "fieldvox.v1";
/// Subprotocol OpenAI's browser clients offer (with `openai-insecure-api-key.<key>`).
pub const OPENAI_SUBPROTOCOL: &str = "realtime";
/// Subprotocol prefix under which OpenAI's browser clients pass their key.
pub const OPENAI_KEY_PREFIX: &str = "openai-insecure-api-key.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Native,
    OpenAi,
}

/// The subprotocols a client offered, in its order.
pub fn offered_subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

impl Dialect {
    /// OpenAI when the client asks for it with `?dialect=openai`, offers OpenAI's
    /// subprotocols, or names a `model` in the query as OpenAI's SDKs always do (fieldvox's
    /// own clients never do); `?dialect=native` wins over all of these.
    pub fn negotiate(headers: &HeaderMap, query: &HashMap<String, String>) -> Dialect {
        match query.get("dialect").map(String::as_str) {
            Some("openai") => return Dialect::OpenAi,
            Some("native") => return Dialect::Native,
            _ => {}
        }
        let openai_protocol =
            offered_subprotocols(headers).any(|p| p == OPENAI_SUBPROTOCOL || p.starts_with(OPENAI_KEY_PREFIX));
        if openai_protocol || query.contains_key("model") { Dialect::OpenAi } else { Dialect::Native }
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Dialect::Native => NATIVE_SUBPROTOCOL,
            Dialect::OpenAi => OPENAI_SUBPROTOCOL,
        }
    }

    /// Input audio rate before the client declares one: OpenAI clients may send audio
    /// straight away at the API's 24 kHz; native clients must declare theirs first.
    pub fn default_input_rate(self) -> Option<u32> {
        match self {
            Dialect::Native => None,
            Dialect::OpenAi => Some(openai::SAMPLE_RATE),
        }
    }

    pub fn default_output_rate(self) -> u32 {
        match self {
            Dialect::Native => 16_000,
            Dialect::OpenAi => openai::SAMPLE_RATE,
        }
    }

    /// Whether a typed question is answered at once, or (as in OpenAI's API) waits for
    /// `response.create`.
    pub fn typed_question_responds(self) -> bool {
        self == Dialect::Native
    }
}

/// A session's sending side: every event and audio frame goes out through here, encoded
/// in the session's dialect. Cloned into each turn.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    dialect: Dialect,
}

impl Outbox {
    pub fn new(tx: mpsc::Sender<Outbound>, dialect: Dialect) -> Self {
        Self { tx, dialect }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Queues an event; false once the writer is gone.
    pub async fn event(&self, event: &ServerEvent) -> bool {
        match self.dialect {
            Dialect::Native => self.tx.send(Outbound::Event(event.to_json())).await.is_ok(),
            Dialect::OpenAi => {
                for json in openai::encode(event) {
                    if self.tx.send(Outbound::Event(json)).await.is_err() {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Queues one frame of a turn's PCM16 answer audio; false once the writer is gone.
    pub async fn audio(&self, seq: u64, response_id: &str, pcm: &[u8]) -> bool {
        let frame = match self.dialect {
            Dialect::Native => Outbound::Audio { seq, bytes: bytes::Bytes::copy_from_slice(pcm) },
            Dialect::OpenAi => Outbound::AudioEvent { seq, json: openai::audio_delta(response_id, pcm) },
        };
        self.tx.send(frame).await.is_ok()
    }

    pub async fn close(&self, code: u16, reason: &str) {
        let _ = self.tx.send(Outbound::Close { code, reason: reason.into() }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn negotiates_openai_from_its_clients_conventions() {
        let none = HeaderMap::new();
        assert_eq!(Dialect::negotiate(&none, &query(&[])), Dialect::Native);
        assert_eq!(Dialect::negotiate(&none, &query(&[("token", "x")])), Dialect::Native);
        assert_eq!(Dialect::negotiate(&none, &query(&[("model", "gpt-realtime")])), Dialect::OpenAi);
        assert_eq!(Dialect::negotiate(&none, &query(&[("dialect", "openai")])), Dialect::OpenAi);
        assert_eq!(Dialect::negotiate(&none, &query(&[("model", "m"), ("dialect", "native")])), Dialect::Native);
        let mut browser = HeaderMap::new();
        browser.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("realtime, openai-insecure-api-key.abc"));
        assert_eq!(Dialect::negotiate(&browser, &query(&[])), Dialect::OpenAi);
        let mut native = HeaderMap::new();
        native.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("fieldvox.v1, bearer.abc"));
        assert_eq!(Dialect::negotiate(&native, &query(&[])), Dialect::Native);
    }
}
