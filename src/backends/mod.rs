//! Which stores hold the knowledge base, the cache and parked sessions: embedded on one
//! box (the default), or shared by several instances (MongoDB, Qdrant, Redis). Chosen by
//! `[backends]`; everything above the traits is the same either way.

pub mod migrate;
pub mod redis;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use self::redis::RedisLink;
use crate::cache::memory::MemoryCache;
use crate::cache::tiered::TieredCache;
use crate::store::MetadataStore;
use crate::store::mongo::MongoStore;
use crate::store::sqlite::SqliteStore;
use crate::vector::VectorIndex;
use crate::vector::edge::EdgeIndex;
use crate::vector::qdrant::QdrantIndex;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackendsConfig {
    pub metadata: MetadataBackend,
    pub vectors: VectorBackend,
    pub cache: CacheBackend,
    /// Where dropped sessions wait to be resumed.
    pub sessions: SessionBackend,
    /// Where rate-limit buckets live: `memory` (this process) or `redis` (shared, so
    /// instances enforce one limit together).
    pub limits: LimitsBackend,
    pub mongodb: MongoConfig,
    pub qdrant: QdrantConfig,
    pub redis: RedisConfig,
    /// The in-process layer in front of Redis (or alone).
    pub memory_cache_bytes: u64,
}

impl Default for BackendsConfig {
    fn default() -> Self {
        Self {
            metadata: MetadataBackend::default(),
            vectors: VectorBackend::default(),
            cache: CacheBackend::default(),
            sessions: SessionBackend::default(),
            limits: LimitsBackend::default(),
            mongodb: MongoConfig::default(),
            qdrant: QdrantConfig::default(),
            redis: RedisConfig::default(),
            memory_cache_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MetadataBackend {
    #[default]
    Sqlite,
    Mongodb,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VectorBackend {
    #[default]
    Edge,
    Qdrant,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CacheBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MongoConfig {
    /// A `mongodb://` seed list (SRV `mongodb+srv://` lookups are not built in).
    pub url: String,
    pub database: String,
    pub max_pool_size: u32,
    pub min_pool_size: u32,
    /// Server selection and each operation give up after this: a store that is down
    /// fails a turn with an apology, it does not hang it.
    pub timeout_ms: u64,
}

impl Default for MongoConfig {
    fn default() -> Self {
        Self {
            url: "mongodb://127.0.0.1:27017".into(),
            database: "fieldvox".into(),
            max_pool_size: 32,
            min_pool_size: 0,
            timeout_ms: 3_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QdrantConfig {
    /// The gRPC endpoint (port 6334 by default).
    pub url: String,
    pub api_key: Option<String>,
    pub timeout_ms: u64,
    /// Points per upsert request.
    pub batch: usize,
}

impl Default for QdrantConfig {
    fn default() -> Self {
        Self { url: "http://127.0.0.1:6334".into(), api_key: None, timeout_ms: 3_000, batch: 256 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// One command gives up after this; the cache is then bypassed until Redis answers.
    pub timeout_ms: u64,
    /// While Redis is down, a reconnect is tried at most this often.
    pub retry_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: "redis://127.0.0.1:6379".into(), timeout_ms: 250, retry_ms: 1_000 }
    }
}

/// The stores a running server uses, as configured, with their health.
pub struct Backends {
    pub kinds: BackendKinds,
    pub store: Arc<dyn MetadataStore>,
    pub index: Arc<dyn VectorIndex>,
    pub cache: Arc<TieredCache>,
    /// Set when the cache or parked sessions live in Redis.
    pub redis: Option<Arc<RedisLink>>,
}

/// Which implementation serves each role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKinds {
    pub metadata: MetadataBackend,
    pub vectors: VectorBackend,
    pub cache: CacheBackend,
    pub sessions: SessionBackend,
    pub limits: LimitsBackend,
}

/// One backend's state, as `/readyz` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendHealth {
    /// Its role: `metadata`, `vectors`, `cache`, `sessions` or `limits`.
    pub role: &'static str,
    /// What serves it: `sqlite`, `mongodb`, `edge`, `qdrant`, `memory`, `redis`.
    pub kind: &'static str,
    pub up: bool,
    /// Turns cannot be answered without it. Without Redis they still are (the cache is
    /// bypassed, sessions park in this process), so its outage degrades, not stops.
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MetadataBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Mongodb => "mongodb",
        }
    }
}

impl VectorBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Qdrant => "qdrant",
        }
    }
}

impl Backends {
    /// Opens (and connects to) every configured backend under `data_dir` or over the
    /// network. A metadata store or vector index that cannot be reached is fatal; Redis
    /// is connected lazily (it may come up later).
    pub async fn open(config: &BackendsConfig, data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data dir {}: {e}", data_dir.display()))?;
        let store: Arc<dyn MetadataStore> = match config.metadata {
            MetadataBackend::Sqlite => Arc::new(SqliteStore::open(&data_dir.join("fieldvox.sqlite"))?),
            MetadataBackend::Mongodb => Arc::new(
                MongoStore::connect(&config.mongodb)
                    .await
                    .map_err(|e| anyhow::anyhow!("backends.mongodb ({}): {e}", config.mongodb.url))?,
            ),
        };
        let index: Arc<dyn VectorIndex> = match config.vectors {
            VectorBackend::Edge => Arc::new(EdgeIndex::open(&data_dir.join("vectors"))?),
            VectorBackend::Qdrant => Arc::new(
                QdrantIndex::connect(&config.qdrant)
                    .await
                    .map_err(|e| anyhow::anyhow!("backends.qdrant ({}): {e}", config.qdrant.url))?,
            ),
        };
        let wants_redis = config.cache == CacheBackend::Redis
            || config.sessions == SessionBackend::Redis
            || config.limits == LimitsBackend::Redis;
        let redis = if wants_redis { Some(Arc::new(RedisLink::new(&config.redis)?)) } else { None };
        let shared_cache = redis.clone().filter(|_| config.cache == CacheBackend::Redis);
        let cache = Arc::new(TieredCache::new(MemoryCache::new(config.memory_cache_bytes), shared_cache));
        let kinds = BackendKinds {
            metadata: config.metadata,
            vectors: config.vectors,
            cache: config.cache,
            sessions: config.sessions,
            limits: config.limits,
        };
        tracing::info!(
            metadata = kinds.metadata.as_str(), vectors = kinds.vectors.as_str(), cache = ?kinds.cache,
            sessions = ?kinds.sessions, limits = ?kinds.limits, "backends open"
        );
        Ok(Self { kinds, store, index, cache, redis })
    }

