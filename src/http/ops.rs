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

/// Readiness: models loaded (the app exists only once they are), not draining, and every
/// backend a turn needs answering. Each backend is named with its state and round trip;
/// one that only helps (Redis) being down makes it `degraded`, still ready. Open to load
/// balancers: it names kinds, never addresses or data.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let draining = app.sessions.is_draining();
    let backends = app.backends.health().await;
    let down: Vec<&str> = backends.iter().filter(|b| !b.up).map(|b| b.role).collect();
    let required_down = backends.iter().any(|b| !b.up && b.required);
    let status = if draining {
        "draining"
    } else if required_down {
        "unavailable"
    } else if !down.is_empty() {
        "degraded"
    } else {
        "ready"
    };
    let code = if draining || required_down { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(json!({ "status": status, "down": down, "backends": backends })))
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
