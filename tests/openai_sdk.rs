//! The official `openai` Python package's realtime client against fieldvox's OpenAI
//! dialect: a spoken question at 24 kHz (turn detection off: append, commit,
//! `response.create`) and a typed one, each answered from the tenant's manual with base64
//! answer audio.

mod common;

use common::*;

fn mentions_38(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("38") || t.contains("thirty-eight") || t.contains("thirty eight")
}

#[test]
fn the_openai_realtime_sdk_asks_by_voice_and_by_text() {
    let h = harness();
    let dir = temp_dir("openai-sdk");
    let wav = dir.join("question-24k.wav");
    let mut speech = vec![0.0; 24_000 * 3 / 10];
    speech.extend(speak_flite("What torque for the compressor head bolts on the RTU-40?", 24_000));
    speech.extend(vec![0.0; 24_000 / 2]);
    fieldvox::audio::wav::write_mono(&wav, &speech, 24_000).expect("write wav");

    let mut command = std::process::Command::new(client_tools().join("venv/bin/python"));
    command
        .arg(repo().join("tests/clients/openai_realtime.py"))
        .args(["--url", &format!("ws://{}/v1", h.addr), "--token", &h.token(TENANT_A)])
        .arg("--wav")
        .arg(&wav)
        .args(["--ask", "What is the part number of the replacement head gasket?"]);
    let out = run_client(command);
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(out["session"]["audio"]["input"]["format"]["rate"], 24000, "{out}");
    assert_eq!(out["updated"], "session.updated", "{out}");

    let spoken = &out["spoken"];
    let transcript = spoken["transcript"].as_str().unwrap_or_default().to_lowercase();
    // Heard at 24 kHz as declared: a rate dropped to 16 kHz garbles the words.
    assert!(transcript.contains("compressor") && transcript.contains("rtu-40"), "transcript: {spoken}");
    assert_eq!(spoken["status"], "completed", "{spoken}");
    assert!(mentions_38(spoken["answer"].as_str().unwrap_or_default()), "{spoken}");
    assert_eq!(spoken["citations"][0]["title"], MANUAL_TITLE, "{spoken}");
    assert_eq!(spoken["citations"][0]["page"], 3, "{spoken}");
    // At least a second of 24 kHz PCM16, all of it as base64 deltas the SDK parsed.
    assert!(spoken["audio_bytes"].as_u64().unwrap_or(0) > 48_000, "{spoken}");

    let typed = &out["typed"];
    assert_eq!(typed["status"], "completed", "{typed}");
    assert!(typed["answer"].as_str().unwrap_or_default().contains("GK-4471-B"), "{typed}");
    assert!(typed["audio_bytes"].as_u64().unwrap_or(0) > 48_000, "{typed}");
    assert!(typed["errors"].is_null(), "{typed}");
}
