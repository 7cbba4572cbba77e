//! A WebRTC client peer of `POST /v1/rtc`, as a phone app would be: it offers Opus audio
//! and the events data channel, speaks Opus RTP in real time (with in-band FEC, and a
//! chosen share of packets dropped to play a lossy network), and collects the answer's
//! packets and events. The tests and the load generator talk WebRTC through it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp::header::Header;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;
use webrtc::track::track_local::{TrackLocal, TrackLocalWriter};

use super::{CLOCK_RATE, RtcConfig, build_api, opus_capability};
use crate::audio::opus::OpusPackets;

/// Samples in one 20 ms packet at 48 kHz.
pub const FRAME: usize = (CLOCK_RATE / 50) as usize;

#[derive(Debug, thiserror::Error)]
pub enum RtcClientError {
    #[error("WebRTC: {0}")]
    Rtc(#[from] webrtc::Error),
    #[error("signaling: {0}")]
    Signaling(String),
    #[error("the server refused the offer: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the peer did not connect within {0:?}")]
    NotConnected(Duration),
    #[error("opus: {0}")]
    Opus(String),
}

/// An answer packet as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub sequence: u16,
    pub timestamp: u32,
    pub payload: Bytes,
}

pub struct RtcClient {
    pub connection: Arc<RTCPeerConnection>,
    /// Where the session lives: `DELETE` it to hang up.
    pub location: String,
    base_url: String,
    token: String,
    channel: Arc<RTCDataChannel>,
    events: mpsc::UnboundedReceiver<String>,
    /// Answer audio packets, in arrival order.
    audio: mpsc::UnboundedReceiver<Received>,
    track: Arc<TrackLocalStaticRTP>,
    encoder: OpusPackets,
    coded: Vec<u8>,
    sequence: u16,
    timestamp: u32,
    /// Packets sent and dropped on purpose by [`speak`](Self::speak).
    pub sent: u64,
    pub dropped: u64,
    /// Bytes of Opus payload sent.
    pub bytes_sent: u64,
}

/// An offer that is answered but never connects: ICE that finds no path.
pub async fn offer_only(base_url: &str, token: &str) -> Result<(u16, String), RtcClientError> {
    let api = build_api(&RtcConfig::default())?;
    let connection = api.new_peer_connection(RTCConfiguration::default()).await?;
    connection.add_transceiver_from_kind(RTPCodecType::Audio, None).await?;
    let _ = connection.create_data_channel("events", None).await?;
    let offer = connection.create_offer(None).await?;
    // Its one candidate points nowhere: the server answers, then waits in vain.
    let sdp = offer
        .sdp
        .lines()
        .filter(|l| !l.starts_with("a=candidate"))
        .chain(std::iter::once("a=candidate:1 1 udp 2130706431 203.0.113.1 9 typ host"))
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    let (status, location, _) = post_offer(base_url, token, sdp).await?;
    connection.close().await?;
    Ok((status, location))
}

/// Posts an SDP offer; (status, Location, body).
async fn post_offer(base_url: &str, token: &str, sdp: String) -> Result<(u16, String, String), RtcClientError> {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/rtc", base_url.trim_end_matches('/')))
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .map_err(|e| RtcClientError::Signaling(e.to_string()))?;
    let status = response.status().as_u16();
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = response.text().await.map_err(|e| RtcClientError::Signaling(e.to_string()))?;
    Ok((status, location, body))
}

