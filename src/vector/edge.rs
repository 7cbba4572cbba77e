//! Embedded vector index on `qdrant-edge`: one on-disk shard holding every tenant's chunks.
//!
//! Tenant isolation is enforced here, not by callers: every search carries a `must` condition
//! on `tenant_id` and deletes are scoped by tenant too. The edge API is blocking, so each call
//! runs on tokio's blocking pool with the shard shared through an `Arc`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use qdrant_edge::{
    Condition, CreateIndex, Distance, EdgeConfig, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder,
    FieldCondition, FieldIndexOperations, Filter, JsonPath, KeywordIndexParams, NamedQuery, OperationError, Payload,
    PayloadFieldSchema, PayloadSchemaParams, PointId, PointInsertOperations, PointOperations, PointStructPersisted,
    QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, VectorInternal, VectorStructInternal,
    VectorStructPersisted, WithPayloadInterface, WithVector,
};
use uuid::Uuid;

use super::{ChunkPoint, DIMENSIONS, VectorError, VectorHit, VectorIndex, VectorQuery, check_dimensions};

const TENANT_FIELD: &str = "tenant_id";
const EQUIPMENT_FIELD: &str = "equipment";
const MANUAL_FIELD: &str = "manual_id";
const PAGE_FIELD: &str = "page";

/// Directory `EdgeShard::new` creates; its presence means a shard already lives here.
const SEGMENTS_DIR: &str = "segments";

/// Points per update operation: each operation is one WAL record, so this bounds its size
/// (~400 KB of vectors) however large the caller's batch is.
const UPSERT_CHUNK: usize = 256;

/// Tenant-scoped vector index stored in one directory.
pub struct EdgeIndex {
    inner: Arc<Shared>,
}

struct Shared {
    shard: EdgeShard,
    /// `EdgeShard::flush` panics if another thread holds the WAL lock, so updates, flushes and
    /// optimisation take turns here; searches never take it.
    writes: Mutex<()>,
}

impl Shared {
    fn lock_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded value is `()`, so a poisoned lock carries no broken state.
        self.writes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes applied operations durable: edge 0.7 does not replay its WAL on load, so segment
    /// data must be flushed for writes to survive a reopen.
    fn flush(&self) -> Result<(), VectorError> {
        catch_unwind(AssertUnwindSafe(|| self.shard.flush()))
            .map_err(|_| VectorError::Unavailable("flushing the vector index failed".into()))
    }
}

impl EdgeIndex {
    /// Opens the shard in `dir`, creating it (384-dim cosine, payload indexes) if absent.
    ///
    /// An existing shard whose vector size or distance differs is rejected.
    pub fn open(dir: &Path) -> Result<Self, VectorError> {
        let started = Instant::now();
        let config = shard_config();
        let existed = dir.join(SEGMENTS_DIR).is_dir();
        let shard = if existed {
            // Passing the expected config makes load check it against the stored segments.
            EdgeShard::load(dir, Some(config))
        } else {
            std::fs::create_dir_all(dir)
                .map_err(|e| VectorError::Unavailable(format!("creating {}: {e}", dir.display())))?;
            EdgeShard::new(dir, config)
        }
        .map_err(|e| unavailable(&format!("opening {}", dir.display()), e))?;

        let shared = Shared { shard, writes: Mutex::new(()) };
        // Re-issued on every open: idempotent, and edge does not persist the schema for
        // segments it creates later, so this keeps every loaded segment indexed.
        for (field, schema) in payload_indexes() {
            let operation = UpdateOperation::FieldIndexOperation(FieldIndexOperations::CreateIndex(CreateIndex {
                field_name: json_path(field)?,
                field_schema: Some(schema),
            }));
            shared.shard.update(operation).map_err(|e| unavailable("creating payload index", e))?;
        }
        shared.flush()?;

        let points = shared.shard.info().points_count;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(existed, points, elapsed_ms, "edge vector index opened");
        Ok(Self { inner: Arc::new(shared) })
    }

