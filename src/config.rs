//! Typed, layered configuration: built-in defaults, then a TOML file, then
//! `FIELDVOX__SECTION__KEY` environment variables (`__` separates nesting levels).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::models::ModelPaths;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub data: DataConfig,
    pub models: ModelsConfig,
    pub pipelines: PipelinesConfig,
    pub workers: WorkersConfig,
    /// What an uploaded manual may be.
    pub ingest: crate::rag::ingest::IngestConfig,
    /// Where the knowledge base, the cache, parked sessions and rate limits live.
    pub backends: crate::backends::BackendsConfig,
    /// How much each user and tenant may do (per role, overridable per tenant).
    pub limits: crate::limits::LimitsConfig,
    /// What a voice note (`POST /v1/ask`) may be.
    pub ask: crate::http::ask::AskConfig,
    /// WebRTC sessions: ICE servers, the UDP range, the public address, timeouts.
    pub rtc: crate::rtc::RtcConfig,
    /// The console's sign-in through the company's identity provider.
    pub console: crate::http::console::ConsoleConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Sessions beyond this are refused with 503 before the upgrade.
    pub max_sessions: usize,
    /// Largest WebSocket message accepted; a larger one closes the session with 1009.
    pub max_frame_bytes: usize,
    /// How long live sessions get to finish after `session.going_away`.
    pub shutdown_grace_ms: u64,
    /// A session silent for this long (no frames, no pings) is closed.
    pub idle_timeout_ms: u64,
    /// From accept to the first response (for a WebSocket, the upgrade after the token
    /// check): a client slower than this (silent, slow headers) is disconnected.
    pub handshake_timeout_ms: u64,
    /// A request head on a kept-alive connection must arrive within this.
    pub header_read_timeout_ms: u64,
    /// An HTTP connection idle this long between requests is closed.
    pub keep_alive_timeout_ms: u64,
    /// Connections one source address may hold before authenticating; more are closed
    /// at accept. Behind a proxy every client shares the proxy's address: raise it there.
    pub max_unauthenticated_per_ip: usize,
    /// A session whose socket dropped can be resumed (history, settings) this long after.
    pub resume_window_ms: u64,
    /// Signs resume tokens. Instances that resume each other's sessions share it; unset,
    /// each process makes its own at start (resume then works on the same instance only).
    pub resume_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for tokens fieldvox mints (`fieldvox token`) or your services sign.
    pub jwt_secret: Option<String>,
    /// Accept tokens signed with the built-in development secret (`serve --dev`).
    pub allow_dev_secret: bool,
    /// Tokens from the company's identity provider (RS256/ES256).
    pub jwks: Option<JwksConfig>,
    /// Lifetime of tokens minted by `fieldvox token`.
    pub token_ttl_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JwksConfig {
    /// Where the identity provider publishes its signing keys (a JWKS document).
    pub url: String,
    /// Required `iss` of its tokens.
    pub issuer: String,
    /// Required `aud` of its tokens (fieldvox's client or API id there).
    pub audience: String,
    /// Claim that holds the tenant id.
    pub tenant_claim: String,
    /// Claim that holds the role (`technician`, `admin`, `ops`), or a list of them.
    pub role_claim: String,
}

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            issuer: String::new(),
            audience: String::new(),
            tenant_claim: "tenant".into(),
            role_claim: "role".into(),
        }
    }
}

impl AuthConfig {
    /// The secret `fieldvox token` signs with: the configured one, else the development one.
    pub fn signing_secret(&self) -> &str {
        self.jwt_secret.as_deref().unwrap_or(crate::auth::DEV_SECRET)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Holds the embedded metadata database (`fieldvox.sqlite`) and vector index (`vectors/`).
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// Where `python3 models/fetch.py` put the local models.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelinesConfig {
    /// Directory of pipeline profiles (`*.toml`).
    pub dir: PathBuf,
    /// Profile used when a session does not name one.
    pub default: String,
}

/// Inference pools. Each worker owns one model instance on its own OS thread,
/// so these bound both CPU use and memory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    pub stt: usize,
    pub llm: usize,
    pub tts: usize,
    pub embed: usize,
    /// ONNX Runtime intra-op threads per session (VAD, embeddings).
    pub onnx_threads: usize,
    /// Intra-op threads per Piper worker; 0 = the cores shared among the TTS workers. The
    /// first audio of an answer waits for Piper, and one quiet session's TTS on two threads
    /// starts speaking sooner (README, "Benchmarks").
    pub tts_threads: usize,
    /// Requests one tenant may have waiting per pool (a memory bound; the wait bound
    /// below usually refuses first).
    pub queue_depth: usize,
    /// A live request is refused with `overloaded` (and a `retry_after_ms`) when the
    /// pool's measured pace says it would wait longer than this to start.
    pub max_queue_wait_ms: u64,
    /// Model threads the speech, transcription and embedding pools run at once, admitted
    /// in tenant-fair order (`workers::gate`); 0 = the machine's cores.
    pub inference_threads: usize,
    /// Threads scoring VAD windows (each batches across sessions; 0 = one per core).
    pub vad: usize,
}

