//! `GET /v1/realtime`: authenticates before the upgrade, reserves a session slot, then
//! hands the socket to the session task.
//!
//! The token may come as `Authorization: Bearer <jwt>`, as a `Sec-WebSocket-Protocol`
//! entry `bearer.<jwt>` or `openai-insecure-api-key.<jwt>` (browsers cannot set headers
//! on WebSockets), or as `?token=<jwt>`. The wire dialect is negotiated here too.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::auth::{AuthError, Claims};
use crate::error::AppError;
use crate::http::server::Connection;
use crate::session::connection;
use crate::session::dialect::{Dialect, OPENAI_KEY_PREFIX, offered_subprotocols};

fn bearer(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim().to_string());
    }
    let from_protocol = offered_subprotocols(headers)
        .find_map(|p| p.strip_prefix("bearer.").or_else(|| p.strip_prefix(OPENAI_KEY_PREFIX)).map(str::to_string));
    from_protocol.or_else(|| query.get("token").or_else(|| query.get("access_token")).cloned())
}

pub fn authenticate(app: &App, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<Claims, AuthError> {
    let token = bearer(headers, query).filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
    app.keys.verify(&token)
}

pub async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    connection: Option<Extension<Arc<Connection>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let claims = match authenticate(&app, &headers, &query) {
        Ok(c) => {
            if let Some(Extension(connection)) = connection {
                connection.authenticated();
            }
            c
        }
        Err(e) => {
            app.metrics.error(e.code());
            tracing::info!(reason = e.code(), "realtime connection refused");
            return AppError::from(e).into_response();
        }
    };
    let guard = match app.sessions.register(&claims.tenant, &claims.sub, connection::TRANSPORT) {
        Ok(g) => g,
        Err(e) => {
            app.metrics.error(e.code().as_str());
            return e.into_response();
        }
    };
    let dialect = Dialect::negotiate(&headers, &query);
    let max = app.config.server.max_frame_bytes;
    ws.protocols([dialect.subprotocol()])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| connection::run(socket, app, claims, guard, dialect))
        .into_response()
}
