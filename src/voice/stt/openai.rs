//! Any OpenAI-compatible `/v1/audio/transcriptions` endpoint.

use std::time::Duration;

use serde::Deserialize;

use crate::audio::wav::encode_mono;
use crate::models::ModelError;

const NAME: &str = "openai-transcriptions";

#[derive(Clone)]
pub struct OpenAiTranscriber {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    model: String,
}

#[derive(Deserialize)]
struct Transcription {
    text: String,
}

impl OpenAiTranscriber {
    pub fn new(base_url: &str, api_key: Option<String>, model: &str, timeout: Duration) -> Result<Self, ModelError> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| ModelError::load(NAME, e))?;
        Ok(Self {
            http,
            url: format!("{}/audio/transcriptions", base_url.trim_end_matches('/')),
            api_key,
            model: model.to_string(),
        })
    }

    /// Sends mono 16 kHz audio as a WAV upload, with `hint` as the prompt when given;
    /// returns the transcript.
    pub async fn transcribe(&self, pcm_16k: &[f32], hint: &str) -> Result<String, ModelError> {
        let wav = encode_mono(pcm_16k, 16_000).map_err(|e| ModelError::input(NAME, e))?;
        let part = reqwest::multipart::Part::bytes(wav)
            .file_name("speech.wav")
            .mime_str("audio/wav")
            .map_err(|e| ModelError::inference(NAME, e))?;
        let form = reqwest::multipart::Form::new()
            .part("file", part)
            .text("model", self.model.clone())
            .text("response_format", "json");
        let form = if hint.is_empty() { form } else { form.text("prompt", hint.to_string()) };
        let mut req = self.http.post(&self.url).multipart(form);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| ModelError::inference(NAME, e))?;
        if !resp.status().is_success() {
            return Err(ModelError::inference(NAME, format!("HTTP {}", resp.status())));
        }
        let t: Transcription = resp.json().await.map_err(|e| ModelError::inference(NAME, e))?;
        Ok(t.text.trim().to_string())
    }
}
