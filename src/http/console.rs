//! The web console at `/console`: an ops view (live gauges and latency charts, pushed
//! every second from a server-side aggregate over `GET /v1/ops/live`) and an admin view
//! (the tenant's manuals, uploads with live progress, page text, recent turns) over the
//! manuals and turns APIs. Plain HTML, CSS and JS embedded in the binary; charts are
//! drawn as SVG by the page itself, so there is no build step and no third-party code.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures_util::Stream;
use serde::Serialize;

use super::Api;
use super::manuals::caller;
use super::talk::file;
use crate::app::App;
use crate::auth::{Action, Claims, Role};
use crate::metrics::{RecentLatency, Totals};

/// How often the live view is pushed.
const TICK: Duration = Duration::from_secs(1);

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let html = file("text/html; charset=utf-8", include_str!("console/index.html"));
    let js = file("text/javascript; charset=utf-8", include_str!("console/console.js"));
    let css = file("text/css; charset=utf-8", include_str!("console/console.css"));
    Router::new()
        .route("/console", get(move || async move { html }))
        .route("/console/console.js", get(move || async move { js }))
        .route("/console/console.css", get(move || async move { css }))
}

/// One second of the server, as the console shows it.
#[derive(Debug, Serialize)]
pub struct LiveView {
    pub sessions: SessionsView,
    /// Each stage's latency over the last five minutes, ms.
    pub latency_ms: BTreeMap<&'static str, RecentLatency>,
    #[serde(flatten)]
    pub totals: Totals,
}

#[derive(Debug, Serialize)]
pub struct SessionsView {
    pub total: usize,
    pub max: usize,
    pub draining: bool,
    pub by_transport: BTreeMap<&'static str, usize>,
    /// Sessions per tenant: every tenant for ops, the caller's own for an admin.
    pub by_tenant: BTreeMap<String, usize>,
}

impl LiveView {
    pub fn of(app: &App, viewer: &Claims) -> Self {
        let mut by_transport = BTreeMap::new();
        let mut by_tenant = BTreeMap::new();
        for ((tenant, transport), n) in app.sessions.census() {
            *by_transport.entry(transport).or_default() += n;
            if viewer.role == Role::Ops || tenant == viewer.tenant {
                *by_tenant.entry(tenant).or_default() += n;
            }
        }
        let sessions = SessionsView {
            total: app.sessions.count(),
            max: app.config.server.max_sessions,
            draining: app.sessions.is_draining(),
            by_transport,
            by_tenant,
        };
        Self { sessions, latency_ms: app.metrics.recent_latencies(), totals: app.metrics.totals() }
    }
}

/// `GET /v1/ops/live` (roles that read gauges): a `live` event every second.
pub async fn live(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Api<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let viewer = caller(&app, &headers, Action::ReadGauges).await?;
    let ticks = tokio::time::interval(TICK);
    let stream = futures_util::stream::unfold((ticks, app, viewer), |(mut ticks, app, viewer)| async move {
        ticks.tick().await;
        let view = LiveView::of(&app, &viewer);
        let event = Event::default().event("live").json_data(&view).unwrap_or_else(|_| Event::default());
        Some((Ok(event), (ticks, app, viewer)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
