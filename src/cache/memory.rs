//! In-process cache: bounded by bytes, each entry expiring after its own TTL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;

use super::Cache;

/// Bytes an entry costs beyond its key and value (moka's bookkeeping, roughly).
const ENTRY_OVERHEAD: usize = 96;

#[derive(Clone)]
struct Entry {
    value: Arc<[u8]>,
    ttl: Duration,
}

struct OwnTtl;

impl Expiry<String, Entry> for OwnTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _created: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

pub struct MemoryCache {
    entries: moka::sync::Cache<String, Entry>,
}

impl MemoryCache {
    /// Holds at most about `max_bytes` of keys and values; the least useful go first.
    pub fn new(max_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                u32::try_from(key.len() + entry.value.len() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(OwnTtl)
            .build();
        Self { entries }
    }

    /// Entries held (after pending evictions are applied).
    pub fn len(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held, by the same measure as the bound.
    pub fn bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }

    /// Every live entry, for inspection (what a tenant's entries hold).
    pub fn entries(&self) -> Vec<(String, Vec<u8>)> {
        self.entries.iter().map(|(k, e)| (k.as_ref().clone(), e.value.to_vec())).collect()
    }

    pub fn get_now(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.get(key).map(|e| e.value.to_vec())
    }

    pub fn set_now(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        self.entries.insert(key.to_string(), Entry { value: value.into(), ttl });
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.get_now(key)
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        self.set_now(key, value, ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expires_and_stays_bounded_by_bytes() {
        let c = MemoryCache::new(10_000);
        c.set("a", vec![1], Duration::from_secs(60)).await;
        c.set("b", vec![2], Duration::from_millis(1)).await;
        assert_eq!(c.get("a").await, Some(vec![1]));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(c.get("b").await, None, "expired");
        for i in 0..100 {
            c.set(&format!("k{i}"), vec![0; 1_000], Duration::from_secs(60)).await;
        }
        assert!(c.bytes() <= 10_000, "{} bytes held", c.bytes());
        assert!(c.len() < 100, "older entries were evicted");
    }
}
