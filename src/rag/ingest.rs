//! Ingest: a manual's bytes become cited chunks in the metadata store and vectors in the
//! index, as a job whose progress the admin can watch.
//!
//! The manual is written while invisible to readers (state `ingesting`), batch by batch,
//! then published in one step that also retires the version it replaces and bumps the
//! tenant's knowledge-base version (so no cached retrieval outlives it). A job that fails
//! removes what it wrote; one cut short by a crash is failed and cleaned at the next start
//! ([`KnowledgeBase::recover`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::chunk::{ChunkDraft, chunk_pages};
use super::extract::{DocumentError, DocumentKind, extract_paced};
use super::{KnowledgeBase, RagError};
use crate::auth::now_secs;
use crate::error::ErrorCode;
use crate::store::{Chunk, Job, JobState, Manual};
use crate::vector::ChunkPoint;
use crate::workers::live_jobs;

/// Upper bound on a chunk's characters: about 120 words, a paragraph or two.
pub const CHUNK_CHARS: usize = 700;

/// What an upload may be (`[ingest]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest file accepted, in bytes; an upload is cut off (413) at this size.
    pub max_bytes: u64,
    /// Most pages a document may have (413 beyond).
    pub max_pages: u32,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self { max_bytes: 64 * 1024 * 1024, max_pages: 2_000 }
    }
}

/// Who uploads which manual, for which equipment.
#[derive(Debug, Clone)]
pub struct NewManual {
    pub tenant: String,
    pub equipment: String,
    /// Shown in citations; defaults to the file name without its extension. The same
    /// (equipment, title) again is a new version of that manual.
    pub title: Option<String>,
    pub filename: String,
    pub uploaded_by: String,
}

/// Called with the job after each step and each embedded batch.
pub type Progress<'a> = &'a (dyn Fn(&Job) + Send + Sync);

/// Longest an ingest step (a page read, a batch embedded) waits for a moment when no live
/// work is in flight: under constant live load an ingest still moves, a step a second.
const MAX_DEFER: Duration = Duration::from_secs(1);
/// How often a waiting step looks again.
const LIVE_POLL: Duration = Duration::from_millis(10);

/// Whether an ingest step deferred since `deferred` should go on waiting: live work (a
/// transcription, a synthesis, a query) is in flight and it has not waited too long.
fn live_first(deferred: Instant) -> bool {
    live_jobs() > 0 && deferred.elapsed() < MAX_DEFER
}

/// What an upload turned into: a job started, or the identical manual already there.
#[derive(Debug, Clone)]
pub enum Accepted {
    Started { manual: Manual, job: Job },
    Duplicate(Manual),
}

/// A manual that passed the checks made before an upload is accepted, with its type.
#[derive(Debug)]
pub struct Inspected {
    pub kind: DocumentKind,
    pub bytes: Vec<u8>,
}

