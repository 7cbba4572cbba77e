//! Test harness: a real fieldvox server (real models, embedded stores) on an ephemeral
//! loopback port, started once per test binary on its own runtime, and a WebSocket client.
#![allow(dead_code)]

pub mod services;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fieldvox::app::App;
use fieldvox::auth::{Role, TokenKeys};
use fieldvox::config::Config;
use fieldvox::limits::LimitsConfig;
use fieldvox::rag::ingest::NewManual;
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
    config.auth.jwt_secret = Some(format!("test-secret-{}", uuid::Uuid::new_v4().simple()));
    // Every test talks as "tech-1", many at once: the limits have tests of their own
    // (tests/limits.rs).
    config.limits = LimitsConfig::off();
    // WebRTC peers reach the server on loopback too (a machine without other interfaces).
    config.rtc.include_loopback = true;
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
                let manual = ingest_rtu40(&app, TENANT_A).await;
                let guide = std::fs::read(repo().join("tests/fixtures/wf12-operator-guide.txt")).expect("fixture");
                let request = NewManual {
                    tenant: TENANT_B.into(),
                    equipment: "WF-12".into(),
                    title: None,
                    filename: "wf12-operator-guide.txt".into(),
                    uploaded_by: "test".into(),
                };
                app.kb.ingest(request, guide, &Default::default(), None).await.expect("ingest B");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("addr");
                let keys = TokenKeys::new(app.config.auth.signing_secret());
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
        open_session(self.addr, &self.token(tenant)).await
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
    /// The same, frame by frame (one Opus packet each when the output is Opus).
    pub frames: Vec<Vec<u8>>,
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
                Message::Binary(b) => {
                    self.audio.extend_from_slice(&b);
                    self.frames.push(b.to_vec());
                }
                Message::Close(f) => panic!("closed: {f:?}"),
                _ => {}
            }
        }
    }

    /// The answer to the question asked last: the first `response.done` not cancelled (an
    /// earlier question's answer is cancelled by the next).
    pub async fn answer(&mut self) -> Value {
        loop {
            let done = self.events_until("response.done").await.pop().expect("response.done");
            if done["status"] != "cancelled" {
                return done;
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
    synthesize(rate, |wav| {
        let mut c = std::process::Command::new("espeak-ng");
        c.args(["-v", "en-us", "-s", "150", "-w"]).arg(wav).arg(text);
        c
    })
}

/// Speaks `text` with flite's `slt` voice (clearer to Whisper tiny than espeak-ng).
pub fn speak_flite(text: &str, rate: u32) -> Vec<f32> {
    synthesize(rate, |wav| {
        let mut c = std::process::Command::new("flite");
        c.args(["-voice", "slt", "-t", text, "-o"]).arg(wav);
        c
    })
}

/// Runs the synthesizer command made for a fresh WAV path and reads what it wrote.
fn synthesize(rate: u32, command: impl FnOnce(&Path) -> std::process::Command) -> Vec<f32> {
    let path = std::env::temp_dir().join(format!("fieldvox-q-{}.wav", uuid::Uuid::new_v4()));
    let mut command = command(&path);
    let status = command.status().expect("synthesizer runs (scripts/setup.sh installs it)");
    assert!(status.success(), "{command:?} failed");
    let (samples, wav_rate) = fieldvox::audio::wav::read_mono(&path).expect("wav");
    let _ = std::fs::remove_file(&path);
    fieldvox::audio::resample::resample(&samples, wav_rate, rate)
}

pub fn pcm16_to_f32(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::new();
    fieldvox::audio::pcm::decode_pcm16(bytes, &mut out).expect("even length");
    out
}

/// The directory scripts/setup.sh installs test clients into (the Python venv with the
/// `openai` package, Node's `playwright-core`): `$FIELDVOX_CACHE`, else ~/.cache/fieldvox.
pub fn client_tools() -> PathBuf {
    std::env::var_os("FIELDVOX_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fieldvox")))
        .expect("FIELDVOX_CACHE or HOME is set")
}

/// Runs a test client to completion and parses the one JSON line it prints.
pub fn run_client(mut command: std::process::Command) -> Value {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?} runs (scripts/setup.sh installs it): {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}", output.status);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no JSON in {stdout}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {e}: {line}"))
}

