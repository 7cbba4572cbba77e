//! Retrieval: the tenant's passages nearest to a question, cached per knowledge-base version.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::terms::search_terms;
use super::{KnowledgeBase, RagError};
use crate::cache::RETRIEVAL_TTL;
use crate::vector::VectorQuery;

/// A retrieved chunk with everything needed to cite it.
#[derive(Debug, Clone, PartialEq)]
pub struct Passage {
    pub chunk_id: Uuid,
    pub manual_id: Uuid,
    pub title: String,
    pub page: u32,
    pub text: String,
    pub score: f32,
}

#[derive(Debug, Clone, Default)]
pub struct RetrievalTimings {
    pub embed_ms: f64,
    pub search_ms: f64,
    pub cache_hit: bool,
}

/// How a question is matched to passages (a profile's `[retrieval]` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// Passages given to the answerer.
    pub top_k: usize,
    /// Cosine similarity below which a passage found only by meaning (no shared word or
    /// code) is not used. Calibrated on the answer-quality benchmark.
    pub min_score: f32,
    /// Candidates taken from each of the dense and keyword searches before fusion.
    pub candidates: usize,
    /// Reciprocal rank fusion constant: larger flattens the rank weights.
    pub rrf_k: f32,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self { top_k: 3, min_score: 0.2, candidates: 20, rrf_k: 60.0 }
    }
}

/// One candidate after fusion: its dense cosine (0 when only keywords found it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fused {
    pub chunk_id: Uuid,
    pub fused: f32,
    pub dense: f32,
    pub keyword: bool,
}

/// Searches one question may take when manuals change under it.
const RETRIEVE_ATTEMPTS: usize = 3;

#[derive(Serialize, Deserialize)]
struct CachedHits(Vec<Fused>);

/// Reciprocal rank fusion of the dense and keyword rankings (each best first), best first.
/// A chunk ranked r (from 0) in a list adds 1 / (k + r + 1).
pub fn fuse(dense: &[(Uuid, f32)], keyword: &[Uuid], k: f32) -> Vec<Fused> {
    let mut out: Vec<Fused> = Vec::with_capacity(dense.len() + keyword.len());
    for (rank, (id, score)) in dense.iter().enumerate() {
        out.push(Fused { chunk_id: *id, fused: 1.0 / (k + rank as f32 + 1.0), dense: *score, keyword: false });
    }
    for (rank, id) in keyword.iter().enumerate() {
        let add = 1.0 / (k + rank as f32 + 1.0);
        match out.iter_mut().find(|f| f.chunk_id == *id) {
            Some(f) => {
                f.fused += add;
                f.keyword = true;
            }
            None => out.push(Fused { chunk_id: *id, fused: add, dense: 0.0, keyword: true }),
        }
    }
    out.sort_by(|a, b| b.fused.total_cmp(&a.fused));
    out
}

