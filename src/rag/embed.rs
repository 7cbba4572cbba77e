//! Text embeddings (all-MiniLM-L6-v2 int8 through fastembed/ONNX Runtime), with a cache
//! keyed by the text's hash so a repeated question costs a map lookup.

use std::sync::Arc;

use dashmap::DashMap;
use fastembed::{InitOptionsUserDefined, Pooling, TextEmbedding, TokenizerFiles, UserDefinedEmbeddingModel};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::RagError;
use crate::cache::{Cache, EMBEDDING_TTL};
use crate::models::{ModelError, ModelPaths, onnx_environment};
use crate::vector::DIMENSIONS;
use crate::workers::{Priority, QueueBounds, WorkerPool};

pub const MODEL_NAME: &str = "all-minilm-l6-v2-int8";
/// Chunks embedded per inference call during ingest: small, because a live query that
/// arrives while a batch runs waits for it (the pool's background lane; see `workers`).
pub const INGEST_BATCH: usize = 8;

/// Loads the embedding model from the models directory.
pub fn load_model(paths: &ModelPaths, threads: usize) -> Result<TextEmbedding, ModelError> {
    let env = onnx_environment(paths)?;
    let dir = paths.minilm_dir()?;
    let read = |name: &str| -> Result<Vec<u8>, ModelError> {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|_| ModelError::Missing { path })
    };
    let tokenizer = TokenizerFiles {
        tokenizer_file: read("tokenizer.json")?,
        config_file: read("config.json")?,
        special_tokens_map_file: read("special_tokens_map.json")?,
        tokenizer_config_file: read("tokenizer_config.json")?,
    };
    let model = UserDefinedEmbeddingModel::new(read("model.onnx")?, tokenizer).with_pooling(Pooling::Mean);
    let mut options = InitOptionsUserDefined::default().with_intra_threads(threads).with_max_length(256);
    options.environment = Some(env.clone());
    TextEmbedding::try_new_from_user_defined(model, options).map_err(|e| ModelError::load("embedder", e))
}

#[derive(Clone)]
pub struct Embedder {
    pool: WorkerPool<TextEmbedding>,
    cache: Arc<dyn Cache>,
    /// Queries being embedded now: concurrent misses for one text share one inference
    /// (a burst of the same question must not fill the pool's queue).
    inflight: Arc<DashMap<String, Arc<OnceCell<Vec<f32>>>>>,
}

impl Embedder {
    pub fn new(pool: WorkerPool<TextEmbedding>, cache: Arc<dyn Cache>) -> Self {
        Self { pool, cache, inflight: Arc::new(DashMap::new()) }
    }

    pub fn spawn(
        paths: &ModelPaths,
        workers: usize,
        threads: usize,
        queue: QueueBounds,
        cache: Arc<dyn Cache>,
    ) -> Result<Self, ModelError> {
        let paths = paths.clone();
        let pool = WorkerPool::spawn("embed", workers, queue, move |_| load_model(&paths, threads))?.gated(threads);
        Ok(Self::new(pool, cache))
    }

    /// Embeds one query, from the cache when this tenant asked this exact text before.
    pub async fn embed_query(&self, tenant: &str, text: &str) -> Result<Vec<f32>, RagError> {
        let key = cache_key(tenant, text);
        if let Some(v) = self.cache.get(&key).await.and_then(|bytes| decode_vector(&bytes)) {
            return Ok(v);
        }
        let cell = self.inflight.entry(key.clone()).or_default().clone();
        let result = cell
            .get_or_try_init(|| async {
                let mut vectors = self.embed_batch(vec![text.to_string()]).await?;
                let vector = vectors.pop().ok_or_else(|| ModelError::inference("embedder", "no vector returned"))?;
                self.cache.set(&key, encode_vector(&vector), EMBEDDING_TTL).await;
                Ok::<_, RagError>(vector)
            })
            .await
            .cloned();
        self.inflight.remove(&key);
        result
    }

