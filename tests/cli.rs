//! The `fieldvox` command line: help, token minting, ingesting good and broken manuals.

mod common;

use std::process::Command;

use fieldvox::auth::{Role, TokenKeys};

fn fieldvox(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldvox"));
    // The tests set the secrets they mean; none may leak in from the environment.
    cmd.env("FIELDVOX__DATA__DIR", data)
        .env("RUST_LOG", "error")
        .env_remove("FIELDVOX__AUTH__JWT_SECRET")
        .env_remove("FIELDVOX__AUTH__ALLOW_DEV_SECRET");
    cmd
}

#[test]
fn every_subcommand_has_help() {
    let data = common::temp_dir("cli-help");
    for sub in [
        &["--help"][..],
        &["serve", "--help"],
        &["token", "--help"],
        &["ingest", "--help"],
        &["say", "--help"],
        &["ask", "--help"],
        &["manuals", "--help"],
        &["manuals", "upload", "--help"],
        &["manuals", "list", "--help"],
        &["manuals", "show", "--help"],
        &["manuals", "delete", "--help"],
    ] {
        let out = fieldvox(&data).args(sub).output().unwrap();
        assert!(out.status.success(), "{sub:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"), "{sub:?}");
    }
}

#[test]
fn minted_tokens_verify_with_the_configured_secret() {
    let data = common::temp_dir("cli-token");
    let out = fieldvox(&data)
        .env("FIELDVOX__AUTH__JWT_SECRET", "a-test-secret-of-length")
        .args(["token", "--tenant", "acme", "--user", "tech-9", "--role", "admin"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = TokenKeys::new("a-test-secret-of-length").verify(token.trim()).unwrap();
    assert_eq!((claims.tenant.as_str(), claims.sub.as_str(), claims.role), ("acme", "tech-9", Role::Admin));
    let bad = fieldvox(&data)
        .env("FIELDVOX__AUTH__JWT_SECRET", "short")
        .args(["token", "--tenant", "a", "--user", "u"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("jwt_secret"), "names the bad setting");
}

/// `fieldvox ingest FILE` for tenant acme.
fn ingest(data: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    fieldvox(data).arg("ingest").arg(file).args(["--tenant", "acme", "--equipment", "RTU-40"]).output().unwrap()
}

#[test]
fn ingest_reports_the_manual_and_refuses_broken_files() {
    let data = common::temp_dir("cli-ingest");
    let manual = common::repo().join("tests/fixtures/rtu40-service-manual.txt");
    let out = ingest(&data, &manual);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["title"], "rtu40-service-manual");
    assert_eq!((report["pages"].as_u64(), report["tenant"].as_str()), (Some(4), Some("acme")));

    let broken = data.join("broken.pdf");
    std::fs::write(&broken, b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer <<>>\n%%EOF").unwrap();
    let out = ingest(&data, &broken);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("document could not be read") || err.contains("no extractable text"), "{err}");

    let out = ingest(&data, &data.join("nope.pdf"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn say_writes_speech() {
    let data = common::temp_dir("cli-say");
    let wav = data.join("q.wav");
    let out = fieldvox(&data).args(["say", "What torque for the head bolts?", "--out"]).arg(&wav).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (samples, rate) = fieldvox::audio::wav::read_mono(&wav).unwrap();
    assert_eq!(rate, 22_050);
    assert!(samples.len() > rate as usize, "at least a second of speech");
    assert!(fieldvox::audio::pcm::rms_dbfs(&samples) > -40.0, "not silence");
}

/// "38" as written, or as Whisper may write the spoken "thirty-eight".
fn mentions_38(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("38") || t.contains("thirty-eight") || t.contains("thirty eight")
}

#[tokio::test(flavor = "multi_thread")]
async fn ask_answers_typed_and_spoken_questions_and_saves_the_answer() {
    let h = common::harness();
    let data = common::temp_dir("cli-ask");
    let token = h.token(common::TENANT_A);
    let ask = |args: &[&str]| {
        let mut cmd = fieldvox(&data);
        cmd.args(["ask", "--url", &h.url(), "--token", &token, "--pipeline", "extractive"]).args(args);
        cmd
    };

    // Typed, as JSON for scripts.
    let out = ask(&["What torque for the compressor head bolts on the RTU-40?", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(mentions_38(answer["text"].as_str().unwrap()), "{answer}");
    assert_eq!(answer["citations"][0]["page"], 3, "{answer}");
    assert!(answer["timings"]["voice_to_voice_ms"].as_f64().is_some(), "{answer}");

    // Spoken from a WAV file (espeak-ng, not the server's voice), answer audio saved.
    let question = data.join("question.wav");
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&question)
        .arg("What torque for the compressor head bolts on the RTU-40?")
        .status()
        .unwrap();
    assert!(status.success());
    let saved = data.join("answer.wav");
    let out = ask(&["--wav", question.to_str().unwrap(), "--out", saved.to_str().unwrap()]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("heard:") && stdout.to_lowercase().contains("torque"), "{stdout}");
    assert!(stdout.contains("page 3"), "{stdout}");

    // The saved answer, heard back by the same recogniser, states the torque.
    let (samples, rate) = fieldvox::audio::wav::read_mono(&saved).unwrap();
    assert!(samples.len() > rate as usize, "at least a second of answer audio");
    let pcm = fieldvox::audio::resample::resample(&samples, rate, 16_000);
    let pipeline = h.app.pipelines.get(Some("extractive")).unwrap();
    let heard = pipeline.stt.transcribe(pcm, String::new()).await.unwrap();
    assert!(mentions_38(&heard), "answer audio says: {heard}");

    // A server that is not there is a clear error, not a hang.
    let out = fieldvox(&data)
        .args(["ask", "hello", "--url", "ws://127.0.0.1:9/v1/realtime", "--tenant", "acme"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_server_refuses_the_built_in_secret_unless_started_for_development() {
    let data = common::temp_dir("cli-serve");
    for secret in [None, Some(fieldvox::auth::DEV_SECRET)] {
        let mut cmd = fieldvox(&data);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(secret) = secret {
            cmd.env("FIELDVOX__AUTH__JWT_SECRET", secret);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {secret:?}");
        assert!(stderr.contains("--dev") && stderr.contains("anyone"), "explains why and what to do: {stderr}");
    }

    // With --dev it serves (and says what that means), and stops cleanly on SIGTERM.
    let mut child = fieldvox(&data)
        .env("RUST_LOG", "info")
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // A server that never starts or never stops must fail the test, not hang it.
    let pid = child.id() as i32;
    let exited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog_exited = exited.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(180));
        if !watchdog_exited.load(std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: signalling our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut log = String::new();
    let mut signalled = false;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening") && !signalled {
            // SAFETY: signalling our own child process.
            assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
            signalled = true;
        }
    }
    assert!(signalled, "the server did not start: {log}");
    assert!(log.contains("development secret"), "--dev is announced: {log}");
    let status = child.wait().unwrap();
    exited.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(status.success(), "a clean exit on SIGTERM: {log}");
    assert!(log.contains("stopped"), "{log}");
}
