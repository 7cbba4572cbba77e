//! The WebRTC transport: a peer answered by `POST /v1/rtc` drives the same session core
//! as a WebSocket. Inbound Opus RTP goes through a jitter buffer (in-band FEC, then
//! concealment for what is lost) into the pipeline; answer audio leaves as 20 ms Opus RTP
//! packets paced in real time; the data channel carries the protocol's JSON events.
//!
//! A peer that never connects, or whose ICE or DTLS fails, is reaped: its slot is freed
//! and the reason counted (`connections_reaped_total`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;
use uuid::Uuid;
use webrtc::data_channel::RTCDataChannel;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::track::track_local::TrackLocalWriter;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

use super::core::{Closing, FixedAudio, Session, Wiring};
use super::dialect::{Dialect, Outbox};
use super::protocol::AudioFormat;
use super::resume::ResumeState;
use super::{Outbound, SessionGuard};
use crate::app::App;
use crate::audio::opus::OpusDecoder;
use crate::auth::Claims;
use crate::error::ErrorCode;
use crate::rtc::jitter::{JitterBuffer, Play, Tally};
use crate::rtc::{CLOCK_RATE, Peer};
use crate::workers::fair;

pub const TRANSPORT: &str = "webrtc";
/// Outbound items buffered per session before the turn waits (as on the WebSocket).
const OUTBOUND_QUEUE: usize = 256;
/// Answer audio queued ahead of the pacer at most: a minute of 20 ms packets.
const AUDIO_AHEAD: usize = 3_000;
/// Events held while the data channel is not yet open; the oldest go first beyond this.
const EVENTS_BEFORE_OPEN: usize = 256;
/// Every packet we send and expect: 20 ms.
const PACKET: Duration = Duration::from_millis(20);
const PACKET_TICKS: u32 = CLOCK_RATE / 50;
/// How long a closing session's last events get to leave.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// Lost packets concealed in a row at most; a longer gap is a pause, skipped.
const MAX_CONCEAL: u64 = 5;

/// What the session's audio is on this transport: Opus at 48 kHz both ways, set by SDP.
const RTC_AUDIO: FixedAudio = FixedAudio {
    input: (AudioFormat::Opus, CLOCK_RATE),
    output: (AudioFormat::Opus, CLOCK_RATE),
    by: "the WebRTC offer and answer",
};

/// Hang-ups asked for over HTTP (`DELETE /v1/rtc/{id}`), by session id.
#[derive(Default)]
pub struct Hangups {
    peers: DashMap<Uuid, (String, String, Arc<Notify>)>,
}

impl Hangups {
    /// Makes `id` one its owner can hang up, before its answer is sent.
    pub fn register(&self, id: Uuid, claims: &Claims) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        self.peers.insert(id, (claims.tenant.clone(), claims.sub.clone(), notify.clone()));
        notify
    }

    /// Ends the peer `id` if `claims` own it; false when there is no such peer of theirs.
    pub fn hang_up(&self, id: Uuid, claims: &Claims) -> bool {
        match self.peers.get(&id) {
            Some(entry) if entry.0 == claims.tenant && entry.1 == claims.sub => {
                entry.2.notify_one();
                true
            }
            _ => false,
        }
    }
}

pub async fn run(
    peer: Peer,
    app: Arc<App>,
    claims: Claims,
    guard: SessionGuard,
    resumed: Option<ResumeState>,
    hangup: Arc<Notify>,
) {
    let span = tracing::info_span!(
        "session", session_id = %guard.id, tenant = %claims.tenant, user = %claims.sub, transport = TRANSPORT
    );
    let tenant = claims.tenant.clone();
    let id = guard.id;
    // Whatever way the session ends (a panic included), its peer is closed and its
    // hang-up entry removed; a resumed session under the same id keeps its own entry.
    let _cleanup = Cleanup { app: app.clone(), id, hangup: hangup.clone(), connection: peer.connection.clone() };
    fair::on_behalf_of(&tenant, serve(peer, app, claims, guard, resumed, hangup).instrument(span)).await;
}

struct Cleanup {
    app: Arc<App>,
    id: Uuid,
    hangup: Arc<Notify>,
    connection: Arc<webrtc::peer_connection::RTCPeerConnection>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.app.rtc_hangups.peers.remove_if(&self.id, |_, entry| Arc::ptr_eq(&entry.2, &self.hangup));
        let connection = self.connection.clone();
        tokio::spawn(async move {
            let _ = connection.close().await;
        });
    }
}

/// Why a session ended (or never began).
enum Ended {
    NeverConnected,
    Failed,
    HungUp,
    /// The server began draining before the peer connected.
    Draining,
    /// No event and no turn for `server.idle_timeout_ms`.
    Idle,
}