/// A server of its own (not the shared harness), for tests that need other settings or
/// stop it. No manuals are ingested.
pub struct OwnServer {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn own_server(config: Config) -> OwnServer {
    let app = tokio::task::spawn_blocking(move || App::build(config)).await.expect("join").expect("app builds");
    serve_app(app).await
}

/// Serves an app built elsewhere on a free port.
pub async fn serve_app(app: Arc<App>) -> OwnServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(fieldvox::http::serve(app.clone(), listener, async move {
        let _ = stop_rx.await;
    }));
    OwnServer { addr, app, stop, task }
}

impl OwnServer {
    pub fn token(&self, tenant: &str) -> String {
        self.mint("tech-1", tenant, Role::Technician)
    }

    /// A token for `user` of `tenant` in `role`, signed with this server's secret.
    pub fn mint(&self, user: &str, tenant: &str, role: Role) -> String {
        TokenKeys::new(self.app.config.auth.signing_secret()).mint(user, tenant, role, 600)
    }

    /// Opens a session with a bearer header and waits for `session.created`.
    pub async fn connect(&self, tenant: &str) -> Client {
        open_session(self.addr, &self.token(tenant)).await
    }
}

/// Opens a session at `addr` with a bearer header and waits for `session.created`.
pub async fn open_session(addr: SocketAddr, token: &str) -> Client {
    let mut req = format!("ws://{addr}/v1/realtime").into_client_request().expect("request");
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
    let mut client = Client { ws, audio: Vec::new(), frames: Vec::new() };
    let created = client.next_event().await;
    assert_eq!(created["type"], "session.created", "{created}");
    client
}

/// Opens a session (resuming one, given its token) and returns it with its
/// `session.created`; a refusal as its HTTP status and body.
pub async fn open_with(addr: SocketAddr, token: &str, resume: Option<&str>) -> Result<(Client, Value), (u16, Value)> {
    let query = resume.map(|t| format!("?resume={t}")).unwrap_or_default();
    let mut req = format!("ws://{addr}/v1/realtime{query}").into_client_request().expect("request");
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => {
            let mut c = Client { ws, audio: Vec::new(), frames: Vec::new() };
            let created = c.next_event().await;
            assert_eq!(created["type"], "session.created", "{created}");
            Ok((c, created))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_ref().map(|b| serde_json::from_slice(b).unwrap_or(Value::Null));
            Err((resp.status().as_u16(), body.unwrap_or(Value::Null)))
        }
        Err(e) => panic!("connect: {e}"),
    }
}

/// One typed question in a session of its own: the answer's text and its citations.
pub async fn typed_turn(addr: SocketAddr, token: &str, question: &str) -> (String, Vec<Value>) {
    let (text, citations, _) = typed_turn_events(addr, token, question).await;
    (text, citations)
}

/// One typed question in a session of its own: the answer's text, its citations, and
/// every event up to `response.done`.
pub async fn typed_turn_events(addr: SocketAddr, token: &str, question: &str) -> (String, Vec<Value>, Vec<Value>) {
    let mut c = open_session(addr, token).await;
    c.send_json(serde_json::json!({"type": "conversation.item.create", "item": {"text": question}})).await;
    let events = c.events_until("response.done").await;
    let text = events.last().and_then(|e| e["text"].as_str()).unwrap_or_default().to_string();
    let citations = of_type(&events, "response.citations")
        .first()
        .map_or(Vec::new(), |e| e["citations"].as_array().cloned().unwrap_or_default());
    (text, citations, events)
}

/// Ingests the RTU-40 service manual (the torque is on page 3) for `tenant`.
pub async fn ingest_rtu40(app: &App, tenant: &str) -> fieldvox::store::Manual {
    let request = NewManual {
        tenant: tenant.into(),
        equipment: "RTU-40".into(),
        title: Some(MANUAL_TITLE.into()),
        filename: "rtu40-service-manual.txt".into(),
        uploaded_by: "test".into(),
    };
    app.kb
        .ingest(
            request,
            std::fs::read(repo().join("tests/fixtures/rtu40-service-manual.txt")).expect("fixture"),
            &Default::default(),
            None,
        )
        .await
        .expect("ingest")
}
