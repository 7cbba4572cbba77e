//! HTTP surface: health, readiness, metrics, and the realtime WebSocket endpoint.

pub mod ops;
pub mod realtime;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::app::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/realtime", get(realtime::upgrade))
        .with_state(app)
}

/// Serves until `shutdown` resolves, then drains live sessions (each is told
/// `session.going_away`) for up to the configured grace period.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let drainer = {
        let app = app.clone();
        async move {
            shutdown.await;
            let grace = std::time::Duration::from_millis(app.config.server.shutdown_grace_ms);
            let left = app.sessions.drain(grace).await;
            if left > 0 {
                tracing::warn!(sessions = left, "grace period over; closing remaining sessions");
            }
            let _ = stop_tx.send(());
        }
    };
    tokio::spawn(drainer);
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        })
        .await
}
