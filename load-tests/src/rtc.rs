//! `--transport webrtc`: the talk scenario over `POST /v1/rtc` — one WebRTC peer per
//! simulated technician (`fieldvox::rtc::client`), the microphone as 20 ms Opus packets in
//! real time, the answer as Opus RTP. Latency is timed as on the WebSocket: last speech
//! packet sent → first answer packet received.

use std::time::{Duration, Instant};

use fieldvox::rtc::client::{FRAME, RtcClient};
use serde_json::json;

use crate::Speech;
use crate::session::{Plan, ServerTimings, SessionOutcome, Turn};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const TURN_TIMEOUT: Duration = Duration::from_secs(60);
/// No answer packet for this long: the answer has played out.
const PLAYED_OUT: Duration = Duration::from_millis(500);

/// The realtime URL's server as an HTTP base (`ws://h:p/v1/realtime` → `http://h:p`).
fn http_base(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host = rest.split('/').next().unwrap_or(rest);
    let scheme = if url.starts_with("wss") { "https" } else { "http" };
    format!("{scheme}://{host}")
}

pub async fn run(plan: Plan) -> SessionOutcome {
    let mut outcome = SessionOutcome::default();
    let started = Instant::now();
    let mut peer = match RtcClient::connect(&http_base(&plan.url), &plan.token, CONNECT_TIMEOUT).await {
        Ok(p) => p,
        Err(e) => {
            outcome.connect_error = Some(e.to_string());
            return outcome;
        }
    };
    let ready = async {
        peer.events_until("session.created", CONNECT_TIMEOUT).await;
        peer.send_event(&json!({"type": "session.update", "session": {"pipeline": plan.pipeline}}))
            .await
            .map_err(|e| e.to_string())?;
        let updated = peer.events_until("session.updated", CONNECT_TIMEOUT).await;
        match updated.last() {
            Some(e) if e["type"] == "session.updated" => Ok(()),
            other => Err(format!("no session.updated: {other:?}")),
        }
    };
    if let Err(e) = ready.await {
        outcome.connect_error = Some(e);
        peer.close().await;
        return outcome;
    }
    outcome.connected = true;
    outcome.connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let question = fieldvox::audio::resample::resample(&plan.speech.samples, plan.speech.rate, 48_000);
    let question = Speech { samples: question, rate: 48_000 };

    let mut next = Instant::now() + plan.first_question_offset;
    let question_secs = question.samples.len() as f64 / 48_000.0;
    let (mut received, mut received_packets) = (0u64, 0u64);
    loop {
        if next + Duration::from_secs_f64(question_secs + 3.0) > plan.hold_until {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        match ask(&mut peer, &question, &mut received, &mut received_packets).await {
            Ok(t) => outcome.turns.push(t),
            Err(e) => {
                outcome.failed_turns.push(e.clone());
                if e.starts_with("connection") {
                    outcome.dropped = Some(e);
                    break;
                }
            }
        }
        next += plan.interval;
        if next < Instant::now() {
            next = Instant::now();
        }
    }
    outcome.media = Some(crate::session::MediaBytes {
        sent: peer.bytes_sent,
        received,
        sent_packets: peer.sent,
        received_packets,
        seconds: started.elapsed().as_secs_f64() - outcome.connect_ms / 1000.0,
    });
    peer.close().await;
    outcome
}

/// Speaks the question then silence, packet by packet in real time, until the server ends
/// the utterance; times the first answer packet; listens until the answer has played.
async fn ask(peer: &mut RtcClient, speech: &Speech, received: &mut u64, packets: &mut u64) -> Result<Turn, String> {
    let silence = [0.0f32; FRAME];
    let frames: Vec<&[f32]> = speech.samples.chunks(FRAME).collect();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut sent, mut stopped) = (0usize, false);
    let mut speech_end = None;
    let mut first_audio: Option<Instant> = None;
    let mut done = None;
    let started = Instant::now();
    loop {
        if started.elapsed() > TURN_TIMEOUT {
            return Err("turn timed out".into());
        }
        tokio::select! {
            _ = ticker.tick(), if !stopped => {
                let frame = frames.get(sent).copied().unwrap_or(&silence);
                peer.send_frame(frame, false).await.map_err(|e| format!("connection: {e}"))?;
                sent += 1;
                if sent == frames.len() {
                    speech_end = Some(Instant::now());
                }
            }
            packet = peer.next_audio(Duration::from_millis(20)) => {
                if let Some(p) = packet {
                    // Only this question's answer: a packet before the question ended is
                    // the last answer's tail.
                    if speech_end.is_some_and(|end| p.at > end) {
                        first_audio.get_or_insert(p.at);
                    }
                    *received += p.payload.len() as u64;
                    *packets += 1;
                }
            }
        }
        while let Some(e) = peer.try_event() {
            match e["type"].as_str().unwrap_or_default() {
                "input_audio_buffer.speech_stopped" => stopped = true,
                "error" => return Err(format!("error event: {}", e["error"]["code"])),
                "response.done" => {
                    if e["status"] != "completed" {
                        return Err(format!("response {}", e["status"]));
                    }
                    done = Some(e);
                }
                _ => {}
            }
        }
        if let (Some(done), Some(audio), Some(end)) = (&done, first_audio, speech_end) {
            // The answer plays in real time: listen until its packets stop.
            while let Some(p) = peer.next_audio(PLAYED_OUT).await {
                *received += p.payload.len() as u64;
                *packets += 1;
            }
            return Ok(Turn {
                client_v2v_ms: (audio - end).as_secs_f64() * 1000.0,
                server: ServerTimings::from_json(&done["timings"]),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_http_base_of_a_realtime_url() {
        assert_eq!(super::http_base("ws://127.0.0.1:8090/v1/realtime"), "http://127.0.0.1:8090");
    }
}