    /// Builds HNSW indexes and merges segments; blocking work, worth running after a bulk
    /// ingest. Returns whether anything was optimised.
    pub async fn optimize(&self) -> Result<bool, VectorError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            let started = Instant::now();
            let _writes = inner.lock_writes();
            let optimized = inner.shard.optimize().map_err(|e| unavailable("optimizing", e))?;
            inner.flush()?;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(optimized, elapsed_ms, "edge vector index optimized");
            Ok(optimized)
        })
        .await
    }
}

#[async_trait]
impl VectorIndex for EdgeIndex {
    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), VectorError> {
        // Validate the whole batch first so a bad vector writes nothing.
        for point in &points {
            check_dimensions(&point.vector)?;
        }
        if points.is_empty() {
            return Ok(());
        }
        let count = points.len();
        let persisted: Vec<PointStructPersisted> = points.into_iter().map(to_persisted).collect();

        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            let started = Instant::now();
            let _writes = inner.lock_writes();
            for chunk in persisted.chunks(UPSERT_CHUNK) {
                let operation = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                    PointInsertOperations::PointsList(chunk.to_vec()),
                ));
                inner.shard.update(operation).map_err(|e| unavailable("upserting points", e))?;
            }
            inner.flush()?;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(points = count, elapsed_ms, "edge vector upsert done");
            Ok(())
        })
        .await
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<VectorHit>, VectorError> {
        check_dimensions(&query.vector)?;
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut conditions = vec![keyword_condition(TENANT_FIELD, &query.tenant)?];
        if let Some(equipment) = &query.equipment {
            conditions.push(keyword_condition(EQUIPMENT_FIELD, equipment)?);
        }
        let request = QueryRequest {
            prefetches: Vec::new(),
            query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                query: VectorInternal::Dense(query.vector),
                using: None,
            }))),
            filter: Some(must(conditions)),
            score_threshold: None,
            limit: query.limit,
            offset: 0,
            params: None,
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(false),
        };

        let inner = Arc::clone(&self.inner);
        let scored = run_blocking(move || inner.shard.query(request).map_err(|e| unavailable("searching", e))).await?;

        let mut hits: Vec<VectorHit> = scored
            .into_iter()
            .filter_map(|point| match point.id {
                PointId::Uuid(chunk_id) => Some(VectorHit { chunk_id, score: point.score }),
                // Only UUID ids are ever written, so a numeric id is foreign data.
                PointId::NumId(id) => {
                    tracing::warn!(id, "edge vector index returned a numeric point id");
                    None
                }
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(hits)
    }

    async fn delete_manual(&self, tenant: &str, manual_id: Uuid) -> Result<(), VectorError> {
        let filter = must(vec![
            keyword_condition(TENANT_FIELD, tenant)?,
            keyword_condition(MANUAL_FIELD, &manual_id.to_string())?,
        ]);
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            let started = Instant::now();
            let _writes = inner.lock_writes();
            inner
                .shard
                .update(UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter)))
                .map_err(|e| unavailable("deleting manual", e))?;
            inner.flush()?;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::debug!(elapsed_ms, "edge vector manual deleted");
            Ok(())
        })
        .await
    }

    async fn vectors(&self, tenant: &str, ids: &[Uuid]) -> Result<Vec<(Uuid, Vec<f32>)>, VectorError> {
        let ids: Vec<PointId> = ids.iter().copied().map(PointId::Uuid).collect();
        let inner = Arc::clone(&self.inner);
        let records = run_blocking(move || {
            inner
                .shard
                .retrieve(&ids, Some(WithPayloadInterface::Bool(true)), Some(WithVector::Bool(true)))
                .map_err(|e| unavailable("reading vectors", e))
        })
        .await?;
        Ok(records
            .into_iter()
            .filter(|r| {
                let owner = r.payload.as_ref().and_then(|p| p.0.get(TENANT_FIELD)).and_then(|v| v.as_str());
                owner == Some(tenant)
            })
            .filter_map(|r| match (r.id, r.vector) {
                (PointId::Uuid(id), Some(VectorStructInternal::Single(v))) => Some((id, v)),
                _ => None,
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), VectorError> {
        // In-process: reachable whenever the shard is open.
        Ok(())
    }
}

fn shard_config() -> EdgeConfig {
    // The empty name is qdrant's unnamed default vector.
    EdgeConfigBuilder::new().vector("", EdgeVectorParamsBuilder::new(DIMENSIONS, Distance::Cosine).build()).build()
}

fn payload_indexes() -> [(&'static str, PayloadFieldSchema); 3] {
    let keyword = |params: KeywordIndexParams| PayloadFieldSchema::FieldParams(PayloadSchemaParams::Keyword(params));
    [
        // Every query filters on the tenant, so let qdrant organise storage and HNSW by it.
        (TENANT_FIELD, keyword(KeywordIndexParams { is_tenant: Some(true), ..KeywordIndexParams::default() })),
        (EQUIPMENT_FIELD, keyword(KeywordIndexParams::default())),
        // Only used to delete a manual: no per-manual HNSW subgraphs.
        (MANUAL_FIELD, keyword(KeywordIndexParams { enable_hnsw: Some(false), ..KeywordIndexParams::default() })),
    ]
}

fn to_persisted(point: ChunkPoint) -> PointStructPersisted {
    let mut payload = serde_json::Map::new();
    payload.insert(TENANT_FIELD.into(), point.tenant.into());
    payload.insert(EQUIPMENT_FIELD.into(), point.equipment.into());
    payload.insert(MANUAL_FIELD.into(), point.manual_id.to_string().into());
    payload.insert(PAGE_FIELD.into(), point.page.into());
    PointStructPersisted {
        id: PointId::Uuid(point.chunk_id),
        vector: VectorStructPersisted::Single(point.vector),
        payload: Some(Payload::from(payload)),
    }
}

fn json_path(field: &str) -> Result<JsonPath, VectorError> {
    field.parse().map_err(|_| VectorError::Unavailable(format!("invalid payload key {field}")))
}

fn keyword_condition(field: &str, value: &str) -> Result<Condition, VectorError> {
    Ok(Condition::Field(FieldCondition::new_match(json_path(field)?, value.to_owned().into())))
}

fn must(conditions: Vec<Condition>) -> Filter {
    Filter { must: Some(conditions), ..Filter::default() }
}

fn unavailable(action: &str, error: OperationError) -> VectorError {
    VectorError::Unavailable(format!("{action}: {error}"))
}

/// Runs blocking edge work off the async threads; a panic inside becomes `Unavailable`.
async fn run_blocking<T, F>(work: F) -> Result<T, VectorError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, VectorError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| VectorError::Unavailable(format!("vector index task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    /// Unique directory under the system temp dir, removed when the test ends.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("fieldvox-edge-{name}-{}", Uuid::new_v4()));
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn normalized(mut v: Vec<f32>) -> Vec<f32> {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    fn axis(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; DIMENSIONS];
        v[i] = 1.0;
        v
    }

    /// Unit vector tilted from axis 0 towards axis 1: larger `tilt`, lower cosine to axis 0.
    fn tilted(tilt: f32) -> Vec<f32> {
        let mut v = axis(0);
        v[1] = tilt;
        normalized(v)
    }

    fn chunk(tenant: &str, equipment: &str, manual_id: Uuid, vector: Vec<f32>) -> ChunkPoint {
        ChunkPoint {
            chunk_id: Uuid::new_v4(),
            tenant: tenant.into(),
            equipment: equipment.into(),
            manual_id,
            page: 1,
            vector,
        }
    }

    fn query(tenant: &str, equipment: Option<&str>, vector: Vec<f32>, limit: usize) -> VectorQuery {
        VectorQuery { tenant: tenant.into(), equipment: equipment.map(Into::into), vector, limit }
    }

    fn ids(points: &[ChunkPoint]) -> HashSet<Uuid> {
        points.iter().map(|p| p.chunk_id).collect()
    }

    fn hit_ids(hits: &[VectorHit]) -> HashSet<Uuid> {
        hits.iter().map(|h| h.chunk_id).collect()
    }

    #[tokio::test]
    async fn tenants_never_see_each_other() {
        let dir = TempDir::new("isolation");
        let index = EdgeIndex::open(&dir.0).unwrap();
        let manual = Uuid::new_v4();
        // Identical vectors for both tenants: only the tenant filter can tell them apart.
        let a: Vec<_> = (0..5).map(|i| chunk("acme", "pump", manual, axis(i))).collect();
        let b: Vec<_> = (0..5).map(|i| chunk("bolt", "pump", manual, axis(i))).collect();
        index.upsert(a.clone()).await.unwrap();
        index.upsert(b.clone()).await.unwrap();

        for probe in 0..5 {
            let as_b = index.search(query("bolt", None, axis(probe), 20)).await.unwrap();
            assert_eq!(hit_ids(&as_b), ids(&b));
            assert_eq!(as_b[0].chunk_id, b[probe].chunk_id);

            let as_a = index.search(query("acme", None, axis(probe), 20)).await.unwrap();
            assert_eq!(hit_ids(&as_a), ids(&a));
            assert_eq!(as_a[0].chunk_id, a[probe].chunk_id);
        }

        let nobody = index.search(query("carr", None, axis(0), 20)).await.unwrap();
        assert!(nobody.is_empty());
        let prefix = index.search(query("acm", None, axis(0), 20)).await.unwrap();
        assert!(prefix.is_empty(), "tenant match must be exact");
    }

    #[tokio::test]
    async fn equipment_filter_narrows_results() {
        let dir = TempDir::new("equipment");
        let index = EdgeIndex::open(&dir.0).unwrap();
        let manual = Uuid::new_v4();
        let pumps: Vec<_> = (0..3).map(|i| chunk("acme", "pump", manual, axis(i))).collect();
        let valves: Vec<_> = (3..6).map(|i| chunk("acme", "valve", manual, axis(i))).collect();
        // Another tenant's valve must not leak in through the equipment filter.
        let other_valve = chunk("bolt", "valve", manual, axis(0));
        index.upsert(pumps.clone()).await.unwrap();
        index.upsert(valves.clone()).await.unwrap();
        index.upsert(vec![other_valve]).await.unwrap();

        let all = index.search(query("acme", None, axis(0), 10)).await.unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].chunk_id, pumps[0].chunk_id);

        let only_valves = index.search(query("acme", Some("valve"), axis(0), 10)).await.unwrap();
        assert_eq!(hit_ids(&only_valves), ids(&valves));

        let none = index.search(query("acme", Some("boiler"), axis(0), 10)).await.unwrap();
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn results_are_ordered_by_score() {
        let dir = TempDir::new("order");
        let index = EdgeIndex::open(&dir.0).unwrap();
        let manual = Uuid::new_v4();
        let tilts = [0.0, 0.3, 0.7, 1.2, 2.0, 4.0];
        let points: Vec<_> = tilts.iter().map(|&t| chunk("acme", "pump", manual, tilted(t))).collect();
        // Insert in reverse so order cannot come from insertion order.
        index.upsert(points.iter().rev().cloned().collect()).await.unwrap();

        let hits = index.search(query("acme", None, axis(0), 10)).await.unwrap();
        let order: Vec<Uuid> = hits.iter().map(|h| h.chunk_id).collect();
        let expected: Vec<Uuid> = points.iter().map(|p| p.chunk_id).collect();
        assert_eq!(order, expected);
        assert!((hits[0].score - 1.0).abs() < 1e-4, "exact match scores 1");
        assert!(hits.windows(2).all(|w| w[0].score > w[1].score));
        // Cosine of the tilted vector to axis 0 is 1/sqrt(1 + t^2).
        let expected_second = 1.0 / (1.0f32 + 0.3 * 0.3).sqrt();
        assert!((hits[1].score - expected_second).abs() < 1e-4);

        let top2 = index.search(query("acme", None, axis(0), 2)).await.unwrap();
        assert_eq!(top2.len(), 2);
        assert_eq!(top2[0].chunk_id, points[0].chunk_id);
        assert_eq!(top2[1].chunk_id, points[1].chunk_id);

        let zero = index.search(query("acme", None, axis(0), 0)).await.unwrap();
        assert!(zero.is_empty());
    }

    #[tokio::test]
    async fn delete_manual_is_scoped_to_tenant_and_manual() {
        let dir = TempDir::new("delete");
        let index = EdgeIndex::open(&dir.0).unwrap();
        let shared_manual = Uuid::new_v4();
        let other_manual = Uuid::new_v4();
        let a_shared: Vec<_> = (0..3).map(|i| chunk("acme", "pump", shared_manual, axis(i))).collect();
        let a_other: Vec<_> = (3..5).map(|i| chunk("acme", "pump", other_manual, axis(i))).collect();
        // Same manual id under another tenant: must survive acme's delete.
        let b_shared: Vec<_> = (0..3).map(|i| chunk("bolt", "pump", shared_manual, axis(i))).collect();
        index.upsert([a_shared.clone(), a_other.clone(), b_shared.clone()].concat()).await.unwrap();

        index.delete_manual("acme", shared_manual).await.unwrap();

        let a_left = index.search(query("acme", None, axis(0), 20)).await.unwrap();
        assert_eq!(hit_ids(&a_left), ids(&a_other));
        let b_left = index.search(query("bolt", None, axis(0), 20)).await.unwrap();
        assert_eq!(hit_ids(&b_left), ids(&b_shared));

        // Deleting a manual that has no points is not an error.
        index.delete_manual("acme", Uuid::new_v4()).await.unwrap();
    }

    #[tokio::test]
    async fn data_survives_drop_and_reopen() {
        let dir = TempDir::new("persist");
        let manual = Uuid::new_v4();
        let gone_manual = Uuid::new_v4();
        let kept: Vec<_> = (0..4).map(|i| chunk("acme", "pump", manual, axis(i))).collect();
        let mut moved = chunk("acme", "pump", manual, axis(10));
        let gone = chunk("acme", "pump", gone_manual, axis(0));
        {
            let index = EdgeIndex::open(&dir.0).unwrap();
            index.upsert(kept.clone()).await.unwrap();
            index.upsert(vec![moved.clone(), gone]).await.unwrap();
            // Re-upserting an id replaces its vector and payload.
            moved.vector = axis(20);
            moved.equipment = "valve".into();
            index.upsert(vec![moved.clone()]).await.unwrap();
            index.delete_manual("acme", gone_manual).await.unwrap();
        }

        let index = EdgeIndex::open(&dir.0).unwrap();
        let hits = index.search(query("acme", None, axis(0), 20)).await.unwrap();
        let mut expected = ids(&kept);
        expected.insert(moved.chunk_id);
        assert_eq!(hit_ids(&hits), expected);
        assert_eq!(hits[0].chunk_id, kept[0].chunk_id);

        let valve = index.search(query("acme", Some("valve"), axis(20), 5)).await.unwrap();
        assert_eq!(valve.len(), 1);
        assert_eq!(valve[0].chunk_id, moved.chunk_id);
        assert!((valve[0].score - 1.0).abs() < 1e-4);

        // The reopened shard still accepts writes.
        let late = chunk("acme", "pump", manual, axis(30));
        index.upsert(vec![late.clone()]).await.unwrap();
        let hits = index.search(query("acme", None, axis(30), 1)).await.unwrap();
        assert_eq!(hits[0].chunk_id, late.chunk_id);
    }

    const CRASH_DIR_ENV: &str = "FIELDVOX_EDGE_CRASH_DIR";

    fn crash_points() -> Vec<ChunkPoint> {
        (0..3u128)
            .map(|i| ChunkPoint {
                chunk_id: Uuid::from_u128(i + 1),
                tenant: "acme".into(),
                equipment: "pump".into(),
                manual_id: Uuid::from_u128(99),
                page: 1,
                vector: axis(i as usize),
            })
            .collect()
    }

    /// Child half of the crash test: a no-op unless the parent set the env var. It writes,
    /// then exits the process without running destructors, so the shard's flush-on-drop
    /// never happens and only the per-batch flush can have persisted the points.
    #[tokio::test]
    async fn crash_writer_child() {
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let index = EdgeIndex::open(Path::new(&dir)).unwrap();
        index.upsert(crash_points()).await.unwrap();
        std::process::exit(0);
    }

    #[test]
    fn acknowledged_writes_survive_a_crash() {
        let dir = TempDir::new("crash");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "vector::edge::tests::crash_writer_child"])
            .env(CRASH_DIR_ENV, &dir.0)
            .status()
            .unwrap();
        assert!(status.success());

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let hits = runtime.block_on(async {
            let index = EdgeIndex::open(&dir.0).unwrap();
            index.search(query("acme", None, axis(0), 10)).await.unwrap()
        });
        assert_eq!(hit_ids(&hits), ids(&crash_points()));
    }

    #[tokio::test]
    async fn wrong_dimensions_are_rejected() {
        let dir = TempDir::new("dims");
        let index = EdgeIndex::open(&dir.0).unwrap();
        let manual = Uuid::new_v4();

        let good = chunk("acme", "pump", manual, axis(0));
        let bad = chunk("acme", "pump", manual, vec![1.0; DIMENSIONS - 1]);
        let err = index.upsert(vec![good, bad]).await.unwrap_err();
        assert!(matches!(
            err,
            VectorError::Dimensions { expected: DIMENSIONS, got } if got == DIMENSIONS - 1
        ));
        // The valid point of the rejected batch was not written either.
        let hits = index.search(query("acme", None, axis(0), 5)).await.unwrap();
        assert!(hits.is_empty());

        let err = index.search(query("acme", None, vec![0.5; DIMENSIONS + 1], 5)).await.unwrap_err();
        assert!(matches!(err, VectorError::Dimensions { got, .. } if got == DIMENSIONS + 1));
        let err = index.search(query("acme", None, Vec::new(), 5)).await.unwrap_err();
        assert!(matches!(err, VectorError::Dimensions { got: 0, .. }));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_and_searches_succeed() {
        let dir = TempDir::new("concurrent");
        let index = Arc::new(EdgeIndex::open(&dir.0).unwrap());
        let manual = Uuid::new_v4();
        let mut tasks = Vec::new();
        for writer in 0..4 {
            let index = Arc::clone(&index);
            tasks.push(tokio::spawn(async move {
                for round in 0..5 {
                    let batch: Vec<_> = (0..20)
                        .map(|i| {
                            let dim = (writer * 100 + round * 20 + i) % DIMENSIONS;
                            chunk("acme", "pump", manual, axis(dim))
                        })
                        .collect();
                    index.upsert(batch).await.unwrap();
                    index.search(query("acme", None, axis(writer), 5)).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let hits = index.search(query("acme", None, axis(0), 1000)).await.unwrap();
        assert_eq!(hits.len(), 4 * 5 * 20);
    }

    #[tokio::test]
    async fn reopening_an_open_index_fails_cleanly() {
        let dir = TempDir::new("locked");
        let _index = EdgeIndex::open(&dir.0).unwrap();
        // The WAL is file-locked: a second shard on the same directory must not open.
        assert!(matches!(EdgeIndex::open(&dir.0), Err(VectorError::Unavailable(_))));
    }

    /// Deterministic pseudo-random unit vectors (xorshift), no extra dependency.
    struct Vectors(u64);

    impl Vectors {
        fn next(&mut self) -> Vec<f32> {
            let v = (0..DIMENSIONS)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 7;
                    self.0 ^= self.0 << 17;
                    (self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            normalized(v)
        }
    }

    fn latency_ms(samples: &mut [Duration]) -> (f64, f64) {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mean = samples.iter().copied().map(ms).sum::<f64>() / samples.len() as f64;
        (mean, ms(samples[samples.len() / 2]))
    }

    /// Measures upsert throughput and search latency on 10k points; prints, asserts only
    /// correctness. One big tenant (8k, above the full-scan threshold) and four small ones.
    #[tokio::test]
    async fn measure_10k_points() {
        let dir = TempDir::new("bench");
        let index = EdgeIndex::open(&dir.0).unwrap();
        let mut rng = Vectors(0x9e37_79b9_7f4a_7c15);
        let manual = Uuid::new_v4();
        let tenants = ["big", "s1", "s2", "s3", "s4"];
        let points: Vec<ChunkPoint> = (0..10_000)
            .map(|i| {
                let tenant = if i < 8_000 { tenants[0] } else { tenants[1 + i % 4] };
                let equipment = if i % 2 == 0 { "pump" } else { "valve" };
                chunk(tenant, equipment, manual, rng.next())
            })
            .collect();

        let started = Instant::now();
        for batch in points.chunks(500) {
            index.upsert(batch.to_vec()).await.unwrap();
        }
        let upsert = started.elapsed();
        println!(
            "edge upsert: 10000 points in {:.2}s = {:.0} points/s (batches of 500, flush each)",
            upsert.as_secs_f64(),
            10_000.0 / upsert.as_secs_f64()
        );

        let probes: Vec<usize> = (0..100).map(|i| i * 97 % 10_000).collect();
        let run = |label: &'static str| {
            let index = &index;
            let points = &points;
            let probes = &probes;
            async move {
                for (tenant_label, filter_big) in [("big tenant", true), ("small tenant", false)] {
                    let mut samples = Vec::new();
                    for &p in probes.iter().filter(|&&p| (p < 8_000) == filter_big) {
                        let point = &points[p];
                        let started = Instant::now();
                        let hits = index.search(query(&point.tenant, None, point.vector.clone(), 5)).await.unwrap();
                        samples.push(started.elapsed());
                        assert_eq!(hits[0].chunk_id, point.chunk_id, "self is nearest");
                        let tenant_ids: HashSet<Uuid> =
                            points.iter().filter(|q| q.tenant == point.tenant).map(|q| q.chunk_id).collect();
                        assert!(hits.iter().all(|h| tenant_ids.contains(&h.chunk_id)));
                    }
                    let (mean, p50) = latency_ms(&mut samples);
                    println!(
                        "edge search ({label}, {tenant_label}, top 5 of 10k): mean {mean:.2} ms, p50 {p50:.2} ms over {} queries",
                        samples.len()
                    );
                }
                let mut samples = Vec::new();
                for &p in probes.iter().filter(|&&p| p < 8_000) {
                    let point = &points[p];
                    let started = Instant::now();
                    let hits = index
                        .search(query(&point.tenant, Some(&point.equipment), point.vector.clone(), 5))
                        .await
                        .unwrap();
                    samples.push(started.elapsed());
                    assert_eq!(hits[0].chunk_id, point.chunk_id);
                }
                let (mean, p50) = latency_ms(&mut samples);
                println!("edge search ({label}, big tenant + equipment): mean {mean:.2} ms, p50 {p50:.2} ms");
            }
        };

        run("plain segment").await;

        let started = Instant::now();
        let optimized = index.optimize().await.unwrap();
        println!("edge optimize (HNSW build): {:.2}s, optimized={optimized}", started.elapsed().as_secs_f64());
        run("after optimize").await;

        let mb = |sub: &str| dir_bytes(&dir.0.join(sub)) as f64 / 1e6;
        println!("edge disk after 10k points: wal {:.1} MB, segments {:.1} MB", mb("wal"), mb("segments"));
    }

    /// Bytes actually allocated on disk (WAL segments are sparse preallocated files).
    fn dir_bytes(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| match entry.metadata() {
                        Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
                        Ok(meta) => meta.blocks() * 512,
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
}
