//! The shared metadata store on MongoDB, for several fieldvox instances behind one
//! knowledge base (`[backends] metadata = "mongodb"`).
//!
//! SQLite swaps a manual's versions in one transaction. Here there is none to use (the
//! servers this runs against need not support them), so a version is live only while
//! its series document, one per (tenant, equipment, title), names it `current`:
//! publishing writes the new version completely, moves that one pointer in a single
//! document update (which MongoDB applies atomically), and only then clears the
//! replaced version away. Every read resolves the live set from `series` first, so a
//! reader sees the old version or the new one, never a mix, and a manual still being
//! ingested (named by no series) is invisible to every read. Reads over a whole tenant
//! check the live set again afterwards, so one that raced a publish's clean-up (and
//! found neither version) is read again.
//!
//! Keyword search has no server-side index to lean on (`$text` is not available on every
//! MongoDB-compatible server): each chunk stores its normalised terms with their counts,
//! candidates are fetched by term and ranked here with BM25.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::{Future, IntoFuture};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fieldvox_formats::protocol::{Citation, Timings};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, InsertManyError, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Cursor, Database, IndexModel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Chunk, CitedChunk, Holdings, Job, JobState, KeywordHit, Manual, ManualExport, ManualFilter, MetadataStore,
    StoreError, TurnEntry, TurnFilter, UsageRow,
};
use crate::backends::MongoConfig;

/// The layout this code reads and writes. A database written by a newer fieldvox may
/// hold documents this one would misread, so it refuses to open one.
const SCHEMA_VERSION: i64 = 1;

const LIVE: &str = "live";
const INGESTING: &str = "ingesting";

/// BM25 parameters, the defaults of SQLite's FTS5 `bm25()` that the embedded store uses.
const K1: f64 = 1.2;
const B: f64 = 0.75;

/// Reads of the live set a run of publishes may restart before one is returned as is.
const LIVE_READ_ATTEMPTS: u32 = 3;

/// Chunks per insert when importing: every insert is one round trip bounded by the timeout.
const IMPORT_BATCH: usize = 500;

/// MongoDB's duplicate key error.
const DUPLICATE_KEY: i32 = 11_000;

/// Separates user and day in `usage_key`; a control character no subject or day contains.
const USAGE_SEPARATOR: char = '\u{1f}';

/// A manual version. `state` is `ingesting` until publication; whether a `live` one is
/// readable is decided by `series`, not by this document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ManualDoc {
    #[serde(rename = "_id")]
    id: String,
    tenant: String,
    equipment: String,
    title: String,
    filename: String,
    version: i64,
    pages: i64,
    chunks: i64,
    size: i64,
    sha256: String,
    uploaded_by: String,
    blank_pages: Vec<i64>,
    created_at: i64,
    updated_at: i64,
    state: String,
}

impl ManualDoc {
    fn new(m: &Manual, state: &str) -> Self {
        Self {
            id: m.id.to_string(),
            tenant: m.tenant.clone(),
            equipment: m.equipment.clone(),
            title: m.title.clone(),
            filename: m.filename.clone(),
            version: m.version.into(),
            pages: m.pages.into(),
            chunks: m.chunks.into(),
            size: wide(m.size),
            sha256: m.sha256.clone(),
            uploaded_by: m.uploaded_by.clone(),
            blank_pages: m.blank_pages.iter().map(|&p| p.into()).collect(),
            created_at: wide(m.created_at),
            updated_at: wide(m.updated_at),
            state: state.to_string(),
        }
    }

    fn into_manual(self) -> Result<Manual, StoreError> {
        const C: &str = "manuals";
        Ok(Manual {
            id: uuid(C, &self.id)?,
            version: narrow(C, "version", self.version)?,
            pages: narrow(C, "pages", self.pages)?,
            chunks: narrow(C, "chunks", self.chunks)?,
            size: narrow(C, "size", self.size)?,
            blank_pages: self.blank_pages.into_iter().map(|p| narrow(C, "blank_pages", p)).collect::<Result<_, _>>()?,
            created_at: narrow(C, "created_at", self.created_at)?,
            updated_at: narrow(C, "updated_at", self.updated_at)?,
            tenant: self.tenant,
            equipment: self.equipment,
            title: self.title,
            filename: self.filename,
            sha256: self.sha256,
            uploaded_by: self.uploaded_by,
        })
    }
}

/// The pointer to the live version of one (tenant, equipment, title). It carries what
/// readers need of the live set (title for citations, counts for BM25) so that one
/// query on this small collection answers them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeriesDoc {
    #[serde(rename = "_id")]
    id: String,
    tenant: String,
    equipment: String,
    title: String,
    current: String,
    /// Chunks of the current version, and the terms in them.
    #[serde(default)]
    chunks: i64,
    #[serde(default)]
    terms: i64,
}

/// A chunk as written: its text, and its terms and codes for search and vocabulary.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkDoc {
    #[serde(flatten)]
    row: ChunkRow,
    /// Distinct normalised terms (`rag::terms::terms`), sorted; `tf` holds each one's count.
    terms: Vec<String>,
    tf: Vec<i64>,
    /// All term occurrences: BM25's document length.
    len: i64,
    /// Distinct codes as printed, for the tenant's vocabulary.
    codes: Vec<String>,
}

impl ChunkDoc {
    fn new(c: &Chunk) -> Self {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for term in crate::rag::terms::terms(&c.text) {
            *counts.entry(term).or_default() += 1;
        }
        let len = counts.values().sum();
        let (terms, tf) = counts.into_iter().unzip();
        let codes: BTreeSet<String> = crate::rag::terms::codes(&c.text).into_iter().map(|code| code.printed).collect();
        let row = ChunkRow {
            id: c.id.to_string(),
            tenant: c.tenant.clone(),
            manual_id: c.manual_id.to_string(),
            equipment: c.equipment.clone(),
            page: c.page.into(),
            section: c.section.clone(),
            seq: c.seq.into(),
            text: c.text.clone(),
        };
        Self { row, terms, tf, len, codes: codes.into_iter().collect() }
    }
}

/// A chunk as read back: the search fields stay on the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkRow {
    #[serde(rename = "_id")]
    id: String,
    tenant: String,
    manual_id: String,
    equipment: String,
    page: i64,
    section: String,
    seq: i64,
    text: String,
}

fn chunk_row_projection() -> Document {
    doc! { "_id": 1, "tenant": 1, "manual_id": 1, "equipment": 1, "page": 1, "section": 1, "seq": 1, "text": 1 }
}