impl WorkersConfig {
    /// The gate's capacity: `inference_threads`, or the machine's cores.
    pub fn gate_threads(&self) -> usize {
        match self.inference_threads {
            0 => crate::workers::gate::cores(),
            n => n,
        }
    }

    /// Piper's intra-op threads per worker: `tts_threads`, or the cores over the workers.
    pub fn piper_threads(&self) -> usize {
        match self.tts_threads {
            0 => (std::thread::available_parallelism().map_or(1, usize::from) / self.tts.max(1)).max(1),
            n => n,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("data") }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self { dir: ModelPaths::default_root() }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_sessions: 60_000,
            max_frame_bytes: 256 * 1024,
            shutdown_grace_ms: 10_000,
            idle_timeout_ms: 10 * 60 * 1000,
            handshake_timeout_ms: 10_000,
            header_read_timeout_ms: 10_000,
            keep_alive_timeout_ms: 5_000,
            max_unauthenticated_per_ip: 256,
            resume_window_ms: 30_000,
            resume_secret: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { jwt_secret: None, allow_dev_secret: false, jwks: None, token_ttl_secs: 12 * 3600 }
    }
}

impl Default for PipelinesConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("pipelines"), default: "field-assistant".into() }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            stt: 1,
            llm: 1,
            tts: 1,
            embed: 1,
            onnx_threads: 1,
            tts_threads: 0,
            queue_depth: 1024,
            max_queue_wait_ms: 5_000,
            inference_threads: 0,
            vad: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` (if given), then `FIELDVOX__…` variables; validated.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::MissingFile(file.to_path_buf()));
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("FIELDVOX__").split("__"))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.auth.jwt_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return invalid("auth.jwt_secret must be at least 16 bytes");
        }
        if self.server.max_frame_bytes < 4096 {
            return invalid("server.max_frame_bytes must be at least 4096");
        }
        let w = &self.workers;
        if [w.stt, w.llm, w.tts, w.embed, w.onnx_threads, w.queue_depth].contains(&0) {
            return invalid("every workers.* value must be at least 1");
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        if self.workers.max_queue_wait_ms == 0 {
            return invalid("workers.max_queue_wait_ms must be at least 1");
        }
        if self.ingest.max_bytes == 0 || self.ingest.max_pages == 0 {
            return invalid("ingest.max_bytes and ingest.max_pages must be at least 1");
        }
        Ok(())
    }

    pub fn model_paths(&self) -> ModelPaths {
        ModelPaths::new(&self.models.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn file_then_env_override_defaults() {
        let dir = std::env::temp_dir().join(format!("fieldvox-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fieldvox.toml");
        std::fs::write(&file, "[server]\nmax_sessions = 7\n[workers]\nstt = 2\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FIELDVOX__WORKERS__STT", "3");
            let config = Config::load(Some(&file)).expect("config loads");
            assert_eq!(config.server.max_sessions, 7);
            assert_eq!(config.workers.stt, 3, "env overrides the file");
            assert_eq!(config.workers.tts, 1, "untouched keys keep defaults");
            Ok(())
        });
    }

    #[test]
    fn piper_gets_the_cores_shared_among_tts_workers_unless_told() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut w = WorkersConfig::default();
        assert_eq!(w.piper_threads(), cores, "one TTS worker gets every core");
        w.tts = cores * 2;
        assert_eq!(w.piper_threads(), 1, "never fewer than one thread");
        w.tts_threads = 3;
        assert_eq!(w.piper_threads(), 3, "an explicit count wins");
    }

    #[test]
    fn rejects_unknown_keys_and_weak_secret() {
        let dir = std::env::temp_dir().join(format!("fieldvox-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[server]\nmax_sesions = 7\n").unwrap();
        assert!(matches!(Config::load(Some(&file)), Err(ConfigError::Invalid(_))));
        std::fs::write(&file, "[auth]\njwt_secret = \"short\"\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("jwt_secret"), "{err}");
        assert!(matches!(Config::load(Some(&dir.join("absent.toml"))), Err(ConfigError::MissingFile(_))));
    }
}
