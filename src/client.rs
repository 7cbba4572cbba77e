//! A client of the realtime protocol: asks one question (typed, or as speech) and collects
//! the answer — transcript, text, citations, timings and audio. `fieldvox ask` is built on
//! it; so is anything that wants to talk to a fieldvox server from Rust.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::audio::pcm::{decode_pcm16, encode_pcm16};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the server refused the connection: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the server reported {code}: {message}")]
    Server { code: String, message: String },
    #[error("the connection closed before the answer was complete")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the question audio holds no speech the server could hear")]
    NothingHeard,
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Where and as whom to ask.
#[derive(Debug, Clone)]
pub struct AskOptions {
    /// `ws://host:port/v1/realtime`.
    pub url: String,
    pub token: String,
    pub pipeline: Option<String>,
    pub equipment: Option<String>,
    /// Rate of the answer audio to receive.
    pub output_rate: u32,
    /// Longest wait for the whole answer.
    pub timeout: Duration,
}

pub enum Question {
    Text(String),
    /// Mono samples in [-1, 1] at `rate`.
    Speech {
        samples: Vec<f32>,
        rate: u32,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    pub title: String,
    pub page: u64,
    pub score: f64,
}

/// Everything the server said about one question.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// What the server heard (spoken questions only).
    pub transcript: Option<String>,
    pub text: String,
    pub status: String,
    pub citations: Vec<Citation>,
    /// Per-stage milliseconds as the server measured them.
    pub timings: Value,
    /// The answer audio, mono at `audio_rate`.
    #[serde(skip)]
    pub audio: Vec<f32>,
    pub audio_rate: u32,
    pub audio_seconds: f64,
}

/// Silence sent after speech so the server's end-of-speech detector fires.
const TRAILING_SILENCE_MS: usize = 1_200;
/// Audio frame length sent to the server.
const FRAME_MS: usize = 20;

/// Asks one question in a new session and waits for its `response.done`.
pub async fn ask(options: &AskOptions, question: Question) -> Result<Answer, ClientError> {
    tokio::time::timeout(options.timeout, ask_inner(options, question))
        .await
        .map_err(|_| ClientError::Timeout(options.timeout))?
}

async fn ask_inner(options: &AskOptions, question: Question) -> Result<Answer, ClientError> {
    let connect_err = |reason: String| ClientError::Connect { url: options.url.clone(), reason };
    let mut request = options.url.as_str().into_client_request().map_err(|e| connect_err(e.to_string()))?;
    let bearer =
        format!("Bearer {}", options.token).parse().map_err(|_| connect_err("token is not a valid header".into()))?;
    request.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => ClientError::Refused {
            status: resp.status().as_u16(),
            body: resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
        },
        other => connect_err(other.to_string()),
    })?;
    let send = |v: Value| Message::text(v.to_string());
    let proto = |e: tokio_tungstenite::tungstenite::Error| ClientError::Protocol(e.to_string());

    let mut session = json!({"output_audio_format": "pcm16", "output_sample_rate": options.output_rate});
    if let Some(p) = &options.pipeline {
        session["pipeline"] = json!(p);
    }
    if let Some(e) = &options.equipment {
        session["equipment"] = json!(e);
    }
    if let Question::Speech { rate, .. } = &question {
        session["input_audio_format"] = json!("pcm16");
        session["input_sample_rate"] = json!(rate);
    }
    ws.send(send(json!({"type": "session.update", "session": session}))).await.map_err(proto)?;
    match question {
        Question::Text(text) => {
            ws.send(send(json!({"type": "conversation.item.create", "item": {"text": text}}))).await.map_err(proto)?;
        }
        Question::Speech { samples, rate } => {
            let mut audio = samples;
            audio.extend(std::iter::repeat_n(0.0, rate as usize * TRAILING_SILENCE_MS / 1000));
            let mut bytes = Vec::new();
            encode_pcm16(&audio, &mut bytes);
            let frame = rate as usize * FRAME_MS / 1000 * 2;
            // In real time, as a microphone would: the server's turn-taking sees true pauses.
            let mut tick = tokio::time::interval(Duration::from_millis(FRAME_MS as u64));
            for chunk in bytes.chunks(frame.max(2)) {
                tick.tick().await;
                ws.send(Message::binary(chunk.to_vec())).await.map_err(proto)?;
            }
        }
    }

    let mut answer = Answer {
        transcript: None,
        text: String::new(),
        status: String::new(),
        citations: Vec::new(),
        timings: Value::Null,
        audio: Vec::new(),
        audio_rate: options.output_rate,
        audio_seconds: 0.0,
    };
    let mut pcm = Vec::new();
    while let Some(msg) = ws.next().await {
        match msg.map_err(proto)? {
            Message::Binary(bytes) => {
                decode_pcm16(&bytes, &mut pcm).map_err(|e| ClientError::Protocol(e.to_string()))?;
            }
            Message::Text(text) => {
                let event: Value = serde_json::from_str(&text).map_err(|e| ClientError::Protocol(e.to_string()))?;
                match event["type"].as_str().unwrap_or_default() {
                    "conversation.item.input_audio_transcription.completed" => {
                        let heard = event["transcript"].as_str().unwrap_or_default().to_string();
                        if heard.trim().is_empty() {
                            return Err(ClientError::NothingHeard);
                        }
                        answer.transcript = Some(heard);
                    }
                    "response.output_audio.started" => {
                        answer.audio_rate = event["sample_rate"].as_u64().unwrap_or(options.output_rate as u64) as u32;
                    }
                    "response.citations" => {
                        answer.citations = event["citations"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|c| Citation {
                                title: c["title"].as_str().unwrap_or_default().to_string(),
                                page: c["page"].as_u64().unwrap_or(0),
                                score: c["score"].as_f64().unwrap_or(0.0),
                            })
                            .collect();
                    }
                    "response.done" => {
                        answer.text = event["text"].as_str().unwrap_or_default().to_string();
                        answer.status = event["status"].as_str().unwrap_or_default().to_string();
                        answer.timings = event["timings"].clone();
                        break;
                    }
                    "error" => {
                        let code = event["error"]["code"].as_str().unwrap_or("unknown").to_string();
                        let message = event["error"]["message"].as_str().unwrap_or_default().to_string();
                        return Err(ClientError::Server { code, message });
                    }
                    _ => {}
                }
            }
            Message::Close(_) => return Err(ClientError::Closed),
            _ => {}
        }
    }
    if answer.status.is_empty() {
        return Err(ClientError::Closed);
    }
    let _ = ws.close(None).await;
    answer.audio_seconds = pcm.len() as f64 / answer.audio_rate.max(1) as f64;
    answer.audio = pcm;
    Ok(answer)
}
