//! The assembled server: configuration, keys, metrics, knowledge base, models, sessions.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::backends::{Backends, LimitsBackend, MetadataBackend, SessionBackend};
use crate::cache::Cache;
use crate::config::Config;
use crate::limits::RateLimits;
use crate::metrics::Metrics;
use crate::pipeline::Pipelines;
use crate::rag::KnowledgeBase;
use crate::rag::embed::Embedder;
use crate::rag::jobs::JobBoard;
use crate::session::SessionManager;
use crate::session::resume::Resumer;
use crate::voice::vad::VadService;

pub struct App {
    pub config: Config,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub kb: KnowledgeBase,
    /// The stores behind the knowledge base, the cache and parked sessions.
    pub backends: Backends,
    /// Manual ingests running in this process.
    pub jobs: JobBoard,
    pub vad: VadService,
    pub pipelines: Pipelines,
    pub sessions: SessionManager,
    pub resumer: Resumer,
    /// What each user and tenant may still do.
    pub limits: RateLimits,
    /// Answers WebRTC offers; `None` when `rtc.enabled` is off.
    pub rtc: Option<crate::rtc::RtcEngine>,
    pub rtc_hangups: crate::session::webrtc::Hangups,
}

impl KnowledgeBase {
    /// The knowledge base over the configured backends, with the embedding model.
    pub fn open(config: &Config, backends: &Backends) -> anyhow::Result<Self> {
        let cache: Arc<dyn Cache> = backends.cache.clone();
        let w = &config.workers;
        // One process, one set of cores: every app in it shares the gate.
        crate::workers::gate::global().set_capacity(w.gate_threads());
        let embedder = Embedder::spawn(&config.model_paths(), w.embed, w.onnx_threads, w.into(), cache.clone())?;
        Ok(Self::new(backends.store.clone(), backends.index.clone(), embedder, cache))
    }
}

impl App {
    /// Loads every model and opens every store; blocking, a few seconds.
    pub fn build(config: Config) -> anyhow::Result<Arc<Self>> {
        // Before the models: a server that could not check tokens must not start at all.
        let auth = Authenticator::from_config(&config.auth)?;
        let metrics = Metrics::new();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("App::build runs on the runtime's blocking pool: {e}"))?;
        let backends = runtime.block_on(Backends::open(&config.backends, &config.data.dir))?;
        Self::build_with(config, auth, metrics, backends)
    }

    /// Builds on backends already open (tests share one vector index between two
    /// instances this way, where no Qdrant server can run).
    pub fn build_on(config: Config, backends: Backends) -> anyhow::Result<Arc<Self>> {
        let auth = Authenticator::from_config(&config.auth)?;
        Self::build_with(config, auth, Metrics::new(), backends)
    }

    fn build_with(
        config: Config,
        auth: Authenticator,
        metrics: Metrics,
        backends: Backends,
    ) -> anyhow::Result<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("App::build runs on the runtime's blocking pool: {e}"))?;
        let kb = KnowledgeBase::open(&config, &backends)?;
        // Ingests a crash or kill cut short: failed, and what they wrote removed.
        let shared = backends.kinds.metadata == MetadataBackend::Mongodb;
        let interrupted = runtime.block_on(kb.recover(shared))?;
        if interrupted > 0 {
            tracing::warn!(jobs = interrupted, "interrupted ingest jobs marked failed");
        }
        // Uploads a crash cut off mid-transfer: nobody will finish them.
        let _ = std::fs::remove_dir_all(config.data.dir.join(crate::http::manuals::SPOOL_DIR));
        let w = &config.workers;
        let vad = VadService::spawn(&config.model_paths(), w.onnx_threads, w.queue_depth.max(1024), w.vad)?;
        let pipelines = Pipelines::load(&config)?;
        let server = &config.server;
        let sessions = SessionManager::new(server.max_sessions, metrics.clone());
        let window = std::time::Duration::from_millis(server.resume_window_ms);
        let parking = backends.redis.clone().filter(|_| backends.kinds.sessions == SessionBackend::Redis);
        let resumer = Resumer::new(server.resume_secret.as_deref(), window, parking);
        let shared_limits = backends.redis.clone().filter(|_| backends.kinds.limits == LimitsBackend::Redis);
        let redis_retry = std::time::Duration::from_millis(config.backends.redis.retry_ms);
        let limits = RateLimits::new(config.limits.clone(), shared_limits, redis_retry, metrics.clone());
        let rtc = if config.rtc.enabled { Some(crate::rtc::RtcEngine::new(&config.rtc)?) } else { None };
        Ok(Arc::new(Self {
            rtc,
            rtc_hangups: Default::default(),
            config,
            auth,
            metrics,
            kb,
            backends,
            jobs: JobBoard::default(),
            vad,
            pipelines,
            sessions,
            resumer,
            limits,
        }))
    }
}
