//! Any OpenAI-compatible `/v1/audio/transcriptions` endpoint.

use std::io::Cursor;
use std::time::Duration;

use serde::Deserialize;

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

    /// Sends mono 16 kHz audio as a WAV upload; returns the transcript.
    pub async fn transcribe(&self, pcm_16k: &[f32]) -> Result<String, ModelError> {
        let wav = wav_bytes(pcm_16k, 16_000).map_err(|e| ModelError::input(NAME, e))?;
        let part = reqwest::multipart::Part::bytes(wav)
            .file_name("speech.wav")
            .mime_str("audio/wav")
            .map_err(|e| ModelError::inference(NAME, e))?;
        let form = reqwest::multipart::Form::new()
            .part("file", part)
            .text("model", self.model.clone())
            .text("response_format", "json");
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

fn wav_bytes(samples: &[f32], rate: u32) -> Result<Vec<u8>, hound::Error> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut cursor = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    {
        let mut w = hound::WavWriter::new(&mut cursor, spec)?;
        for s in samples {
            w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)?;
        }
        w.finalize()?;
    }
    Ok(cursor.into_inner())
}
