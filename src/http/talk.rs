//! The talk page at `/`: plain HTML, CSS and JS embedded in the binary (no build step),
//! a browser client for the realtime protocol. `scripts/run.sh` prints a ready URL.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;

/// One embedded file as a response; `no-cache` so a new server version is picked up.
pub(super) fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse + Clone {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body)
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let html = file("text/html; charset=utf-8", include_str!("talk/index.html"));
    let js = file("text/javascript; charset=utf-8", include_str!("talk/talk.js"));
    let worklet = file("text/javascript; charset=utf-8", include_str!("talk/talk-worklet.js"));
    let css = file("text/css; charset=utf-8", include_str!("talk/talk.css"));
    Router::new()
        .route("/", get(move || async move { html }))
        .route("/talk.js", get(move || async move { js }))
        .route("/talk-worklet.js", get(move || async move { worklet }))
        .route("/talk.css", get(move || async move { css }))
}