/// The checks made before an upload is accepted, on the blocking pool (a PDF's structure
/// is parsed): its type from the bytes, its size, and for a PDF that it opens and has no
/// more pages than allowed.
pub async fn inspect(bytes: Vec<u8>, config: &IngestConfig) -> Result<Inspected, RagError> {
    let limits = config.clone();
    tokio::task::spawn_blocking(move || {
        if bytes.is_empty() {
            return Err(DocumentError::Empty.into());
        }
        if bytes.len() as u64 > limits.max_bytes {
            return Err(RagError::TooLarge { size: bytes.len() as u64, limit: limits.max_bytes });
        }
        let kind = DocumentKind::sniff(&bytes)?;
        if kind == DocumentKind::Pdf {
            fieldvox_formats::document::count_pdf_pages(&bytes, limits.max_pages)?;
        }
        Ok(Inspected { kind, bytes })
    })
    .await
    .map_err(|e| DocumentError::Invalid(format!("inspection stopped: {e}")))?
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A job on a shared store that has reported no progress for this long was interrupted
/// (a running ingest saves its progress every page or batch, seconds apart).
pub const SHARED_JOB_STALE_SECS: u64 = 600;

impl KnowledgeBase {
    /// Registers an upload that passed [`inspect`]: the same bytes already live are
    /// returned as they are; otherwise a manual (the next version of its equipment and
    /// title) and its queued job are recorded.
    pub async fn accept(&self, new: NewManual, size: u64, sha256: String) -> Result<Accepted, RagError> {
        if let Some(existing) = self.store.manual_by_sha256(&new.tenant, &sha256).await? {
            return Ok(Accepted::Duplicate(existing));
        }
        let title = new.title.filter(|t| !t.trim().is_empty()).map(|t| t.trim().to_string()).unwrap_or_else(|| {
            new.filename.rsplit_once('.').map_or(new.filename.as_str(), |(stem, _)| stem).to_string()
        });
        let version = self.store.latest_version(&new.tenant, &new.equipment, &title).await? + 1;
        let now = now_secs();
        let manual = Manual {
            id: Uuid::new_v4(),
            tenant: new.tenant,
            equipment: new.equipment,
            title,
            filename: new.filename,
            version,
            pages: 0,
            chunks: 0,
            size,
            sha256,
            uploaded_by: new.uploaded_by,
            blank_pages: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        let job = Job::queued(&manual);
        self.store.begin_manual(&manual, &job).await?;
        Ok(Accepted::Started { manual, job })
    }

    /// Runs an accepted job to its end. On failure nothing of the manual is left and the
    /// job says why.
    pub async fn run_job(
        &self,
        mut manual: Manual,
        mut job: Job,
        document: Inspected,
        config: &IngestConfig,
        progress: Option<Progress<'_>>,
    ) -> Result<Manual, RagError> {
        match self.ingest_steps(&mut manual, &mut job, document, config, progress).await {
            Ok(()) => Ok(manual),
            Err(e) => {
                tracing::warn!(tenant = %manual.tenant, manual = %manual.id, job = %job.id, error = %e, "ingest failed");
                self.discard(&manual.tenant, manual.id).await;
                job.state = JobState::Failed;
                job.error = Some(e.code().as_str().to_string());
                job.message = Some(e.to_string());
                self.report(&mut job, progress).await;
                Err(e)
            }
        }
    }

    async fn ingest_steps(
        &self,
        manual: &mut Manual,
        job: &mut Job,
        document: Inspected,
        config: &IngestConfig,
        progress: Option<Progress<'_>>,
    ) -> Result<(), RagError> {
        job.state = JobState::Extracting;
        self.report(job, progress).await;
        let max_pages = config.max_pages;
        let extracted = tokio::task::spawn_blocking(move || {
            extract_paced(document.kind, &document.bytes, max_pages, &mut || {
                let deferred = Instant::now();
                while live_first(deferred) {
                    std::thread::sleep(LIVE_POLL);
                }
            })
        })
        .await
        .map_err(|e| DocumentError::Invalid(format!("extraction stopped: {e}")))??;
        let drafts = chunk_pages(&extracted.pages, CHUNK_CHARS);
        job.pages = extracted.page_count;
        job.chunks_total = drafts.len() as u32;
        job.state = JobState::Embedding;
        self.report(job, progress).await;
        tracing::info!(
            tenant = %manual.tenant, manual = %manual.id, version = manual.version, pages = extracted.page_count,
            blank_pages = extracted.blank_pages.len(), chunks = drafts.len(), "ingesting manual"
        );

        for batch in drafts.chunks(super::embed::INGEST_BATCH) {
            // A batch takes the cores from speech recognition and synthesis too, not only
            // the embedding worker from queries: it starts between live jobs.
            let deferred = Instant::now();
            while live_first(deferred) {
                tokio::time::sleep(LIVE_POLL).await;
            }
            self.add_batch(manual, batch, job.chunks_done).await?;
            job.chunks_done += batch.len() as u32;
            self.report(job, progress).await;
        }

        job.state = JobState::Indexing;
        self.report(job, progress).await;
        manual.pages = extracted.page_count;
        manual.chunks = drafts.len() as u32;
        manual.blank_pages = extracted.blank_pages;
        manual.updated_at = now_secs();
        let replaced = self.store.publish_manual(manual).await?;
        for old in &replaced {
            // Already invisible (their text is gone); their vectors only take up room.
            if let Err(e) = self.index.delete_manual(&manual.tenant, *old).await {
                tracing::warn!(manual = %old, error = %e, "vectors of a replaced version not removed");
            }
        }
        job.state = JobState::Done;
        self.report(job, progress).await;
        tracing::info!(tenant = %manual.tenant, manual = %manual.id, replaced = replaced.len(), "manual live");
        Ok(())
    }

    /// Embeds one batch in the pool's background lane, then writes its text and vectors.
    async fn add_batch(&self, manual: &Manual, batch: &[ChunkDraft], first: u32) -> Result<(), RagError> {
        // Embedded with the title in front: a chunk about "head bolts" should match "RTU-40 head bolts".
        let texts = batch.iter().map(|d| format!("{}: {}", manual.title, d.text)).collect();
        let vectors = self.embedder.embed_background(texts).await?;
        let mut chunks = Vec::with_capacity(batch.len());
        let mut points = Vec::with_capacity(batch.len());
        for (i, (draft, vector)) in batch.iter().zip(vectors).enumerate() {
            let id = Uuid::new_v4();
            points.push(ChunkPoint {
                chunk_id: id,
                tenant: manual.tenant.clone(),
                equipment: manual.equipment.clone(),
                manual_id: manual.id,
                page: draft.page,
                vector,
            });
            chunks.push(Chunk {
                id,
                tenant: manual.tenant.clone(),
                manual_id: manual.id,
                equipment: manual.equipment.clone(),
                page: draft.page,
                section: draft.section.clone(),
                seq: first + i as u32,
                text: draft.text.clone(),
            });
        }
        // Text first, vectors second: a vector hit always has text to cite.
        self.store.add_chunks(chunks).await?;
        self.index.upsert(points).await?;
        Ok(())
    }

    /// Saves the job's progress and tells the watcher.
    async fn report(&self, job: &mut Job, progress: Option<Progress<'_>>) {
        job.updated_at = now_secs();
        if let Err(e) = self.store.put_job(job).await {
            tracing::warn!(job = %job.id, error = %e, "job progress not saved");
        }
        if let Some(progress) = progress {
            progress(job);
        }
    }

    /// Removes a manual's text, vectors and (when it was live) cached results.
    pub async fn delete_manual(&self, tenant: &str, id: Uuid) -> Result<bool, RagError> {
        let existed = self.store.delete_manual(tenant, id).await?;
        if existed {
            self.index.delete_manual(tenant, id).await?;
            tracing::info!(%tenant, manual = %id, "manual deleted");
        }
        Ok(existed)
    }

    /// Best-effort removal of a failed manual's partial data.
    async fn discard(&self, tenant: &str, id: Uuid) {
        if let Err(e) = self.delete_manual(tenant, id).await {
            tracing::error!(%tenant, manual = %id, error = %e, "partial manual not removed; the next start retries");
        }
    }

    /// At start: jobs a crash or kill cut short are failed, and what they wrote removed.
    /// On a store `shared` with other instances, an unfinished job may be running on one
    /// of them: only jobs silent for [`SHARED_JOB_STALE_SECS`] are taken as interrupted.
    pub async fn recover(&self, shared: bool) -> Result<usize, RagError> {
        let now = now_secs();
        let mut jobs = self.store.unfinished_jobs().await?;
        if shared {
            jobs.retain(|job| job.updated_at + SHARED_JOB_STALE_SECS < now);
        }
        for mut job in jobs.iter().cloned() {
            self.delete_manual(&job.tenant, job.manual_id).await?;
            job.state = JobState::Failed;
            job.error = Some(ErrorCode::Interrupted.as_str().to_string());
            job.message = Some("the server stopped during this ingest; upload the manual again".into());
            job.updated_at = now_secs();
            self.store.put_job(&job).await?;
            tracing::warn!(tenant = %job.tenant, job = %job.id, manual = %job.manual_id, "interrupted ingest failed and removed");
        }
        Ok(jobs.len())
    }

    /// Ingests a whole manual in one call (offline CLI, tests): inspect, accept, run the job.
    pub async fn ingest(
        &self,
        new: NewManual,
        bytes: Vec<u8>,
        config: &IngestConfig,
        progress: Option<Progress<'_>>,
    ) -> Result<Manual, RagError> {
        let document = inspect(bytes, config).await?;
        let (size, sha256) = (document.bytes.len() as u64, sha256_hex(&document.bytes));
        match self.accept(new, size, sha256).await? {
            Accepted::Duplicate(manual) => Ok(manual),
            Accepted::Started { manual, job } => self.run_job(manual, job, document, config, progress).await,
        }
    }
}