impl ChunkRow {
    fn into_chunk(self) -> Result<Chunk, StoreError> {
        const C: &str = "chunks";
        Ok(Chunk {
            id: uuid(C, &self.id)?,
            manual_id: uuid(C, &self.manual_id)?,
            page: narrow(C, "page", self.page)?,
            seq: narrow(C, "seq", self.seq)?,
            tenant: self.tenant,
            equipment: self.equipment,
            section: self.section,
            text: self.text,
        })
    }
}

/// What ranking needs of a candidate chunk.
#[derive(Debug, Deserialize)]
struct ChunkTerms {
    #[serde(rename = "_id")]
    id: String,
    terms: Vec<String>,
    tf: Vec<i64>,
    len: i64,
}

#[derive(Debug, Deserialize)]
struct IdOnly {
    #[serde(rename = "_id")]
    id: String,
}

#[derive(Debug, Deserialize)]
struct VersionOnly {
    version: i64,
}

#[derive(Debug, Deserialize)]
struct TextOnly {
    text: String,
}

#[derive(Debug, Deserialize)]
struct CodesOnly {
    #[serde(default)]
    codes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TenantDoc {
    #[serde(rename = "_id")]
    tenant: String,
    kb_version: i64,
}

/// A job; written field by field (see `put_job`), read whole.
#[derive(Debug, Deserialize)]
struct JobDoc {
    #[serde(rename = "_id")]
    id: String,
    tenant: String,
    manual_id: String,
    state: String,
    pages: i64,
    chunks_done: i64,
    chunks_total: i64,
    error: Option<String>,
    message: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl JobDoc {
    fn into_job(self) -> Result<Job, StoreError> {
        const C: &str = "jobs";
        Ok(Job {
            id: uuid(C, &self.id)?,
            manual_id: uuid(C, &self.manual_id)?,
            // An unknown state (a newer fieldvox wrote it) reads as failed, never as running.
            state: JobState::parse(&self.state).unwrap_or(JobState::Failed),
            pages: narrow(C, "pages", self.pages)?,
            chunks_done: narrow(C, "chunks_done", self.chunks_done)?,
            chunks_total: narrow(C, "chunks_total", self.chunks_total)?,
            created_at: narrow(C, "created_at", self.created_at)?,
            updated_at: narrow(C, "updated_at", self.updated_at)?,
            tenant: self.tenant,
            error: self.error,
            message: self.message,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TurnDoc {
    #[serde(rename = "_id")]
    id: String,
    tenant: String,
    user: String,
    session: String,
    at: i64,
    day: String,
    status: String,
    error: Option<String>,
    transcript: String,
    answer: String,
    citations: Vec<Citation>,
    timings: Timings,
    audio_in_secs: f64,
    audio_out_secs: f64,
    /// User and day in one string: usage groups on a single field, which every
    /// MongoDB-compatible server's `$group` handles (compound keys are not a given).
    usage_key: String,
}

impl TurnDoc {
    fn new(t: &TurnEntry) -> Self {
        Self {
            id: t.id.to_string(),
            tenant: t.tenant.clone(),
            user: t.user.clone(),
            session: t.session.to_string(),
            at: wide(t.at),
            day: t.day.clone(),
            status: t.status.clone(),
            error: t.error.clone(),
            transcript: t.transcript.clone(),
            answer: t.answer.clone(),
            citations: t.citations.clone(),
            timings: t.timings.clone(),
            audio_in_secs: t.audio_in_secs,
            audio_out_secs: t.audio_out_secs,
            usage_key: usage_key(&t.user, &t.day),
        }
    }

    fn into_turn(self) -> Result<TurnEntry, StoreError> {
        const C: &str = "turns";
        Ok(TurnEntry {
            id: uuid(C, &self.id)?,
            session: uuid(C, &self.session)?,
            at: narrow(C, "at", self.at)?,
            tenant: self.tenant,
            user: self.user,
            day: self.day,
            status: self.status,
            error: self.error,
            transcript: self.transcript,
            answer: self.answer,
            citations: self.citations,
            timings: self.timings,
            audio_in_secs: self.audio_in_secs,
            audio_out_secs: self.audio_out_secs,
        })
    }
}

fn usage_key(user: &str, day: &str) -> String {
    format!("{user}{USAGE_SEPARATOR}{day}")
}

/// User and day back from a `usage_key`; the day is split off the end, so a user id
/// with the separator in it still comes back whole.
fn split_usage_key(key: &str) -> Option<(&str, &str)> {
    key.rsplit_once(USAGE_SEPARATOR)
}

/// The `_id` of a series. Hashing length-prefixed parts keeps it short whatever the
/// title, and no two (tenant, equipment, title) share one: ("a:b", "c") is not ("a", "b:c").
fn series_key(tenant: &str, equipment: &str, title: &str) -> String {
    let mut hash = Sha256::new();
    for part in [tenant, equipment, title] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// BSON has no unsigned integers. Unix seconds and byte sizes never near `i64::MAX`;
/// should one, it is clamped rather than wrapped negative.
fn wide(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `usize` count for `limit`, clamped the same way.
fn limit_of(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn malformed(collection: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("malformed document in MongoDB collection `{collection}`: {detail}"))
}

/// An integer field read back into its Rust type; out of range means someone else wrote it.
fn narrow<T: TryFrom<i64>>(collection: &str, field: &str, v: i64) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| malformed(collection, format!("`{field}` = {v} is out of range")))
}

fn uuid(collection: &str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| malformed(collection, format!("`{s}` is not a uuid: {e}")))
}

/// An aggregate's number: servers return sums as 32- or 64-bit integers or doubles.
fn number(value: Option<&Bson>) -> Option<f64> {
    match value? {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(n) => Some(*n),
        _ => None,
    }
}

/// An aggregate's count, whichever numeric type the server chose for it.
fn count(value: Option<&Bson>) -> Option<u64> {
    match value? {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if n.fract() == 0.0 && *n >= 0.0 && *n < u64::MAX as f64 => Some(*n as u64),
        _ => None,
    }
}

/// Every document of a query, for `bounded` to time as one operation.
async fn all<T>(cursor: impl IntoFuture<Output = mongodb::error::Result<Cursor<T>>>) -> mongodb::error::Result<Vec<T>>
where
    T: DeserializeOwned + Unpin + Send + Sync,
{
    cursor.await?.try_collect().await
}

/// Awaits one driver operation for at most `timeout`. Server selection already gives up
/// on a server that is down; this also bounds one that accepted and stopped answering,
/// so a turn fails with an apology instead of hanging. The driver's own result is kept
/// for the callers that look into its error.
async fn answer<T>(
    timeout: Duration,
    what: &str,
    op: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<mongodb::error::Result<T>, StoreError> {
    tokio::time::timeout(timeout, op.into_future())
        .await
        .map_err(|_| StoreError::Unavailable(format!("MongoDB {what}: no answer within {} ms", timeout.as_millis())))
}

async fn bounded<T>(
    timeout: Duration,
    what: &str,
    op: impl IntoFuture<Output = mongodb::error::Result<T>>,
) -> Result<T, StoreError> {
    answer(timeout, what, op).await?.map_err(|e| failed(what, e))
}

fn failed(what: &str, e: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(format!("MongoDB {what}: {e}"))
}

/// Positions of an unordered insert that failed only because those ids exist already.
fn duplicates(e: &mongodb::error::Error) -> Option<Vec<usize>> {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(InsertManyError { write_errors: Some(errors), write_concern_error: None, .. })
            if errors.iter().all(|w| w.code == DUPLICATE_KEY) =>
        {
            Some(errors.iter().map(|w| w.index).collect())
        }
        _ => None,
    }
}

/// An insert of one document whose id exists already.
fn is_duplicate(e: &mongodb::error::Error) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY)
}

fn index(name: &str, keys: Document) -> IndexModel {
    IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_string()).build()).build()
}

/// One index per query shape the store runs, by collection. None names `_id`: lookups
/// by id use the primary index, and a server over SQLite (nx-27017) rejects every write
/// to a collection with `_id` inside a compound index, so ties in a sort are ordered
/// from the index's matches.
fn indexes() -> Vec<(&'static str, Vec<IndexModel>)> {
    vec![
        (
            "manuals",
            vec![
                index("manuals_listing", doc! { "tenant": 1, "state": 1, "created_at": 1 }),
                index("manuals_sha256", doc! { "tenant": 1, "sha256": 1 }),
                index("manuals_series", doc! { "tenant": 1, "equipment": 1, "title": 1, "version": 1 }),
            ],
        ),
        ("series", vec![index("series_current", doc! { "tenant": 1, "current": 1 })]),
        (
            "chunks",
            vec![
                index("chunks_terms", doc! { "tenant": 1, "terms": 1 }),
                index("chunks_page", doc! { "manual_id": 1, "page": 1, "seq": 1 }),
                index("chunks_tenant", doc! { "tenant": 1, "manual_id": 1 }),
            ],
        ),
        ("jobs", vec![index("jobs_state", doc! { "state": 1, "created_at": 1 })]),
        (
            "turns",
            vec![
                index("turns_time", doc! { "tenant": 1, "at": 1 }),
                index("turns_user", doc! { "tenant": 1, "user": 1, "at": 1 }),
            ],
        ),
    ]
}

/// Okapi BM25 over one tenant's live chunks. The idf is Lucene's, which stays positive
/// for a term in most chunks (FTS5's can go negative there), so higher is always better.
#[derive(Debug, Clone, Copy)]
struct Bm25 {
    /// Chunks searched over.
    docs: f64,
    /// Their mean length in terms.
    avgdl: f64,
}

impl Bm25 {
    fn new(docs: u64, total_terms: u64) -> Self {
        let avgdl = if docs > 0 && total_terms > 0 { total_terms as f64 / docs as f64 } else { 1.0 };
        Self { docs: docs as f64, avgdl }
    }