impl RtcClient {
    /// Offers, is answered, and waits until the peer and its data channel are up.
    pub async fn connect(base_url: &str, token: &str, timeout: Duration) -> Result<Self, RtcClientError> {
        let api = build_api(&RtcConfig { include_loopback: true, ..Default::default() })?;
        let connection = Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?);
        let track = Arc::new(TrackLocalStaticRTP::new(opus_capability(), "question".into(), "phone".into()));
        let sender = connection.add_track(track.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            while sender.read(&mut buf).await.is_ok() {}
        });
        let (audio_tx, audio) = mpsc::unbounded_channel();
        connection.on_track(Box::new(move |remote, _, _| {
            let audio_tx = audio_tx.clone();
            tokio::spawn(async move {
                while let Ok((p, _)) = remote.read_rtp().await {
                    let got = Received {
                        at: Instant::now(),
                        sequence: p.header.sequence_number,
                        timestamp: p.header.timestamp,
                        payload: p.payload,
                    };
                    if audio_tx.send(got).is_err() {
                        return;
                    }
                }
            });
            Box::pin(async {})
        }));
        let channel = connection.create_data_channel("events", None).await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        channel.on_message(Box::new(move |m: DataChannelMessage| {
            let _ = events_tx.send(String::from_utf8_lossy(&m.data).into_owned());
            Box::pin(async {})
        }));
        let (open_tx, mut open) = watch::channel(false);
        channel.on_open(Box::new(move || {
            open_tx.send_replace(true);
            Box::pin(async {})
        }));
        let (state_tx, mut state) = watch::channel(RTCPeerConnectionState::New);
        connection.on_peer_connection_state_change(Box::new(move |s| {
            state_tx.send_replace(s);
            Box::pin(async {})
        }));

        let offer = connection.create_offer(None).await?;
        let mut gathered = connection.gathering_complete_promise().await;
        connection.set_local_description(offer).await?;
        let _ = gathered.recv().await;
        let sdp = connection.local_description().await.map(|d| d.sdp).unwrap_or_default();
        let (status, location, body) = post_offer(base_url, token, sdp).await?;
        if status != 201 {
            let _ = connection.close().await;
            return Err(RtcClientError::Refused { status, body });
        }
        connection.set_remote_description(RTCSessionDescription::answer(body)?).await?;
        let up = async {
            while *state.borrow_and_update() != RTCPeerConnectionState::Connected {
                state.changed().await.map_err(|_| RtcClientError::NotConnected(timeout))?;
            }
            while !*open.borrow_and_update() {
                open.changed().await.map_err(|_| RtcClientError::NotConnected(timeout))?;
            }
            Ok::<_, RtcClientError>(())
        };
        tokio::time::timeout(timeout, up).await.map_err(|_| RtcClientError::NotConnected(timeout))??;
        let mut encoder = OpusPackets::new(CLOCK_RATE).map_err(|e| RtcClientError::Opus(e.to_string()))?;
        encoder.protect(10).map_err(|e| RtcClientError::Opus(e.to_string()))?;
        Ok(Self {
            connection,
            location,
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            channel,
            events,
            audio,
            track,
            encoder,
            coded: Vec::new(),
            sequence: 1,
            timestamp: 0,
            sent: 0,
            dropped: 0,
            bytes_sent: 0,
        })
    }

    /// Sends one protocol event on the data channel.
    pub async fn send_event(&self, event: &Value) -> Result<(), RtcClientError> {
        self.channel.send_text(event.to_string()).await?;
        Ok(())
    }

    /// The next event (JSON), or `None` after `timeout` or once the channel closed.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        let text = tokio::time::timeout(timeout, self.events.recv()).await.ok()??;
        serde_json::from_str(&text).ok()
    }

    /// Events until one of type `until` (included), or until `timeout` passes.
    pub async fn events_until(&mut self, until: &str, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::new();
        while let Some(e) = self.next_event(deadline.saturating_duration_since(Instant::now())).await {
            let done = e["type"] == until;
            events.push(e);
            if done {
                break;
            }
        }
        events
    }

    /// Speaks `samples` (mono, 48 kHz) as 20 ms Opus packets in real time, leaving out
    /// each packet for which `drop` says so (a lossy network).
    pub async fn speak(&mut self, samples: &[f32], mut drop: impl FnMut() -> bool) -> Result<(), RtcClientError> {
        let start = tokio::time::Instant::now();
        for (i, frame) in samples.chunks(FRAME).enumerate() {
            tokio::time::sleep_until(start + Duration::from_millis(20) * i as u32).await;
            self.send_frame(frame, drop()).await?;
        }
        Ok(())
    }

    /// Sends 20 ms of microphone (960 samples at 48 kHz, padded if short) as one Opus
    /// packet; `lost` leaves it out as the network would, keeping its sequence number.
    pub async fn send_frame(&mut self, frame: &[f32], lost: bool) -> Result<(), RtcClientError> {
        self.coded.clear();
        let packets = self.encoder.encode(frame, &mut self.coded).map_err(|e| RtcClientError::Opus(e.to_string()))?;
        for range in packets {
            self.sequence = self.sequence.wrapping_add(1);
            self.timestamp = self.timestamp.wrapping_add(FRAME as u32);
            if lost {
                self.dropped += 1;
                continue;
            }
            let header =
                Header { version: 2, sequence_number: self.sequence, timestamp: self.timestamp, ..Default::default() };
            self.bytes_sent += range.len() as u64;
            let packet = Packet { header, payload: Bytes::copy_from_slice(&self.coded[range]) };
            self.track.write_rtp(&packet).await?;
            self.sent += 1;
        }
        Ok(())
    }

    /// The next answer packet, or `None` after `timeout`.
    pub async fn next_audio(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.audio.recv()).await.ok()?
    }

    /// The next event if one is already here.
    pub fn try_event(&mut self) -> Option<Value> {
        self.events.try_recv().ok().and_then(|t| serde_json::from_str(&t).ok())
    }

    /// Waits until no answer packet has come for `quiet`, collecting them all.
    pub async fn audio_until_quiet(&mut self, quiet: Duration) -> Vec<Received> {
        let mut got = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout(quiet, self.audio.recv()).await {
            got.push(p);
        }
        got
    }

    /// Hangs up: `DELETE` on the session's Location, then the peer closes.
    pub async fn close(&self) {
        if !self.location.is_empty() {
            let url = format!("{}{}", self.base_url, self.location);
            let _ = reqwest::Client::new().delete(url).bearer_auth(&self.token).send().await;
        }
        let _ = self.connection.close().await;
    }
}