/// Waits until the peer connects, or gives up on it.
async fn connected(
    state: &mut watch::Receiver<RTCPeerConnectionState>,
    hangup: &Notify,
    drain: &mut watch::Receiver<bool>,
    timeout: Duration,
) -> Result<(), Ended> {
    let wait = async {
        loop {
            match *state.borrow_and_update() {
                RTCPeerConnectionState::Connected => return Ok(()),
                // ICE found no path, or DTLS failed: it never connected either way.
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return Err(Ended::NeverConnected),
                _ => {}
            }
            if state.changed().await.is_err() {
                return Err(Ended::Failed);
            }
        }
    };
    let draining = async {
        while !*drain.borrow_and_update() {
            if drain.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        r = tokio::time::timeout(timeout, wait) => r.unwrap_or(Err(Ended::NeverConnected)),
        () = hangup.notified() => Err(Ended::HungUp),
        () = draining => Err(Ended::Draining),
    }
}

async fn serve(
    mut peer: Peer,
    app: Arc<App>,
    claims: Claims,
    guard: SessionGuard,
    resumed: Option<ResumeState>,
    hangup: Arc<Notify>,
) {
    let config = app.config.rtc.clone();
    let timeout = Duration::from_millis(config.connect_timeout_ms);
    let mut drain = app.sessions.drain_signal();
    if let Err(why) = connected(&mut peer.state, &hangup, &mut drain, timeout).await {
        let reaped = match why {
            Ended::NeverConnected => Some((ErrorCode::PeerNeverConnected, "rtc_never_connected")),
            Ended::Failed => Some((ErrorCode::PeerConnectionFailed, "rtc_failed")),
            _ => None,
        };
        match reaped {
            Some((code, reason)) => {
                app.metrics.connection_reaped(reason);
                app.metrics.error(code);
                tracing::info!(
                    code = code.as_str(),
                    timeout_ms = config.connect_timeout_ms,
                    "peer reaped before connecting"
                );
            }
            None => tracing::info!("peer let go before it connected (hung up, or the server is draining)"),
        }
        if let Some(state) = resumed {
            app.resumer.park(state).await; // still the user's to resume
        }
        return;
    }
    let Some(pipeline) = app.pipelines.get(None) else {
        tracing::error!("default pipeline missing");
        return;
    };
    let (out, out_rx) = mpsc::channel(OUTBOUND_QUEUE);
    let out = Outbox::new(out, Dialect::Native);
    let audio_gate = Arc::new(AtomicU64::new(0));
    let mut writer = tokio::spawn(write_loop(peer.channel.clone(), peer.audio_out.clone(), out_rx, audio_gate.clone()));
    let mut writer_done = false;
    let (signals, mut signals_rx) = mpsc::channel(8);
    tracing::info!(resumed = resumed.is_some(), "session opened");
    let wiring = Wiring { out: out.clone(), audio_gate, signals, fixed_audio: Some(RTC_AUDIO) };
    let mut s = Session::open(app.clone(), claims, guard.id, pipeline, wiring, resumed).await;

    let mut inbound = Inbound::new(Duration::from_millis(config.jitter_ms));
    // A drain that began while the peer was connecting is told at once.
    let mut draining = *drain.borrow();
    let idle = Duration::from_millis(app.config.server.idle_timeout_ms);
    let mut idle_at = tokio::time::Instant::now() + idle;
    let mut state = peer.state.clone();
    let mut closed = peer.closed.clone();
    let mut told = false;
    let ended = loop {
        if draining && !told {
            told = true;
            if s.go_away().await {
                break None;
            }
        }
        let gap = inbound.jitter.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            packet = peer.audio_in.recv() => {
                let Some((seq, payload)) = packet else { break Some(Ended::Failed) };
                inbound.jitter.push(seq, payload, Instant::now());
                Box::pin(inbound.play(&mut s)).await;
            }
            () = tokio::time::sleep_until(gap.unwrap_or_else(tokio::time::Instant::now)), if gap.is_some() => {
                Box::pin(inbound.play(&mut s)).await;
            }
            text = peer.events_in.recv() => match text {
                Some(text) => {
                    idle_at = tokio::time::Instant::now() + idle;
                    Box::pin(s.on_text(&text)).await;
                }
                None => break Some(Ended::Failed),
            },
            changed = state.changed() => {
                let now = *state.borrow_and_update();
                match now {
                    _ if changed.is_err() => break Some(Ended::Failed),
                    RTCPeerConnectionState::Failed => break Some(Ended::Failed),
                    RTCPeerConnectionState::Closed => break None,
                    other => tracing::debug!(state = %other, "peer state"),
                }
            }
            // The client closed its data channel: it is leaving (a tab closed, a hang-up).
            () = async { drop(closed.wait_for(|c| *c).await) } => break Some(Ended::HungUp),
            () = hangup.notified() => break Some(Ended::HungUp),
            () = tokio::time::sleep_until(idle_at) => break Some(Ended::Idle),
            _ = &mut writer, if !writer_done => {
                writer_done = true;
                break None;
            }
            Some(signal) = signals_rx.recv() => {
                // Turns are activity too: a hands-free technician sends no events.
                idle_at = tokio::time::Instant::now() + idle;
                Box::pin(s.on_signal(signal)).await;
                if draining && !s.is_answering() {
                    break None;
                }
            }
            changed = drain.changed(), if !draining => {
                if changed.is_err() || !*drain.borrow() {
                    continue;
                }
                draining = true;
            }
        }
    };
    if matches!(ended, Some(Ended::Failed)) {
        app.metrics.connection_reaped("rtc_failed");
        app.metrics.error(ErrorCode::PeerConnectionFailed);
    }
    inbound.count(&app, peer.overflow.load(Ordering::Relaxed));
    // On a drain the answer it waited for plays out; otherwise the peer is gone or going.
    let closing = if draining { Closing::LetAnswerPlay } else { Closing::StopAll };
    let state = s.close_with(closing).await;
    drop(out);
    if !writer_done {
        let grace = if draining { Duration::from_millis(app.config.server.shutdown_grace_ms) } else { WRITER_GRACE };
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        }
    }
    let reason = match ended {
        Some(Ended::Failed) => "peer connection failed",
        Some(Ended::HungUp) => "hung up",
        Some(Ended::Idle) => "idle timeout",
        _ if draining => "server is shutting down",
        _ => "peer closed",
    };
    tracing::info!(reason, "session closed");
    drop(guard);
    if !draining {
        app.resumer.park(state).await;
    }
}

