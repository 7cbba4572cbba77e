//! Endpoints for operators and orchestrators.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::app::App;

/// Liveness: the process answers.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: models loaded (the app exists only once they are) and not draining.
pub async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let draining = app.sessions.is_draining();
    let body = Json(json!({
        "status": if draining { "draining" } else { "ready" },
        "sessions": app.sessions.count(),
        "max_sessions": app.config.server.max_sessions,
        "pipelines": app.pipelines.names().collect::<Vec<_>>(),
        "default_pipeline": app.pipelines.default_name(),
    }));
    let status = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, body)
}

pub async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render())
}
