//! Test harness: a real fieldvox server (real models, embedded stores) on an ephemeral
//! loopback port, started once per test binary on its own runtime, and a WebSocket client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fieldvox::app::App;
use fieldvox::auth::{Role, TokenKeys};
use fieldvox::config::Config;
use fieldvox::rag::ingest::IngestRequest;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TENANT_A: &str = "acme";
pub const TENANT_B: &str = "globex";
pub const MANUAL_TITLE: &str = "RTU-40 Service Manual";

pub struct Harness {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub keys: TokenKeys,
    /// The manual ingested for tenant A.
    pub manual_id: String,
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.data.dir = dir.to_path_buf();
    config.pipelines.dir = repo().join("pipelines");
    config.server.max_frame_bytes = 64 * 1024;
    config.server.shutdown_grace_ms = 3_000;
    config
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fieldvox-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

/// The shared server, with the RTU-40 manual ingested for tenant A and a freezer guide for B.
pub fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let config = test_config(&temp_dir("harness"));
                let app =
                    tokio::task::spawn_blocking(move || App::build(config)).await.expect("join").expect("app builds");
                let manual = app
                    .kb
                    .ingest(
                        IngestRequest {
                            tenant: TENANT_A.into(),
                            equipment: "RTU-40".into(),
                            title: Some(MANUAL_TITLE.into()),
                            filename: "rtu40-service-manual.txt".into(),
                            bytes: std::fs::read(repo().join("tests/fixtures/rtu40-service-manual.txt"))
                                .expect("fixture"),
                        },
                        None,
                    )
                    .await
                    .expect("ingest A");
                app.kb
                    .ingest(
                        IngestRequest {
                            tenant: TENANT_B.into(),
                            equipment: "WF-12".into(),
                            title: None,
                            filename: "wf12-operator-guide.txt".into(),
                            bytes: std::fs::read(repo().join("tests/fixtures/wf12-operator-guide.txt"))
                                .expect("fixture"),
                        },
                        None,
                    )
                    .await
                    .expect("ingest B");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("addr");
                let keys = TokenKeys::new(&app.config.auth.jwt_secret);
                tx.send(Harness { addr, app: app.clone(), keys, manual_id: manual.id.to_string() }).expect("send");
                fieldvox::http::serve(app, listener, std::future::pending()).await.expect("serve");
            });
        });
        rx.recv().expect("harness started")
    })
}

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

impl Harness {
    pub fn token(&self, tenant: &str) -> String {
        self.keys.mint("tech-1", tenant, Role::Technician, 600)
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }

    /// Opens a session with a bearer header and waits for `session.created`.
    pub async fn connect(&self, tenant: &str) -> Client {
        let mut req = self.url().into_client_request().expect("request");
        req.headers_mut().insert("authorization", format!("Bearer {}", self.token(tenant)).parse().expect("header"));
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
        let mut client = Client { ws, audio: Vec::new() };
        let created = client.next_event().await;
        assert_eq!(created["type"], "session.created", "{created}");
        client
    }

    /// Tries to connect with an arbitrary request; returns the HTTP status and body on refusal.
    pub async fn refused(&self, req: http::Request<()>) -> (u16, Value) {
        match tokio_tungstenite::connect_async(req).await {
            Ok(_) => panic!("connection was accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null);
                (status, body)
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
}

pub struct Client {
    pub ws: Socket,
    /// Answer audio received so far (PCM16 bytes).
    pub audio: Vec<u8>,
}

const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

impl Client {
    pub async fn send_json(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.expect("send");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Next JSON event; binary audio frames on the way are collected into `audio`.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(EVENT_TIMEOUT, self.ws.next())
                .await
                .expect("event in time")
                .expect("socket open")
                .expect("frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("json event"),
                Message::Binary(b) => self.audio.extend_from_slice(&b),
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// Events up to and including the first of type `until`.
    pub async fn events_until(&mut self, until: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let e = self.next_event().await;
            let done = e["type"] == until;
            out.push(e);
            if done {
                return out;
            }
        }
    }

    /// Streams mono PCM16 at `rate` as 20 ms binary frames.
    pub async fn stream_audio(&mut self, samples: &[f32], rate: u32) {
        let mut bytes = Vec::new();
        fieldvox::audio::pcm::encode_pcm16(samples, &mut bytes);
        let frame = (rate as usize / 50) * 2;
        for chunk in bytes.chunks(frame) {
            self.ws.send(Message::binary(chunk.to_vec())).await.expect("send audio");
        }
    }

    /// Waits for the socket to close; returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match tokio::time::timeout(EVENT_TIMEOUT, self.ws.next()).await.expect("close in time") {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}

/// Speaks `text` with espeak-ng into mono f32 at `rate`.
pub fn speak(text: &str, rate: u32) -> Vec<f32> {
    let path = std::env::temp_dir().join(format!("fieldvox-q-{}.wav", uuid::Uuid::new_v4()));
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect("espeak-ng runs (scripts/setup.sh installs it)");
    assert!(status.success());
    let (samples, wav_rate) = fieldvox::audio::wav::read_mono(&path).expect("wav");
    let _ = std::fs::remove_file(&path);
    fieldvox::audio::resample::resample(&samples, wav_rate, rate)
}

pub fn pcm16_to_f32(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::new();
    fieldvox::audio::pcm::decode_pcm16(bytes, &mut out).expect("even length");
    out
}
