//! Fair use, end to end: per-user and per-tenant limits on the socket and over HTTP, one
//! limit held by two instances through a real `redis-server`, fail-open and fail-closed
//! while it is down. Fair queuing is tests/fair_queues.rs.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::services::Service;
use common::*;
use fieldvox::auth::Role;
use fieldvox::backends::{BackendsConfig, LimitsBackend};
use fieldvox::config::Config;
use fieldvox::limits::LimitsConfig;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const TORQUE_Q: &str = "What torque for the compressor head bolts on the RTU-40?";

fn rate(text: &str) -> Option<fieldvox::limits::Rate> {
    Some(text.parse().expect("a rate"))
}

fn config_with(limits: LimitsConfig) -> Config {
    let mut config = test_config(&temp_dir("limits"));
    config.limits = limits;
    config
}

/// Asks a typed question and returns how the charge went: `Ok(what is left)` from
/// `rate_limits.updated`, or `Err(the rate_limited error)`. Events of earlier turns that
/// arrive meanwhile are skipped.
async fn ask(c: &mut Client, question: &str) -> Result<Value, Value> {
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": question}})).await;
    let mut refusal = None;
    loop {
        let e = c.next_event().await;
        match e["type"].as_str() {
            Some("error") if e["error"]["code"] == "rate_limited" => refusal = Some(e),
            Some("rate_limits.updated") => return refusal.map_or(Ok(e), Err),
            _ => {}
        }
    }
}

