//! WebRTC end to end (`POST /v1/rtc`): a client peer built on the `webrtc` crate speaks
//! the question as Opus RTP in real time and hears the answer as Opus RTP, with events and
//! citations on the data channel; the same through 10 % packet loss; a peer that never
//! connects is reaped; bad offers are refused with stable codes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fieldvox::audio::opus::OpusDecoder;
use fieldvox::rtc::client::{Received, RtcClient, offer_only};
use serde_json::{Value, json};

const QUESTION: &str = "What torque for the compressor head bolts on the RTU-40?";
const CONNECT: Duration = Duration::from_secs(20);
const ANSWER: Duration = Duration::from_secs(120);

fn mentions_38(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("38") || t.contains("thirty-eight") || t.contains("thirty eight")
}

fn base(h: &Harness) -> String {
    format!("http://{}", h.addr)
}

/// The question at 48 kHz with a person's pauses around it.
fn question() -> Vec<f32> {
    let rate = 48_000;
    let mut audio = vec![0.0; rate / 2];
    audio.extend(speak_flite(QUESTION, rate as u32));
    audio.extend(vec![0.0; rate * 3 / 2]);
    audio
}

/// Session id of a `Location: /v1/rtc/{id}`.
fn session_id(location: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(location.rsplit('/').next().unwrap_or_default()).expect("Location names the session")
}

