//! Who is asking: the bearer token of a request, verified, and the role's permission for
//! what it asks. The token may come as `Authorization: Bearer <jwt>`, as a
//! `Sec-WebSocket-Protocol` entry `bearer.<jwt>` or `openai-insecure-api-key.<jwt>`
//! (browsers cannot set headers on WebSockets), or as `?token=<jwt>`.

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use crate::app::App;
use crate::auth::{Action, AuthError, Claims};
use crate::session::dialect::{OPENAI_KEY_PREFIX, offered_subprotocols};

fn bearer(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        return Some(v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim().to_string());
    }
    let from_protocol = offered_subprotocols(headers)
        .find_map(|p| p.strip_prefix("bearer.").or_else(|| p.strip_prefix(OPENAI_KEY_PREFIX)).map(str::to_string));
    from_protocol.or_else(|| query.get("token").or_else(|| query.get("access_token")).cloned())
}

/// The claims of the request's bearer token, if its role may `action`.
pub async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    action: Action,
) -> Result<Claims, AuthError> {
    let token = bearer(headers, query).filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
    let claims = app.auth.verify(&token).await?;
    claims.role.authorize(action)?;
    Ok(claims)
}
