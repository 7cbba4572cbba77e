//! The embedded metadata store: one SQLite file, accessed off the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{
    Chunk, CitedChunk, Holdings, Job, JobState, KeywordHit, Manual, ManualExport, ManualFilter, MetadataStore,
    StoreError, TurnEntry, TurnFilter, UsageRow,
};

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS tenants (
    tenant TEXT PRIMARY KEY,
    kb_version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS manuals (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    equipment TEXT NOT NULL,
    title TEXT NOT NULL,
    filename TEXT NOT NULL,
    pages INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS manuals_tenant ON manuals (tenant);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    manual_id TEXT NOT NULL REFERENCES manuals (id) ON DELETE CASCADE,
    equipment TEXT NOT NULL,
    page INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_tenant ON chunks (tenant, id);
CREATE INDEX IF NOT EXISTS chunks_manual ON chunks (manual_id, page);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    manual_id TEXT NOT NULL,
    state TEXT NOT NULL,
    pages INTEGER NOT NULL,
    chunks_done INTEGER NOT NULL,
    chunks_total INTEGER NOT NULL,
    error TEXT,
    message TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
-- Keyword index over normalised chunk terms (see rag::terms); the tenant is an indexed
-- token too, so a match never leaves the tenant before the join re-checks it.
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms USING fts5 (terms, tenant, chunk_id UNINDEXED);
-- Every finished turn, for review and usage.
CREATE TABLE IF NOT EXISTS turns (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    session TEXT NOT NULL,
    at INTEGER NOT NULL,
    day TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    transcript TEXT NOT NULL,
    answer TEXT NOT NULL,
    citations TEXT NOT NULL,
    timings TEXT NOT NULL,
    audio_in_secs REAL NOT NULL,
    audio_out_secs REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_tenant_at ON turns (tenant, at, id);
CREATE INDEX IF NOT EXISTS turns_tenant_user ON turns (tenant, user, at);
-- Codes printed in each manual (equipment ids, fault codes, part numbers): the tenant's vocabulary.
CREATE TABLE IF NOT EXISTS codes (
    tenant TEXT NOT NULL,
    manual_id TEXT NOT NULL REFERENCES manuals (id) ON DELETE CASCADE,
    printed TEXT NOT NULL,
    PRIMARY KEY (tenant, manual_id, printed)
);
";

/// Columns added since the first schema, with their defaults: a data dir written by an
/// older fieldvox opens and its manuals count as live version 1.
const ADDED_COLUMNS: [(&str, &str, &str); 9] = [
    ("manuals", "version", "INTEGER NOT NULL DEFAULT 1"),
    ("manuals", "size", "INTEGER NOT NULL DEFAULT 0"),
    ("manuals", "sha256", "TEXT NOT NULL DEFAULT ''"),
    ("manuals", "uploaded_by", "TEXT NOT NULL DEFAULT ''"),
    ("manuals", "blank_pages", "TEXT NOT NULL DEFAULT ''"),
    ("manuals", "updated_at", "INTEGER NOT NULL DEFAULT 0"),
    // 'ingesting' rows are invisible to every read but the job's own.
    ("manuals", "state", "TEXT NOT NULL DEFAULT 'live'"),
    ("chunks", "section", "TEXT NOT NULL DEFAULT ''"),
    ("chunks", "seq", "INTEGER NOT NULL DEFAULT 0"),
];

const LIVE: &str = "live";
const INGESTING: &str = "ingesting";

fn add_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, decl) in ADDED_COLUMNS {
        let exists: bool = conn.query_row(
            &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
            params![column],
            |r| r.get(0),
        )?;
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS manuals_title ON manuals (tenant, equipment, title);
         CREATE INDEX IF NOT EXISTS manuals_sha ON manuals (tenant, sha256);",
    )
}

const MANUAL_COLUMNS: &str = "id, tenant, equipment, title, filename, version, pages, chunks, size, sha256, \
     uploaded_by, blank_pages, created_at, updated_at";

fn manual_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Manual> {
    let blank: String = r.get(11)?;
    Ok(Manual {
        id: parse_uuid(r.get(0)?)?,
        tenant: r.get(1)?,
        equipment: r.get(2)?,
        title: r.get(3)?,
        filename: r.get(4)?,
        version: r.get(5)?,
        pages: r.get(6)?,
        chunks: r.get(7)?,
        size: r.get(8)?,
        sha256: r.get(9)?,
        uploaded_by: r.get(10)?,
        blank_pages: blank.split(',').filter_map(|n| n.parse().ok()).collect(),
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

fn blank_list(pages: &[u32]) -> String {
    pages.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

const JOB_COLUMNS: &str =
    "id, tenant, manual_id, state, pages, chunks_done, chunks_total, error, message, created_at, updated_at";

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let state: String = r.get(3)?;
    Ok(Job {
        id: parse_uuid(r.get(0)?)?,
        tenant: r.get(1)?,
        manual_id: parse_uuid(r.get(2)?)?,
        // An unknown state (a newer fieldvox wrote it) reads as failed, never as running.
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        pages: r.get(4)?,
        chunks_done: r.get(5)?,
        chunks_total: r.get(6)?,
        error: r.get(7)?,
        message: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

/// Deletes a manual's rows of every kind; returns its state, if it existed.
fn remove_manual(tx: &rusqlite::Transaction<'_>, tenant: &str, id: &str) -> rusqlite::Result<Option<String>> {
    let state: Option<String> = tx
        .query_row("SELECT state FROM manuals WHERE id = ?1 AND tenant = ?2", params![id, tenant], |r| r.get(0))
        .optional()?;
    if state.is_some() {
        tx.execute(
            "DELETE FROM chunk_terms WHERE chunk_id IN (SELECT id FROM chunks WHERE manual_id = ?1)",
            params![id],
        )?;
        tx.execute("DELETE FROM chunks WHERE manual_id = ?1", params![id])?;
        tx.execute("DELETE FROM codes WHERE manual_id = ?1", params![id])?;
        tx.execute("DELETE FROM manuals WHERE id = ?1", params![id])?;
    }
    Ok(state)
}

fn insert_manual(tx: &rusqlite::Transaction<'_>, m: &Manual) -> rusqlite::Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO manuals ({MANUAL_COLUMNS}, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ),
        params![
            m.id.to_string(),
            m.tenant,
            m.equipment,
            m.title,
            m.filename,
            m.version,
            m.pages,
            m.chunks,
            m.size,
            m.sha256,
            m.uploaded_by,
            blank_list(&m.blank_pages),
            m.created_at,
            m.updated_at,
            INGESTING
        ],
    )?;
    Ok(())
}

fn insert_chunks(tx: &rusqlite::Transaction<'_>, chunks: &[Chunk]) -> rusqlite::Result<()> {
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO chunks (id, tenant, manual_id, equipment, page, text, section, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for c in chunks {
            stmt.execute(params![
                c.id.to_string(),
                c.tenant,
                c.manual_id.to_string(),
                c.equipment,
                c.page,
                c.text,
                c.section,
                c.seq
            ])?;
        }
    }
    for c in chunks {
        index_chunk(tx, c)?;
    }
    Ok(())
}

/// Makes `m` live, removing the live versions it replaces; returns their ids.
fn publish(tx: &rusqlite::Transaction<'_>, m: &Manual) -> rusqlite::Result<Vec<String>> {
    let replaced: Vec<String> = {
        let mut stmt = tx.prepare(
            "SELECT id FROM manuals WHERE tenant = ?1 AND equipment = ?2 AND title = ?3 AND state = ?4 AND id <> ?5",
        )?;
        let rows = stmt.query_map(params![m.tenant, m.equipment, m.title, LIVE, m.id.to_string()], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    for id in &replaced {
        remove_manual(tx, &m.tenant, id)?;
    }
    tx.execute(
        "UPDATE manuals SET state = ?3, pages = ?4, chunks = ?5, blank_pages = ?6, updated_at = ?7
         WHERE id = ?1 AND tenant = ?2",
        params![m.id.to_string(), m.tenant, LIVE, m.pages, m.chunks, blank_list(&m.blank_pages), m.updated_at],
    )?;
    bump(tx, &m.tenant)?;
    Ok(replaced)
}

const TURN_COLUMNS: &str = "id, tenant, user, session, at, day, status, error, transcript, answer, citations, \
     timings, audio_in_secs, audio_out_secs";

fn turn_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TurnEntry> {
    let json = |i: usize, e: serde_json::Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    };
    let citations: String = r.get(10)?;
    let timings: String = r.get(11)?;
    Ok(TurnEntry {
        id: parse_uuid(r.get(0)?)?,
        tenant: r.get(1)?,
        user: r.get(2)?,
        session: parse_uuid(r.get(3)?)?,
        at: r.get(4)?,
        day: r.get(5)?,
        status: r.get(6)?,
        error: r.get(7)?,
        transcript: r.get(8)?,
        answer: r.get(9)?,
        citations: serde_json::from_str(&citations).map_err(|e| json(10, e))?,
        timings: serde_json::from_str(&timings).map_err(|e| json(11, e))?,
        audio_in_secs: r.get(12)?,
        audio_out_secs: r.get(13)?,
    })
}

/// Inserts a turn; `or_ignore` keeps an existing one with the same id (imports).
fn write_turn(conn: &Connection, t: &TurnEntry, or_ignore: bool) -> rusqlite::Result<()> {
    let verb = if or_ignore { "INSERT OR IGNORE" } else { "INSERT" };
    let citations = serde_json::to_string(&t.citations).unwrap_or_else(|_| "[]".into());
    let timings = serde_json::to_string(&t.timings).unwrap_or_else(|_| "{}".into());
    conn.prepare_cached(&format!(
        "{verb} INTO turns ({TURN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        t.id.to_string(),
        t.tenant,
        t.user,
        t.session.to_string(),
        t.at,
        t.day,
        t.status,
        t.error,
        t.transcript,
        t.answer,
        citations,
        timings,
        t.audio_in_secs,
        t.audio_out_secs
    ])?;
    Ok(())
}

fn bump(conn: &Connection, tenant: &str) -> rusqlite::Result<u64> {
    conn.query_row(
        "INSERT INTO tenants (tenant, kb_version) VALUES (?1, 1)
         ON CONFLICT (tenant) DO UPDATE SET kb_version = kb_version + 1
         RETURNING kb_version",
        params![tenant],
        |r| r.get(0),
    )
}

/// The tenant as one FTS token: hex keeps every character of any tenant id inside a
/// single alphanumeric word, so "acme" never matches inside "acme-1".
fn tenant_token(tenant: &str) -> String {
    format!("t{}", hex::encode(tenant.as_bytes()))
}

/// `tenant : "t.." AND terms : ("a" OR "b")`; terms are letters and digits only.
fn match_expression(tenant: &str, terms: &[String]) -> String {
    let any: Vec<String> = terms.iter().map(|t| format!("\"{t}\"")).collect();
    format!("tenant : \"{}\" AND terms : ({})", tenant_token(tenant), any.join(" OR "))
}

/// Indexes one chunk's terms and codes.
fn index_chunk(tx: &rusqlite::Transaction<'_>, chunk: &Chunk) -> rusqlite::Result<()> {
    let terms = crate::rag::terms::terms(&chunk.text).join(" ");
    tx.prepare_cached("INSERT INTO chunk_terms (terms, tenant, chunk_id) VALUES (?1, ?2, ?3)")?.execute(params![
        terms,
        tenant_token(&chunk.tenant),
        chunk.id.to_string()
    ])?;
    let mut codes =
        tx.prepare_cached("INSERT OR IGNORE INTO codes (tenant, manual_id, printed) VALUES (?1, ?2, ?3)")?;
    for code in crate::rag::terms::codes(&chunk.text) {
        codes.execute(params![chunk.tenant, chunk.manual_id.to_string(), code.printed])?;
    }
    Ok(())
}

/// A chunk from the first eight columns: id, tenant, manual_id, equipment, page, text,
/// section, seq.
fn chunk_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Chunk> {
    Ok(Chunk {
        id: parse_uuid(r.get(0)?)?,
        tenant: r.get(1)?,
        manual_id: parse_uuid(r.get(2)?)?,
        equipment: r.get(3)?,
        page: r.get(4)?,
        text: r.get(5)?,
        section: r.get(6)?,
        seq: r.get(7)?,
    })
}

/// Chunks stored before the keyword index existed get indexed once, at open.
fn backfill_index(conn: &mut Connection) -> rusqlite::Result<usize> {
    let missing: Vec<Chunk> = {
        let mut stmt = conn.prepare(
            "SELECT id, tenant, manual_id, equipment, page, text, section, seq FROM chunks
             WHERE id NOT IN (SELECT chunk_id FROM chunk_terms)",
        )?;
        stmt.query_map([], chunk_row)?.collect::<rusqlite::Result<_>>()?
    };
    let tx = conn.transaction()?;
    for chunk in &missing {
        index_chunk(&tx, chunk)?;
    }
    tx.commit()?;
    Ok(missing.len())
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let mut conn = Connection::open(path).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        add_columns(&conn).map_err(unavailable)?;
        let indexed = backfill_index(&mut conn).map_err(unavailable)?;
        if indexed > 0 {
            tracing::info!(chunks = indexed, "keyword index built for existing chunks");
        }
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| unavailable("connection lock poisoned"))?;
            f(&mut guard).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}

fn write_job(conn: &Connection, job: &Job) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (id) DO UPDATE SET state = ?4, pages = ?5, chunks_done = ?6, chunks_total = ?7,
                 error = ?8, message = ?9, updated_at = ?11"
        ),
        params![
            job.id.to_string(),
            job.tenant,
            job.manual_id.to_string(),
            job.state.as_str(),
            job.pages,
            job.chunks_done,
            job.chunks_total,
            job.error,
            job.message,
            job.created_at,
            job.updated_at
        ],
    )?;
    Ok(())
}

fn parse_uuid(s: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn begin_manual(&self, manual: &Manual, job: &Job) -> Result<(), StoreError> {
        let (m, job) = (manual.clone(), job.clone());
        self.with(move |conn| {
            let tx = conn.transaction()?;
            insert_manual(&tx, &m)?;
            write_job(&tx, &job)?;
            tx.commit()
        })
        .await
    }

    async fn add_chunks(&self, chunks: Vec<Chunk>) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            insert_chunks(&tx, &chunks)?;
            tx.commit()
        })
        .await
    }

    async fn publish_manual(&self, manual: &Manual) -> Result<Vec<Uuid>, StoreError> {
        let m = manual.clone();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let replaced = publish(&tx, &m)?;
            tx.commit()?;
            replaced.into_iter().map(parse_uuid).collect()
        })
        .await
    }

    async fn delete_manual(&self, tenant: &str, id: Uuid) -> Result<bool, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let state = remove_manual(&tx, &tenant, &id.to_string())?;
            if state.as_deref() == Some(LIVE) {
                bump(&tx, &tenant)?;
            }
            tx.commit()?;
            Ok(state.is_some())
        })
        .await
    }

    async fn manual(&self, tenant: &str, id: Uuid) -> Result<Option<Manual>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            conn.query_row(
                &format!("SELECT {MANUAL_COLUMNS} FROM manuals WHERE id = ?1 AND tenant = ?2 AND state = ?3"),
                params![id.to_string(), tenant, LIVE],
                manual_row,
            )
            .optional()
        })
        .await
    }

    async fn manual_by_sha256(&self, tenant: &str, sha256: &str) -> Result<Option<Manual>, StoreError> {
        let (tenant, sha256) = (tenant.to_string(), sha256.to_string());
        self.with(move |conn| {
            conn.query_row(
                &format!(
                    "SELECT {MANUAL_COLUMNS} FROM manuals WHERE tenant = ?1 AND sha256 = ?2 AND state = ?3 LIMIT 1"
                ),
                params![tenant, sha256, LIVE],
                manual_row,
            )
            .optional()
        })
        .await
    }

    async fn latest_version(&self, tenant: &str, equipment: &str, title: &str) -> Result<u32, StoreError> {
        let (tenant, equipment, title) = (tenant.to_string(), equipment.to_string(), title.to_string());
        self.with(move |conn| {
            conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM manuals WHERE tenant = ?1 AND equipment = ?2 AND title = ?3",
                params![tenant, equipment, title],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn list_manuals(&self, tenant: &str, filter: &ManualFilter) -> Result<Vec<Manual>, StoreError> {
        let tenant = tenant.to_string();
        let filter = filter.clone();
        self.with(move |conn| {
            let (after_at, after_id) = filter.after.map_or((-1, String::new()), |(at, id)| (at as i64, id.to_string()));
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MANUAL_COLUMNS} FROM manuals
                 WHERE tenant = ?1 AND state = ?2 AND (?3 IS NULL OR equipment = ?3)
                   AND (created_at, id) > (?4, ?5)
                 ORDER BY created_at, id LIMIT ?6"
            ))?;
            let rows = stmt.query_map(
                params![tenant, LIVE, filter.equipment, after_at, after_id, filter.limit as i64],
                manual_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn page_text(&self, tenant: &str, manual: Uuid, page: u32) -> Result<Vec<String>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.text FROM chunks c JOIN manuals m ON m.id = c.manual_id
                 WHERE c.manual_id = ?1 AND c.tenant = ?2 AND c.page = ?3 AND m.state = ?4
                 ORDER BY c.seq",
            )?;
            let rows = stmt.query_map(params![manual.to_string(), tenant, page, LIVE], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn equipment(&self, tenant: &str) -> Result<Vec<(String, u32)>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT equipment, COUNT(*) FROM manuals WHERE tenant = ?1 AND state = ?2
                 GROUP BY equipment ORDER BY equipment",
            )?;
            let rows = stmt.query_map(params![tenant, LIVE], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        let job = job.clone();
        self.with(move |conn| write_job(conn, &job)).await
    }

    async fn job(&self, tenant: &str, id: Uuid) -> Result<Option<Job>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            conn.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND tenant = ?2"),
                params![id.to_string(), tenant],
                job_row,
            )
            .optional()
        })
        .await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state NOT IN ('done', 'failed') ORDER BY created_at"
            ))?;
            let rows = stmt.query_map([], job_row)?;
            rows.collect()
        })
        .await
    }

    async fn holdings(&self, tenant: &str) -> Result<Holdings, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            conn.query_row(
                "SELECT (SELECT COUNT(*) FROM manuals WHERE tenant = ?1), (SELECT COUNT(*) FROM chunks WHERE tenant = ?1)",
                params![tenant],
                |r| Ok(Holdings { manuals: r.get(0)?, chunks: r.get(1)? }),
            )
        })
        .await
    }

    async fn chunks(&self, tenant: &str, ids: &[Uuid]) -> Result<Vec<CitedChunk>, StoreError> {
        let tenant = tenant.to_string();
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, c.tenant, c.manual_id, c.equipment, c.page, c.text, c.section, c.seq, m.title
                 FROM chunks c JOIN manuals m ON m.id = c.manual_id
                 WHERE c.id = ?1 AND c.tenant = ?2 AND m.state = 'live'",
            )?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                let row = stmt
                    .query_row(params![id, tenant], |r| {
                        Ok(CitedChunk { chunk: chunk_row(r)?, manual_title: r.get(8)? })
                    })
                    .optional()?;
                out.extend(row);
            }
            Ok(out)
        })
        .await
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
        let expression = match_expression(tenant, terms);
        let tenant = tenant.to_string();
        let equipment = equipment.map(str::to_string);
        self.with(move |conn| {
            // bm25() is lower-is-better; the tenant column carries no weight.
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, -bm25(chunk_terms, 1.0, 0.0) AS score
                 FROM chunk_terms JOIN chunks c ON c.id = chunk_terms.chunk_id
                 JOIN manuals m ON m.id = c.manual_id AND m.state = 'live'
                 WHERE chunk_terms MATCH ?1 AND c.tenant = ?2 AND (?3 IS NULL OR c.equipment = ?3)
                 ORDER BY score DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![expression, tenant, equipment, limit as i64], |r| {
                Ok(KeywordHit { chunk_id: parse_uuid(r.get(0)?)?, score: r.get::<_, f64>(1)? as f32 })
            })?;
            rows.collect()
        })
        .await
    }

    async fn vocabulary(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT printed FROM codes JOIN manuals m ON m.id = codes.manual_id AND m.state = 'live'
                 WHERE codes.tenant = ?1
                 UNION SELECT equipment FROM manuals WHERE tenant = ?1 AND state = 'live' ORDER BY 1",
            )?;
            let rows = stmt.query_map(params![tenant], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn kb_version(&self, tenant: &str) -> Result<u64, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            conn.query_row("SELECT kb_version FROM tenants WHERE tenant = ?1", params![tenant], |r| r.get(0))
                .optional()
                .map(|v| v.unwrap_or(0))
        })
        .await
    }

    async fn bump_kb_version(&self, tenant: &str) -> Result<u64, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| bump(conn, &tenant)).await
    }
    async fn record_turn(&self, turn: &TurnEntry) -> Result<(), StoreError> {
        let turn = turn.clone();
        self.with(move |conn| write_turn(conn, &turn, false)).await
    }

    async fn turns(&self, tenant: &str, filter: &TurnFilter) -> Result<Vec<TurnEntry>, StoreError> {
        let tenant = tenant.to_string();
        let filter = filter.clone();
        self.with(move |conn| {
            let (before_at, before_id) =
                filter.before.map_or((i64::MAX, String::new()), |(at, id)| (at as i64, id.to_string()));
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {TURN_COLUMNS} FROM turns
                 WHERE tenant = ?1 AND (?2 IS NULL OR user = ?2) AND at >= ?3 AND at < ?4
                   AND (?6 = '' OR (at, id) < (?5, ?6))
                 ORDER BY at DESC, id DESC LIMIT ?7"
            ))?;
            let rows = stmt.query_map(
                params![
                    tenant,
                    filter.user,
                    filter.since.unwrap_or(0) as i64,
                    filter.until.map_or(i64::MAX, |u| u as i64),
                    before_at,
                    before_id,
                    filter.limit as i64
                ],
                turn_row,
            )?;
            rows.collect()
        })
        .await
    }

    async fn usage(&self, tenant: &str, since: u64, until: u64) -> Result<Vec<UsageRow>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT user, day, COUNT(*), TOTAL(audio_in_secs), TOTAL(audio_out_secs) FROM turns
                 WHERE tenant = ?1 AND at >= ?2 AND at < ?3 GROUP BY user, day ORDER BY user, day",
            )?;
            let rows = stmt.query_map(params![tenant, since as i64, until.min(i64::MAX as u64) as i64], |r| {
                Ok(UsageRow {
                    user: r.get(0)?,
                    day: r.get(1)?,
                    turns: r.get(2)?,
                    audio_in_secs: r.get(3)?,
                    audio_out_secs: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.with(move |conn| {
            let mut stmt = conn
                .prepare("SELECT tenant FROM manuals WHERE state = 'live' UNION SELECT tenant FROM turns ORDER BY 1")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
        .await
    }

    async fn export_manual(&self, tenant: &str, id: Uuid) -> Result<Option<ManualExport>, StoreError> {
        let Some(manual) = self.manual(tenant, id).await? else { return Ok(None) };
        let tenant = tenant.to_string();
        let chunks = self
            .with(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, tenant, manual_id, equipment, page, text, section, seq FROM chunks
                     WHERE manual_id = ?1 AND tenant = ?2 ORDER BY seq, page",
                )?;
                let rows = stmt.query_map(params![id.to_string(), tenant], chunk_row)?;
                rows.collect()
            })
            .await?;
        Ok(Some(ManualExport { manual, chunks }))
    }

    async fn import_manual(&self, export: &ManualExport) -> Result<(), StoreError> {
        let export = export.clone();
        self.with(move |conn| {
            let m = &export.manual;
            let tx = conn.transaction()?;
            remove_manual(&tx, &m.tenant, &m.id.to_string())?;
            insert_manual(&tx, m)?;
            insert_chunks(&tx, &export.chunks)?;
            publish(&tx, m)?;
            tx.commit()
        })
        .await
    }

    async fn import_turn(&self, turn: &TurnEntry) -> Result<(), StoreError> {
        let turn = turn.clone();
        self.with(move |conn| write_turn(conn, &turn, true)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|conn| conn.query_row("SELECT 1", [], |_| Ok(()))).await
    }
}

// The behaviour every store owes is tested once for all of them: tests/contract.
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_and_turns_survive_a_reopen() {
        let path = std::env::temp_dir().join(format!("fieldvox-store-{}/db.sqlite", Uuid::new_v4()));
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.bump_kb_version("a").await.unwrap(), 1);
        assert_eq!(store.bump_kb_version("a").await.unwrap(), 2);
        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.kb_version("a").await.unwrap(), 2, "survives a restart");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
