//! Bad input over `/v1/realtime`: every mistake gets a stable error code (or, for hostile
//! input, a close code) and the server keeps serving; refused tokens never upgrade.

mod common;

use common::*;
use fieldvox::auth::{Claims, Role, TokenKeys};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn expect_error(c: &mut Client, code: &str) {
    let e = c.next_event().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["error"]["code"], code, "{e}");
    assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

async fn still_alive(c: &mut Client) {
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(c.next_event().await["type"], "pong");
}

#[tokio::test]
async fn malformed_and_unknown_events_get_stable_codes() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    c.send_raw(Message::text("{\"type\": \"session.update\",")).await;
    expect_error(&mut c, "invalid_json").await;
    c.send_json(json!({"type": "response.dance"})).await;
    expect_error(&mut c, "unknown_event").await;
    c.send_json(json!({"session": {}})).await;
    expect_error(&mut c, "invalid_event").await;
    c.send_json(json!({"type": "conversation.item.create", "item": {"text": "   "}})).await;
    expect_error(&mut c, "empty_question").await;
    c.send_json(json!({"type": "session.update", "session": {"pipeline": "no-such-profile"}})).await;
    expect_error(&mut c, "unknown_pipeline").await;
    // A test profile (it calls a local test port) is not for clients to pick.
    c.send_json(json!({"type": "session.update", "session": {"pipeline": "load-reference"}})).await;
    expect_error(&mut c, "unknown_pipeline").await;
    still_alive(&mut c).await;
}

#[tokio::test]
async fn audio_format_errors() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    // Audio before any session.update: the server does not guess the format.
    c.send_raw(Message::binary(vec![0u8; 640])).await;
    expect_error(&mut c, "audio_format_not_set").await;
    c.send_json(json!({"type": "session.update", "session": {"input_audio_format": "mp3"}})).await;
    expect_error(&mut c, "unsupported_audio_format").await;
    c.send_json(json!({"type": "session.update", "session": {"input_sample_rate": 96000}})).await;
    expect_error(&mut c, "unsupported_audio_format").await;
    c.send_json(
        json!({"type": "session.update", "session": {"input_audio_format": "pcm16", "input_sample_rate": 16000}}),
    )
    .await;
    assert_eq!(c.next_event().await["type"], "session.updated");
    c.send_raw(Message::binary(vec![0u8; 641])).await;
    expect_error(&mut c, "invalid_audio").await;
    c.send_json(json!({"type": "input_audio_buffer.append", "audio": "%%%not base64"})).await;
    expect_error(&mut c, "invalid_audio").await;
    c.send_json(json!({"type": "input_audio_buffer.commit"})).await;
    expect_error(&mut c, "empty_question").await;
    still_alive(&mut c).await;
}

#[tokio::test]
async fn oversized_frame_closes_with_1009_and_others_keep_working() {
    let h = harness();
    let mut bystander = h.connect(TENANT_A).await;
    let mut c = h.connect(TENANT_A).await;
    let limit = h.app.config.server.max_frame_bytes;
    c.send_raw(Message::binary(vec![0u8; limit + 1024])).await;
    assert_eq!(c.close_code().await, Some(1009));
    still_alive(&mut bystander).await;
    let mut fresh = h.connect(TENANT_A).await;
    still_alive(&mut fresh).await;
}

#[tokio::test]
async fn refused_tokens_never_upgrade() {
    let h = harness();
    let plain = || h.url().into_client_request().unwrap();

    let (status, body) = h.refused(plain()).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_token")), "{body}");

    let mut req = plain();
    req.headers_mut().insert("authorization", "Bearer not-a-jwt".parse().unwrap());
    let (status, body) = h.refused(req).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("malformed_token")), "{body}");

    let expired =
        h.keys.sign(&Claims { sub: "u".into(), tenant: TENANT_A.into(), role: Role::Technician, iat: 1, exp: 2 });
    let mut req = plain();
    req.headers_mut().insert("authorization", format!("Bearer {expired}").parse().unwrap());
    let (status, body) = h.refused(req).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_expired")), "{body}");

    let forged = TokenKeys::new("some-other-secret-value").mint("u", TENANT_A, Role::Admin, 600);
    let mut req = plain();
    req.headers_mut().insert("authorization", format!("Bearer {forged}").parse().unwrap());
    let (status, body) = h.refused(req).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("bad_signature")), "{body}");
}

#[tokio::test]
async fn browser_style_tokens_are_accepted() {
    let h = harness();
    // Query parameter.
    let url = format!("{}?token={}", h.url(), h.token(TENANT_A));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("query token accepted");
    use futures_util::StreamExt;
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("session.created"));
    // Subprotocol entry, with the server selecting fieldvox.v1.
    let mut req = h.url().into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", format!("fieldvox.v1, bearer.{}", h.token(TENANT_A)).parse().unwrap());
    let (_, resp) = tokio_tungstenite::connect_async(req).await.expect("subprotocol token accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "fieldvox.v1");
}

