//! The cache the knowledge base uses: the in-process layer first, then Redis when
//! configured (shared by every instance). Hits and misses are counted per layer.
//!
//! Keys name immutable content (an embedding of a text, a retrieval at one knowledge-base
//! version), so an entry found in Redis may be kept in memory without asking for its TTL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::Cache;
use super::memory::MemoryCache;
use crate::backends::redis::RedisLink;
use crate::metrics;

/// How long an entry found in Redis is kept in memory.
const REFILL_TTL: Duration = Duration::from_secs(600);

pub struct TieredCache {
    memory: MemoryCache,
    redis: Option<Arc<RedisLink>>,
}

impl TieredCache {
    pub fn new(memory: MemoryCache, redis: Option<Arc<RedisLink>>) -> Self {
        Self { memory, redis }
    }

    pub fn memory(&self) -> &MemoryCache {
        &self.memory
    }
}

#[async_trait]
impl Cache for TieredCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(value) = self.memory.get_now(key) {
            metrics::cache_lookup("memory", true);
            return Some(value);
        }
        metrics::cache_lookup("memory", false);
        let redis = self.redis.as_ref()?;
        // Redis down: a miss, already logged and gauged by the link.
        let found: Option<Vec<u8>> = redis.run(redis::cmd("GET").arg(key)).await.ok().flatten();
        metrics::cache_lookup("redis", found.is_some());
        if let Some(value) = &found {
            self.memory.set_now(key, value.clone(), REFILL_TTL);
        }
        found
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        if let Some(redis) = &self.redis {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let _: Result<(), _> = redis.run(redis::cmd("SET").arg(key).arg(&value).arg("PX").arg(ms)).await;
        }
        self.memory.set_now(key, value, ttl);
    }
}
