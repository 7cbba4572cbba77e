//! WebRTC media for sessions on phones and lossy networks: one peer connection per
//! session, answered from the client's SDP offer (WHIP-style, `POST /v1/rtc`). Opus both
//! ways at 48 kHz, and one data channel carrying the realtime protocol's JSON events.
//!
//! This module makes and wires peers; the session transport that drives one is
//! `session/webrtc.rs`, the inbound jitter buffer is [`jitter`].

pub mod client;
pub mod jitter;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::{MIME_TYPE_OPUS, MediaEngine};
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::{API, APIBuilder};
use webrtc::data_channel::RTCDataChannel;
use webrtc::data_channel::data_channel_message::DataChannelMessage;
use webrtc::ice::mdns::MulticastDnsMode;
use webrtc::ice::udp_network::{EphemeralUDP, UDPNetwork};
use webrtc::ice_transport::ice_candidate_type::RTCIceCandidateType;
use webrtc::ice_transport::ice_server::RTCIceServer;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::rtp_transceiver::rtp_codec::{RTCRtpCodecCapability, RTCRtpCodecParameters, RTPCodecType};
use webrtc::track::track_local::TrackLocal;
use webrtc::track::track_local::track_local_static_rtp::TrackLocalStaticRTP;

/// Log filter directives for the WebRTC stack: it warns on every peer's ordinary
/// teardown (candidates closed, packets after close), so only its errors are kept.
pub const QUIET_LOGS: &str = "webrtc=error,webrtc_ice=error,webrtc_dtls=error,webrtc_sctp=error,\
    webrtc_srtp=error,webrtc_data=error,webrtc_mdns=error,webrtc_util=error,interceptor=error,turn=error,stun=error";

/// Opus's RTP clock, whatever the audio's bandwidth (RFC 7587).
pub const CLOCK_RATE: u32 = 48_000;
/// The payload type offered for Opus by browsers, and ours when we offer.
const OPUS_PAYLOAD_TYPE: u8 = 111;
/// Inbound packets queued for the session before newer ones are dropped (a second).
const RTP_QUEUE: usize = 50;
/// Inbound data-channel messages queued before the peer's reads wait.
const EVENT_QUEUE: usize = 64;

/// `[rtc]`: WebRTC sessions (`POST /v1/rtc`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    pub enabled: bool,
    /// STUN and TURN servers handed to each peer (`stun:host:3478`, `turn:host:3478`).
    pub ice_servers: Vec<IceServer>,
    /// UDP ports for media, both 0 for any: open this range in firewalls and containers.
    pub udp_port_min: u16,
    pub udp_port_max: u16,
    /// Addresses to announce instead of the host's (a container's or NAT's public IP).
    pub public_ips: Vec<String>,
    /// Offer host candidates on loopback too (a machine reached only on 127.0.0.1).
    pub include_loopback: bool,
    /// A peer that has not connected this long after its answer is reaped.
    pub connect_timeout_ms: u64,
    /// A connected peer silent this long (no ICE consent) has failed and is reaped.
    pub lost_timeout_ms: u64,
    /// How long a packet after a gap waits for the missing one before it is concealed.
    pub jitter_ms: u64,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ice_servers: Vec::new(),
            udp_port_min: 0,
            udp_port_max: 0,
            public_ips: Vec::new(),
            include_loopback: false,
            connect_timeout_ms: 10_000,
            lost_timeout_ms: 10_000,
            jitter_ms: 60,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub credential: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    /// The offer came as another media type than `application/sdp`.
    #[error("send the offer as application/sdp")]
    NotSdp,
    /// The client's offer is not SDP we can answer (or offers no Opus).
    #[error("cannot answer this offer: {0}")]
    InvalidOffer(String),
    #[error("WebRTC failed: {0}")]
    Engine(String),
}

/// Builds peers; one per server, built from `[rtc]` at start.
pub struct RtcEngine {
    api: API,
    config: RtcConfig,
}

/// A peer connection answered and wired for a session.
pub struct Peer {
    pub connection: Arc<RTCPeerConnection>,
    /// Answer audio goes out on this track as Opus RTP packets.
    pub audio_out: Arc<TrackLocalStaticRTP>,
    /// Inbound Opus packets: (RTP sequence number, payload).
    pub audio_in: mpsc::Receiver<(u16, Bytes)>,
    /// Text messages on the data channel.
    pub events_in: mpsc::Receiver<String>,
    /// The data channel, once the client's has opened.
    pub channel: watch::Receiver<Option<Arc<RTCDataChannel>>>,
    /// True once the client closed the data channel (a browser tab closing, a hang-up).
    pub closed: watch::Receiver<bool>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Inbound packets dropped because the session fell a second behind.
    pub overflow: Arc<std::sync::atomic::AtomicU64>,
}

impl RtcEngine {
    pub fn new(config: &RtcConfig) -> Result<Self, RtcError> {
        let api = build_api(config).map_err(|e| RtcError::Engine(e.to_string()))?;
        Ok(Self { api, config: config.clone() })
    }

