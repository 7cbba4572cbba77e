//! Retrieval-augmented answering: turning manuals into cited, searchable chunks
//! (extract → chunk → embed → index) and finding the right ones for a question.

pub mod chunk;
pub mod embed;
pub mod evidence;
pub mod ingest;
pub mod jobs;
pub mod retrieve;
pub mod terms;
pub mod vocabulary;

pub use fieldvox_formats::document as extract;
pub use fieldvox_formats::document::DocumentError;

use crate::models::ModelError;
use crate::store::StoreError;
use crate::vector::VectorError;
use crate::workers::PoolError;

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error(transparent)]
    Document(#[from] DocumentError),
    #[error("document is {size} bytes or more; the limit is {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vector(#[from] VectorError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Pool(#[from] PoolError),
}

use std::sync::Arc;

use dashmap::DashMap;

use crate::cache::Cache;
use crate::store::MetadataStore;
use crate::vector::VectorIndex;
use vocabulary::Vocabulary;

/// One tenant-aware knowledge base over the metadata store, the vector index and the embedder.
#[derive(Clone)]
pub struct KnowledgeBase {
    pub store: Arc<dyn MetadataStore>,
    pub index: Arc<dyn VectorIndex>,
    pub embedder: embed::Embedder,
    pub cache: Arc<dyn Cache>,
    /// Each tenant's vocabulary with the knowledge-base version it was read at.
    vocabularies: Arc<DashMap<String, (u64, Arc<Vocabulary>)>>,
}

impl KnowledgeBase {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        index: Arc<dyn VectorIndex>,
        embedder: embed::Embedder,
        cache: Arc<dyn Cache>,
    ) -> Self {
        Self { store, index, embedder, cache, vocabularies: Arc::default() }
    }

    /// The codes printed in the tenant's manuals, read again after every upload or delete.
    pub async fn vocabulary(&self, tenant: &str) -> Result<Arc<Vocabulary>, RagError> {
        let version = self.store.kb_version(tenant).await?;
        if let Some(entry) = self.vocabularies.get(tenant)
            && entry.0 == version
        {
            return Ok(entry.1.clone());
        }
        let vocabulary = Arc::new(Vocabulary::new(self.store.vocabulary(tenant).await?));
        self.vocabularies.insert(tenant.to_string(), (version, vocabulary.clone()));
        Ok(vocabulary)
    }
}
