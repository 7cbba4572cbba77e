//! The embedded metadata store: one SQLite file, accessed off the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{Chunk, CitedChunk, Manual, MetadataStore, StoreError};

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
";

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
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
                        Ok(CitedChunk {
                            chunk: Chunk {
                                id: parse_uuid(r.get(0)?)?,
                                tenant: r.get(1)?,
                                manual_id: parse_uuid(r.get(2)?)?,
                                equipment: r.get(3)?,
                                page: r.get(4)?,
                                text: r.get(5)?,
                            },
                            manual_title: r.get(6)?,
                        })
                    })
                    .optional()?;
                out.extend(row);
            }
            Ok(out)
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
}
