//! Byte caches for embeddings and retrieval results, with TTLs.
//! In-process by default; with `backends.cache = "redis"` a shared Redis layer sits
//! behind the in-process one (`tiered`).

pub mod memory;
pub mod tiered;

use std::time::Duration;

use async_trait::async_trait;

#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> Option<Vec<u8>>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration);
}

pub const EMBEDDING_TTL: Duration = Duration::from_secs(24 * 3600);
pub const RETRIEVAL_TTL: Duration = Duration::from_secs(3600);