#[tokio::test]
async fn openai_browser_clients_get_the_openai_dialect() {
    use futures_util::StreamExt;
    let h = harness();
    // OpenAI's browser convention: the key rides as a subprotocol next to "realtime".
    let mut req = h.url().into_client_request().unwrap();
    let protocols = format!("realtime, openai-insecure-api-key.{}", h.token(TENANT_A));
    req.headers_mut().insert("sec-websocket-protocol", protocols.parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("key subprotocol accepted");
    assert_eq!(resp.headers()["sec-websocket-protocol"], "realtime");
    let created: serde_json::Value =
        serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(created["type"], "session.created");
    assert_eq!(created["session"]["type"], "realtime", "{created}");
    assert_eq!(created["session"]["audio"]["output"]["format"]["rate"], 24000, "{created}");
    assert!(created["event_id"].as_str().is_some(), "{created}");
    // ?dialect=native wins over the model parameter OpenAI's SDKs send.
    let url = format!("{}?model=field-assistant&dialect=native&token={}", h.url(), h.token(TENANT_A));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    let created: serde_json::Value =
        serde_json::from_str(ws.next().await.unwrap().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(created["session"]["output_sample_rate"], 16000, "{created}");
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    c.send_json(json!({"type": "dance"})).await;
    c.next_event().await;
    let ops = h.keys.mint("ops-1", TENANT_A, Role::Ops, 600);
    let get = |path: &str| {
        let request = reqwest::Client::new().get(format!("http://{}{path}", h.addr)).bearer_auth(&ops);
        async move { request.send().await.unwrap() }
    };
    assert_eq!(get("/healthz").await.text().await.unwrap(), "ok");
    let ready: serde_json::Value = get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let metrics = get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("fieldvox_sessions_active{transport=\"websocket\"}"), "{metrics}");
    assert!(metrics.contains("fieldvox_errors_total{code=\"unknown_event\"}"), "{metrics}");
}

#[tokio::test]
async fn session_fields_not_understood_are_reported_and_the_rest_applies() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    c.send_json(json!({"type": "session.update", "session": {
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 24000}}, "output": {"voice": "alloy"}},
        "instructions": "be brief"}}))
        .await;
    let updated = c.next_event().await;
    assert_eq!(updated["type"], "session.updated", "{updated}");
    assert_eq!(updated["session"]["input_sample_rate"], 24000, "{updated}");
    let e = c.next_event().await;
    assert_eq!(e["error"]["code"], "unsupported_field", "{e}");
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("audio.output.voice") && message.contains("instructions"), "{message}");
    // Nothing committed yet: response.create has nothing to answer.
    c.send_json(json!({"type": "response.create"})).await;
    expect_error(&mut c, "empty_question").await;
    still_alive(&mut c).await;
}

#[tokio::test]
async fn with_turn_detection_off_the_client_commits_and_asks_for_the_answer() {
    let h = harness();
    let mut c = h.connect(TENANT_A).await;
    c.send_json(json!({"type": "session.update", "session": {"input_sample_rate": 16000, "turn_detection": null}}))
        .await;
    let updated = c.next_event().await;
    assert!(updated["session"]["turn_detection"].is_null(), "{updated}");
    c.stream_audio(&[0.0; 16_000], 16_000).await;
    c.send_json(json!({"type": "input_audio_buffer.commit"})).await;
    expect_error(&mut c, "empty_question").await;
    still_alive(&mut c).await;

    // A question followed by a long silence: with server VAD this would end the utterance
    // and start an answer; with turn detection off nothing happens until the commit, and
    // the answer waits for response.create.
    let mut speech = speak_flite("What torque for the compressor head bolts on the RTU-40?", 16_000);
    speech.extend(vec![0.0; 16_000 * 3 / 2]);
    c.stream_audio(&speech, 16_000).await;
    c.send_json(json!({"type": "ping"})).await;
    let before = c.events_until("pong").await;
    assert_eq!(before.len(), 1, "no VAD events without turn detection: {before:?}");
    c.send_json(json!({"type": "input_audio_buffer.commit"})).await;
    let committed = c.next_event().await;
    assert_eq!(committed["type"], "input_audio_buffer.committed");
    let item = c.next_event().await;
    assert_eq!(item["type"], "conversation.item.created", "{item}");
    assert_eq!((&item["item"]["id"], item["item"]["role"].as_str()), (&committed["item_id"], Some("user")));
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(c.next_event().await["type"], "pong", "no answer before response.create");
    c.send_json(json!({"type": "response.create"})).await;
    let events = c.events_until("response.done").await;
    let done = events.last().expect("done");
    assert!(done["text"].as_str().unwrap_or_default().contains("38"), "{events:?}");
}