/// The client's audio on its way in: reordered, lost packets rebuilt or concealed.
struct Inbound {
    jitter: JitterBuffer,
    decoder: Option<OpusDecoder>,
    /// Samples per channel of the last packet (what a lost one is assumed to hold).
    last_frames: usize,
    counted: Tally,
}

impl Inbound {
    fn new(delay: Duration) -> Self {
        let frames = PACKET_TICKS as usize;
        Self {
            jitter: JitterBuffer::new(delay, MAX_CONCEAL),
            decoder: None,
            last_frames: frames,
            counted: Tally::default(),
        }
    }

    /// Plays every packet (or stand-in for a lost one) that is due.
    async fn play(&mut self, s: &mut Session) {
        while let Some(next) = self.jitter.pop(Instant::now()) {
            if self.decoder.is_none() {
                match OpusDecoder::new(1) {
                    Ok(d) => self.decoder = Some(d),
                    Err(e) => {
                        tracing::error!(error = %e, "no Opus decoder");
                        return;
                    }
                }
            }
            let Some(decoder) = self.decoder.as_mut() else { return };
            let decoded = match &next {
                Play::Packet(packet) => decoder.decode(packet),
                Play::Fec(after) => decoder.recover(after, self.last_frames),
                Play::Conceal => decoder.conceal(self.last_frames),
            };
            match decoded {
                Ok(samples) => {
                    if matches!(next, Play::Packet(_)) {
                        self.last_frames = samples.len();
                    }
                    s.on_samples(samples).await;
                }
                // A packet libopus cannot read is as good as lost; the stream goes on.
                Err(e) => tracing::debug!(error = %e, "undecodable packet"),
            }
        }
    }

    /// Adds this session's packet outcomes to the metrics.
    fn count(&mut self, app: &App, overflow: u64) {
        let t = self.jitter.tally();
        let c = self.counted;
        app.metrics.rtc_packets("played", t.played - c.played);
        app.metrics.rtc_packets("recovered", t.recovered - c.recovered);
        app.metrics.rtc_packets("concealed", t.concealed - c.concealed);
        app.metrics.rtc_packets("late", t.late - c.late);
        app.metrics.rtc_packets("overflow", overflow);
        self.counted = t;
    }
}

/// RTP timing of answer audio: packets on a 20 ms grid from the start of each talk
/// spurt, timestamps following the wall clock across the silences between answers.
struct Pacer {
    origin: Instant,
    timestamp_base: u32,
    sequence: u16,
    /// Current spurt: when its first packet went, its timestamp, packets sent in it.
    spurt: Option<(Instant, u32, u32)>,
}

impl Pacer {
    fn new() -> Self {
        Self { origin: Instant::now(), timestamp_base: rand_u32(), sequence: rand_u32() as u16, spurt: None }
    }

    /// When the next packet is due.
    fn due(&self) -> Instant {
        match self.spurt {
            Some((start, _, sent)) => start + PACKET * sent,
            None => Instant::now(),
        }
    }

