//! `response.cancel` during a local-LLM answer frees the model's worker: measured by the
//! tokens the worker generated, from the server's own counter. A test binary of its own:
//! the counter is process-wide, so no other test may generate beside it.

mod common;

use common::*;
use serde_json::{Value, json};

const QUESTION: &str = "How do I replace the intake air filter on the RTU-40 and how often?";

/// Tokens the local language model has generated in this process.
fn tokens_generated(server: &OwnServer) -> u64 {
    let text = server.app.metrics.render();
    text.lines()
        .find(|l| l.split(' ').next().is_some_and(|name| name.ends_with("llm_tokens_total")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("llm_tokens_total in /metrics:\n{text}"))
}

async fn ask(c: &mut Client) {
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": QUESTION}})).await;
}

async fn configure(c: &mut Client) {
    c.send_json(json!({"type": "session.update", "session": {"pipeline": "local-llm-long"}})).await;
    assert_eq!(c.next_event().await["type"], "session.updated");
}

fn status(events: &[Value]) -> &Value {
    &events.last().expect("response.done")["status"]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_local_answer_frees_the_model_for_the_next_question() {
    let dir = temp_dir("llm-cancel");
    let pipelines = dir.join("pipelines");
    std::fs::create_dir_all(&pipelines).expect("dir");
    // The local profile with room for a long answer, so a cancelled one has much left.
    let profile = std::fs::read_to_string(repo().join("pipelines/local-llm.toml")).expect("profile");
    assert!(profile.contains("max_tokens = 60"), "the shipped local profile's answer length");
    std::fs::write(pipelines.join("local-llm-long.toml"), profile.replace("max_tokens = 60", "max_tokens = 200"))
        .expect("write profile");
    let mut config = test_config(&dir);
    config.pipelines.dir = pipelines;
    config.pipelines.default = "local-llm-long".into();
    config.workers.llm = 1;
    let server = own_server(config).await;
    ingest_rtu40(&server.app, TENANT_A).await;

    // The whole answer, uncancelled: greedy decoding gives the same one every time.
    let start = tokens_generated(&server);
    let mut whole = server.connect(TENANT_A).await;
    configure(&mut whole).await;
    ask(&mut whole).await;
    let events = whole.events_until("response.done").await;
    assert_eq!(status(&events), "completed", "{events:?}");
    let whole_first_token = events.last().expect("done")["timings"]["llm_first_token_ms"].clone();
    let full = tokens_generated(&server) - start;
    assert!(full >= 30, "the uncancelled answer is long enough to cut short: {full} tokens");

    // Cancelled at its first words.
    let mut cancelled = server.connect(TENANT_A).await;
    configure(&mut cancelled).await;
    ask(&mut cancelled).await;
    cancelled.events_until("response.output_text.delta").await;
    cancelled.send_json(json!({"type": "response.cancel"})).await;
    let events = cancelled.events_until("response.done").await;
    assert_eq!(status(&events), "cancelled", "{events:?}");

    // Another technician's question on the one worker: it runs once the cancelled job
    // has returned, so the counter then holds the cancelled job's tokens and its own.
    let before_next = tokens_generated(&server) - start - full;
    let mut next = server.connect(TENANT_A).await;
    configure(&mut next).await;
    ask(&mut next).await;
    let events = next.events_until("response.done").await;
    assert_eq!(status(&events), "completed", "{events:?}");
    let cut_short = tokens_generated(&server) - start - 2 * full;
    eprintln!(
        "tokens: whole answer {full}, cancelled answer {cut_short} ({before_next} counted when it was reported \
         cancelled); first token: whole {} ms, next question {} ms",
        whole_first_token,
        events.last().expect("done")["timings"]["llm_first_token_ms"],
    );
    // Cancelled after its first sentence (about ten tokens); uncancelled it would run on.
    assert!(cut_short < full / 2, "the cancelled answer stopped early: {cut_short} of {full} tokens");
    let _ = server.stop.send(());
}
