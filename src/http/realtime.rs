//! `GET /v1/realtime`: authenticates before the upgrade (a role that may talk), takes back
//! a parked session when `?resume=<token>` is given, reserves a session slot, negotiates
//! the wire dialect, then hands the socket to the session task.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::bearer::authenticate;
use super::server::Connection;
use crate::app::App;
use crate::auth::{Action, Claims};
use crate::error::AppError;
use crate::limits::Limit;
use crate::session::SessionGuard;
use crate::session::dialect::Dialect;
use crate::session::manager::Holder;
use crate::session::resume::ResumeState;
use crate::session::websocket;

pub async fn upgrade(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    connection: Option<Extension<Arc<Connection>>>,
    ws: WebSocketUpgrade,
) -> Response {
    let Admitted { claims, guard, resumed } =
        match admit(&app, &headers, &query, connection, websocket::TRANSPORT).await {
            Ok(a) => a,
            Err(refused) => return refused,
        };
    let dialect = Dialect::negotiate(&headers, &query);
    let max = app.config.server.max_frame_bytes;
    ws.protocols([dialect.subprotocol()])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| websocket::run(socket, app, claims, guard, dialect, resumed))
        .into_response()
}

/// A session let in: who, its slot, and the parked state it takes back.
pub struct Admitted {
    pub claims: Claims,
    pub guard: SessionGuard,
    pub resumed: Option<ResumeState>,
}

/// Lets a session in on `transport`, or says why not: a token that may talk, the
/// session-open allowance, a valid resume (`?resume=<token>`), and a free slot.
pub async fn admit(
    app: &App,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    connection: Option<Extension<Arc<Connection>>>,
    transport: &'static str,
) -> Result<Admitted, Response> {
    let claims = match authenticate(app, headers, query, Action::Talk).await {
        Ok(c) => {
            if let Some(Extension(connection)) = connection {
                connection.authenticated();
            }
            c
        }
        Err(e) => {
            app.metrics.refused(&e);
            tracing::info!(reason = e.code(), transport, "realtime connection refused");
            return Err(AppError::from(e).into_response());
        }
    };
    // A client reconnecting in a loop is refused before it costs anything more.
    if let Err(refusal) = app.limits.charge(Limit::SessionOpens, &claims, 1).await {
        let e = AppError::from(refusal);
        app.metrics.error(e.code());
        return Err(e.into_response());
    }
    // A resume is checked before a slot is taken: a refused one holds nothing.
    let resumed = match query.get("resume") {
        None => None,
        Some(token) => {
            let taken = match app.resumer.verify(token, &claims) {
                Ok(id) => app.resumer.take(id).await,
                Err(e) => Err(e),
            };
            match taken {
                Ok(state) => {
                    app.metrics.resume("resumed");
                    Some(state)
                }
                Err(e) => {
                    let e = AppError::from(e);
                    app.metrics.resume(e.code().as_str());
                    app.metrics.error(e.code());
                    tracing::info!(reason = e.code().as_str(), "resume refused");
                    return Err(e.into_response());
                }
            }
        }
    };
    let holder =
        Holder { tenant: &claims.tenant, user: &claims.sub, max_per_user: app.limits.config().sessions(&claims) };
    let registered = match &resumed {
        Some(state) => app.sessions.register_as(state.session_id, holder, transport),
        None => app.sessions.register(holder, transport),
    };
    match registered {
        Ok(guard) => Ok(Admitted { claims, guard, resumed }),
        Err(e) => {
            if let Some(state) = resumed {
                app.resumer.park(state).await; // refused for now (full, draining): it may be retried
            }
            app.metrics.error(e.code());
            Err(e.into_response())
        }
    }
}
