//! The assembled server: configuration, keys, metrics, knowledge base, models, sessions.

use std::sync::Arc;

use crate::auth::Authenticator;
use crate::cache::Cache;
use crate::cache::memory::MemoryCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipelines;
use crate::rag::KnowledgeBase;
use crate::rag::embed::Embedder;
use crate::rag::jobs::JobBoard;
use crate::session::SessionManager;
use crate::session::resume::Resumer;
use crate::store::sqlite::SqliteStore;
use crate::vector::edge::EdgeIndex;
use crate::voice::vad::VadService;

/// Entries the in-process cache holds before it stops admitting new ones.
const CACHE_ENTRIES: usize = 100_000;

pub struct App {
    pub config: Config,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub kb: KnowledgeBase,
    /// Manual ingests running in this process.
    pub jobs: JobBoard,
    pub vad: VadService,
    pub pipelines: Pipelines,
    pub sessions: SessionManager,
    pub resumer: Resumer,
}

impl KnowledgeBase {
    /// The embedded knowledge base under `data.dir`: SQLite metadata, qdrant-edge vectors,
    /// in-process cache, and the embedding model.
    pub fn open_embedded(config: &Config) -> anyhow::Result<Self> {
        let dir = &config.data.dir;
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", dir.display()))?;
        let store = SqliteStore::open(&dir.join("fieldvox.sqlite"))?;
        let index = EdgeIndex::open(&dir.join("vectors"))?;
        let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(CACHE_ENTRIES));
        let w = &config.workers;
        let embedder = Embedder::spawn(&config.model_paths(), w.embed, w.onnx_threads, w.queue_depth, cache.clone())?;
        Ok(Self::new(Arc::new(store), Arc::new(index), embedder, cache))
    }
}

impl App {
    /// Loads every model and opens every store; blocking, a few seconds.
    pub fn build(config: Config) -> anyhow::Result<Arc<Self>> {
        // Before the models: a server that could not check tokens must not start at all.
        let auth = Authenticator::from_config(&config.auth)?;
        let metrics = Metrics::new();
        let kb = KnowledgeBase::open_embedded(&config)?;
        // Ingests a crash or kill cut short: failed, and what they wrote removed.
        let interrupted = tokio::runtime::Handle::try_current()
            .map_err(|e| anyhow::anyhow!("App::build runs on the runtime's blocking pool: {e}"))?
            .block_on(kb.recover())?;
        if interrupted > 0 {
            tracing::warn!(jobs = interrupted, "interrupted ingest jobs marked failed");
        }
        // Uploads a crash cut off mid-transfer: nobody will finish them.
        let _ = std::fs::remove_dir_all(config.data.dir.join(crate::http::manuals::SPOOL_DIR));
        let w = &config.workers;
        let vad = VadService::spawn(&config.model_paths(), w.onnx_threads, w.queue_depth.max(1024), w.vad)?;
        let pipelines = Pipelines::load(&config)?;
        let server = &config.server;
        let sessions = SessionManager::new(server.max_sessions, server.max_sessions_per_user, metrics.clone());
        let window = std::time::Duration::from_millis(server.resume_window_ms);
        let resumer = Resumer::new(server.resume_secret.as_deref(), window);
        Ok(Arc::new(Self { config, auth, metrics, kb, jobs: JobBoard::default(), vad, pipelines, sessions, resumer }))
    }
}