    fn idf(&self, df: u64) -> f64 {
        let df = df as f64;
        (1.0 + (self.docs - df + 0.5) / (df + 0.5)).ln()
    }

    fn term(&self, idf: f64, tf: f64, dl: f64) -> f64 {
        idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * dl / self.avgdl))
    }
}

/// A candidate chunk: id, (term, count) pairs, length in terms.
type Candidate = (String, Vec<(String, u64)>, u64);

/// Ranks candidates, which must be every searched chunk holding any query term (df is
/// counted among them), best first; ties go to the smaller id so pages are stable.
fn rank(query: &[String], candidates: &[Candidate], docs: u64, total_terms: u64, limit: usize) -> Vec<(String, f64)> {
    let query: BTreeSet<&str> = query.iter().map(String::as_str).collect();
    // Counts kept by the server may lag a store written by hand; never fewer than found.
    let bm25 = Bm25::new(docs.max(candidates.len() as u64), total_terms);
    let mut df: HashMap<&str, u64> = HashMap::new();
    for (_, terms, _) in candidates {
        for (term, _) in terms.iter().filter(|(t, _)| query.contains(t.as_str())) {
            *df.entry(term.as_str()).or_default() += 1;
        }
    }
    let idf: HashMap<&str, f64> = df.iter().map(|(&t, &n)| (t, bm25.idf(n))).collect();
    let mut scored: Vec<(String, f64)> = candidates
        .iter()
        .filter_map(|(id, terms, len)| {
            let score: f64 = terms
                .iter()
                .filter_map(|(t, tf)| idf.get(t.as_str()).map(|&idf| bm25.term(idf, *tf as f64, *len as f64)))
                .sum();
            (score > 0.0).then(|| (id.clone(), score))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored.truncate(limit);
    scored
}

/// The live manuals' ids, to tell whether a publish or delete came between two reads.
fn currents(live: &[SeriesDoc]) -> BTreeSet<String> {
    live.iter().map(|s| s.current.clone()).collect()
}

#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    tenants: Collection<TenantDoc>,
    manuals: Collection<ManualDoc>,
    series: Collection<SeriesDoc>,
    chunks: Collection<ChunkDoc>,
    jobs: Collection<JobDoc>,
    turns: Collection<TurnDoc>,
    meta: Collection<Document>,
    timeout: Duration,
    /// Set while the server is unreachable: until then operations fail at once.
    down_until: Arc<Mutex<Option<Instant>>>,
}

/// After the server was found unreachable, operations fail at once for this long instead
/// of each waiting out the timeout: a turn's several reads cost one timeout, not several,
/// before its apology.
const UNREACHABLE_FOR: Duration = Duration::from_secs(1);

/// Whether a driver error means the server could not be reached (not a refused query).
fn unreachable(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        ErrorKind::ServerSelection { .. } | ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }
    )
}