fn remaining(updated: &Value, scope: &str) -> u64 {
    let limits = updated["rate_limits"].as_array().expect("rate_limits");
    let entry = limits.iter().find(|l| l["scope"] == scope).unwrap_or_else(|| panic!("no {scope} entry: {updated}"));
    entry["remaining"].as_u64().expect("remaining")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_over_the_turn_limit_is_told_when_to_retry_and_is_served_after_waiting() {
    let mut limits = LimitsConfig::off();
    limits.technician.turns = rate("3/3s"); // one back a second
    let server = own_server(config_with(limits)).await;
    ingest_rtu40(&server.app, "acme").await;
    let mut c = server.connect("acme").await;

    for left in [2, 1, 0] {
        let updated = ask(&mut c, TORQUE_Q).await.expect("within the allowance");
        assert_eq!(remaining(&updated, "user"), left, "{updated}");
    }
    let refused = ask(&mut c, TORQUE_Q).await.expect_err("the fourth is over");
    let error = &refused["error"];
    assert_eq!(error["limit"], "turns", "{refused}");
    assert_eq!(error["retryable"], true);
    let retry_after_ms = error["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((500..=1000).contains(&retry_after_ms), "one turn comes back within a second: {retry_after_ms}");

    // The session is still open: the last allowed question is answered.
    assert_eq!(c.answer().await["status"], "completed");
    tokio::time::sleep(Duration::from_millis(retry_after_ms)).await;
    ask(&mut c, TORQUE_Q).await.expect("served again after waiting retry_after_ms");
    let done = c.answer().await;
    assert!(done["text"].as_str().unwrap_or_default().contains("38"), "{done}");

    let metrics = server.app.metrics.render();
    assert!(metrics.contains(r#"fieldvox_rate_limit_decisions_total{limit="turns",outcome="limited"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"fieldvox_rate_limit_decisions_total{limit="turns",outcome="allowed"} 4"#));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_users_flood_leaves_other_users_allowances_whole() {
    let mut limits = LimitsConfig::off();
    limits.technician.turns = rate("3/min");
    limits.technician.searches = rate("2/min");
    limits.technician.session_opens = rate("2/min");
    let server = own_server(config_with(limits)).await;
    ingest_rtu40(&server.app, "acme").await;

    // tech-1 floods: 3 turns pass, the rest are refused.
    let (flooder, other) =
        (server.mint("tech-1", "acme", Role::Technician), server.mint("tech-2", "acme", Role::Technician));
    let mut c = open_session(server.addr, &flooder).await;
    let mut allowed = 0;
    for _ in 0..6 {
        allowed += usize::from(ask(&mut c, TORQUE_Q).await.is_ok());
    }
    assert_eq!(allowed, 3);
    let mut d = open_session(server.addr, &other).await;
    let updated = ask(&mut d, TORQUE_Q).await.expect("tech-2 has an allowance of their own");
    assert_eq!(remaining(&updated, "user"), 2, "{updated}");
    let done = d.answer().await;
    assert!(done["text"].as_str().unwrap_or_default().contains("38"), "{done}");

    // Over HTTP: 429 with Retry-After in whole seconds, and the same body fields.
    let http = reqwest::Client::new();
    let search = |token: &str| {
        http.post(format!("http://{}/v1/search", server.addr))
            .bearer_auth(token)
            .json(&json!({"question": TORQUE_Q}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(search(&flooder).await.unwrap().status(), 200);
    }
    let refused = search(&flooder).await.unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().expect("whole seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!((body["error"].as_str(), body["limit"].as_str()), (Some("rate_limited"), Some("searches")), "{body}");
    assert!(body["retry_after_ms"].as_u64().unwrap() <= retry_after * 1000, "{body}");
    assert_eq!(search(&other).await.unwrap().status(), 200, "tech-2's searches are untouched");

    // Session opens: tech-1 opened one; one more passes, the next is refused before the upgrade.
    let _second = open_session(server.addr, &flooder).await;
    let Err((status, body)) = open_with(server.addr, &flooder, None).await else { panic!("a third open passed") };
    assert_eq!((status, body["limit"].as_str()), (429, Some("session_opens")), "{body}");
    open_with(server.addr, &other, None).await.expect("tech-2 opens a second session");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_attempts_over_the_rate_get_429_before_any_token_is_read() {
    let mut limits = LimitsConfig::off();
    limits.connection_attempts = rate("5/min");
    let server = own_server(config_with(limits)).await;
    for _ in 0..5 {
        let resp = reqwest::get(format!("http://{}/healthz", server.addr)).await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut reply)).await.expect("closed").unwrap();
    assert!(reply.starts_with("HTTP/1.1 429 "), "{reply}");
    assert!(reply.contains("Retry-After: 12\r\n"), "one attempt comes back every 12 s: {reply}");
    assert!(
        server.app.metrics.render().contains(r#"fieldvox_connections_reaped_total{reason="connection_attempts"} 1"#)
    );
}

fn on_redis(redis: &Service, limits: LimitsConfig, secret: &str) -> Config {
    let mut config = config_with(limits);
    config.backends = BackendsConfig { limits: LimitsBackend::Redis, ..BackendsConfig::default() };
    config.backends.redis.url = redis.url();
    config.auth.jwt_secret = Some(secret.to_string());
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_redis_hold_one_limit() {
    let redis = Service::redis();
    let secret = format!("limits-{}", uuid::Uuid::new_v4().simple());
    let mut limits = LimitsConfig::off();
    limits.technician.turns = rate("10/min");
    let one = own_server(on_redis(&redis, limits.clone(), &secret)).await;
    let two = own_server(on_redis(&redis, limits, &secret)).await;
    for server in [&one, &two] {
        ingest_rtu40(&server.app, "acme").await;
    }
    let token = one.mint("tech-1", "acme", Role::Technician);
    let (mut a, mut b) = (open_session(one.addr, &token).await, open_session(two.addr, &token).await);
    let mut allowed = 0;
    for i in 0..30 {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        allowed += usize::from(ask(c, TORQUE_Q).await.is_ok());
    }
    // 10 at once, plus any that refilled (one every 6 s) while the 30 were asked.
    assert!((10..=11).contains(&allowed), "{allowed} turns passed across the two instances");
}

async fn upload_status(addr: SocketAddr, token: &str) -> (u16, Option<String>, Value) {
    let text = std::fs::read(repo().join("tests/fixtures/rtu40-service-manual.txt")).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("equipment", "RTU-40")
        .part("file", reqwest::multipart::Part::bytes(text).file_name("rtu40.txt"));
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/manuals"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), retry_after, resp.json().await.unwrap_or(Value::Null))
}

fn gauge(metrics: &str, line: &str) -> Option<i64> {
    metrics.lines().find_map(|l| l.strip_prefix(line)).and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn while_redis_is_down_turns_fail_open_and_uploads_fail_closed_and_limits_return_with_it() {
    let mut redis = Service::redis();
    let mut limits = LimitsConfig::off();
    limits.technician.turns = rate("2/min");
    limits.admin.uploads = rate("100/h");
    let secret = format!("limits-down-{}", uuid::Uuid::new_v4().simple());
    let server = own_server(on_redis(&redis, limits, &secret)).await;
    ingest_rtu40(&server.app, "acme").await;
    let admin = server.mint("ann", "acme", Role::Admin);
    let mut c = server.connect("acme").await;
    for _ in 0..2 {
        ask(&mut c, TORQUE_Q).await.expect("within the allowance");
    }
    ask(&mut c, TORQUE_Q).await.expect_err("over the allowance");
    c.answer().await;

    redis.stop();
    // Turns fail open: answered, with no allowance to report.
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": TORQUE_Q}})).await;
    let events = c.events_until("response.done").await;
    assert!(of_type(&events, "rate_limits.updated").is_empty(), "nothing was charged: {events:?}");
    assert!(!events.iter().any(|e| e["error"]["code"] == "rate_limited"), "{events:?}");
    assert_eq!(events.last().unwrap()["status"], "completed", "{events:?}");
    let metrics = server.app.metrics.render();
    assert_eq!(gauge(&metrics, r#"fieldvox_rate_limit_unenforced{limit="turns"} "#), Some(1), "{metrics}");
    // Uploads fail closed: 503, retryable, with Retry-After.
    let (status, retry_after, body) = upload_status(server.addr, &admin).await;
    assert_eq!(
        (status, body["error"].as_str(), body["limit"].as_str()),
        (503, Some("limiter_unavailable"), Some("uploads")),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"), "Redis is retried every second");

    redis.restart();
    // Once the limiter reaches Redis again, turns are charged (a fresh bucket: Redis kept nothing).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "limits never applied again");
        c.send_json(json!({"type": "conversation.item.create", "item": {"text": TORQUE_Q}})).await;
        let events = c.events_until("response.done").await;
        if let Some(updated) = of_type(&events, "rate_limits.updated").first() {
            assert_eq!(remaining(updated, "user"), 1, "{updated}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    ask(&mut c, TORQUE_Q).await.expect("the second of two");
    ask(&mut c, TORQUE_Q).await.expect_err("limited again");
    let metrics = server.app.metrics.render();
    assert_eq!(gauge(&metrics, r#"fieldvox_rate_limit_unenforced{limit="turns"} "#), Some(0), "{metrics}");
    let (status, _, body) = upload_status(server.addr, &admin).await;
    assert!(matches!(status, 200 | 202), "uploads are accepted again (the same file: 200): {status} {body}");
}
