//! Vector index of manual chunks, always queried within one tenant.
//!
//! The embedded default is `qdrant-edge` (in-process); a Qdrant server backend plugs in
//! behind the same trait. Every point carries `tenant_id`, and every search filters on it:
//! there is no way to search without naming the tenant.

pub mod edge;
pub mod qdrant;

use async_trait::async_trait;
use uuid::Uuid;

/// Embedding width of all-MiniLM-L6-v2.
pub const DIMENSIONS: usize = 384;

/// One chunk's vector and the payload retrieval filters on.
#[derive(Debug, Clone)]
pub struct ChunkPoint {
    pub chunk_id: Uuid,
    pub tenant: String,
    pub equipment: String,
    pub manual_id: Uuid,
    pub page: u32,
    pub vector: Vec<f32>,
}

/// A search inside one tenant, optionally narrowed to one piece of equipment.
#[derive(Debug, Clone)]
pub struct VectorQuery {
    pub tenant: String,
    pub equipment: Option<String>,
    pub vector: Vec<f32>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub chunk_id: Uuid,
    pub score: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector index unavailable: {0}")]
    Unavailable(String),
    #[error("vector has {got} dimensions, index expects {expected}")]
    Dimensions { expected: usize, got: usize },
}

/// Every index refuses a vector of another width before writing or searching.
pub(crate) fn check_dimensions(vector: &[f32]) -> Result<(), VectorError> {
    if vector.len() == DIMENSIONS {
        Ok(())
    } else {
        Err(VectorError::Dimensions { expected: DIMENSIONS, got: vector.len() })
    }
}

#[async_trait]
pub trait VectorIndex: Send + Sync {
    /// Inserts or replaces points (by `chunk_id`).
    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), VectorError>;
    /// Nearest chunks by cosine similarity, best first, only from `query.tenant`.
    async fn search(&self, query: VectorQuery) -> Result<Vec<VectorHit>, VectorError>;
    /// Removes every point of one manual of one tenant.
    async fn delete_manual(&self, tenant: &str, manual_id: Uuid) -> Result<(), VectorError>;
    /// The stored vectors of these chunks of `tenant` (others' and missing ones left out),
    /// for copying an index to another backend.
    async fn vectors(&self, tenant: &str, ids: &[Uuid]) -> Result<Vec<(Uuid, Vec<f32>)>, VectorError>;
    /// One round trip to the index, for readiness.
    async fn ping(&self) -> Result<(), VectorError>;
}
