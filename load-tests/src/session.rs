//! One simulated technician: connects from a chosen loopback address, configures the
//! session, then idles, talks on a duty cycle, asks once at the burst instant, or keeps a
//! live microphone open (`mic`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::{Scenario, Speech};

pub struct Plan {
    pub url: String,
    pub token: String,
    pub source: Ipv4Addr,
    pub pipeline: String,
    pub scenario: Scenario,
    pub transport: crate::Transport,
    pub speech: Arc<Speech>,
    pub hold_until: Instant,
    pub burst_at: Instant,
    pub interval: Duration,
    pub first_question_offset: Duration,
    /// `mic`: what this session's microphone hears besides the question.
    pub mic: Option<crate::mic::MicSetup>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ServerTimings {
    pub stt_ms: Option<f64>,
    pub retrieval_ms: Option<f64>,
    pub llm_first_token_ms: Option<f64>,
    pub tts_first_audio_ms: Option<f64>,
    pub voice_to_voice_ms: Option<f64>,
}

impl ServerTimings {
    /// From the `timings` object of `response.done`.
    pub fn from_json(t: &Value) -> Self {
        Self {
            stt_ms: t["stt_ms"].as_f64(),
            retrieval_ms: t["retrieval_ms"].as_f64(),
            llm_first_token_ms: t["llm_first_token_ms"].as_f64(),
            tts_first_audio_ms: t["tts_first_audio_ms"].as_f64(),
            voice_to_voice_ms: t["voice_to_voice_ms"].as_f64(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Turn {
    /// Last speech frame sent → first answer audio frame received.
    pub client_v2v_ms: f64,
    pub server: ServerTimings,
}

#[derive(Debug, Default)]
pub struct SessionOutcome {
    pub connected: bool,
    pub connect_ms: f64,
    pub connect_error: Option<String>,
    /// Why the session ended before its time, if it did.
    pub dropped: Option<String>,
    pub turns: Vec<Turn>,
    pub failed_turns: Vec<String>,
    /// `mic`: the microphone's own counts.
    pub mic: Option<crate::mic::MicOutcome>,
    /// WebRTC: the audio payload bytes each way, over the session's seconds.
    pub media: Option<MediaBytes>,
    /// Times its server said `session.going_away` (a drained instance) and the session
    /// connected again (through the load balancer, to another instance).
    pub moved: usize,
    /// Of those, the moves whose next question was answered on the new connection.
    pub moved_answered: usize,
    /// Turns that failed on a connection whose server was going away.
    pub failed_while_going_away: usize,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct MediaBytes {
    pub sent: u64,
    pub received: u64,
    /// 20 ms packets each way: the seconds audio flowed.
    pub sent_packets: u64,
    pub received_packets: u64,
    pub seconds: f64,
}

pub type Ws = WebSocketStream<TcpStream>;

pub(crate) const FRAME_MS: u64 = 20;
/// Longest a session listens to an answer before it may ask again.
const MAX_LISTEN: Duration = Duration::from_secs(30);

/// How long PCM16 answer audio at the session's 16 kHz output rate plays.
fn answer_duration(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 / 2.0 / 16_000.0)
}
const TURN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a client of `--scenario abandon` waits for its answer to start: dozens of
/// questions at once queue for the one transcription worker, so more than one turn's
/// timeout; a server that never answers still fails the run.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(180);

pub async fn run(plan: Plan) -> SessionOutcome {
    if plan.transport == crate::Transport::Webrtc {
        return crate::rtc::run(plan).await;
    }
    let mut outcome = SessionOutcome::default();
    let started = Instant::now();
    let mut ws = match connect(&plan).await {
        Ok(ws) => ws,
        Err(e) => {
            outcome.connect_error = Some(e);
            return outcome;
        }
    };
    outcome.connected = true;
    outcome.connect_ms = started.elapsed().as_secs_f64() * 1000.0;
    let result = match plan.scenario {
        Scenario::Idle => idle(&mut ws, &plan).await,
        Scenario::Talk => talk(&mut ws, &plan, &mut outcome).await,
        Scenario::Burst => {
            tokio::time::sleep_until(plan.burst_at.into()).await;
            match ask(&mut ws, &plan.speech).await {
                Ok(t) => outcome.turns.push(t),
                Err(e) => outcome.failed_turns.push(e),
            }
            Ok(())
        }
        Scenario::Mic => crate::mic::stream(&mut ws, &plan, &mut outcome).await,
        Scenario::Abandon => Err("the abandon scenario runs its own sessions (abandon::run)".into()),
    };
    if let Err(e) = result {
        outcome.dropped = Some(e);
    }
    let _ = ws.close(None).await;
    outcome
}

pub async fn connect(plan: &Plan) -> Result<Ws, String> {
    let mut req = plan.url.as_str().into_client_request().map_err(|e| e.to_string())?;
    let host = req.uri().host().unwrap_or("127.0.0.1").to_string();
    let port = req.uri().port_u16().unwrap_or(80);
    let server: SocketAddr = format!("{}:{port}", if host == "localhost" { "127.0.0.1" } else { &host })
        .parse()
        .map_err(|e| format!("bad address: {e}"))?;
    req.headers_mut().insert("authorization", format!("Bearer {}", plan.token).parse().map_err(|_| "bad token")?);
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind(SocketAddr::new(plan.source.into(), 0)).map_err(|e| format!("bind {}: {e}", plan.source))?;
    let stream = socket.connect(server).await.map_err(|e| format!("connect: {e}"))?;
    // Small buffers: the generator holds as many sockets as the server.
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    expect(&mut ws, "session.created").await?;
    let update = json!({"type": "session.update", "session": {
        "input_audio_format": "pcm16", "input_sample_rate": 16000, "output_sample_rate": 16000, "pipeline": plan.pipeline}});
    ws.send(Message::text(update.to_string())).await.map_err(|e| e.to_string())?;
    expect(&mut ws, "session.updated").await?;
    Ok(ws)
}

async fn expect(ws: &mut Ws, kind: &str) -> Result<Value, String> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| format!("no {kind} within 30 s"))?
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
            if v["type"] == kind {
                return Ok(v);
            }
            if v["type"] == "error" {
                return Err(format!("error event: {}", v["error"]));
            }
        }
    }
}

async fn idle(ws: &mut Ws, plan: &Plan) -> Result<(), String> {
    let mut keepalive = tokio::time::interval(Duration::from_secs(25));
    keepalive.tick().await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(plan.hold_until.into()) => return Ok(()),
            _ = keepalive.tick() => {
                ws.send(Message::text(r#"{"type":"ping"}"#)).await.map_err(|e| format!("send: {e}"))?;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(f))) => return Err(format!("server closed: {f:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("connection ended".into()),
            },
        }
    }
}

async fn talk(ws: &mut Ws, plan: &Plan, outcome: &mut SessionOutcome) -> Result<(), String> {
    let mut next = Instant::now() + plan.first_question_offset;
    let question_secs = plan.speech.samples.len() as f64 / plan.speech.rate as f64;
    let (mut going_away, mut moved) = (false, false);
    loop {
        // Only start a question that can finish before the hold ends.
        if next + Duration::from_secs_f64(question_secs + 3.0) > plan.hold_until {
            return Ok(());
        }
        tokio::time::sleep_until(next.into()).await;
        // Told between questions? (A draining server says so, then closes an idle session.)
        while let Some(Some(msg)) = ws.next().now_or_never() {
            match msg {
                Ok(Message::Text(t)) if t.contains("\"session.going_away\"") => going_away = true,
                Ok(Message::Close(_)) | Err(_) => going_away = true,
                _ => {}
            }
        }
        if going_away {
            // Its instance is draining: connect again, and the balancer sends us elsewhere.
            let _ = ws.close(None).await;
            *ws = connect(plan).await.map_err(|e| format!("connection: after going_away: {e}"))?;
            outcome.moved += 1;
            (going_away, moved) = (false, true);
        }
        match ask_noting(ws, &plan.speech, &mut going_away).await {
            Ok(t) => {
                outcome.turns.push(t);
                if std::mem::take(&mut moved) {
                    outcome.moved_answered += 1;
                }
            }
            Err(e) => {
                outcome.failed_turns.push(e.clone());
                if going_away {
                    outcome.failed_while_going_away += 1;
                } else if e.starts_with("connection") {
                    return Err(e);
                }
            }
        }
        next += plan.interval;
        if next < Instant::now() {
            next = Instant::now();
        }
    }
}

/// Asks like `ask`, but hangs up at the first answer text; returns when it hung up.
pub async fn ask_and_leave(mut ws: Ws, speech: &Speech) -> Result<Instant, String> {
    let frame = (speech.rate as u64 * FRAME_MS / 1000) as usize;
    let mut pcm = Vec::new();
    fieldvox::audio::pcm::encode_pcm16(&speech.samples, &mut pcm);
    let frames: Vec<Vec<u8>> = pcm.chunks(frame * 2).map(<[u8]>::to_vec).collect();
    let silence = vec![0u8; frame * 2];
    let mut ticker = tokio::time::interval(Duration::from_millis(FRAME_MS));
    let mut sent = 0usize;
    let started = Instant::now();
    while started.elapsed() < LEAVE_TIMEOUT {
        tokio::select! {
            _ = ticker.tick() => {
                let data = frames.get(sent).unwrap_or(&silence).clone();
                ws.send(Message::binary(data)).await.map_err(|e| format!("connection: {e}"))?;
                sent += 1;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) if t.contains("\"response.output_text.delta\"") => {
                    // Gone without a goodbye, as a dropped phone call would be.
                    drop(ws);
                    return Ok(Instant::now());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("connection: {e}")),
                None => return Err("connection: ended".into()),
            },
        }
    }
    Err("no answer text in time".into())
}