    /// The next packet of `payload`, sent `now`.
    fn packet(&mut self, payload: Bytes, now: Instant) -> Packet {
        // Audio that ran dry (an answer ended, or speech came slower than real time)
        // starts a new spurt at the wall clock's timestamp, marked as RTP asks.
        let marker = match self.spurt {
            Some((start, _, sent)) => now > start + PACKET * (sent + 1),
            None => true,
        };
        if marker {
            let elapsed = now.duration_since(self.origin).as_micros() as u64 * u64::from(CLOCK_RATE) / 1_000_000;
            self.spurt = Some((now, self.timestamp_base.wrapping_add(elapsed as u32), 0));
        }
        let (start, first, sent) = self.spurt.unwrap_or((now, self.timestamp_base, 0));
        self.spurt = Some((start, first, sent + 1));
        self.sequence = self.sequence.wrapping_add(1);
        let header = Header {
            version: 2,
            marker,
            sequence_number: self.sequence,
            timestamp: first.wrapping_add(sent.wrapping_mul(PACKET_TICKS)),
            ..Default::default()
        };
        Packet { header, payload }
    }
}

fn rand_u32() -> u32 {
    let id = Uuid::new_v4();
    let b = id.as_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Sends events on the data channel as they come, and answer audio as RTP paced in real
/// time; audio of a turn that was cancelled (barge-in) stops at the next packet.
async fn write_loop(
    mut channel: watch::Receiver<Option<Arc<RTCDataChannel>>>,
    track: Arc<TrackLocalStaticRTP>,
    mut rx: mpsc::Receiver<Outbound>,
    audio_gate: Arc<AtomicU64>,
) {
    let mut open: Option<Arc<RTCDataChannel>> = None;
    let mut waiting: VecDeque<String> = VecDeque::new();
    let mut audio: VecDeque<(u64, Bytes)> = VecDeque::new();
    let mut pacer = Pacer::new();
    let mut ending = false;
    loop {
        if ending && audio.is_empty() {
            return;
        }
        let due = tokio::time::Instant::from_std(pacer.due());
        tokio::select! {
            item = rx.recv(), if audio.len() < AUDIO_AHEAD && !ending => match item {
                // What is queued still plays (a drain lets the last answer finish).
                None | Some(Outbound::Close { .. }) => ending = true,
                Some(Outbound::Event(json) | Outbound::AudioEvent { json, .. }) => match &open {
                    Some(dc) => {
                        if dc.send_text(json).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        if waiting.len() == EVENTS_BEFORE_OPEN {
                            waiting.pop_front();
                        }
                        waiting.push_back(json);
                    }
                },
                Some(Outbound::Audio { seq, bytes }) => {
                    if audio_gate.load(Ordering::Acquire) == seq {
                        audio.push_back((seq, bytes));
                    }
                }
            },
            () = tokio::time::sleep_until(due), if !audio.is_empty() => {
                let gate = audio_gate.load(Ordering::Acquire);
                // A cancelled turn's audio goes all at once, not a packet per tick.
                while audio.front().is_some_and(|(seq, _)| *seq != gate) {
                    audio.pop_front();
                }
                if let Some((_, payload)) = audio.pop_front() {
                    let packet = pacer.packet(payload, Instant::now());
                    if track.write_rtp(&packet).await.is_err() {
                        return;
                    }
                }
            }
            changed = channel.changed(), if open.is_none() => {
                if changed.is_err() {
                    return;
                }
                let dc = channel.borrow_and_update().clone();
                if let Some(dc) = dc {
                    for json in waiting.drain(..) {
                        if dc.send_text(json).await.is_err() {
                            return;
                        }
                    }
                    open = Some(dc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_follow_a_20_ms_grid_and_the_wall_clock_between_spurts() {
        let mut pacer = Pacer::new();
        let t0 = Instant::now();
        let a = pacer.packet(Bytes::new(), t0);
        assert!(a.header.marker, "a spurt's first packet is marked");
        let b = pacer.packet(Bytes::new(), t0 + PACKET);
        assert!(!b.header.marker);
        assert_eq!(b.header.timestamp.wrapping_sub(a.header.timestamp), PACKET_TICKS);
        assert_eq!(b.header.sequence_number, a.header.sequence_number.wrapping_add(1));
        assert_eq!(pacer.due(), t0 + PACKET * 2);
        // Three seconds of silence: the timestamp moves on by three seconds' ticks.
        let c = pacer.packet(Bytes::new(), t0 + Duration::from_secs(3));
        assert!(c.header.marker);
        let ticks = c.header.timestamp.wrapping_sub(a.header.timestamp);
        assert!(ticks.abs_diff(3 * CLOCK_RATE) < CLOCK_RATE / 100, "{ticks} ticks for 3 s");
        assert_eq!(c.header.sequence_number, b.header.sequence_number.wrapping_add(1), "no gap in sequence");
    }
}
