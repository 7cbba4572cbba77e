//! Metadata: tenants' manuals, their chunks (text + page), ingest jobs, and each tenant's
//! knowledge-base version. SQLite is the embedded default; MongoDB plugs in behind
//! the same trait. Every read names the tenant. The store also keeps the keyword index
//! over chunk text and each tenant's vocabulary of printed codes.
//!
//! A manual is written while it is `ingesting` (its chunks invisible to every read) and
//! becomes `live` in one step that also removes the version it replaces: a reader sees
//! the old version or the new one, never a mix and never neither.

pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use fieldvox_formats::protocol::{Citation, Timings};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Manual {
    pub id: Uuid,
    pub tenant: String,
    pub equipment: String,
    pub title: String,
    pub filename: String,
    /// 1 for the first upload of an (equipment, title); each re-upload adds one.
    pub version: u32,
    pub pages: u32,
    pub chunks: u32,
    /// Bytes of the uploaded file.
    pub size: u64,
    /// Hex sha256 of the uploaded file: the same bytes again are not ingested twice.
    pub sha256: String,
    /// The subject of the token that uploaded it.
    pub uploaded_by: String,
    /// Pages that had no text layer (scanned images): nothing on them can be cited.
    pub blank_pages: Vec<u32>,
    /// Unix seconds: upload accepted, and ingest finished.
    pub created_at: u64,
    pub updated_at: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub id: Uuid,
    pub tenant: String,
    pub manual_id: Uuid,
    pub equipment: String,
    pub page: u32,
    /// The headings above it, outermost first.
    pub section: String,
    /// Position in the manual, for reading a page back in order.
    pub seq: u32,
    pub text: String,
}

/// Where an ingest job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Extracting,
    Embedding,
    Indexing,
    Done,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Extracting => "extracting",
            JobState::Embedding => "embedding",
            JobState::Indexing => "indexing",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Extracting, Self::Embedding, Self::Indexing, Self::Done, Self::Failed]
            .into_iter()
            .find(|state| state.as_str() == s)
    }

    /// Done or failed: nothing more will happen to the job.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

/// One upload's ingest, as the admin watches it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant: String,
    pub manual_id: Uuid,
    pub state: JobState,
    /// Pages in the document (known after extraction).
    pub pages: u32,
    pub chunks_done: u32,
    pub chunks_total: u32,
    /// Stable error code of a failed job.
    pub error: Option<String>,
    pub message: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl Job {
    /// The job of a manual just accepted.
    pub fn queued(manual: &Manual) -> Self {
        Self {
            id: Uuid::new_v4(),
            tenant: manual.tenant.clone(),
            manual_id: manual.id,
            state: JobState::Queued,
            pages: 0,
            chunks_done: 0,
            chunks_total: 0,
            error: None,
            message: None,
            created_at: manual.created_at,
            updated_at: manual.created_at,
        }
    }
}

/// Which live manuals a listing returns: one page, after the previous page's last.
#[derive(Debug, Clone, Default)]
pub struct ManualFilter {
    pub equipment: Option<String>,
    /// `(created_at, id)` of the last manual of the previous page.
    pub after: Option<(u64, Uuid)>,
    pub limit: usize,
}

/// Rows a tenant holds, whatever their state (for checks that nothing was left behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holdings {
    pub manuals: u64,
    pub chunks: u64,
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

/// One finished turn, as admins review it and usage is counted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TurnEntry {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant: String,
    /// Subject of the token that asked.
    pub user: String,
    pub session: Uuid,
    /// Unix seconds when it ended.
    pub at: u64,
    /// UTC day of `at`, `YYYY-MM-DD` (usage is counted per day).
    pub day: String,
    /// `completed`, `cancelled` or `failed`.
    pub status: String,
    /// Stable error code of a failed turn.
    pub error: Option<String>,
    pub transcript: String,
    pub answer: String,
    #[schema(value_type = Vec<Object>)]
    pub citations: Vec<Citation>,
    #[schema(value_type = Object)]
    pub timings: Timings,
    /// Seconds of the user's speech, and of answer audio sent.
    pub audio_in_secs: f64,
    pub audio_out_secs: f64,
}

