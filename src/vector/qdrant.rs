//! The shared vector index on a Qdrant server, over gRPC.
//!
//! One collection per embedding model, named after the model and its dimension, so a
//! new model never mixes its vectors with an old one's. `tenant_id` is a keyword payload
//! index with `is_tenant`, and every query and delete goes through [`tenant_filter`].

use std::time::Duration;

use async_trait::async_trait;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output;
use qdrant_client::qdrant::vectors_output::VectorsOptions;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType,
    Filter, GetPointsBuilder, KeywordIndexParamsBuilder, PointId, PointStruct, QueryPointsBuilder, UpsertPointsBuilder,
    VectorParamsBuilder,
};
use uuid::Uuid;

use super::{ChunkPoint, DIMENSIONS, VectorError, VectorHit, VectorIndex, VectorQuery, check_dimensions};
use crate::backends::QdrantConfig;
use crate::rag::embed::MODEL_NAME;

const TENANT_FIELD: &str = "tenant_id";
const EQUIPMENT_FIELD: &str = "equipment";
const MANUAL_FIELD: &str = "manual_id";
const PAGE_FIELD: &str = "page";

pub struct QdrantIndex {
    client: Qdrant,
    collection: String,
    batch: usize,
}

/// `fieldvox_chunks_{model}_{dimensions}`.
pub fn collection_name() -> String {
    format!("fieldvox_chunks_{MODEL_NAME}_{DIMENSIONS}")
}

/// The one filter every search, read and delete starts from: only `tenant`'s points,
/// narrowed further by `more`.
fn tenant_filter(tenant: &str, more: impl IntoIterator<Item = Condition>) -> Filter {
    let mut conditions = vec![Condition::matches(TENANT_FIELD, tenant.to_string())];
    conditions.extend(more);
    Filter::must(conditions)
}

fn unavailable(action: &str, e: impl std::fmt::Display) -> VectorError {
    VectorError::Unavailable(format!("qdrant {action}: {e}"))
}

fn uuid_of(id: Option<PointId>) -> Option<Uuid> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(s) => Uuid::parse_str(&s).ok(),
        PointIdOptions::Num(_) => None,
    }
}

impl QdrantIndex {
    /// Connects and makes sure the collection and its payload indexes exist (idempotent).
    pub async fn connect(config: &QdrantConfig) -> Result<Self, VectorError> {
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = Qdrant::from_url(&config.url)
            .api_key(config.api_key.clone())
            .timeout(timeout)
            .connect_timeout(timeout)
            .skip_compatibility_check()
            .build()
            .map_err(|e| unavailable("client", e))?;
        let index = Self { client, collection: collection_name(), batch: config.batch.max(1) };
        index.ensure_collection().await?;
        Ok(index)
    }

    async fn ensure_collection(&self) -> Result<(), VectorError> {
        let name = &self.collection;
        let exists = self.client.collection_exists(name).await.map_err(|e| unavailable("collection_exists", e))?;
        if !exists {
            let create = CreateCollectionBuilder::new(name)
                .vectors_config(VectorParamsBuilder::new(DIMENSIONS as u64, Distance::Cosine));
            // Another instance may create it at the same moment: check again before failing.
            if let Err(e) = self.client.create_collection(create).await
                && !self.client.collection_exists(name).await.unwrap_or(false)
            {
                return Err(unavailable("create_collection", e));
            }
            tracing::info!(collection = %name, "qdrant collection created");
        }
        let tenant = CreateFieldIndexCollectionBuilder::new(name, TENANT_FIELD, FieldType::Keyword)
            .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true))
            .wait(true);
        self.client.create_field_index(tenant).await.map_err(|e| unavailable("tenant index", e))?;
        // A manual id names one version of a manual: deleting a replaced version is a
        // delete by `manual_id`.
        for field in [EQUIPMENT_FIELD, MANUAL_FIELD] {
            let index = CreateFieldIndexCollectionBuilder::new(name, field, FieldType::Keyword).wait(true);
            self.client.create_field_index(index).await.map_err(|e| unavailable("payload index", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl VectorIndex for QdrantIndex {
    async fn upsert(&self, points: Vec<ChunkPoint>) -> Result<(), VectorError> {
        for point in &points {
            check_dimensions(&point.vector)?;
        }
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| {
                let mut payload = qdrant_client::Payload::new();
                payload.insert(TENANT_FIELD, p.tenant);
                payload.insert(EQUIPMENT_FIELD, p.equipment);
                payload.insert(MANUAL_FIELD, p.manual_id.to_string());
                payload.insert(PAGE_FIELD, i64::from(p.page));
                PointStruct::new(p.chunk_id.to_string(), p.vector, payload)
            })
            .collect();
        for batch in points.chunks(self.batch) {
            let upsert = UpsertPointsBuilder::new(&self.collection, batch.to_vec()).wait(true);
            self.client.upsert_points(upsert).await.map_err(|e| unavailable("upsert", e))?;
        }
        Ok(())
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<VectorHit>, VectorError> {
        check_dimensions(&query.vector)?;
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let equipment = query.equipment.map(|e| Condition::matches(EQUIPMENT_FIELD, e));
        let request = QueryPointsBuilder::new(&self.collection)
            .query(query.vector)
            .filter(tenant_filter(&query.tenant, equipment))
            .limit(query.limit as u64);
        let found = self.client.query(request).await.map_err(|e| unavailable("query", e))?;
        let mut hits: Vec<VectorHit> = found
            .result
            .into_iter()
            .filter_map(|p| Some(VectorHit { chunk_id: uuid_of(p.id)?, score: p.score }))
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(hits)
    }

    async fn delete_manual(&self, tenant: &str, manual_id: Uuid) -> Result<(), VectorError> {
        let filter = tenant_filter(tenant, [Condition::matches(MANUAL_FIELD, manual_id.to_string())]);
        let delete = DeletePointsBuilder::new(&self.collection).points(filter).wait(true);
        self.client.delete_points(delete).await.map_err(|e| unavailable("delete", e))?;
        Ok(())
    }

    async fn vectors(&self, tenant: &str, ids: &[Uuid]) -> Result<Vec<(Uuid, Vec<f32>)>, VectorError> {
        let ids: Vec<PointId> = ids.iter().map(|id| PointId::from(id.to_string())).collect();
        let get = GetPointsBuilder::new(&self.collection, ids).with_payload(true).with_vectors(true);
        let found = self.client.get_points(get).await.map_err(|e| unavailable("get", e))?;
        Ok(found
            .result
            .into_iter()
            .filter(|p| p.payload.get(TENANT_FIELD).and_then(|v| v.as_str()).is_some_and(|t| t == tenant))
            .filter_map(|p| {
                let id = uuid_of(p.id)?;
                match p.vectors?.vectors_options? {
                    VectorsOptions::Vector(v) => match v.into_vector() {
                        vector_output::Vector::Dense(dense) => Some((id, dense.data)),
                        _ => None,
                    },
                    VectorsOptions::Vectors(_) => None,
                }
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), VectorError> {
        self.client.health_check().await.map_err(|e| unavailable("health check", e))?;
        Ok(())
    }
}
