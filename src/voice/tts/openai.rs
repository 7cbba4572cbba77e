//! Any OpenAI-compatible `/v1/audio/speech` endpoint, asked for raw PCM16.

use std::time::Duration;

use crate::audio::pcm::decode_pcm16;
use crate::models::ModelError;

const NAME: &str = "openai-speech";

#[derive(Clone)]
pub struct OpenAiSpeech {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    model: String,
    voice: String,
    /// Rate of the PCM the endpoint returns (OpenAI's `pcm` format is 24 kHz).
    pub sample_rate: u32,
}

impl OpenAiSpeech {
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        model: &str,
        voice: &str,
        sample_rate: u32,
        timeout: Duration,
    ) -> Result<Self, ModelError> {
        let http = reqwest::Client::builder().timeout(timeout).build().map_err(|e| ModelError::load(NAME, e))?;
        Ok(Self {
            http,
            url: format!("{}/audio/speech", base_url.trim_end_matches('/')),
            api_key,
            model: model.to_string(),
            voice: voice.to_string(),
            sample_rate,
        })
    }

    pub async fn synthesize(&self, text: &str) -> Result<Vec<f32>, ModelError> {
        let body =
            serde_json::json!({"model": self.model, "input": text, "voice": self.voice, "response_format": "pcm"});
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| ModelError::inference(NAME, e))?;
        if !resp.status().is_success() {
            return Err(ModelError::inference(NAME, format!("HTTP {}", resp.status())));
        }
        let bytes = resp.bytes().await.map_err(|e| ModelError::inference(NAME, e))?;
        let mut samples = Vec::with_capacity(bytes.len() / 2);
        decode_pcm16(&bytes[..bytes.len() & !1], &mut samples).map_err(|e| ModelError::inference(NAME, e))?;
        Ok(samples)
    }
}