    /// Asks every backend for one round trip, at once; each answer is also exported as
    /// `fieldvox_backend_up` and `fieldvox_backend_round_trip_seconds`.
    pub async fn health(&self) -> Vec<BackendHealth> {
        let metadata = async {
            let started = Instant::now();
            let result = bounded(self.store.ping()).await;
            probe("metadata", self.kinds.metadata.as_str(), true, started, result.map_err(|e| e.to_string()))
        };
        let vectors = async {
            let started = Instant::now();
            let result = bounded(self.index.ping()).await;
            probe("vectors", self.kinds.vectors.as_str(), true, started, result.map_err(|e| e.to_string()))
        };
        let redis = async {
            let link = self.redis.as_ref()?;
            let started = Instant::now();
            let result = link.ping().await.map(|_| ()).map_err(|e| e.to_string());
            Some(probe("redis", "redis", false, started, result))
        };
        let (metadata, vectors, redis) = tokio::join!(metadata, vectors, redis);
        let mut all = vec![metadata, vectors];
        for (role, on_redis) in [
            ("cache", self.kinds.cache == CacheBackend::Redis),
            ("sessions", self.kinds.sessions == SessionBackend::Redis),
            ("limits", self.kinds.limits == LimitsBackend::Redis),
        ] {
            all.push(match (&redis, on_redis) {
                (Some(r), true) => BackendHealth { role, ..r.clone() },
                _ => {
                    BackendHealth { role, kind: "memory", up: true, required: false, round_trip_ms: None, error: None }
                }
            });
        }
        all
    }
}

/// Longest a readiness probe waits for one backend.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<E: std::fmt::Display>(ping: impl Future<Output = Result<(), E>>) -> Result<(), String> {
    match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
    }
}

fn probe(
    role: &'static str,
    kind: &'static str,
    required: bool,
    started: Instant,
    result: Result<(), String>,
) -> BackendHealth {
    let rtt = started.elapsed();
    crate::metrics::backend_up(role, result.is_ok());
    if result.is_ok() {
        crate::metrics::backend_round_trip(role, rtt);
    }
    BackendHealth {
        role,
        kind,
        up: result.is_ok(),
        required,
        round_trip_ms: result.is_ok().then_some(rtt.as_secs_f64() * 1000.0),
        error: result.err(),
    }
}
