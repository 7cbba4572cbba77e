//! The embedded metadata store: one SQLite file, accessed off the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{Chunk, CitedChunk, KeywordHit, Manual, MetadataStore, StoreError};

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
-- Keyword index over normalised chunk terms (see rag::terms); the tenant is an indexed
-- token too, so a match never leaves the tenant before the join re-checks it.
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms USING fts5 (terms, tenant, chunk_id UNINDEXED);
-- Codes printed in each manual (equipment ids, fault codes, part numbers): the tenant's vocabulary.
CREATE TABLE IF NOT EXISTS codes (
    tenant TEXT NOT NULL,
    manual_id TEXT NOT NULL REFERENCES manuals (id) ON DELETE CASCADE,
    printed TEXT NOT NULL,
    PRIMARY KEY (tenant, manual_id, printed)
);
";

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

/// A chunk from the first six columns: id, tenant, manual_id, equipment, page, text.
fn chunk_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Chunk> {
    Ok(Chunk {
        id: parse_uuid(r.get(0)?)?,
        tenant: r.get(1)?,
        manual_id: parse_uuid(r.get(2)?)?,
        equipment: r.get(3)?,
        page: r.get(4)?,
        text: r.get(5)?,
    })
}

/// Chunks stored before the keyword index existed get indexed once, at open.
fn backfill_index(conn: &mut Connection) -> rusqlite::Result<usize> {
    let missing: Vec<Chunk> = {
        let mut stmt = conn.prepare(
            "SELECT id, tenant, manual_id, equipment, page, text FROM chunks
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

fn parse_uuid(s: String) -> rusqlite::Result<Uuid> {
    Uuid::parse_str(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn insert_manual(&self, manual: Manual, chunks: Vec<Chunk>) -> Result<(), StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO manuals (id, tenant, equipment, title, filename, pages, chunks, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    manual.id.to_string(),
                    manual.tenant,
                    manual.equipment,
                    manual.title,
                    manual.filename,
                    manual.pages,
                    manual.chunks,
                    manual.created_at
                ],
            )?;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO chunks (id, tenant, manual_id, equipment, page, text) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for c in &chunks {
                    stmt.execute(params![
                        c.id.to_string(),
                        c.tenant,
                        c.manual_id.to_string(),
                        c.equipment,
                        c.page,
                        c.text
                    ])?;
                }
            }
            for c in &chunks {
                index_chunk(&tx, c)?;
            }
            tx.commit()
        })
        .await
    }

    async fn list_manuals(&self, tenant: &str) -> Result<Vec<Manual>, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, tenant, equipment, title, filename, pages, chunks, created_at
                 FROM manuals WHERE tenant = ?1 ORDER BY created_at, title",
            )?;
            let rows = stmt.query_map(params![tenant], |r| {
                Ok(Manual {
                    id: parse_uuid(r.get(0)?)?,
                    tenant: r.get(1)?,
                    equipment: r.get(2)?,
                    title: r.get(3)?,
                    filename: r.get(4)?,
                    pages: r.get(5)?,
                    chunks: r.get(6)?,
                    created_at: r.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn chunks(&self, tenant: &str, ids: &[Uuid]) -> Result<Vec<CitedChunk>, StoreError> {
        let tenant = tenant.to_string();
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        self.with(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT c.id, c.tenant, c.manual_id, c.equipment, c.page, c.text, m.title
                 FROM chunks c JOIN manuals m ON m.id = c.manual_id
                 WHERE c.id = ?1 AND c.tenant = ?2",
            )?;
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                let row = stmt
                    .query_row(params![id, tenant], |r| {
                        Ok(CitedChunk { chunk: chunk_row(r)?, manual_title: r.get(6)? })
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
                "SELECT printed FROM codes WHERE tenant = ?1
                 UNION SELECT equipment FROM manuals WHERE tenant = ?1 ORDER BY 1",
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
        self.with(move |conn| {
            conn.query_row(
                "INSERT INTO tenants (tenant, kb_version) VALUES (?1, 1)
                 ON CONFLICT (tenant) DO UPDATE SET kb_version = kb_version + 1
                 RETURNING kb_version",
                params![tenant],
                |r| r.get(0),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manual(tenant: &str) -> (Manual, Vec<Chunk>) {
        let id = Uuid::new_v4();
        let m = Manual {
            id,
            tenant: tenant.into(),
            equipment: "RTU-40".into(),
            title: "RTU-40 Service Manual".into(),
            filename: "rtu40.pdf".into(),
            pages: 2,
            chunks: 1,
            created_at: 1,
        };
        let c = Chunk {
            id: Uuid::new_v4(),
            tenant: tenant.into(),
            manual_id: id,
            equipment: "RTU-40".into(),
            page: 2,
            text: "38 N·m".into(),
        };
        (m, vec![c])
    }

    #[tokio::test]
    async fn chunks_are_tenant_scoped_and_versions_bump() {
        let path = std::env::temp_dir().join(format!("fieldvox-store-{}/db.sqlite", Uuid::new_v4()));
        let store = SqliteStore::open(&path).unwrap();
        let (ma, ca) = manual("a");
        let chunk_a = ca[0].id;
        store.insert_manual(ma.clone(), ca).await.unwrap();
        let got = store.chunks("a", &[chunk_a]).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].manual_title, "RTU-40 Service Manual");
        assert_eq!(got[0].chunk.page, 2);
        assert!(store.chunks("b", &[chunk_a]).await.unwrap().is_empty(), "tenant b cannot read a's chunk");
        assert_eq!(store.list_manuals("a").await.unwrap(), vec![ma]);
        assert!(store.list_manuals("b").await.unwrap().is_empty());

        assert_eq!(store.kb_version("a").await.unwrap(), 0);
        assert_eq!(store.bump_kb_version("a").await.unwrap(), 1);
        assert_eq!(store.bump_kb_version("a").await.unwrap(), 2);
        assert_eq!(store.kb_version("b").await.unwrap(), 0);

        drop(store);
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(reopened.kb_version("a").await.unwrap(), 2, "survives a restart");
    }

    fn with_text(tenant: &str, text: &str) -> (Manual, Vec<Chunk>) {
        let (m, mut c) = manual(tenant);
        c[0].text = text.into();
        (m, c)
    }

    #[tokio::test]
    async fn keyword_search_finds_codes_within_the_tenant_only() {
        let path = std::env::temp_dir().join(format!("fieldvox-store-{}/db.sqlite", Uuid::new_v4()));
        let store = SqliteStore::open(&path).unwrap();
        let (ma, ca) = with_text("acme", "Fault E47 means low oil pressure. Filter HX-FLT-0440.");
        let a = ca[0].id;
        store.insert_manual(ma, ca).await.unwrap();
        // Same words in another tenant, and in a tenant whose id extends "acme".
        for tenant in ["globex", "acme-1"] {
            let (m, c) = with_text(tenant, "Fault E47 means fan failure. Filter HX-FLT-0440.");
            store.insert_manual(m, c).await.unwrap();
        }
        let terms = |q: &str| crate::rag::terms::query_terms(q);
        let hits = store.keyword_search("acme", None, &terms("what does e 47 mean"), 10).await.unwrap();
        assert_eq!(hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), vec![a]);
        assert!(hits[0].score > 0.0, "higher is better");
        let hits = store.keyword_search("acme", None, &terms("part HX FLT 0440"), 10).await.unwrap();
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert!(store.keyword_search("acme", Some("BW-9"), &terms("E47"), 10).await.unwrap().is_empty());
        assert!(store.keyword_search("nobody", None, &terms("E47"), 10).await.unwrap().is_empty());
        assert!(store.keyword_search("acme", None, &[], 10).await.unwrap().is_empty());

        let vocabulary = store.vocabulary("acme").await.unwrap();
        assert_eq!(vocabulary, vec!["E47", "HX-FLT-0440", "RTU-40"], "codes and the equipment id");
        assert!(store.vocabulary("nobody").await.unwrap().is_empty());
    }
}
