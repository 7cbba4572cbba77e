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
use tokio::sync::oneshot;
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
    if app.rtc.is_none() {
        return AppError::NotFound("WebRTC endpoint: rtc.enabled is off on this server").into_response();
    }
    // A malformed request is refused before it is charged a session or takes a slot.
    let is_sdp = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or_default().trim().eq_ignore_ascii_case(SDP));
    let offer = match String::from_utf8(body.to_vec()) {
        _ if !is_sdp => Err(RtcError::NotSdp),
        Ok(sdp) if sdp.trim_start().starts_with("v=0") => Ok(sdp),
        _ => Err(RtcError::InvalidOffer("not an SDP session description".into())),
    };
    let offer = match offer {
        Ok(sdp) => sdp,
        Err(e) => return refuse(&app, e.into()),
    };
    let Admitted { claims, guard, resumed } = match admit(&app, &headers, &query, connection, webrtc::TRANSPORT).await {
        Ok(a) => a,
        Err(refused) => return refused,
    };
    // The peer is answered and run in a task of its own: if this request is dropped
    // mid-answer (the client gave up), the task still closes the peer and parks what it
    // took back, instead of leaking sockets and ICE tasks.
    let (answered_tx, answered) = oneshot::channel();
    let task_app = app.clone();
    tokio::spawn(async move {
        let app = task_app;
        let Some(engine) = app.rtc.as_ref() else { return };
        let (peer, answer) = match engine.answer(offer).await {
            Ok(a) => a,
            Err(e) => {
                if let Some(state) = resumed {
                    app.resumer.park(state).await;
                }
                let _ = answered_tx.send(Err(e));
                return;
            }
        };
        // Registered before the answer leaves: the client may hang up at once.
        let hangup = app.rtc_hangups.register(guard.id, &claims);
        let location = format!("/v1/rtc/{}", guard.id);
        if answered_tx.send(Ok((answer, location))).is_err() {
            tracing::info!("the offer's request was gone before its answer");
            app.rtc_hangups.hang_up(guard.id, &claims);
        }
        webrtc::run(peer, app.clone(), claims, guard, resumed, hangup).await;
    });
    let (answer, location) = match answered.await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return refuse(&app, e.into()),
        Err(_) => return AppError::Rtc(RtcError::Engine("the answer task ended".into())).into_response(),
    };
    tracing::info!(%location, "WebRTC offer answered");
    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(LOCATION, v);
    }
    response
}

fn refuse(app: &App, e: AppError) -> Response {
    app.metrics.error(e.code());
    tracing::info!(reason = e.code().as_str(), error = %e, "WebRTC offer refused");
    e.into_response()
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
