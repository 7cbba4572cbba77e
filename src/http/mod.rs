//! HTTP surface: the talk page, the console, health, readiness, metrics, the realtime WebSocket
//! endpoint and WebRTC signaling, voice notes, the manuals API, turn review and usage, and the OpenAPI document.

pub mod ask;
pub mod bearer;
pub mod console;
pub mod manuals;
pub mod openapi;
pub mod ops;
pub mod paging;
pub mod realtime;
pub mod rtc;
pub mod server;
pub mod talk;
pub mod turns;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::error::AppError;

/// What an HTTP handler returns: its answer, or an error shown with its stable code.
pub type Api<T> = Result<T, AppError>;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(talk::routes())
        .merge(console::routes())
        .route("/v1/ops/live", get(console::live))
        .route("/console/config", get(console::page_config))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/realtime", get(realtime::upgrade))
        .route("/v1/rtc", post(rtc::offer).layer(DefaultBodyLimit::max(rtc::MAX_OFFER_BYTES)))
        .route("/v1/rtc/{id}", delete(rtc::hang_up))
        // A voice note is read whole, and cut off at `ask.max_bytes` by the handler.
        .route("/v1/ask", post(ask::ask).layer(DefaultBodyLimit::disable()))
        // The upload streams to disk and enforces `ingest.max_bytes` itself.
        .route("/v1/manuals", post(manuals::upload).get(manuals::list).layer(DefaultBodyLimit::disable()))
        .route("/v1/manuals/{id}", get(manuals::show).delete(manuals::delete))
        .route("/v1/manuals/{id}/pages/{page}", get(manuals::page))
        .route("/v1/jobs/{id}", get(manuals::job))
        .route("/v1/jobs/{id}/events", get(manuals::job_events))
        .route("/v1/equipment", get(manuals::equipment))
        .route("/v1/search", post(manuals::search))
        .route("/v1/turns", get(turns::list))
        .route("/v1/usage", get(turns::usage))
        .route("/openapi.json", get(openapi::document))
        .with_state(app)
}

/// Serves until `shutdown` resolves, then drains: connections close (idle ones at once)
/// and live sessions are told `session.going_away`, both within the configured grace
/// period — the function returns by then whatever clients do.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let limits = server::Limits::from_config(&app.config.server, &app.config.limits);
    let grace = limits.grace;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let signal = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let connections =
        server::accept(router(app.clone()), listener, limits, app.metrics.clone(), stopped(stop_rx.clone()));
    let sessions = async {
        stopped(stop_rx).await;
        let left = app.sessions.drain(grace).await;
        if left > 0 {
            tracing::warn!(sessions = left, "grace period over; closing remaining sessions");
        }
    };
    tokio::join!(signal, connections, sessions);
    Ok(())
}