    /// Answers `offer` (SDP): the peer, and the answer with every host candidate in it.
    pub async fn answer(&self, offer: String) -> Result<(Peer, String), RtcError> {
        let invalid = |e: webrtc::Error| RtcError::InvalidOffer(e.to_string());
        let engine = |e: webrtc::Error| RtcError::Engine(e.to_string());
        let offer = RTCSessionDescription::offer(offer).map_err(invalid)?;
        let ice_servers = self
            .config
            .ice_servers
            .iter()
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone(),
                credential: s.credential.clone(),
            })
            .collect();
        let rtc_config = RTCConfiguration { ice_servers, ..Default::default() };
        let connection = Arc::new(self.api.new_peer_connection(rtc_config).await.map_err(engine)?);
        let peer = wire(connection.clone()).await.map_err(engine);
        let answered = async {
            let peer = peer?;
            connection.set_remote_description(offer).await.map_err(invalid)?;
            let answer = connection.create_answer(None).await.map_err(invalid)?;
            let mut gathered = connection.gathering_complete_promise().await;
            connection.set_local_description(answer).await.map_err(engine)?;
            let _ = gathered.recv().await;
            let local = connection.local_description().await.ok_or_else(|| RtcError::Engine("no answer".into()))?;
            if !local.sdp.to_ascii_lowercase().contains("opus/48000") {
                return Err(RtcError::InvalidOffer("the offer has no Opus audio".into()));
            }
            Ok((peer, local.sdp))
        }
        .await;
        if answered.is_err() {
            let _ = connection.close().await;
        }
        answered
    }
}

/// The WebRTC stack for `config`: Opus only, the default interceptors (RTCP reports,
/// NACK), the UDP range, announced addresses and ICE timeouts.
pub fn build_api(config: &RtcConfig) -> Result<API, webrtc::Error> {
    let mut media = MediaEngine::default();
    media.register_codec(opus_codec(), RTPCodecType::Audio)?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let mut settings = SettingEngine::default();
    if config.udp_port_min != 0 || config.udp_port_max != 0 {
        let range = EphemeralUDP::new(config.udp_port_min, config.udp_port_max)
            .map_err(|e| webrtc::Error::new(format!("rtc.udp_port_min/max: {e}")))?;
        settings.set_udp_network(UDPNetwork::Ephemeral(range));
    }
    if !config.public_ips.is_empty() {
        settings.set_nat_1to1_ips(config.public_ips.clone(), RTCIceCandidateType::Host);
    }
    settings.set_include_loopback_candidate(config.include_loopback);
    // Browsers that were granted the microphone offer real addresses; no mDNS sockets.
    settings.set_ice_multicast_dns_mode(MulticastDnsMode::Disabled);
    let lost = Duration::from_millis(config.lost_timeout_ms.max(1));
    settings.set_ice_timeouts(Some(lost / 2), Some(lost), Some(Duration::from_secs(2)));
    Ok(APIBuilder::new()
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .build())
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters { capability: opus_capability(), payload_type: OPUS_PAYLOAD_TYPE, ..Default::default() }
}

/// Opus at 48 kHz, in-band FEC asked of the sender.
pub fn opus_capability() -> RTCRtpCodecCapability {
    RTCRtpCodecCapability {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: CLOCK_RATE,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// Hooks a new connection's callbacks to channels the session reads.
async fn wire(connection: Arc<RTCPeerConnection>) -> Result<Peer, webrtc::Error> {
    let audio_out = Arc::new(TrackLocalStaticRTP::new(opus_capability(), "answer".into(), "fieldvox".into()));
    let sender = connection.add_track(audio_out.clone() as Arc<dyn TrackLocal + Send + Sync>).await?;
    // RTCP for the sender must be read for the interceptors (reports, NACK) to run.
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while sender.read(&mut buf).await.is_ok() {}
    });

    let (audio_tx, audio_in) = mpsc::channel(RTP_QUEUE);
    let overflow = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dropped = overflow.clone();
    connection.on_track(Box::new(move |track, _, _| {
        let (audio_tx, dropped) = (audio_tx.clone(), dropped.clone());
        Box::pin(async move {
            if !track.codec().capability.mime_type.eq_ignore_ascii_case(MIME_TYPE_OPUS) {
                return;
            }
            tokio::spawn(async move {
                while let Ok((packet, _)) = track.read_rtp().await {
                    if packet.payload.is_empty() {
                        continue;
                    }
                    // A session a second behind drops new packets: the jitter buffer hides it.
                    match audio_tx.try_send((packet.header.sequence_number, packet.payload)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            });
        })
    }));

    let (events_tx, events_in) = mpsc::channel(EVENT_QUEUE);
    let (channel_tx, channel) = watch::channel(None);
    let channel_tx = Arc::new(channel_tx);
    let (closed_tx, closed) = watch::channel(false);
    let closed_tx = Arc::new(closed_tx);
    connection.on_data_channel(Box::new(move |dc: Arc<RTCDataChannel>| {
        let (events_tx, channel_tx, closed_tx) = (events_tx.clone(), channel_tx.clone(), closed_tx.clone());
        Box::pin(async move {
            // The first channel carries the protocol; any other is ignored.
            if channel_tx.borrow().is_some() {
                return;
            }
            dc.on_message(Box::new(move |msg: DataChannelMessage| {
                let events_tx = events_tx.clone();
                Box::pin(async move {
                    let text =
                        if msg.is_string { String::from_utf8_lossy(&msg.data).into_owned() } else { String::new() };
                    let _ = events_tx.send(text).await;
                })
            }));
            dc.on_close(Box::new(move || {
                closed_tx.send_replace(true);
                Box::pin(async {})
            }));
            let open = dc.clone();
            let on_open = channel_tx.clone();
            dc.on_open(Box::new(move || {
                on_open.send_replace(Some(open));
                Box::pin(async {})
            }));
        })
    }));

    let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
    connection.on_peer_connection_state_change(Box::new(move |s| {
        state_tx.send_replace(s);
        Box::pin(async {})
    }));
    Ok(Peer { connection, audio_out, audio_in, events_in, channel, closed, state, overflow })
}
