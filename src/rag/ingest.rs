//! Ingest: a manual's bytes become cited chunks in the metadata store and vectors in the
//! index, then the tenant's knowledge-base version is bumped so cached retrievals expire.

use uuid::Uuid;

use super::chunk::chunk_pages;
use super::embed::INGEST_BATCH;
use super::extract::{DocumentError, DocumentKind, extract};
use super::{KnowledgeBase, RagError};
use crate::auth::now_secs;
use crate::store::{Chunk, Manual};
use crate::vector::ChunkPoint;

/// Largest manual accepted.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// Upper bound on a chunk's characters: about 120 words, a paragraph or two.
pub const CHUNK_CHARS: usize = 700;

#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub tenant: String,
    pub equipment: String,
    /// Shown in citations; defaults to the file name without its extension.
    pub title: Option<String>,
    pub filename: String,
    pub bytes: Vec<u8>,
}

/// Called after each embedded batch with (chunks embedded, chunks total).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Send + Sync);

impl KnowledgeBase {
    pub async fn ingest(&self, req: IngestRequest, progress: Option<Progress<'_>>) -> Result<Manual, RagError> {
        if req.bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(RagError::TooLarge { size: req.bytes.len(), limit: MAX_DOCUMENT_BYTES });
        }
        let kind = DocumentKind::detect(&req.filename, &req.bytes)?;
        let bytes = req.bytes;
        let pages = tokio::task::spawn_blocking(move || extract(kind, &bytes))
            .await
            .map_err(|e| DocumentError::Invalid(format!("extraction stopped: {e}")))??;
        let drafts = chunk_pages(&pages, CHUNK_CHARS);
        let manual_id = Uuid::new_v4();
        let title = req.title.filter(|t| !t.trim().is_empty()).unwrap_or_else(|| {
            req.filename.rsplit_once('.').map_or(req.filename.as_str(), |(stem, _)| stem).to_string()
        });
        tracing::info!(tenant = %req.tenant, manual = %manual_id, pages = pages.len(), chunks = drafts.len(), "ingesting manual");

        let mut chunks = Vec::with_capacity(drafts.len());
        let mut points = Vec::with_capacity(drafts.len());
        for batch in drafts.chunks(INGEST_BATCH) {
            // Embed with the title in front: a chunk about "head bolts" should match "RTU-40 head bolts".
            let texts = batch.iter().map(|d| format!("{title}: {}", d.text)).collect();
            let vectors = self.embedder.embed_batch(texts).await?;
            for (draft, vector) in batch.iter().zip(vectors) {
                let id = Uuid::new_v4();
                points.push(ChunkPoint {
                    chunk_id: id,
                    tenant: req.tenant.clone(),
                    equipment: req.equipment.clone(),
                    manual_id,
                    page: draft.page,
                    vector,
                });
                chunks.push(Chunk {
                    id,
                    tenant: req.tenant.clone(),
                    manual_id,
                    equipment: req.equipment.clone(),
                    page: draft.page,
                    text: draft.text.clone(),
                });
            }
            if let Some(progress) = progress {
                progress(chunks.len(), drafts.len());
            }
        }
        let manual = Manual {
            id: manual_id,
            tenant: req.tenant.clone(),
            equipment: req.equipment,
            title,
            filename: req.filename,
            pages: pages.last().map_or(0, |p| p.number),
            chunks: chunks.len() as u32,
            created_at: now_secs(),
        };
        // Text first, vectors second: a vector hit always has text to cite.
        self.store.insert_manual(manual.clone(), chunks).await?;
        self.index.upsert(points).await?;
        let version = self.store.bump_kb_version(&req.tenant).await?;
        tracing::info!(tenant = %req.tenant, manual = %manual_id, kb_version = version, "manual ingested");
        Ok(manual)
    }
}
