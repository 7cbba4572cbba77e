//! Fair queues, in a test process of their own: the cores' gate is process-wide, and
//! another test's load in the same process would change the order measured here.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use fieldvox::auth::Role;
use fieldvox::limits::LimitsConfig;
use serde_json::json;

const TORQUE_Q: &str = "What torque for the compressor head bolts on the RTU-40?";

/// Live speech jobs waiting in the process's `tts` pools, from `/metrics`.
fn speech_jobs_waiting(server: &OwnServer) -> i64 {
    let metrics = server.app.metrics.render();
    metrics
        .lines()
        .filter(|l| l.starts_with("fieldvox_pool_queued_jobs{") && l.contains(r#"pool="tts""#))
        .filter(|l| l.contains(r#"lane="live""#))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Order, not seconds: tenant A's answers fill the speech worker's queue (nine jobs or
/// more waiting) before tenant B asks one question, and B's answer still comes before all
/// but the one or two of A's already being spoken. A first-come queue would serve B behind
/// A's whole backlog (four answers or more); fair queuing serves B next. Counted in
/// finishing order, so a slower machine does not change the outcome; what the flood costs
/// in seconds is the flood benchmark's (README, "Fair use").
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_that_floods_waits_behind_itself_not_in_front_of_others() {
    let mut config = test_config(&temp_dir("fair-queues"));
    config.limits = LimitsConfig::off();
    // Nothing is refused here: the order is the point (the wait bound is unit-tested).
    config.workers.queue_depth = 64;
    config.workers.max_queue_wait_ms = 600_000;
    let server = own_server(config).await;
    // The process's cores are shared by every server in it (workers::gate): this test
    // has its file, so its process, to itself.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (flooder, quiet) = (format!("flooder-{run}"), format!("quiet-{run}"));
    for tenant in [&flooder, &quiet] {
        ingest_rtu40(&server.app, tenant).await;
    }
    let b = server.mint("tech-b", &quiet, Role::Technician);
    let mut c = open_session(server.addr, &b).await;
    let question = json!({"type": "conversation.item.create", "item": {"text": TORQUE_Q}});
    c.send_json(question.clone()).await; // warm-up: caches and models
    assert_eq!(c.answer().await["status"], "completed");

    const FLOOD: usize = 10;
    let finished = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let token = server.mint(&format!("tech-a{i}"), &flooder, Role::Technician);
        let mut a = open_session(server.addr, &token).await;
        a.send_json(question.clone()).await;
        let finished = finished.clone();
        flood.push(tokio::spawn(async move {
            let done = a.answer().await;
            finished.fetch_add(1, Ordering::SeqCst);
            done
        }));
    }
    // Past retrieval, A's answers wait for speech: B then asks behind all of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while speech_jobs_waiting(&server) < FLOOD as i64 - 1 {
        assert!(Instant::now() < deadline, "A's answers never queued for speech");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A's answers that were spoken while the rest queued are not the point: only those
    // finishing while B waits are.
    let already = finished.load(Ordering::SeqCst);
    assert!(FLOOD - already >= 4, "a backlog too short to tell fair from first-come: {already} of A's answers done");

    c.send_json(question).await;
    let done = c.answer().await;
    let before_b = finished.load(Ordering::SeqCst) - already;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["text"].as_str().unwrap_or_default().contains("38"), "{done}");
    for a in flood {
        let done = a.await.expect("flood session");
        assert_eq!(done["status"], "completed", "{done}");
    }
    eprintln!("A's answers finished while B waited: {before_b} of the {} left", FLOOD - already);
    assert!(before_b <= 2, "B waited behind {before_b} of A's {} answers left", FLOOD - already);
}
