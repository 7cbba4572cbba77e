//! Admins review their company's turns and usage: `GET /v1/turns`, `GET /v1/usage`.
//! Always the caller's own tenant; the tenant is never a parameter.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::manuals::caller;
use super::paging;
use crate::app::App;
use crate::auth::{Action, now_secs};
use crate::error::{AppError, ErrorResponse};
use crate::rag::RagError;
use crate::store::{TurnEntry, TurnFilter, UsageRow};

const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 500;
/// A usage report covers at most this many days.
const USAGE_MAX_DAYS: u64 = 366;
const DAY_SECS: u64 = 86_400;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TurnsQuery {
    /// Only this user's turns (the token subject).
    user: Option<String>,
    /// Unix seconds, inclusive.
    since: Option<u64>,
    /// Unix seconds, exclusive.
    until: Option<u64>,
    /// 1 to 500; default 50.
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TurnPage {
    /// Newest first.
    pub turns: Vec<TurnEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/turns", tag = "turns", operation_id = "list_turns",
    params(TurnsQuery),
    responses(
        (status = 200, description = "The tenant's turns, newest first: transcript, answer, citations, timings, status", body = TurnPage),
        (status = 400, description = "Bad cursor, limit or time range", body = ErrorResponse),
        (status = 403, description = "Not an admin", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<TurnsQuery>, QueryRejection>,
) -> Api<Json<TurnPage>> {
    let claims = caller(&app, &headers, Action::ReviewTurns).await?;
    let Query(query) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let limit = paging::limit(query.limit, PAGE_DEFAULT, PAGE_MAX)?;
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since >= until
    {
        return Err(AppError::BadRequest("since must be before until".into()));
    }
    let filter = TurnFilter {
        user: query.user.filter(|u| !u.is_empty()),
        since: query.since,
        until: query.until,
        before: query.cursor.as_deref().map(paging::parse_cursor).transpose()?,
        limit: limit + 1,
    };
    let turns = app.kb.store.turns(&claims.tenant, &filter).await.map_err(RagError::from)?;
    let (turns, next_cursor) = paging::page(turns, limit, |t| (t.at, t.id));
    Ok(Json(TurnPage { turns, next_cursor }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Unix seconds, inclusive; default 30 days before `until`.
    since: Option<u64>,
    /// Unix seconds, exclusive; default now.
    until: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageReport {
    pub since: u64,
    pub until: u64,
    /// Per user and UTC day, by user then day.
    pub usage: Vec<UsageRow>,
}

#[utoipa::path(
    get, path = "/v1/usage", tag = "turns",
    params(UsageQuery),
    responses(
        (status = 200, description = "Turns and seconds of audio in and out, per user and UTC day", body = UsageReport),
        (status = 400, description = "Bad time range", body = ErrorResponse),
        (status = 403, description = "Not an admin", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn usage(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Api<Json<UsageReport>> {
    let claims = caller(&app, &headers, Action::ReviewTurns).await?;
    let Query(query) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let until = query.until.unwrap_or_else(|| now_secs() + 1);
    let since = query.since.unwrap_or_else(|| until.saturating_sub(30 * DAY_SECS));
    if since >= until {
        return Err(AppError::BadRequest("since must be before until".into()));
    }
    if until - since > USAGE_MAX_DAYS * DAY_SECS {
        return Err(AppError::BadRequest(format!("a usage report covers at most {USAGE_MAX_DAYS} days")));
    }
    let usage = app.kb.store.usage(&claims.tenant, since, until).await.map_err(RagError::from)?;
    Ok(Json(UsageReport { since, until, usage }))
}
