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

/// `[console]`: signing in through an OpenID provider (authorization code with PKCE, in
/// the browser). Its id_tokens are then verified like any bearer token, so `auth.jwks`
/// must name the same issuer, with `oidc_client_id` as the audience.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The provider's issuer URL; none: sign in by pasting a token only.
    pub oidc_issuer: Option<String>,
    /// The console's client id at the provider (a public client: no secret).
    pub oidc_client_id: String,
    pub oidc_scope: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self { oidc_issuer: None, oidc_client_id: "fieldvox-console".into(), oidc_scope: "openid".into() }
    }
}

/// What the page needs to offer the provider's sign-in.
#[derive(Serialize)]
struct PageConfig<'a> {
    oidc: Option<OidcView<'a>>,
}

#[derive(Serialize)]
struct OidcView<'a> {
    issuer: &'a str,
    client_id: &'a str,
    scope: &'a str,
}

/// `GET /console/config`: the sign-in choices (public; no token yet).
pub async fn page_config(State(app): State<Arc<App>>) -> axum::Json<serde_json::Value> {
    let c = &app.config.console;
    let oidc = c.oidc_issuer.as_deref().map(|issuer| OidcView {
        issuer: issuer.trim_end_matches('/'),
        client_id: &c.oidc_client_id,
        scope: &c.oidc_scope,
    });
    axum::Json(serde_json::to_value(PageConfig { oidc }).unwrap_or_default())
}

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