impl MongoStore {
    /// Connects, checks the schema version and makes sure every index exists. Fails
    /// within about `timeout_ms` when no server answers.
    pub async fn connect(config: &MongoConfig) -> Result<Self, StoreError> {
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let mut options = bounded(timeout, "url", ClientOptions::parse(&config.url)).await?;
        options.app_name = Some("fieldvox".into());
        options.max_pool_size = Some(config.max_pool_size);
        options.min_pool_size = Some(config.min_pool_size);
        options.server_selection_timeout = Some(timeout);
        options.connect_timeout = Some(timeout);
        let client = Client::with_options(options).map_err(|e| failed("client options", e))?;
        let db = client.database(&config.database);
        let store = Self {
            tenants: db.collection("tenants"),
            manuals: db.collection("manuals"),
            series: db.collection("series"),
            chunks: db.collection("chunks"),
            jobs: db.collection("jobs"),
            turns: db.collection("turns"),
            meta: db.collection("meta"),
            db,
            timeout,
            down_until: Arc::default(),
        };
        let stored = store.schema_version().await?;
        if stored.is_some_and(|v| v > SCHEMA_VERSION) {
            return Err(StoreError::Unavailable(format!(
                "MongoDB database `{}` has schema version {} but this fieldvox knows only up to {SCHEMA_VERSION}; \
                 upgrade fieldvox (a newer one wrote it)",
                config.database,
                stored.unwrap_or_default()
            )));
        }
        for (collection, models) in indexes() {
            let what = format!("create indexes on {collection}");
            store.run(&what, store.db.collection::<Document>(collection).create_indexes(models)).await?;
        }
        if stored != Some(SCHEMA_VERSION) {
            store
                .run(
                    "update in meta",
                    store
                        .meta
                        .update_one(doc! { "_id": "schema" }, doc! { "$set": { "version": SCHEMA_VERSION } })
                        .upsert(true),
                )
                .await?;
        }
        tracing::info!(database = %config.database, "MongoDB metadata store ready");
        Ok(store)
    }

