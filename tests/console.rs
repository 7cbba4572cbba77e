//! The console at `/console` in headless Chromium (Playwright): the ops view's session
//! gauge rises when a technician connects and falls when they leave, pushed by
//! `GET /v1/ops/live`; an admin uploads a PDF, the progress bar reaches 100 % and the
//! manual is listed. Screenshots of both views are kept (their paths are printed). The
//! live aggregate's access and scope are checked over HTTP.

mod common;

use common::*;
use fieldvox::auth::Role;
use serde_json::Value;

const TITLE: &str = "BX-9 Service Manual";

fn manual_pdf(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("bx9-manual.pdf");
    let mut command = std::process::Command::new(client_tools().join("venv/bin/python"));
    command.arg(repo().join("tests/clients/make_manual_pdf.py")).arg(&out).args(["--torque", "44", "--pages", "6"]);
    let status = command.status().expect("python with fpdf2 (scripts/setup.sh installs it)");
    assert!(status.success(), "{command:?}");
    out
}

#[tokio::test]
async fn the_console_shows_live_sessions_and_uploads_a_manual() {
    let h = harness();
    let dir = temp_dir("console");
    let pdf = manual_pdf(&dir);
    let mut command = std::process::Command::new("node");
    command
        .env("NODE_PATH", client_tools().join("node/node_modules"))
        .arg(repo().join("tests/browser/console.cjs"))
        .args(["--base", &format!("http://{}", h.addr)])
        .args(["--ops-token", &h.keys.mint("ops-1", "platform", Role::Ops, 600)])
        .args(["--admin-token", &h.keys.mint("admin-1", TENANT_A, Role::Admin, 600)])
        .args(["--tech-token", &h.keys.mint("tech-console", TENANT_A, Role::Technician, 600)])
        .arg("--pdf")
        .arg(&pdf)
        .args(["--equipment", "BX-9", "--title", TITLE, "--shots"])
        .arg(&dir);
    let result = tokio::task::spawn_blocking(move || run_client(command)).await.expect("console client");

    let ops = &result["ops"];
    let before = ops["before"].as_u64().expect("gauge read");
    assert!(ops["risen"].as_u64() > Some(before), "{result}");
    assert!(ops["fell"].as_u64() <= Some(before), "{result}");
    assert_eq!(ops["shownRisen"].as_str().and_then(|s| s.parse().ok()), ops["risen"].as_u64(), "{result}");

    let admin = &result["admin"];
    assert_eq!(admin["percent"], 100, "{result}");
    assert!(admin["state"].as_str().unwrap_or_default().starts_with("done"), "{result}");
    assert!(admin["listed"].as_array().is_some_and(|l| l.iter().any(|t| t == TITLE)), "{result}");
    for shot in ["ops.png", "admin.png"] {
        let png = std::fs::read(dir.join(shot)).expect("screenshot written");
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{shot} looks empty");
        eprintln!("console screenshot: {}", dir.join(shot).display());
    }
}

/// The first `live` event of `GET /v1/ops/live` with this token, or the refusal's status.
async fn first_live(token: &str) -> Result<Value, u16> {
    let h = harness();
    let mut response = reqwest::Client::new()
        .get(format!("http://{}/v1/ops/live", h.addr))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    if !response.status().is_success() {
        return Err(response.status().as_u16());
    }
    let mut text = String::new();
    while let Some(chunk) = response.chunk().await.expect("stream") {
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(data) = text.split("\n\n").find_map(|block| {
            block.contains("event: live").then(|| block.lines().find_map(|l| l.strip_prefix("data: "))).flatten()
        }) {
            return Ok(serde_json::from_str(data).expect("json"));
        }
    }
    panic!("the stream ended without a live event: {text}");
}

#[tokio::test]
async fn the_live_view_is_for_ops_and_admins_and_an_admin_sees_only_their_tenant() {
    let h = harness();
    // A session of each tenant, so both appear in the census.
    let _a = h.connect(TENANT_A).await;
    let _b = h.connect(TENANT_B).await;
    let ops = first_live(&h.keys.mint("ops-1", "platform", Role::Ops, 600)).await.expect("ops may watch");
    let tenants = ops["sessions"]["by_tenant"].as_object().expect("by tenant").clone();
    assert!(tenants.contains_key(TENANT_A) && tenants.contains_key(TENANT_B), "{ops}");
    assert!(ops["sessions"]["by_transport"]["websocket"].as_u64() >= Some(2), "{ops}");
    for key in ["turns_in_flight", "latency_ms", "errors", "cache", "pool_queued"] {
        assert!(!ops[key].is_null(), "missing {key}: {ops}");
    }
    let admin = first_live(&h.keys.mint("admin-1", TENANT_A, Role::Admin, 600)).await.expect("admins may watch");
    let seen: Vec<&String> = admin["sessions"]["by_tenant"].as_object().expect("by tenant").keys().collect();
    assert_eq!(seen, vec![TENANT_A], "an admin sees only their own company: {admin}");
    assert_eq!(first_live(&h.token(TENANT_A)).await.err(), Some(403), "technicians may not");
    assert_eq!(first_live("not-a-token").await.err(), Some(401));
}

#[tokio::test]
async fn the_console_signs_in_through_the_company_s_openid_provider() {
    // A real OpenID provider (oidc-provider from npm) on a free port; fieldvox trusts its
    // keys (auth.jwks) and offers it on the console (console.oidc_issuer).
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let issuer = format!("http://127.0.0.1:{port}");
    let mut config = test_config(&temp_dir("console-oidc"));
    config.auth.jwks = Some(fieldvox::config::JwksConfig {
        url: format!("{issuer}/jwks"),
        issuer: issuer.clone(),
        audience: "fieldvox-console".into(),
        tenant_claim: "tenant".into(),
        role_claim: "role".into(),
    });
    config.console.oidc_issuer = Some(issuer.clone());
    let server = own_server(config).await;
    let base = format!("http://{}", server.addr);
    let node_path = client_tools().join("node/node_modules");
    let provider = std::process::Command::new("node")
        .env("NODE_PATH", &node_path)
        .arg(repo().join("tests/clients/oidc_provider.mjs"))
        .args(["--port", &port.to_string(), "--redirect", &format!("{base}/console"), "--tenant", TENANT_A])
        .args(["--role", "admin"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("node runs the provider (scripts/setup.sh installs oidc-provider)");
    let _provider = KillOnDrop(provider);
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(&discovery).await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "the OpenID provider did not come up at {issuer}");

    let shot = temp_dir("console-oidc-shot").join("oidc.png");
    let mut command = std::process::Command::new("node");
    command.env("NODE_PATH", &node_path).arg(repo().join("tests/browser/console_oidc.cjs"));
    command.args(["--base", &base, "--user", "alice"]).arg("--screenshot").arg(&shot);
    let result = tokio::task::spawn_blocking(move || run_client(command)).await.expect("oidc client");
    assert_eq!(result["role"], "admin", "{result}");
    assert_eq!(result["tenant"], TENANT_A, "{result}");
    assert!(result["who"].as_str().is_some_and(|w| w.starts_with("alice")), "{result}");
    assert_eq!(result["url"], format!("{base}/console"), "the code is taken out of the address: {result}");
    eprintln!("console screenshot: {}", shot.display());
}

/// A child process that must not outlive its test, however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