/// Lowercase, single-spaced, without surrounding punctuation: "What torque?" == "what torque".
fn normalize(question: &str) -> String {
    question
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The retrieval cache key. Every variable part is hashed or hex-encoded, so no tenant or
/// equipment value can forge another's key.
fn cache_key(tenant: &str, version: u64, equipment: Option<&str>, config: &RetrievalConfig, question: &str) -> String {
    let digest = Sha256::digest(
        format!("{}:{}:{}:{}", config.candidates, config.rrf_k, config.min_score, normalize(question)).as_bytes(),
    );
    format!(
        "rag:{}:{version}:{}:{}",
        hex::encode(tenant.as_bytes()),
        equipment.map_or_else(|| "*".to_string(), |e| hex::encode(e.as_bytes())),
        hex::encode(digest)
    )
}

impl KnowledgeBase {
    /// The tenant's passages for a question: dense (meaning) and keyword (words, codes,
    /// numbers) searches, fused by rank, cut by relevance, best first.
    pub async fn retrieve(
        &self,
        tenant: &str,
        equipment: Option<&str>,
        question: &str,
        config: &RetrievalConfig,
    ) -> Result<(Vec<Passage>, RetrievalTimings), RagError> {
        let mut attempt = 1;
        loop {
            let (passages, timings, complete) = self.retrieve_at_version(tenant, equipment, question, config).await?;
            // A manual replaced or deleted between the search and the reading of its
            // text: search again at the new version rather than answer from a gap.
            if complete || attempt == RETRIEVE_ATTEMPTS {
                return Ok((passages, timings));
            }
            attempt += 1;
        }
    }

    /// One retrieval; `complete` is false when some hits' text was gone by the time it
    /// was read and the knowledge base has moved on since.
    async fn retrieve_at_version(
        &self,
        tenant: &str,
        equipment: Option<&str>,
        question: &str,
        config: &RetrievalConfig,
    ) -> Result<(Vec<Passage>, RetrievalTimings, bool), RagError> {
        let mut timings = RetrievalTimings::default();
        let equipment = equipment.filter(|e| !e.is_empty() && *e != "*");
        let version = self.store.kb_version(tenant).await?;
        let key = cache_key(tenant, version, equipment, config, question);

        let started = Instant::now();
        let cached = self.cache.get(&key).await.and_then(|b| serde_json::from_slice::<CachedHits>(&b).ok());
        let hits = match cached {
            Some(CachedHits(hits)) => {
                timings.cache_hit = true;
                hits
            }
            None => {
                let terms = search_terms(question);
                let (keyword, vector) = tokio::join!(
                    self.store.keyword_search(tenant, equipment, &terms, config.candidates),
                    self.embedder.embed_query(tenant, question)
                );
                let vector = vector?;
                timings.embed_ms = started.elapsed().as_secs_f64() * 1000.0;
                let searched = Instant::now();
                let dense = self
                    .index
                    .search(VectorQuery {
                        tenant: tenant.to_string(),
                        equipment: equipment.map(str::to_string),
                        vector,
                        limit: config.candidates,
                    })
                    .await?;
                let keyword: Vec<Uuid> = keyword?.into_iter().map(|h| h.chunk_id).collect();
                let dense: Vec<(Uuid, f32)> = dense.into_iter().map(|h| (h.chunk_id, h.score)).collect();
                let hits: Vec<Fused> = fuse(&dense, &keyword, config.rrf_k)
                    .into_iter()
                    .filter(|f| f.keyword || f.dense >= config.min_score)
                    .take(config.top_k)
                    .collect();
                if let Ok(bytes) = serde_json::to_vec(&CachedHits(hits.clone())) {
                    self.cache.set(&key, bytes, RETRIEVAL_TTL).await;
                }
                timings.search_ms = searched.elapsed().as_secs_f64() * 1000.0;
                hits
            }
        };
        let ids: Vec<Uuid> = hits.iter().map(|h| h.chunk_id).collect();
        // The store re-checks the tenant: a passage is only ever read within its own tenant.
        let chunks = self.store.chunks(tenant, &ids).await?;
        let chunks_found = chunks.len();
        let passages = chunks
            .into_iter()
            .filter_map(|c| {
                let hit = hits.iter().find(|h| h.chunk_id == c.chunk.id)?;
                Some(Passage {
                    chunk_id: c.chunk.id,
                    manual_id: c.chunk.manual_id,
                    title: c.manual_title,
                    page: c.chunk.page,
                    text: c.chunk.text,
                    score: hit.dense,
                })
            })
            .collect();
        if timings.cache_hit {
            timings.search_ms = started.elapsed().as_secs_f64() * 1000.0;
        }
        let complete = chunks_found == hits.len() || self.store.kb_version(tenant).await? == version;
        Ok((passages, timings, complete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_questions() {
        assert_eq!(normalize("  What TORQUE, for the RTU-40? "), "what torque for the rtu-40");
    }

    #[test]
    fn fusion_rewards_agreement_and_keeps_keyword_only_hits() {
        let [a, b, c, d] = [1u128, 2, 3, 4].map(Uuid::from_u128);
        let fused = fuse(&[(a, 0.6), (b, 0.5), (c, 0.4)], &[c, d], 60.0);
        let order: Vec<Uuid> = fused.iter().map(|f| f.chunk_id).collect();
        // c is third by meaning but first by keywords: found twice, it wins.
        assert_eq!(order, vec![c, a, b, d]);
        assert_eq!(fused[0].dense, 0.4);
        assert!(fused[0].keyword && !fused[1].keyword);
        assert_eq!((fused[3].dense, fused[3].keyword), (0.0, true), "keyword-only hit has no cosine");
        assert!((fused[1].fused - 1.0 / 61.0).abs() < 1e-6);
        assert!(fuse(&[], &[], 60.0).is_empty());
    }

    #[test]
    fn cache_keys_cannot_collide_across_tenants() {
        let config = RetrievalConfig::default();
        // "a:1" with equipment "x" against "a" with equipment "1:x": raw joins would collide.
        let one = cache_key("a:1", 1, Some("x"), &config, "q");
        let two = cache_key("a", 1, Some("1:x"), &config, "q");
        assert_ne!(one, two);
        assert_eq!(one, cache_key("a:1", 1, Some("x"), &config, "Q?"), "normalised question");
        assert_ne!(one, cache_key("a:1", 2, Some("x"), &config, "q"), "a new version expires results");
    }
}