    /// Embeds texts, from the tenant's cache where seen before; the rest in one inference
    /// call. For sentences of manuals, which the same questions meet again and again.
    pub async fn embed_cached(&self, tenant: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, RagError> {
        let keys: Vec<String> = texts.iter().map(|t| cache_key(tenant, t)).collect();
        let mut found: Vec<Option<Vec<f32>>> = Vec::with_capacity(texts.len());
        for key in &keys {
            found.push(self.cache.get(key).await.and_then(|b| decode_vector(&b)));
        }
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| found[i].is_none()).collect();
        if !missing.is_empty() {
            let vectors = self.embed_batch(missing.iter().map(|&i| texts[i].clone()).collect()).await?;
            for (&i, vector) in missing.iter().zip(vectors) {
                self.cache.set(&keys[i], encode_vector(&vector), EMBEDDING_TTL).await;
                found[i] = Some(vector);
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// Embeds texts in one inference call, uncached.
    pub async fn embed_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, RagError> {
        self.embed_in(Priority::Live, texts).await
    }

    /// Embeds a manual's chunks, after any live query waiting (ingest).
    pub async fn embed_background(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, RagError> {
        self.embed_in(Priority::Background, texts).await
    }

    async fn embed_in(&self, priority: Priority, texts: Vec<String>) -> Result<Vec<Vec<f32>>, RagError> {
        let n = texts.len();
        let vectors = self
            .pool
            .run_as(priority, move |model| model.embed(texts, Some(INGEST_BATCH)))
            .await?
            .map_err(|e| ModelError::inference("embedder", e))?;
        if vectors.len() != n || vectors.iter().any(|v| v.len() != DIMENSIONS) {
            return Err(ModelError::inference("embedder", "unexpected embedding shape").into());
        }
        Ok(vectors)
    }
}

/// `emb:{model}:{sha256(tenant, text)}`: the text never appears in a key, and each tenant
/// has its own entries, so a fast embedding (a cache hit, visible in `embed_ms`) can never
/// tell one tenant what another asked.
fn cache_key(tenant: &str, text: &str) -> String {
    let mut hash = Sha256::new();
    hash.update((tenant.len() as u64).to_le_bytes());
    hash.update(tenant.as_bytes());
    hash.update(text.as_bytes());
    format!("emb:{MODEL_NAME}:{}", hex::encode(hash.finalize()))
}

fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    (bytes.len() == DIMENSIONS * 4)
        .then(|| bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::memory::MemoryCache;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (na * nb)
    }

    #[tokio::test]
    async fn real_embeddings_rank_by_meaning_and_cache() {
        let paths = ModelPaths::new(ModelPaths::default_root());
        let cache = Arc::new(MemoryCache::new(1 << 20));
        let embedder = Embedder::spawn(&paths, 1, 1, QueueBounds::depth(8), cache.clone()).unwrap();
        let q = embedder.embed_query("acme", "what torque for the compressor head bolts").await.unwrap();
        assert_eq!(q.len(), DIMENSIONS);
        assert_eq!(cache.len(), 1);
        let docs = embedder
            .embed_batch(vec![
                "Tighten the compressor head bolts to 38 newton meters.".into(),
                "The condensate drain pan must be cleaned every season.".into(),
            ])
            .await
            .unwrap();
        assert!(cosine(&q, &docs[0]) > cosine(&q, &docs[1]) + 0.1);
        let again = embedder.embed_query("acme", "what torque for the compressor head bolts").await.unwrap();
        assert_eq!(q, again);
        assert_eq!(cache.len(), 1, "a repeat is a hit");
        // Another tenant asking the same never meets the first one's entry.
        embedder.embed_query("globex", "what torque for the compressor head bolts").await.unwrap();
        assert_eq!(cache.len(), 2, "each tenant has its own entries");

        // A burst of one new question: one inference, the rest wait for it (the pool's
        // queue of 8 would refuse most of 50 separate jobs).
        let burst = (0..50).map(|_| {
            let e = embedder.clone();
            tokio::spawn(async move { e.embed_query("acme", "how often are the return air filters replaced").await })
        });
        let vectors: Vec<_> =
            futures_util::future::join_all(burst).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
        assert!(vectors.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(cache.len(), 3);
        // Manual sentences: cached one by one, the misses embedded together.
        let sentences = vec!["Tighten the head bolts to 38 N·m.".to_string(), "Check the belt.".to_string()];
        let first = embedder.embed_cached("acme", sentences.clone()).await.unwrap();
        assert_eq!(cache.len(), 5);
        assert_eq!(embedder.embed_cached("acme", sentences).await.unwrap(), first, "second time from the cache");
        assert_eq!(cache.len(), 5);
        assert_eq!(encode_vector(&q).len(), DIMENSIONS * 4);
        assert_eq!(decode_vector(&encode_vector(&q)).unwrap(), q);
        assert!(decode_vector(&[0u8; 3]).is_none());
    }
}
