//! In-process cache: a concurrent map with per-entry expiry and a size bound.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;

use super::Cache;

pub struct MemoryCache {
    entries: DashMap<String, (Instant, Vec<u8>)>,
    max_entries: usize,
}

impl MemoryCache {
    pub fn new(max_entries: usize) -> Self {
        Self { entries: DashMap::new(), max_entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let hit = self.entries.get(key).and_then(|e| (e.0 > Instant::now()).then(|| e.1.clone()));
        if hit.is_none() {
            self.entries.remove_if(key, |_, (expires, _)| *expires <= Instant::now());
        }
        hit
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        if self.entries.len() >= self.max_entries {
            let now = Instant::now();
            self.entries.retain(|_, (expires, _)| *expires > now);
            if self.entries.len() >= self.max_entries {
                // Still full of live entries: skip caching rather than grow without bound.
                return;
            }
        }
        self.entries.insert(key.to_string(), (Instant::now() + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expires_and_stays_bounded() {
        let c = MemoryCache::new(2);
        c.set("a", vec![1], Duration::from_secs(60)).await;
        c.set("b", vec![2], Duration::from_millis(1)).await;
        assert_eq!(c.get("a").await, Some(vec![1]));
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(c.get("b").await, None, "expired");
        c.set("c", vec![3], Duration::from_secs(60)).await;
        c.set("d", vec![4], Duration::from_secs(60)).await;
        assert!(c.len() <= 2);
        assert_eq!(c.get("c").await, Some(vec![3]));
    }
}
