//! The `fieldvox` command line: help, token minting, ingesting good and broken manuals.

mod common;

use std::process::Command;

use fieldvox::auth::{Role, TokenKeys};

fn fieldvox(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fieldvox"));
    cmd.env("FIELDVOX__DATA__DIR", data).env("RUST_LOG", "error");
    cmd
}

#[test]
fn every_subcommand_has_help() {
    let data = common::temp_dir("cli-help");
    for sub in [&["--help"][..], &["serve", "--help"], &["token", "--help"], &["ingest", "--help"], &["say", "--help"]]
    {
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
