//! The talk page at `/` in headless Chromium (Debian `chromium` driven by Playwright):
//! a question played into the page's fake microphone over the WebSocket and over WebRTC,
//! and a typed one. The page must show the transcript, the answer and a citation with the
//! right page, and receive answer audio.
//! Screenshots are kept (their paths are printed).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const QUESTION: &str = "What torque for the compressor head bolts on the RTU-40?";
/// Spoken without the model code: this test is about the page, and Whisper tiny.en hears
/// "RTU-40" from the browser's capture in many ways ("ARKU-40", "ART DU 40"); how well
/// codes are heard is the answer-quality benchmark's business (fieldvox-eval).
const SPOKEN_QUESTION: &str = "What torque for the compressor head bolts?";

fn ask_page(url: &str, screenshot: &Path, question: &[&str]) -> Value {
    let mut command = std::process::Command::new("node");
    command
        .env("NODE_PATH", client_tools().join("node/node_modules"))
        .arg(repo().join("tests/browser/talk.cjs"))
        .args(["--url", url, "--timeout-ms", "120000", "--screenshot"])
        .arg(screenshot)
        .args(question);
    let result = run_client(command);
    let png = std::fs::read(screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot {} looks empty", screenshot.display());
    eprintln!("talk page screenshot: {}", screenshot.display());
    result
}

fn assert_answered(page: &Value) {
    assert_shown(page);
    // About a second or more of answer audio reached the page's player.
    assert!(page["audioBytesReceived"].as_u64().unwrap_or(0) > 32_000, "{page}");
}

/// What the page shows of the answer, whatever carried it.
fn assert_shown(page: &Value) {
    let shown = &page["shown"];
    let transcript = shown["transcript"].as_str().unwrap_or_default().to_lowercase();
    // "bolt" or "bolts": Whisper hears the browser's capture either way; the page is tested here.
    assert!(transcript.contains("compressor") && transcript.contains("bolt"), "{page}");
    assert!(shown["answer"].as_str().unwrap_or_default().contains("38 newton meters"), "{page}");
    let citations = shown["citations"].as_str().unwrap_or_default();
    assert!(citations.contains(MANUAL_TITLE) && citations.contains("page 3"), "{page}");
    assert_eq!(page["citations"][0]["page"], 3, "{page}");
    assert!(shown["timings"].as_str().is_some_and(|t| !t.is_empty()), "{page}");
}

#[tokio::test]
async fn the_talk_page_answers_by_voice_and_by_text() {
    let h = harness();
    let dir = temp_dir("talk-page");
    // The question in the server's own Piper voice, which Chromium's audio path and
    // Whisper tiny both handle reliably; silence around it like a person's pauses.
    let tts = h.app.pipelines.get(None).expect("default pipeline").tts.clone();
    let speech = tts.synthesize(SPOKEN_QUESTION.to_string()).await.expect("piper speaks");
    let rate = speech.sample_rate;
    let mut samples = vec![0.0; rate as usize * 3 / 10];
    samples.extend(&speech.samples);
    samples.extend(vec![0.0; rate as usize * 3 / 2]);
    let wav = dir.join("question.wav");
    fieldvox::audio::wav::write_mono(&wav, &samples, rate).expect("write wav");

    let url = format!("http://{}/#token={}", h.addr, h.token(TENANT_A));
    let spoken = tokio::task::spawn_blocking({
        let (url, shot, wav) = (url.clone(), dir.join("voice.png"), wav.clone());
        move || ask_page(&url, &shot, &["--wav", &wav.to_string_lossy()])
    })
    .await
    .expect("voice case");
    assert_answered(&spoken);

    let typed = tokio::task::spawn_blocking({
        let (url, shot) = (url.clone(), dir.join("typed.png"));
        move || ask_page(&url, &shot, &["--ask", QUESTION])
    })
    .await
    .expect("typed case");
    assert_answered(&typed);

    // WebRTC: the fake microphone as Opus RTP, the answer back as RTP, the events on the
    // data channel. The page counts the answer's 20 ms packets and shows their duration.
    let rtc = tokio::task::spawn_blocking({
        let (url, shot, wav) = (url.clone(), dir.join("webrtc.png"), wav.clone());
        move || ask_page(&url, &shot, &["--wav", &wav.to_string_lossy(), "--transport", "webrtc"])
    })
    .await
    .expect("webrtc case");
    assert_eq!(rtc["transport"], "webrtc", "{rtc}");
    assert_shown(&rtc);
    assert!(rtc["audioMsReceived"].as_u64().unwrap_or(0) >= 1_000, "a second or more of answer audio: {rtc}");
    assert!(rtc["shown"]["received"].as_str().is_some_and(|t| t.contains("answer audio received")), "{rtc}");
}