    async fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        let Some(schema) = self.run("find in meta", self.meta.find_one(doc! { "_id": "schema" })).await? else {
            return Ok(None);
        };
        match schema.get("version") {
            Some(Bson::Int32(v)) => Ok(Some(i64::from(*v))),
            Some(Bson::Int64(v)) => Ok(Some(*v)),
            other => Err(malformed("meta", format!("schema version {other:?}"))),
        }
    }

    async fn run<T>(
        &self,
        what: &str,
        op: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        if self.down_until.lock().map(|d| d.is_some_and(|t| Instant::now() < t)).unwrap_or(false) {
            return Err(StoreError::Unavailable(format!(
                "MongoDB {what}: the server is unreachable; retrying shortly"
            )));
        }
        self.reach(what, op).await
    }

    /// One operation whatever the latch says, setting or clearing it by the outcome.
    async fn reach<T>(
        &self,
        what: &str,
        op: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StoreError> {
        let result = answer(self.timeout, what, op).await;
        let down = match &result {
            Err(_) => true,
            Ok(Err(e)) => unreachable(e),
            Ok(Ok(_)) => false,
        };
        if let Ok(mut latch) = self.down_until.lock() {
            if down && latch.is_none() {
                tracing::warn!(what, "MongoDB unreachable; failing its operations at once until it answers");
            } else if !down && latch.is_some() {
                tracing::info!("MongoDB answers again");
            }
            *latch = down.then(|| Instant::now() + UNREACHABLE_FOR);
        }
        result?.map_err(|e| failed(what, e))
    }

    /// The tenant's live manuals: every series' current version.
    async fn live(&self, tenant: &str) -> Result<Vec<SeriesDoc>, StoreError> {
        self.run("find in series", all(self.series.find(doc! { "tenant": tenant }))).await
    }

    /// Runs a read over the tenant's live manuals and checks that the live set did not
    /// change meanwhile. A publish in between may have cleared the version the read was
    /// looking at before the read got to it (it would find neither version); then it is
    /// read again against the new set. Publishes are rare, so a second try is too.
    async fn read_live<T, F, Fut>(&self, tenant: &str, read: F) -> Result<T, StoreError>
    where
        F: Fn(Vec<SeriesDoc>) -> Fut + Send,
        Fut: Future<Output = Result<T, StoreError>> + Send,
        T: Send,
    {
        let mut live = self.live(tenant).await?;
        let mut attempt = 1;
        loop {
            let before = currents(&live);
            let out = read(live).await?;
            live = self.live(tenant).await?;
            if attempt == LIVE_READ_ATTEMPTS || currents(&live) == before {
                return Ok(out);
            }
            attempt += 1;
        }
    }

    /// Live manuals of one listing page, among `live`.
    async fn list_in(
        &self,
        tenant: &str,
        filter: &ManualFilter,
        live: Vec<SeriesDoc>,
    ) -> Result<Vec<Manual>, StoreError> {
        let live: Vec<String> = live.into_iter().map(|s| s.current).collect();
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let mut query = doc! { "tenant": tenant, "state": LIVE, "_id": { "$in": live } };
        if let Some(equipment) = &filter.equipment {
            query.insert("equipment", equipment);
        }
        if let Some((at, id)) = filter.after {
            let at = wide(at);
            query.insert(
                "$or",
                vec![doc! { "created_at": { "$gt": at } }, doc! { "created_at": at, "_id": { "$gt": id.to_string() } }],
            );
        }
        let find = self.manuals.find(query).sort(doc! { "created_at": 1, "_id": 1 }).limit(limit_of(filter.limit));
        let docs = self.run("find in manuals", all(find)).await?;
        docs.into_iter().map(ManualDoc::into_manual).collect()
    }

    /// Keyword hits among the chunks of `live`.
    async fn search_in(
        &self,
        tenant: &str,
        equipment: Option<&str>,
        terms: &[String],
        limit: usize,
        live: Vec<SeriesDoc>,
    ) -> Result<Vec<KeywordHit>, StoreError> {
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let searched = live.iter().map(|s| u64::try_from(s.chunks).unwrap_or(0)).sum();
        let total_terms = live.iter().map(|s| u64::try_from(s.terms).unwrap_or(0)).sum();
        let manuals: Vec<&String> = live.iter().map(|s| &s.current).collect();
        let wanted: Vec<&String> = terms.iter().collect::<BTreeSet<_>>().into_iter().collect();
        // Every live chunk holding any query term: df counts below are exact.
        let mut query = doc! { "tenant": tenant, "terms": { "$in": wanted }, "manual_id": { "$in": manuals } };
        if let Some(equipment) = equipment {
            query.insert("equipment", equipment);
        }
        let chunks = self.chunks.clone_with_type::<ChunkTerms>();
        let find = chunks.find(query).projection(doc! { "_id": 1, "terms": 1, "tf": 1, "len": 1 });
        let rows = self.run("find in chunks", all(find)).await?;
        let candidates = rows
            .into_iter()
            .map(|row| {
                if row.terms.len() != row.tf.len() {
                    return Err(malformed("chunks", format!("chunk {}: terms and tf differ in length", row.id)));
                }
                let counts = row.terms.into_iter().zip(row.tf.into_iter().map(|n| u64::try_from(n).unwrap_or(0)));
                Ok((row.id, counts.collect(), u64::try_from(row.len).unwrap_or(0)))
            })
            .collect::<Result<Vec<Candidate>, _>>()?;
        rank(terms, &candidates, searched, total_terms, limit)
            .into_iter()
            .map(|(id, score)| Ok(KeywordHit { chunk_id: uuid("chunks", &id)?, score: score as f32 }))
            .collect()
    }

    /// Codes printed in the chunks of `live`, and its equipment ids.
    async fn vocabulary_in(&self, tenant: &str, live: Vec<SeriesDoc>) -> Result<Vec<String>, StoreError> {
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&String> = live.iter().map(|s| &s.current).collect();
        let chunks = self.chunks.clone_with_type::<CodesOnly>();
        let find = chunks
            .find(doc! { "tenant": tenant, "manual_id": { "$in": ids } })
            .projection(doc! { "_id": 0, "codes": 1 });
        let mut vocabulary: BTreeSet<String> = live.iter().map(|s| s.equipment.clone()).collect();
        vocabulary.extend(self.run("find in chunks", all(find)).await?.into_iter().flat_map(|c| c.codes));
        Ok(vocabulary.into_iter().collect())
    }

    async fn is_live(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let filter = doc! { "tenant": tenant, "current": id };
        Ok(self.run("find in series", self.series.find_one(filter)).await?.is_some())
    }

    /// Chunks and terms of a manual as stored, for its series' BM25 statistics.
    async fn totals(&self, tenant: &str, id: &str) -> Result<(i64, i64), StoreError> {
        let pipeline = [
            doc! { "$match": { "tenant": tenant, "manual_id": id } },
            doc! { "$group": { "_id": "$manual_id", "chunks": { "$sum": 1 }, "terms": { "$sum": "$len" } } },
        ];
        let rows = self.run("aggregate over chunks", all(self.chunks.aggregate(pipeline))).await?;
        let Some(row) = rows.first() else { return Ok((0, 0)) };
        match (count(row.get("chunks")), count(row.get("terms"))) {
            (Some(chunks), Some(terms)) => Ok((wide(chunks), wide(terms))),
            _ => Err(malformed("chunks", format!("totals of manual {id}: {row}"))),
        }
    }

    /// Points the manual's series at it, then removes what it replaced: the previous
    /// version, and any version an interrupted publish left behind (live but named by no
    /// series, so already invisible). Returns the removed manuals' ids.
    async fn make_current(&self, m: &Manual) -> Result<Vec<Uuid>, StoreError> {
        let id = m.id.to_string();
        let (chunks, terms) = self.totals(&m.tenant, &id).await?;
        let previous = self
            .run(
                "update in series",
                self.series
                    .find_one_and_update(
                        doc! { "_id": series_key(&m.tenant, &m.equipment, &m.title) },
                        doc! { "$set": {
                            "tenant": &m.tenant, "equipment": &m.equipment, "title": &m.title,
                            "current": &id, "chunks": chunks, "terms": terms,
                        } },
                    )
                    .upsert(true)
                    .return_document(ReturnDocument::Before),
            )
            .await?;
        let mut replaced: BTreeSet<String> = previous.map(|s| s.current).into_iter().filter(|c| *c != id).collect();
        let strays = self
            .run(
                "find in manuals",
                all(self.manuals.clone_with_type::<IdOnly>().find(doc! {
                    "tenant": &m.tenant, "equipment": &m.equipment, "title": &m.title,
                    "state": LIVE, "_id": { "$ne": &id },
                })),
            )
            .await?;
        replaced.extend(strays.into_iter().map(|s| s.id));
        let replaced: Vec<String> = replaced.into_iter().collect();
        self.remove(&m.tenant, &replaced).await?;
        // The ids only tell the caller whose vectors to drop: the new version is live
        // already, so a bad one is logged rather than failing the publish.
        Ok(replaced
            .iter()
            .filter_map(|r| match Uuid::parse_str(r) {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::warn!(manual = %r, error = %e, "replaced manual with a malformed id removed");
                    None
                }
            })
            .collect())
    }

    /// Deletes manuals' chunks, then the manuals: a removal cut short leaves a manual
    /// document to find and delete again, never chunks that no manual accounts for.
    async fn remove(&self, tenant: &str, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let chunks = doc! { "tenant": tenant, "manual_id": { "$in": ids } };
        self.run("delete from chunks", self.chunks.delete_many(chunks)).await?;
        let manuals = doc! { "tenant": tenant, "_id": { "$in": ids } };
        Ok(self.run("delete from manuals", self.manuals.delete_many(manuals)).await?.deleted_count)
    }

    /// Writes an imported manual's chunks so that, when the same manual is live already,
    /// readers never see it with chunks missing: ones already there are replaced in place.
    async fn write_chunks(&self, tenant: &str, manual_id: &str, chunks: &[Chunk]) -> Result<(), StoreError> {
        let ids: Vec<String> = chunks.iter().map(|c| c.id.to_string()).collect();
        let gone = doc! { "tenant": tenant, "manual_id": manual_id, "_id": { "$nin": &ids } };
        self.run("delete from chunks", self.chunks.delete_many(gone)).await?;
        for batch in chunks.chunks(IMPORT_BATCH) {
            let docs: Vec<ChunkDoc> = batch.iter().map(ChunkDoc::new).collect();
            let inserted =
                answer(self.timeout, "insert into chunks", self.chunks.insert_many(&docs).ordered(false)).await?;
            let Err(e) = inserted else { continue };
            let Some(existing) = duplicates(&e) else { return Err(failed("insert into chunks", e)) };
            for doc in existing.into_iter().filter_map(|i| docs.get(i)) {
                // Scoped to the tenant: another tenant's chunk with this id fails the upsert.
                let filter = doc! { "_id": &doc.row.id, "tenant": &doc.row.tenant };
                self.run("replace in chunks", self.chunks.replace_one(filter, doc).upsert(true)).await?;
            }
        }
        Ok(())
    }

    async fn write_job(&self, job: &Job) -> Result<(), StoreError> {
        // Tenant, manual and creation time are the job's identity: set once, like SQLite's upsert.
        let update = doc! {
            "$set": {
                "state": job.state.as_str(),
                "pages": i64::from(job.pages),
                "chunks_done": i64::from(job.chunks_done),
                "chunks_total": i64::from(job.chunks_total),
                "error": job.error.as_deref(),
                "message": job.message.as_deref(),
                "updated_at": wide(job.updated_at),
            },
            "$setOnInsert": {
                "tenant": &job.tenant,
                "manual_id": job.manual_id.to_string(),
                "created_at": wide(job.created_at),
            },
        };
        let filter = doc! { "_id": job.id.to_string() };
        self.run("upsert into jobs", self.jobs.update_one(filter, update).upsert(true)).await?;
        Ok(())
    }

    /// Distinct values of a string field, through `$group` on that one field.
    async fn distinct_strings<T: Send + Sync>(
        &self,
        collection: &Collection<T>,
        field: &str,
    ) -> Result<Vec<String>, StoreError> {
        let name = collection.name();
        let pipeline = [doc! { "$group": { "_id": format!("${field}") } }];
        let rows = self.run(&format!("aggregate over {name}"), all(collection.aggregate(pipeline))).await?;
        rows.iter()
            .map(|row| match row.get("_id") {
                Some(Bson::String(s)) => Ok(s.clone()),
                other => Err(malformed(name, format!("`{field}` {other:?}"))),
            })
            .collect()
    }
}

