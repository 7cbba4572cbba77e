//! WebRTC signaling, WHIP-style: `POST /v1/rtc` takes an SDP offer (`application/sdp`,
//! the same bearer token and admission as `/v1/realtime`, `?resume=` too) and answers
//! `201` with the SDP answer, every host candidate in it, and a `Location` to `DELETE`
//! for hanging up. The session itself runs in `session/webrtc.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::bearer::authenticate;
use super::realtime::{Admitted, admit};
use super::server::Connection;
use crate::app::App;
use crate::auth::Action;
use crate::error::AppError;
use crate::rtc::RtcError;
use crate::session::webrtc;

/// An offer is a few kilobytes; nothing larger is read.
pub const MAX_OFFER_BYTES: usize = 64 * 1024;
const SDP: &str = "application/sdp";

pub async fn offer(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    connection: Option<Extension<Arc<Connection>>>,
    body: Bytes,
) -> Response {
    let Some(engine) = app.rtc.as_ref() else {
        return AppError::NotFound("WebRTC endpoint: rtc.enabled is off on this server").into_response();
    };
    let Admitted { claims, guard, resumed } = match admit(&app, &headers, &query, connection, webrtc::TRANSPORT).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    let is_sdp = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(SDP));
    let offer = match String::from_utf8(body.to_vec()) {
        _ if !is_sdp => Err(RtcError::NotSdp),
        Ok(sdp) if sdp.trim_start().starts_with("v=0") => Ok(sdp),
        _ => Err(RtcError::InvalidOffer("not an SDP session description".into())),
    };
    let answered = match offer {
        Ok(sdp) => engine.answer(sdp).await,
        Err(e) => Err(e),
    };
    let (peer, answer) = match answered {
        Ok(a) => a,
        Err(e) => {
            if let Some(state) = resumed {
                app.resumer.park(state).await;
            }
            let e = AppError::from(e);
            app.metrics.error(e.code());
            tracing::info!(reason = e.code().as_str(), error = %e, "WebRTC offer refused");
            return e.into_response();
        }
    };
    let location = format!("/v1/rtc/{}", guard.id);
    tracing::info!(session_id = %guard.id, "WebRTC offer answered");
    // Registered before the answer leaves: the client may hang up at once.
    let hangup = app.rtc_hangups.register(guard.id, &claims);
    tokio::spawn(webrtc::run(peer, app.clone(), claims, guard, resumed, hangup));
    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(LOCATION, v);
    }
    response
}

/// `DELETE /v1/rtc/{id}`: hangs up the caller's own peer.
pub async fn hang_up(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    Path(id): Path<String>,
) -> Response {
    let claims = match authenticate(&app, &headers, &query, Action::Talk).await {
        Ok(c) => c,
        Err(e) => return AppError::from(e).into_response(),
    };
    // Another user's session, or one already gone, is not found either way.
    match Uuid::parse_str(&id) {
        Ok(id) if app.rtc_hangups.hang_up(id, &claims) => StatusCode::NO_CONTENT.into_response(),
        _ => AppError::NotFound("WebRTC session").into_response(),
    }
}
