//! Retrieval: the tenant's passages nearest to a question, cached per knowledge-base version.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

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

#[derive(Serialize, Deserialize)]
struct CachedHits(Vec<(Uuid, f32)>);

/// Lowercase, single-spaced, without surrounding punctuation: "What torque?" == "what torque".
fn normalize(question: &str) -> String {
    question
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl KnowledgeBase {
    pub async fn retrieve(
        &self,
        tenant: &str,
        equipment: Option<&str>,
        question: &str,
        top_k: usize,
        min_score: f32,
    ) -> Result<(Vec<Passage>, RetrievalTimings), RagError> {
        let mut timings = RetrievalTimings::default();
        let equipment = equipment.filter(|e| !e.is_empty() && *e != "*");
        let version = self.store.kb_version(tenant).await?;
        let digest = Sha256::digest(format!("{top_k}:{}", normalize(question)).as_bytes());
        let key = format!("rag:{tenant}:{version}:{}:{}", equipment.unwrap_or("*"), hex::encode(digest));

        let started = Instant::now();
        let cached = self.cache.get(&key).await.and_then(|b| serde_json::from_slice::<CachedHits>(&b).ok());
        let hits = match cached {
            Some(CachedHits(hits)) => {
                timings.cache_hit = true;
                hits
            }
            None => {
                let vector = self.embedder.embed_query(question).await?;
                timings.embed_ms = started.elapsed().as_secs_f64() * 1000.0;
                let searched = Instant::now();
                let hits = self
                    .index
                    .search(VectorQuery {
                        tenant: tenant.to_string(),
                        equipment: equipment.map(str::to_string),
                        vector,
                        limit: top_k,
                    })
                    .await?;
                let hits: Vec<(Uuid, f32)> = hits.into_iter().map(|h| (h.chunk_id, h.score)).collect();
                if let Ok(bytes) = serde_json::to_vec(&CachedHits(hits.clone())) {
                    self.cache.set(&key, bytes, RETRIEVAL_TTL).await;
                }
                timings.search_ms = searched.elapsed().as_secs_f64() * 1000.0;
                hits
            }
        };
        let hits: Vec<(Uuid, f32)> = hits.into_iter().filter(|(_, s)| *s >= min_score).collect();
        let ids: Vec<Uuid> = hits.iter().map(|(id, _)| *id).collect();
        // The store re-checks the tenant: a passage is only ever read within its own tenant.
        let chunks = self.store.chunks(tenant, &ids).await?;
        let passages = chunks
            .into_iter()
            .filter_map(|c| {
                let score = hits.iter().find(|(id, _)| *id == c.chunk.id)?.1;
                Some(Passage {
                    chunk_id: c.chunk.id,
                    manual_id: c.chunk.manual_id,
                    title: c.manual_title,
                    page: c.chunk.page,
                    text: c.chunk.text,
                    score,
                })
            })
            .collect();
        if timings.cache_hit {
            timings.search_ms = started.elapsed().as_secs_f64() * 1000.0;
        }
        Ok((passages, timings))
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes_questions() {
        assert_eq!(normalize("  What TORQUE, for the RTU-40? "), "what torque for the rtu-40");
    }
}