#[async_trait]
impl MetadataStore for MongoStore {
    async fn begin_manual(&self, manual: &Manual, job: &Job) -> Result<(), StoreError> {
        self.run("insert into manuals", self.manuals.insert_one(ManualDoc::new(manual, INGESTING))).await?;
        self.write_job(job).await
    }

    async fn add_chunks(&self, chunks: Vec<Chunk>) -> Result<(), StoreError> {
        if chunks.is_empty() {
            return Ok(());
        }
        let docs: Vec<ChunkDoc> = chunks.iter().map(ChunkDoc::new).collect();
        self.run("insert into chunks", self.chunks.insert_many(docs).ordered(false)).await?;
        Ok(())
    }

    async fn publish_manual(&self, manual: &Manual) -> Result<Vec<Uuid>, StoreError> {
        let id = manual.id.to_string();
        let update = doc! { "$set": {
            "state": LIVE,
            "pages": i64::from(manual.pages),
            "chunks": i64::from(manual.chunks),
            "blank_pages": manual.blank_pages.iter().map(|&p| i64::from(p)).collect::<Vec<_>>(),
            "updated_at": wide(manual.updated_at),
        } };
        let filter = doc! { "_id": &id, "tenant": &manual.tenant };
        let written = self.run("update in manuals", self.manuals.update_one(filter, update)).await?;
        if written.matched_count == 0 {
            // Deleted while it was ingested: a series pointing at nothing would hide the
            // version it replaces, so nothing is switched.
            return Err(StoreError::Unavailable(format!(
                "manual {id} of tenant {} is gone from MongoDB; not published",
                manual.tenant
            )));
        }
        let replaced = self.make_current(manual).await?;
        self.bump_kb_version(&manual.tenant).await?;
        Ok(replaced)
    }

    async fn delete_manual(&self, tenant: &str, id: Uuid) -> Result<bool, StoreError> {
        let id = id.to_string();
        // Unlisted first, so it vanishes from every read at once, then cleared away.
        let series = doc! { "tenant": tenant, "current": &id };
        let unlisted = self.run("delete from series", self.series.delete_many(series)).await?.deleted_count > 0;
        let removed = self.remove(tenant, std::slice::from_ref(&id)).await? > 0;
        if unlisted {
            self.bump_kb_version(tenant).await?;
        }
        Ok(unlisted || removed)
    }

    async fn manual(&self, tenant: &str, id: Uuid) -> Result<Option<Manual>, StoreError> {
        let id = id.to_string();
        if !self.is_live(tenant, &id).await? {
            return Ok(None);
        }
        let found = self.run("find in manuals", self.manuals.find_one(doc! { "_id": &id, "tenant": tenant })).await?;
        found.map(ManualDoc::into_manual).transpose()
    }

    async fn manual_by_sha256(&self, tenant: &str, sha256: &str) -> Result<Option<Manual>, StoreError> {
        let live: Vec<String> = self.live(tenant).await?.into_iter().map(|s| s.current).collect();
        if live.is_empty() {
            return Ok(None);
        }
        let filter = doc! { "tenant": tenant, "sha256": sha256, "_id": { "$in": live } };
        let found = self.run("find in manuals", self.manuals.find_one(filter)).await?;
        found.map(ManualDoc::into_manual).transpose()
    }

    async fn latest_version(&self, tenant: &str, equipment: &str, title: &str) -> Result<u32, StoreError> {
        let filter = doc! { "tenant": tenant, "equipment": equipment, "title": title };
        let latest = self
            .run(
                "find in manuals",
                self.manuals
                    .clone_with_type::<VersionOnly>()
                    .find_one(filter)
                    .projection(doc! { "_id": 0, "version": 1 })
                    .sort(doc! { "version": -1 }),
            )
            .await?;
        latest.map_or(Ok(0), |l| narrow("manuals", "version", l.version))
    }

    async fn list_manuals(&self, tenant: &str, filter: &ManualFilter) -> Result<Vec<Manual>, StoreError> {
        if filter.limit == 0 {
            return Ok(Vec::new());
        }
        self.read_live(tenant, move |live| self.list_in(tenant, filter, live)).await
    }

    async fn page_text(&self, tenant: &str, manual: Uuid, page: u32) -> Result<Vec<String>, StoreError> {
        let manual = manual.to_string();
        if !self.is_live(tenant, &manual).await? {
            return Ok(Vec::new());
        }
        let chunks = self.chunks.clone_with_type::<TextOnly>();
        let find = chunks
            .find(doc! { "manual_id": &manual, "tenant": tenant, "page": i64::from(page) })
            .projection(doc! { "_id": 0, "text": 1 })
            .sort(doc! { "seq": 1 });
        Ok(self.run("find in chunks", all(find)).await?.into_iter().map(|t| t.text).collect())
    }

    async fn equipment(&self, tenant: &str) -> Result<Vec<(String, u32)>, StoreError> {
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        for series in self.live(tenant).await? {
            *counts.entry(series.equipment).or_default() += 1;
        }
        Ok(counts.into_iter().collect())
    }

