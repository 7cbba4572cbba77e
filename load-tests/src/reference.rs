//! The LOAD-TEST REFERENCE provider server, not a model.
//!
//! It speaks the OpenAI-compatible endpoints fieldvox's HTTP providers use
//! (`/v1/audio/transcriptions`, `/v1/chat/completions` with SSE, `/v1/audio/speech`) and
//! answers each after a fixed, configurable latency with fixed content, so a capacity run
//! measures fieldvox itself (sessions, VAD, audio, retrieval, caches) rather than the
//! models. Loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use serde_json::json;

#[derive(Parser, Clone, Debug)]
#[command(about = "Load-test reference for fieldvox's HTTP providers: fixed latencies, fixed answers")]
pub struct ReferenceArgs {
    /// Loopback address to listen on.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// Delay before a transcription is returned.
    #[arg(long, default_value_t = 100)]
    pub stt_ms: u64,
    /// Transcript returned for every upload.
    #[arg(long, default_value = "what torque for the compressor head bolts on the rtu-40")]
    pub transcript: String,
    /// Delay before the first streamed answer token.
    #[arg(long, default_value_t = 150)]
    pub llm_first_token_ms: u64,
    /// Delay between later answer tokens.
    #[arg(long, default_value_t = 10)]
    pub llm_token_ms: u64,
    /// Answer streamed word by word.
    #[arg(long, default_value = "Torque: 38 newton meters, in a star pattern, then check the gasket.")]
    pub answer: String,
    /// Delay before synthesized audio is returned.
    #[arg(long, default_value_t = 80)]
    pub tts_ms: u64,
    /// Seconds of audio returned per word of input text (24 kHz PCM16 tone).
    #[arg(long, default_value_t = 0.3)]
    pub tts_secs_per_word: f32,
}

/// Serves until the process ends.
pub async fn serve(args: ReferenceArgs, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::other("the reference server only listens on loopback"));
    }
    tracing::info!(%addr, stt_ms = args.stt_ms, llm_first_token_ms = args.llm_first_token_ms, tts_ms = args.tts_ms, "load-test reference listening");
    let app = Router::new()
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/audio/speech", post(speech))
        .with_state(Arc::new(args));
    axum::serve(listener, app).await
}

/// `path_ms()` of the default arguments; the load generator's default `--reference-ms`.
pub const DEFAULT_PATH_MS: f64 = 370.0;

impl ReferenceArgs {
    /// Fixed latency on the voice-to-voice path: transcription, first token, the rest of
    /// the tokens of the first spoken chunk (as fieldvox splits it), and its synthesis.
    pub fn path_ms(&self) -> f64 {
        let mut splitter = fieldvox::voice::sentences::SentenceSplitter::default();
        let mut words = 0;
        for (i, word) in self.answer.split(' ').enumerate() {
            words = i + 1;
            let piece = if i == 0 { word.to_string() } else { format!(" {word}") };
            if !splitter.push(&piece).is_empty() {
                break;
            }
        }
        // The chunk is complete once the next token shows the boundary was real.
        let streamed = (words as u64).saturating_sub(1) * self.llm_token_ms;
        (self.stt_ms + self.llm_first_token_ms + streamed + self.tts_ms) as f64
    }
}

async fn transcriptions(State(args): State<Arc<ReferenceArgs>>, mut form: Multipart) -> Response {
    // Drain the upload like a real service would.
    while let Ok(Some(field)) = form.next_field().await {
        let _ = field.bytes().await;
    }
    tokio::time::sleep(Duration::from_millis(args.stt_ms)).await;
    axum::Json(json!({ "text": args.transcript })).into_response()
}

async fn chat(State(args): State<Arc<ReferenceArgs>>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
    let start = tokio::time::Instant::now();
    tokio::spawn(async move {
        for (i, word) in args.answer.split(' ').enumerate() {
            // Absolute deadlines: timer overshoot does not accumulate over the tokens.
            let due = args.llm_first_token_ms + i as u64 * args.llm_token_ms;
            tokio::time::sleep_until(start + Duration::from_millis(due)).await;
            let piece = if i == 0 { word.to_string() } else { format!(" {word}") };
            let chunk = json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
            if tx.send(Ok(format!("data: {chunk}\n\n").into())).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok("data: [DONE]\n\n".into())).await;
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn speech(State(args): State<Arc<ReferenceArgs>>, axum::Json(req): axum::Json<serde_json::Value>) -> Response {
    let words = req["input"].as_str().map_or(1, |t| t.split_whitespace().count().max(1));
    tokio::time::sleep(Duration::from_millis(args.tts_ms)).await;
    let samples = (24_000.0 * args.tts_secs_per_word * words as f32) as usize;
    let mut pcm = Vec::with_capacity(samples * 2);
    for i in 0..samples {
        let v = ((i as f32 * 2.0 * std::f32::consts::PI * 220.0 / 24_000.0).sin() * 8000.0) as i16;
        pcm.extend_from_slice(&v.to_le_bytes());
    }
    ([(header::CONTENT_TYPE, "audio/pcm")], pcm).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_matches_the_load_generator_default() {
        let args = ReferenceArgs::parse_from(["reference"]);
        assert_eq!(args.path_ms(), DEFAULT_PATH_MS);
    }
}
