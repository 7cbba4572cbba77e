//! Moving up: copies a knowledge base (manuals, chunks, their vectors) and the turn
//! records from one set of backends to another — a pilot's embedded data dir to the
//! cluster's MongoDB and Qdrant — with the same ids, so nothing is re-uploaded or
//! re-embedded and citations keep pointing at the same manuals and pages.
//!
//! Safe to run again: manuals are replaced by id, vectors upserted, turns kept once.
//! Each manual's vectors are written before it is published in the target, so a reader
//! there never finds a chunk without its vector.

use uuid::Uuid;

use super::Backends;
use crate::store::{ManualFilter, StoreError, TurnFilter};
use crate::vector::{ChunkPoint, VectorError};

/// Manuals read per listing page, and turns per batch.
const PAGE: usize = 200;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    pub tenants: u64,
    pub manuals: u64,
    pub chunks: u64,
    pub turns: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vector(#[from] VectorError),
    #[error("manual {manual} of tenant {tenant}: {missing} of its chunks have no vector in the source index")]
    MissingVectors { tenant: String, manual: Uuid, missing: usize },
}

/// What is copied so far, after each manual and each batch of turns.
pub type Progress<'a> = &'a (dyn Fn(&Copied) + Sync);

pub async fn copy(from: &Backends, to: &Backends, progress: Progress<'_>) -> Result<Copied, MigrateError> {
    let mut copied = Copied::default();
    for tenant in from.store.tenants().await? {
        copied.tenants += 1;
        copy_manuals(from, to, &tenant, &mut copied, progress).await?;
        copy_turns(from, to, &tenant, &mut copied, progress).await?;
        tracing::info!(%tenant, manuals = copied.manuals, turns = copied.turns, "tenant copied");
    }
    Ok(copied)
}

async fn copy_manuals(
    from: &Backends,
    to: &Backends,
    tenant: &str,
    copied: &mut Copied,
    progress: Progress<'_>,
) -> Result<(), MigrateError> {
    let mut filter = ManualFilter { equipment: None, after: None, limit: PAGE };
    loop {
        let page = from.store.list_manuals(tenant, &filter).await?;
        for manual in &page {
            let Some(export) = from.store.export_manual(tenant, manual.id).await? else {
                continue; // deleted meanwhile
            };
            let ids: Vec<Uuid> = export.chunks.iter().map(|c| c.id).collect();
            let vectors: std::collections::HashMap<Uuid, Vec<f32>> =
                from.index.vectors(tenant, &ids).await?.into_iter().collect();
            let missing = ids.iter().filter(|id| !vectors.contains_key(id)).count();
            if missing > 0 {
                return Err(MigrateError::MissingVectors { tenant: tenant.to_string(), manual: manual.id, missing });
            }
            let points = export
                .chunks
                .iter()
                .map(|c| ChunkPoint {
                    chunk_id: c.id,
                    tenant: c.tenant.clone(),
                    equipment: c.equipment.clone(),
                    manual_id: c.manual_id,
                    page: c.page,
                    vector: vectors[&c.id].clone(),
                })
                .collect();
            to.index.upsert(points).await?;
            to.store.import_manual(&export).await?;
            copied.manuals += 1;
            copied.chunks += export.chunks.len() as u64;
            progress(copied);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => filter.after = Some((last.created_at, last.id)),
            _ => return Ok(()),
        }
    }
}

async fn copy_turns(
    from: &Backends,
    to: &Backends,
    tenant: &str,
    copied: &mut Copied,
    progress: Progress<'_>,
) -> Result<(), MigrateError> {
    let mut filter = TurnFilter { limit: PAGE, ..TurnFilter::default() };
    loop {
        let page = from.store.turns(tenant, &filter).await?;
        for turn in &page {
            to.store.import_turn(turn).await?;
        }
        copied.turns += page.len() as u64;
        progress(copied);
        match page.last() {
            Some(last) if page.len() == PAGE => filter.before = Some((last.at, last.id)),
            _ => return Ok(()),
        }
    }
}
