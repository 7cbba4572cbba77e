//! Endpoints for operators and orchestrators.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::bearer::authenticate;
use crate::app::App;
use crate::auth::Action;
use crate::error::AppError;

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: models loaded (the app exists only once they are) and not draining. Open
/// to load balancers, so it says nothing more; the gauges are on `/metrics`.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let draining = app.sessions.is_draining();
    let body = Json(json!({ "status": if draining { "draining" } else { "ready" } }));
    let status = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, body)
}

/// Prometheus gauges, for an ops (or admin) bearer token.
pub async fn metrics(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(e) = authenticate(&app, &headers, &query, Action::ReadGauges).await {
        app.metrics.refused(&e);
        return AppError::from(e).into_response();
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}