impl TurnEntry {
    /// The UTC calendar day of a unix time, `YYYY-MM-DD`.
    pub fn day_of(unix_secs: u64) -> String {
        // Civil-from-days (proleptic Gregorian), valid for every unix day.
        let z = (unix_secs / 86_400) as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// Which turns a review lists: newest first, one page before the previous page's last.
#[derive(Debug, Clone, Default)]
pub struct TurnFilter {
    pub user: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<u64>,
    /// Unix seconds, exclusive.
    pub until: Option<u64>,
    /// `(at, id)` of the last turn of the previous page.
    pub before: Option<(u64, Uuid)>,
    pub limit: usize,
}

/// One user's use on one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct UsageRow {
    pub user: String,
    pub day: String,
    pub turns: u64,
    pub audio_in_secs: f64,
    pub audio_out_secs: f64,
}

/// Everything of one manual, for copying a knowledge base to another store.
#[derive(Debug, Clone)]
pub struct ManualExport {
    pub manual: Manual,
    pub chunks: Vec<Chunk>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait MetadataStore: Send + Sync {
    /// Records a manual being ingested (invisible to readers) and its job.
    async fn begin_manual(&self, manual: &Manual, job: &Job) -> Result<(), StoreError>;
    /// Adds chunks to a manual being ingested.
    async fn add_chunks(&self, chunks: Vec<Chunk>) -> Result<(), StoreError>;
    /// Makes an ingested manual live with its final counts, removes the live manuals it
    /// replaces (same tenant, equipment and title) and bumps the tenant's knowledge-base
    /// version, in one transaction. Returns the replaced manuals' ids.
    async fn publish_manual(&self, manual: &Manual) -> Result<Vec<Uuid>, StoreError>;
    /// Removes a manual in any state with its chunks, keyword index and codes; bumps the
    /// knowledge-base version when it was live. False when the tenant has no such manual.
    async fn delete_manual(&self, tenant: &str, id: Uuid) -> Result<bool, StoreError>;
    /// A live manual.
    async fn manual(&self, tenant: &str, id: Uuid) -> Result<Option<Manual>, StoreError>;
    /// The live manual with these bytes, if any.
    async fn manual_by_sha256(&self, tenant: &str, sha256: &str) -> Result<Option<Manual>, StoreError>;
    /// The highest version of (equipment, title) ever started, 0 if none.
    async fn latest_version(&self, tenant: &str, equipment: &str, title: &str) -> Result<u32, StoreError>;
    /// Live manuals in upload order.
    async fn list_manuals(&self, tenant: &str, filter: &ManualFilter) -> Result<Vec<Manual>, StoreError>;
    /// The text of one page of a live manual, chunk by chunk in order; empty if none.
    async fn page_text(&self, tenant: &str, manual: Uuid, page: u32) -> Result<Vec<String>, StoreError>;
    /// Equipment ids with their count of live manuals.
    async fn equipment(&self, tenant: &str) -> Result<Vec<(String, u32)>, StoreError>;
    /// Saves a job's progress.
    async fn put_job(&self, job: &Job) -> Result<(), StoreError>;
    async fn job(&self, tenant: &str, id: Uuid) -> Result<Option<Job>, StoreError>;
    /// Jobs of every tenant that are neither done nor failed (interrupted by a restart).
    async fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// Manuals and chunks the tenant holds in any state.
    async fn holdings(&self, tenant: &str) -> Result<Holdings, StoreError>;
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
    /// Records a finished turn.
    async fn record_turn(&self, turn: &TurnEntry) -> Result<(), StoreError>;
    /// The tenant's turns, newest first.
    async fn turns(&self, tenant: &str, filter: &TurnFilter) -> Result<Vec<TurnEntry>, StoreError>;
    /// The tenant's use per user and UTC day in `[since, until)` (unix seconds), by user then day.
    async fn usage(&self, tenant: &str, since: u64, until: u64) -> Result<Vec<UsageRow>, StoreError>;
    /// Every tenant that holds a live manual or a turn.
    async fn tenants(&self) -> Result<Vec<String>, StoreError>;
    /// A live manual with all its chunks in order, for migration.
    async fn export_manual(&self, tenant: &str, id: Uuid) -> Result<Option<ManualExport>, StoreError>;
    /// Writes a manual with its chunks as live, as exported elsewhere (same ids, same
    /// version); replaces a manual with that id. Bumps the knowledge-base version.
    async fn import_manual(&self, export: &ManualExport) -> Result<(), StoreError>;
    /// Writes a turn as recorded elsewhere; the same id again is not duplicated.
    async fn import_turn(&self, turn: &TurnEntry) -> Result<(), StoreError>;
    /// One round trip to the store, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
}
