//! Any OpenAI-compatible `/v1/chat/completions` endpoint with SSE streaming
//! (OpenAI, Groq, vLLM, Ollama, llama.cpp server).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{ChatMessage, LlmError};

#[derive(Clone)]
pub struct OpenAiChat {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    model: String,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

impl OpenAiChat {
    /// `base_url` is the API root, e.g. `https://api.groq.com/openai/v1` or `http://127.0.0.1:8000/v1`.
    pub fn new(base_url: &str, api_key: Option<String>, model: &str, timeout: Duration) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(timeout)
            .build()
            .map_err(|e| LlmError::Provider(e.to_string()))?;
        Ok(Self {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            api_key,
            model: model.to_string(),
        })
    }

    pub async fn stream(
        &self,
        messages: Vec<ChatMessage>,
        max_tokens: usize,
        tx: mpsc::Sender<String>,
        cancel: Arc<AtomicBool>,
    ) -> Result<(), LlmError> {
        let body = serde_json::json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": true,
        });
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| LlmError::Provider(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(LlmError::Provider(format!("HTTP {status}: {}", text.chars().take(200).collect::<String>())));
        }
        let mut body = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(bytes) = body.next().await {
            if cancel.load(Ordering::Relaxed) {
                return Ok(());
            }
            buf.extend_from_slice(&bytes.map_err(|e| LlmError::Provider(e.to_string()))?);
            while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                match parse_sse_line(&line) {
                    SseLine::Done => return Ok(()),
                    SseLine::Text(t) => {
                        if tx.send(t).await.is_err() {
                            return Ok(());
                        }
                    }
                    SseLine::Skip => {}
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
enum SseLine {
    Text(String),
    Done,
    Skip,
}

fn parse_sse_line(line: &[u8]) -> SseLine {
    let Ok(line) = std::str::from_utf8(line) else { return SseLine::Skip };
    let Some(data) = line.trim().strip_prefix("data:") else { return SseLine::Skip };
    let data = data.trim();
    if data == "[DONE]" {
        return SseLine::Done;
    }
    match serde_json::from_str::<Chunk>(data) {
        Ok(chunk) => chunk
            .choices
            .into_iter()
            .find_map(|c| c.delta.content)
            .filter(|t| !t.is_empty())
            .map_or(SseLine::Skip, SseLine::Text),
        Err(_) => SseLine::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sse_lines() {
        assert_eq!(
            parse_sse_line(br#"data: {"choices":[{"delta":{"content":"38 N"}}]}"#),
            SseLine::Text("38 N".into())
        );
        assert_eq!(parse_sse_line(b"data: [DONE]\n"), SseLine::Done);
        assert_eq!(parse_sse_line(b": keep-alive\n"), SseLine::Skip);
        assert_eq!(parse_sse_line(br#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#), SseLine::Skip);
    }
}