/// Streams the question in real time, then silence until the server ends the utterance;
/// waits for `response.done`.
pub async fn ask(ws: &mut Ws, speech: &Speech) -> Result<Turn, String> {
    ask_noting(ws, speech, &mut false).await
}

/// [`ask`], noting in `going_away` a `session.going_away` on the way.
async fn ask_noting(ws: &mut Ws, speech: &Speech, going_away: &mut bool) -> Result<Turn, String> {
    let frame = (speech.rate as u64 * FRAME_MS / 1000) as usize;
    let mut pcm = Vec::new();
    fieldvox::audio::pcm::encode_pcm16(&speech.samples, &mut pcm);
    // Whole frames only: the last speech frame is padded with silence, so the stream
    // stays continuous real time, as a microphone's would.
    pcm.resize(pcm.len().div_ceil(frame * 2) * frame * 2, 0);
    let speech_frames: Vec<&[u8]> = pcm.chunks(frame * 2).collect();
    let silence = vec![0u8; frame * 2];
    let mut ticker = tokio::time::interval(Duration::from_millis(FRAME_MS));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0usize;
    let mut speech_end: Option<Instant> = None;
    let mut stopped = false;
    let mut first_audio: Option<Instant> = None;
    let mut answer_bytes = 0usize;
    let started = Instant::now();
    loop {
        if started.elapsed() > TURN_TIMEOUT {
            return Err("turn timed out".into());
        }
        tokio::select! {
            _ = ticker.tick(), if !stopped => {
                let data = speech_frames.get(sent).copied().unwrap_or(&silence);
                ws.send(Message::binary(data.to_vec())).await.map_err(|e| format!("connection: {e}"))?;
                sent += 1;
                if sent == speech_frames.len() {
                    speech_end = Some(Instant::now());
                }
            }
            msg = ws.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(format!("connection: {e}")),
                    None => return Err("connection: ended".into()),
                };
                match msg {
                    Message::Binary(b) => {
                        first_audio.get_or_insert_with(Instant::now);
                        answer_bytes += b.len();
                    }
                    Message::Text(t) => {
                        let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                        match v["type"].as_str().unwrap_or_default() {
                            "input_audio_buffer.speech_stopped" => stopped = true,
                            "session.going_away" => *going_away = true,
                            "error" => return Err(format!("error event: {}", v["error"]["code"])),
                            "response.done" => {
                                if v["status"] != "completed" {
                                    return Err(format!("response {}", v["status"]));
                                }
                                let (Some(end), Some(audio)) = (speech_end, first_audio) else {
                                    return Err("response without audio".into());
                                };
                                // A technician listens to the answer before asking again (speech
                                // over an answer still playing is a barge-in, not a new turn).
                                let played_out = audio + answer_duration(answer_bytes);
                                tokio::time::sleep_until(played_out.min(Instant::now() + MAX_LISTEN).into()).await;
                                return Ok(Turn {
                                    client_v2v_ms: (audio - end).as_secs_f64() * 1000.0,
                                    server: ServerTimings::from_json(&v["timings"]),
                                });
                            }
                            _ => {}
                        }
                    }
                    Message::Close(f) => return Err(format!("connection: closed {f:?}")),
                    _ => {}
                }
            }
        }
    }
}