    async fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        self.write_job(job).await
    }

    async fn job(&self, tenant: &str, id: Uuid) -> Result<Option<Job>, StoreError> {
        let filter = doc! { "_id": id.to_string(), "tenant": tenant };
        let found = self.run("find in jobs", self.jobs.find_one(filter)).await?;
        found.map(JobDoc::into_job).transpose()
    }

    async fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let finished = [JobState::Done.as_str(), JobState::Failed.as_str()];
        let find = self.jobs.find(doc! { "state": { "$nin": finished.to_vec() } }).sort(doc! { "created_at": 1 });
        let docs = self.run("find in jobs", all(find)).await?;
        docs.into_iter().map(JobDoc::into_job).collect()
    }

    async fn holdings(&self, tenant: &str) -> Result<Holdings, StoreError> {
        let manuals = self.run("count in manuals", self.manuals.count_documents(doc! { "tenant": tenant })).await?;
        let chunks = self.run("count in chunks", self.chunks.count_documents(doc! { "tenant": tenant })).await?;
        Ok(Holdings { manuals, chunks })
    }

    async fn chunks(&self, tenant: &str, ids: &[Uuid]) -> Result<Vec<CitedChunk>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let titles: HashMap<String, String> =
            self.live(tenant).await?.into_iter().map(|s| (s.current, s.title)).collect();
        if titles.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let live: Vec<&String> = titles.keys().collect();
        let chunks = self.chunks.clone_with_type::<ChunkRow>();
        let find = chunks
            .find(doc! { "_id": { "$in": &wanted }, "tenant": tenant, "manual_id": { "$in": live } })
            .projection(chunk_row_projection());
        let mut found: HashMap<String, CitedChunk> = HashMap::new();
        for row in self.run("find in chunks", all(find)).await? {
            let Some(title) = titles.get(&row.manual_id) else { continue };
            let manual_title = title.clone();
            found.insert(row.id.clone(), CitedChunk { chunk: row.into_chunk()?, manual_title });
        }
        Ok(wanted.iter().filter_map(|id| found.get(id).cloned()).collect())
    }

    async fn keyword_search(
        &self,
        tenant: &str,
        equipment: Option<&str>,
        terms: &[String],
        limit: usize,
    ) -> Result<Vec<KeywordHit>, StoreError> {
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.read_live(tenant, move |live| self.search_in(tenant, equipment, terms, limit, live)).await
    }

    async fn vocabulary(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        self.read_live(tenant, move |live| self.vocabulary_in(tenant, live)).await
    }

    async fn kb_version(&self, tenant: &str) -> Result<u64, StoreError> {
        let found = self.run("find in tenants", self.tenants.find_one(doc! { "_id": tenant })).await?;
        found.map_or(Ok(0), |t| narrow("tenants", "kb_version", t.kb_version))
    }

    async fn bump_kb_version(&self, tenant: &str) -> Result<u64, StoreError> {
        let bumped = self
            .run(
                "update in tenants",
                self.tenants
                    .find_one_and_update(doc! { "_id": tenant }, doc! { "$inc": { "kb_version": 1_i64 } })
                    .upsert(true)
                    .return_document(ReturnDocument::After),
            )
            .await?;
        let bumped = bumped.ok_or_else(|| malformed("tenants", format!("no document for {tenant} after an upsert")))?;
        narrow("tenants", "kb_version", bumped.kb_version)
    }

    async fn record_turn(&self, turn: &TurnEntry) -> Result<(), StoreError> {
        self.run("insert into turns", self.turns.insert_one(TurnDoc::new(turn))).await?;
        Ok(())
    }

    async fn turns(&self, tenant: &str, filter: &TurnFilter) -> Result<Vec<TurnEntry>, StoreError> {
        if filter.limit == 0 {
            return Ok(Vec::new());
        }
        let mut query = doc! { "tenant": tenant };
        if let Some(user) = &filter.user {
            query.insert("user", user);
        }
        let mut at = Document::new();
        if let Some(since) = filter.since {
            at.insert("$gte", wide(since));
        }
        if let Some(until) = filter.until {
            at.insert("$lt", wide(until));
        }
        if !at.is_empty() {
            query.insert("at", at);
        }
        if let Some((at, id)) = filter.before {
            let at = wide(at);
            query
                .insert("$or", vec![doc! { "at": { "$lt": at } }, doc! { "at": at, "_id": { "$lt": id.to_string() } }]);
        }
        let find = self.turns.find(query).sort(doc! { "at": -1, "_id": -1 }).limit(limit_of(filter.limit));
        let docs = self.run("find in turns", all(find)).await?;
        docs.into_iter().map(TurnDoc::into_turn).collect()
    }

    async fn usage(&self, tenant: &str, since: u64, until: u64) -> Result<Vec<UsageRow>, StoreError> {
        let pipeline = [
            doc! { "$match": { "tenant": tenant, "at": { "$gte": wide(since), "$lt": wide(until) } } },
            doc! { "$group": {
                "_id": "$usage_key",
                "turns": { "$sum": 1 },
                "audio_in_secs": { "$sum": "$audio_in_secs" },
                "audio_out_secs": { "$sum": "$audio_out_secs" },
            } },
        ];
        let groups = self.run("aggregate over turns", all(self.turns.aggregate(pipeline))).await?;
        let mut rows = groups
            .iter()
            .map(|g| {
                let key = g.get_str("_id").ok().and_then(split_usage_key);
                match (key, count(g.get("turns")), number(g.get("audio_in_secs")), number(g.get("audio_out_secs"))) {
                    (Some((user, day)), Some(turns), Some(audio_in_secs), Some(audio_out_secs)) => Ok(UsageRow {
                        user: user.to_string(),
                        day: day.to_string(),
                        turns,
                        audio_in_secs,
                        audio_out_secs,
                    }),
                    _ => Err(malformed("turns", format!("usage group {g}"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        rows.sort_by(|a, b| (&a.user, &a.day).cmp(&(&b.user, &b.day)));
        Ok(rows)
    }

    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut tenants: BTreeSet<String> = self.distinct_strings(&self.series, "tenant").await?.into_iter().collect();
        tenants.extend(self.distinct_strings(&self.turns, "tenant").await?);
        Ok(tenants.into_iter().collect())
    }

    async fn export_manual(&self, tenant: &str, id: Uuid) -> Result<Option<ManualExport>, StoreError> {
        let Some(manual) = self.manual(tenant, id).await? else { return Ok(None) };
        let chunks = self.chunks.clone_with_type::<ChunkRow>();
        let find = chunks
            .find(doc! { "manual_id": id.to_string(), "tenant": tenant })
            .projection(chunk_row_projection())
            .sort(doc! { "seq": 1, "page": 1 });
        let rows = self.run("find in chunks", all(find)).await?;
        let chunks = rows.into_iter().map(ChunkRow::into_chunk).collect::<Result<_, _>>()?;
        Ok(Some(ManualExport { manual, chunks }))
    }

    async fn import_manual(&self, export: &ManualExport) -> Result<(), StoreError> {
        let m = &export.manual;
        let id = m.id.to_string();
        let key = series_key(&m.tenant, &m.equipment, &m.title);
        // The same id once imported under another name keeps no second pointer to it.
        let elsewhere = doc! { "tenant": &m.tenant, "current": &id, "_id": { "$ne": &key } };
        self.run("delete from series", self.series.delete_many(elsewhere)).await?;
        // Scoped to the tenant, as SQLite's insert: another tenant's manual with this id
        // fails the upsert on its duplicate `_id` rather than being overwritten.
        let filter = doc! { "_id": &id, "tenant": &m.tenant };
        let written = ManualDoc::new(m, LIVE);
        self.run("replace in manuals", self.manuals.replace_one(filter, written).upsert(true)).await?;
        self.write_chunks(&m.tenant, &id, &export.chunks).await?;
        let displaced = self.make_current(m).await?;
        if !displaced.is_empty() {
            // As a publish would; their vectors, if this store's index had any, stay behind.
            tracing::info!(tenant = %m.tenant, manual = %id, ?displaced, "import replaced other versions");
        }
        self.bump_kb_version(&m.tenant).await?;
        Ok(())
    }

    async fn import_turn(&self, turn: &TurnEntry) -> Result<(), StoreError> {
        // The turn recorded first is kept, as SQLite's `INSERT OR IGNORE`.
        match answer(self.timeout, "insert into turns", self.turns.insert_one(TurnDoc::new(turn))).await? {
            Err(e) if !is_duplicate(&e) => Err(failed("insert into turns", e)),
            _ => Ok(()),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Readiness asks the server itself, latch or not.
        self.reach("ping", self.db.run_command(doc! { "ping": 1 })).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(id: &str, terms: &[(&str, u64)]) -> Candidate {
        let len = terms.iter().map(|(_, n)| n).sum();
        (id.into(), terms.iter().map(|(t, n)| (t.to_string(), *n)).collect(), len)
    }

    fn query(terms: &[&str]) -> Vec<String> {
        terms.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn series_keys_do_not_collide_across_part_boundaries() {
        assert_ne!(series_key("a:b", "c", "d"), series_key("a", "b:c", "d"));
        assert_ne!(series_key("ab", "", "c"), series_key("a", "b", "c"));
        assert_eq!(series_key("acme", "RTU-40", "Manual"), series_key("acme", "RTU-40", "Manual"));
        assert_eq!(series_key("acme", "RTU-40", &"x".repeat(10_000)).len(), 64, "short whatever the title");
    }

    #[test]
    fn rarer_terms_and_more_occurrences_rank_higher() {
        let candidates = vec![
            candidate("common", &[("bolt", 1), ("head", 1), ("torque", 1)]),
            candidate("rare", &[("e47", 1), ("fault", 1), ("code", 1)]),
            candidate("twice", &[("bolt", 2), ("head", 1)]),
        ];
        let ranked = rank(&query(&["bolt", "e47"]), &candidates, 100, 300, 10);
        let score = |id: &str| ranked.iter().find(|(c, _)| c == id).map_or(0.0, |(_, s)| *s);
        // Same length and count: the term in fewer chunks (e47, in 1) beats bolt (in 2).
        assert!(score("rare") > score("common"), "{ranked:?}");
        // Same term and length: two occurrences beat one.
        assert!(score("twice") > score("common"), "{ranked:?}");
        assert_eq!(ranked.last().map(|(id, _)| id.as_str()), Some("common"));
        assert!(ranked.iter().all(|(_, score)| *score > 0.0), "{ranked:?}");
    }

    #[test]
    fn shorter_chunks_win_ties_of_term_frequency_and_limit_truncates() {
        let candidates = vec![
            candidate("long", &[("valve", 1), ("a", 20)]),
            candidate("short", &[("valve", 1), ("b", 2)]),
            candidate("mid", &[("valve", 1), ("c", 8)]),
        ];
        let ranked = rank(&query(&["valve"]), &candidates, 3, 34, 2);
        let ids: Vec<&str> = ranked.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["short", "mid"]);
    }

    #[test]
    fn a_term_in_every_chunk_still_scores_above_zero() {
        let candidates = vec![candidate("x", &[("oil", 1)]), candidate("y", &[("oil", 3)])];
        let ranked = rank(&query(&["oil", "oil"]), &candidates, 2, 4, 10);
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0].0, "y");
        assert!(ranked[1].1 > 0.0);
        assert!(rank(&query(&["gas"]), &candidates, 2, 4, 10).is_empty(), "no shared term, no hit");
    }

    #[test]
    fn idf_matches_the_lucene_formula() {
        let bm25 = Bm25::new(10, 50);
        assert!((bm25.idf(1) - (1.0_f64 + 9.5 / 1.5).ln()).abs() < 1e-12);
        assert!((bm25.avgdl - 5.0).abs() < 1e-12);
        assert!(Bm25::new(0, 0).avgdl > 0.0, "an empty tenant divides by nothing");
    }

    #[test]
    fn usage_keys_split_back_into_user_and_day() {
        assert_eq!(split_usage_key(&usage_key("tech-1", "2025-01-02")), Some(("tech-1", "2025-01-02")));
        let odd = format!("a{USAGE_SEPARATOR}b");
        assert_eq!(split_usage_key(&usage_key(&odd, "2025-01-02")), Some((odd.as_str(), "2025-01-02")));
    }

    #[test]
    fn documents_hold_what_sqlite_rows_hold() {
        let manual = Manual {
            id: Uuid::new_v4(),
            tenant: "acme".into(),
            equipment: "RTU-40".into(),
            title: "RTU-40 Service Manual".into(),
            filename: "rtu40.pdf".into(),
            version: 3,
            pages: 12,
            chunks: 40,
            size: u64::from(u32::MAX) + 7,
            sha256: "ab".into(),
            uploaded_by: "admin-1".into(),
            blank_pages: vec![1, 7],
            created_at: 1_700_000_000,
            updated_at: 1_700_000_100,
        };
        assert_eq!(ManualDoc::new(&manual, LIVE).into_manual().unwrap(), manual);
        let mut negative = ManualDoc::new(&manual, LIVE);
        negative.pages = -1;
        assert!(negative.into_manual().is_err(), "out of range is malformed, not wrapped");
        assert_eq!(wide(u64::MAX), i64::MAX);

        let chunk = Chunk {
            id: Uuid::new_v4(),
            tenant: "acme".into(),
            manual_id: manual.id,
            equipment: "RTU-40".into(),
            page: 2,
            section: "Compressor".into(),
            seq: 5,
            text: "Fault E47: check filter HX-FLT-0440. Filters clog; filter E47 again.".into(),
        };
        let written = ChunkDoc::new(&chunk);
        assert_eq!(written.codes, ["E47", "HX-FLT-0440"]);
        assert_eq!(written.terms.len(), written.tf.len());
        assert_eq!(written.len, crate::rag::terms::terms(&chunk.text).len() as i64);
        let filter = written.terms.iter().position(|t| t == "filter").map(|i| written.tf[i]);
        assert_eq!(filter, Some(3), "'filter', 'Filters' and 'filter' are one term");
    }
}