/// Waits (bounded) until the session is no longer registered.
async fn gone(h: &Harness, id: uuid::Uuid, within: Duration) {
    let deadline = Instant::now() + within;
    while h.app.sessions.get(&id).is_some() {
        assert!(Instant::now() < deadline, "session {id} still open after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `fieldvox_<name>{<labels>}` sample of the server's metrics, 0 when absent.
fn metric(h: &Harness, series: &str) -> f64 {
    let text = h.app.metrics.render();
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// Asks the question over a fresh peer, dropping inbound packets where `drop` says;
/// returns the events up to `response.done`, the answer packets, and the client.
async fn ask(h: &Harness, drop: impl FnMut() -> bool) -> (Vec<Value>, Vec<Received>, RtcClient) {
    let mut c = RtcClient::connect(&base(h), &h.token(TENANT_A), CONNECT).await.expect("peer connects");
    let created = c.next_event(CONNECT).await.expect("session.created on the data channel");
    assert_eq!(created["type"], "session.created", "{created}");
    assert_eq!(created["session"]["input_audio_format"], "opus", "{created}");
    assert_eq!(created["session"]["output_sample_rate"], 48_000, "{created}");
    c.send_event(&json!({"type": "session.update", "session": {"pipeline": "extractive"}})).await.expect("send");
    let updated = c.next_event(CONNECT).await.expect("session.updated");
    assert_eq!(updated["type"], "session.updated", "{updated}");

    c.speak(&question(), drop).await.expect("speaks");
    let events = c.events_until("response.done", ANSWER).await;
    // The answer keeps playing in real time after its last event.
    let audio = c.audio_until_quiet(Duration::from_secs(2)).await;
    (events, audio, c)
}

/// The answer as heard: its packets decoded in order and transcribed with the server's STT.
async fn heard(h: &Harness, packets: &[Received]) -> String {
    let mut decoder = OpusDecoder::at(16_000, 1).expect("decoder");
    let mut samples = Vec::new();
    for p in packets {
        samples.extend_from_slice(decoder.decode(&p.payload).expect("an Opus packet"));
    }
    assert!(samples.len() > 16_000, "at least a second of answer, got {} samples", samples.len());
    let pipeline = h.app.pipelines.get(Some("extractive")).expect("pipeline");
    pipeline.stt.transcribe(samples, String::new()).await.expect("transcribes")
}

fn assert_cited_answer(events: &[Value]) {
    let transcript = of_type(events, "conversation.item.input_audio_transcription.completed")
        .first()
        .and_then(|e| e["transcript"].as_str())
        .unwrap_or_default()
        .to_lowercase();
    assert!(transcript.contains("compressor"), "transcript: {transcript}");
    let done = events.last().expect("events");
    assert_eq!(done["type"], "response.done", "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    let cited = of_type(events, "response.citations");
    assert_eq!(cited[0]["citations"][0]["page"], 3, "heard {transcript:?}, answered {}", done["text"]);
    assert_eq!(cited[0]["citations"][0]["title"], MANUAL_TITLE);
}

#[tokio::test]
async fn a_webrtc_peer_asks_by_voice_and_hears_a_cited_answer() {
    let h = harness();
    let (events, audio, c) = ask(h, || false).await;
    assert_cited_answer(&events);
    let said = heard(h, &audio).await;
    assert!(mentions_38(&said), "answer audio says: {said}");

    // Paced in real time, not sent in a burst: the packets span about their own length,
    // and their RTP timestamps step 20 ms (960 ticks) within a spurt.
    let span = audio.last().unwrap().at.duration_since(audio[0].at);
    let length = Duration::from_millis(20) * audio.len() as u32;
    assert!(span * 2 > length, "{} packets ({length:?} of audio) arrived within {span:?}", audio.len());
    let steps = audio.windows(2).filter(|w| w[1].sequence == w[0].sequence.wrapping_add(1));
    assert!(steps.clone().count() > audio.len() / 2);
    assert!(steps.clone().any(|w| w[1].timestamp.wrapping_sub(w[0].timestamp) == 960));

    // Counted as a WebRTC session; its formats are the SDP's, not the client's to change.
    let id = session_id(&c.location);
    assert_eq!(h.app.sessions.get(&id).expect("registered").transport, "webrtc");
    c.send_event(
        &json!({"type": "session.update", "session": {"input_audio_format": "pcm16", "input_sample_rate": 16000}}),
    )
    .await
    .expect("send");
    let mut c = c;
    let refused = c.next_event(CONNECT).await.expect("an error event");
    assert_eq!(refused["error"]["code"], "unsupported_audio_format", "{refused}");

    // DELETE on the Location hangs up; a second DELETE finds nothing.
    let http = reqwest::Client::new();
    let url = format!("{}{}", base(h), c.location);
    let other = h.keys.mint("tech-2", TENANT_A, fieldvox::auth::Role::Technician, 600);
    let status = http.delete(&url).bearer_auth(&other).send().await.expect("delete").status();
    assert_eq!(status, 404, "another user cannot hang up this session");
    let same_name_elsewhere = h.token(TENANT_B);
    let status = http.delete(&url).bearer_auth(&same_name_elsewhere).send().await.expect("delete").status();
    assert_eq!(status, 404, "nor the same user name in another company");
    let status = http.delete(&url).bearer_auth(h.token(TENANT_A)).send().await.expect("delete").status();
    assert_eq!(status, 204);
    gone(h, id, Duration::from_secs(10)).await;
    let status = http.delete(&url).bearer_auth(h.token(TENANT_A)).send().await.expect("delete").status();
    assert_eq!(status, 404);
    c.close().await;
}

#[tokio::test]
async fn the_answer_is_still_right_with_a_tenth_of_the_packets_lost() {
    let h = harness();
    let fec_before = metric(h, "fieldvox_rtc_audio_packets_total{outcome=\"recovered\"}");
    let recovered_before = fec_before + metric(h, "fieldvox_rtc_audio_packets_total{outcome=\"concealed\"}");
    // A fixed-seed generator: the same 10 % every run.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let drop = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state.is_multiple_of(10)
    };
    let (events, audio, c) = ask(h, drop).await;
    assert!(c.dropped * 100 >= (c.sent + c.dropped) * 7, "{} of {} dropped", c.dropped, c.sent + c.dropped);
    assert_cited_answer(&events);
    let said = heard(h, &audio).await;
    assert!(mentions_38(&said), "answer audio says: {said}");

    let id = session_id(&c.location);
    c.close().await;
    gone(h, id, Duration::from_secs(30)).await;
    let fec = metric(h, "fieldvox_rtc_audio_packets_total{outcome=\"recovered\"}");
    let recovered = fec + metric(h, "fieldvox_rtc_audio_packets_total{outcome=\"concealed\"}");
    assert!(recovered - recovered_before >= c.dropped as f64 * 0.8, "{recovered} rebuilt for {} lost", c.dropped);
    // Most losses have their next packet: rebuilt from its in-band FEC, not guessed.
    assert!(fec - fec_before >= c.dropped as f64 * 0.5, "{} from FEC of {} lost", fec - fec_before, c.dropped);
}

#[tokio::test]
async fn a_peer_that_never_connects_is_reaped() {
    let h = harness();
    let before = metric(h, "fieldvox_connections_reaped_total{reason=\"rtc_never_connected\"}");
    let (status, location) = offer_only(&base(h), &h.token(TENANT_A)).await.expect("offer posted");
    assert_eq!(status, 201);
    let id = session_id(&location);
    assert!(h.app.sessions.get(&id).is_some(), "holds a slot while it may still connect");
    // rtc.connect_timeout_ms is 10 s by default; ICE failing first counts the same.
    gone(h, id, Duration::from_secs(30)).await;
    let after = metric(h, "fieldvox_connections_reaped_total{reason=\"rtc_never_connected\"}");
    assert_eq!(after - before, 1.0, "reaped and counted");
    assert!(metric(h, "fieldvox_errors_total{code=\"peer_never_connected\"}") >= 1.0);
}

#[tokio::test]
async fn bad_offers_are_refused_with_stable_codes() {
    let h = harness();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/rtc", base(h));
    let post = |token: Option<String>, content_type: &'static str, body: &'static str| {
        let mut r = http.post(&url).header("content-type", content_type).body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let response = r.send().await.expect("post");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let token = || Some(h.token(TENANT_A));
    let (status, body) = post(None, "application/sdp", "v=0\r\n").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_token")), "{body}");
    let (status, body) = post(token(), "text/plain", "v=0\r\n").await;
    assert_eq!((status, body["error"].as_str()), (415, Some("unsupported_media_type")), "{body}");
    let (status, body) = post(token(), "application/sdp", "hello").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_sdp")), "{body}");
    let (status, body) = post(token(), "application/sdp", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_sdp")), "an offer without Opus: {body}");
    let status = http.delete(format!("{url}/not-a-session")).bearer_auth(h.token(TENANT_A)).send().await.unwrap();
    assert_eq!(status.status(), 404);
}
