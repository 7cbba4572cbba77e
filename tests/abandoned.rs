//! Cancelled means gone: 40 technicians ask out loud and hang up at once. Their
//! transcriptions still waiting for the speech-recognition worker are dropped unrun, and
//! no answer is spoken for any of them. (Its own test binary: the pool-job counters are
//! process-wide.)

mod common;

use common::*;
use serde_json::json;

const CLIENTS: usize = 40;

fn jobs(server: &OwnServer, pool: &str, outcome: &str) -> u64 {
    let prefix = format!(r#"fieldvox_pool_jobs_total{{outcome="{outcome}",pool="{pool}"}} "#);
    server.app.metrics.render().lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn the_work_of_clients_who_left_is_dropped() {
    let server = own_server(test_config(&temp_dir("abandoned"))).await;
    let question = speak("What torque for the compressor head bolts on the RTU-40?", 16_000);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = server.connect("acme").await;
        c.send_json(json!({"type": "session.update", "session": {"input_sample_rate": 16000}})).await;
        assert_eq!(c.next_event().await["type"], "session.updated");
        clients.push(c);
    }
    let stt_ran = jobs(&server, "stt", "ran");
    let answers = answers_composed(&server);

    // Each asks (speech, then commit: the turn starts) and hangs up straight away.
    for mut c in clients {
        c.stream_audio(&question, 16_000).await;
        c.send_json(json!({"type": "input_audio_buffer.commit"})).await;
        let _ = c.ws.close(None).await;
    }

    // One more technician asks by voice. The recogniser's queue is first-in first-out, so
    // once this question is heard every job queued before it has been run or dropped.
    let mut c = server.connect("acme").await;
    c.send_json(json!({"type": "session.update", "session": {"input_sample_rate": 16000}})).await;
    assert_eq!(c.next_event().await["type"], "session.updated");
    c.stream_audio(&question, 16_000).await;
    c.send_json(json!({"type": "input_audio_buffer.commit"})).await;
    let done = c.events_until("response.done").await.pop().expect("done");
    assert_eq!(done["status"], "completed", "{done}");

    // The worker may have taken the first job (or two) before their clients' hang-ups
    // arrived; every other one was dropped unrun, or never queued.
    let ran = jobs(&server, "stt", "ran") - stt_ran - 1;
    assert!(ran <= 3, "{ran} of {CLIENTS} abandoned transcriptions ran");
    // Only the last technician's answer was composed (and so spoken).
    assert_eq!(answers_composed(&server) - answers, 1, "an answer was made for a client who left");
}

/// Answers composed so far, of every kind.
fn answers_composed(server: &OwnServer) -> u64 {
    let text = server.app.metrics.render();
    text.lines()
        .filter(|l| l.starts_with("fieldvox_answers_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
