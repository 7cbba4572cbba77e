//! Metadata: tenants' manuals, their chunks (text + page), and each tenant's
//! knowledge-base version. SQLite is the embedded default; MongoDB plugs in behind
//! the same trait. Every read names the tenant. The store also keeps the keyword index
//! over chunk text and each tenant's vocabulary of printed codes.

pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Manual {
    pub id: Uuid,
    pub tenant: String,
    pub equipment: String,
    pub title: String,
    pub filename: String,
    pub pages: u32,
    pub chunks: u32,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: Uuid,
    pub tenant: String,
    pub manual_id: Uuid,
    pub equipment: String,
    pub page: u32,
    pub text: String,
}

/// A chunk with the title of its manual, ready to cite.
#[derive(Debug, Clone, PartialEq)]
pub struct CitedChunk {
    pub chunk: Chunk,
    pub manual_title: String,
}

/// A chunk found by its words and codes; higher scores match better (BM25).
#[derive(Debug, Clone, PartialEq)]
pub struct KeywordHit {
    pub chunk_id: Uuid,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// Saves a manual and all its chunks atomically.
    async fn insert_manual(&self, manual: Manual, chunks: Vec<Chunk>) -> Result<(), StoreError>;
    async fn list_manuals(&self, tenant: &str) -> Result<Vec<Manual>, StoreError>;
    /// Chunks by id, only those belonging to `tenant`, in the order of `ids`.
    async fn chunks(&self, tenant: &str, ids: &[Uuid]) -> Result<Vec<CitedChunk>, StoreError>;
    /// Chunks of `tenant` (and `equipment`, when given) that share terms with the query
    /// (normalised by `rag::terms`), best first.
    async fn keyword_search(
        &self,
        tenant: &str,
        equipment: Option<&str>,
        terms: &[String],
        limit: usize,
    ) -> Result<Vec<KeywordHit>, StoreError>;
    /// The codes and equipment ids printed in the tenant's manuals, as printed.
    async fn vocabulary(&self, tenant: &str) -> Result<Vec<String>, StoreError>;
    async fn kb_version(&self, tenant: &str) -> Result<u64, StoreError>;
    /// Increments and returns the tenant's knowledge-base version (invalidates cached retrievals).
    async fn bump_kb_version(&self, tenant: &str) -> Result<u64, StoreError>;
}
