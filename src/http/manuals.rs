//! The admins' manuals API and the technicians' text search: upload (streamed to a temp
//! file, never held whole by the request), ingest jobs and their progress events, listing,
//! reading a page, deleting, equipment, search. The tenant always comes from the token;
//! another tenant's ids are simply not found.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Api;
use super::bearer::authenticate;
use super::paging;
use crate::app::App;
use crate::auth::{Action, Claims};
use crate::error::{AppError, ErrorResponse};
use crate::limits::Limit;
use crate::pipeline::turn::lookup;
use crate::rag::RagError;
use crate::rag::ingest::{Accepted, NewManual, inspect};
use crate::store::{Job, Manual, ManualFilter};
use crate::workers::fair;

/// Longest equipment id and title accepted.
const MAX_EQUIPMENT_CHARS: usize = 64;
const MAX_TITLE_CHARS: usize = 200;
/// Manuals per listing page: default and most.
const PAGE_DEFAULT: usize = 50;
const PAGE_MAX: usize = 200;
/// Under `data.dir`: uploads being received (removed when answered, and at start).
pub const SPOOL_DIR: &str = "uploads";
/// How often a watcher of a job run by another process reads its state.
const JOB_POLL: Duration = Duration::from_millis(500);

pub(super) async fn caller(app: &App, headers: &HeaderMap, action: Action) -> Api<Claims> {
    authenticate(app, headers, &HashMap::new(), action).await.map_err(|e| {
        app.metrics.refused(&e);
        AppError::from(e)
    })
}

/// Ids that do not parse name nothing: not found, like another tenant's.
fn parse_id(id: &str, what: &'static str) -> Api<Uuid> {
    Uuid::parse_str(id).map_err(|_| AppError::NotFound(what))
}

/// The form of an upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The manual: PDF, HTML, Markdown or plain text (the type is read from the bytes).
    #[schema(format = Binary)]
    file: String,
    /// The equipment it covers, e.g. `RTU-40`.
    equipment: String,
    /// Shown in citations; defaults to the file name. The same equipment and title again
    /// is a new version that replaces the old one.
    title: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UploadAccepted {
    pub manual_id: Uuid,
    pub job_id: Uuid,
    pub version: u32,
}

/// A multipart upload, spooled to a temp file that is removed when this is dropped.
struct Spooled {
    path: PathBuf,
    size: u64,
    sha256: String,
    filename: String,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub(super) fn multipart_error(e: impl std::fmt::Display) -> AppError {
    AppError::BadRequest(format!("malformed multipart body: {e}"))
}

/// Streams the file field to disk, hashing it, and stops reading at the size limit.
async fn spool(dir: &FsPath, mut field: Field<'_>, limit: u64) -> Api<Spooled> {
    let name = field.file_name().unwrap_or("manual");
    // Only the last path component, and not all of an absurd one.
    let filename: String = name.rsplit(['/', '\\']).next().unwrap_or("manual").chars().take(200).collect();
    tokio::fs::create_dir_all(dir).await?;
    let path = dir.join(format!("{}.part", Uuid::new_v4()));
    let mut file = tokio::fs::File::create(&path).await?;
    let mut spooled = Spooled { path, size: 0, sha256: String::new(), filename };
    let mut hash = Sha256::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        spooled.size += chunk.len() as u64;
        if spooled.size > limit {
            return Err(RagError::TooLarge { size: spooled.size, limit }.into());
        }
        hash.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    spooled.sha256 = hex::encode(hash.finalize());
    Ok(spooled)
}

/// A short text field, read up to `max` characters.
pub(super) async fn small_text(mut field: Field<'_>, name: &str, max: usize) -> Api<String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > max * 4 {
            return Err(AppError::BadRequest(format!("{name} is longer than {max} characters")));
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| AppError::BadRequest(format!("{name} is not UTF-8")))?;
    let text = text.trim().to_string();
    if text.chars().count() > max || text.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "{name} must be at most {max} characters, without control characters"
        )));
    }
    Ok(text)
}

#[utoipa::path(
    post, path = "/v1/manuals", tag = "manuals",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Accepted: the ingest job is running", body = UploadAccepted),
        (status = 200, description = "The same file is already live: nothing re-ingested", body = Manual),
        (status = 400, description = "A field is missing or malformed", body = ErrorResponse),
        (status = 401, description = "No valid token", body = ErrorResponse),
        (status = 403, description = "Not an admin", body = ErrorResponse),
        (status = 413, description = "Over the size or page limit", body = ErrorResponse),
        (status = 415, description = "Not a PDF, HTML, Markdown or text file", body = ErrorResponse),
        (status = 422, description = "Unreadable: corrupt, or no text at all", body = ErrorResponse),
        (status = 429, description = "Over the uploads limit (`Retry-After` says when to retry)", body = ErrorResponse),
        (status = 503, description = "The uploads limit cannot be checked while Redis is down", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn upload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Api<Response> {
    let claims = caller(&app, &headers, Action::ManageManuals).await?;
    // Before the body is read: a refused upload costs the server nothing.
    app.limits.charge(Limit::Uploads, &claims, 1).await?;
    let mut multipart = multipart.map_err(multipart_error)?;
    let limits = app.config.ingest.clone();
    let uploads = app.config.data.dir.join(SPOOL_DIR);
    let (mut file, mut equipment, mut title) = (None, None, None);
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") => file = Some(spool(&uploads, field, limits.max_bytes).await?),
            Some("equipment") => equipment = Some(small_text(field, "equipment", MAX_EQUIPMENT_CHARS).await?),
            Some("title") => title = Some(small_text(field, "title", MAX_TITLE_CHARS).await?),
            _ => {}
        }
    }
    let file = file.ok_or_else(|| AppError::BadRequest("the form has no `file` field".into()))?;
    let equipment = equipment
        .filter(|e| !e.is_empty())
        .ok_or_else(|| AppError::BadRequest("the form has no `equipment` field".into()))?;
    let bytes = tokio::fs::read(&file.path).await?;
    let document = inspect(bytes, &limits).await.map_err(|e| {
        tracing::info!(tenant = %claims.tenant, file = %file.filename, error = %e, "upload refused");
        AppError::from(e)
    })?;
    let new = NewManual {
        tenant: claims.tenant.clone(),
        equipment,
        title,
        filename: file.filename.clone(),
        uploaded_by: claims.sub.clone(),
    };
    match app.kb.accept(new, file.size, file.sha256.clone()).await? {
        Accepted::Duplicate(manual) => Ok((StatusCode::OK, Json(manual)).into_response()),
        Accepted::Started { manual, job } => {
            tracing::info!(tenant = %manual.tenant, manual = %manual.id, job = %job.id, bytes = file.size, "upload accepted");
            let accepted = UploadAccepted { manual_id: manual.id, job_id: job.id, version: manual.version };
            app.jobs.start(&job);
            let app = app.clone();
            tokio::spawn(async move {
                let progress = |job: &Job| app.jobs.update(job);
                let _ = app.kb.run_job(manual, job, document, &app.config.ingest, Some(&progress)).await;
            });
            Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
        }
    }
}

/// A job from this process's board, else from the store.
async fn find_job(app: &App, tenant: &str, id: Uuid) -> Api<Job> {
    if let Some(job) = app.jobs.get(tenant, id) {
        return Ok(job);
    }
    app.kb.store.job(tenant, id).await.map_err(RagError::from)?.ok_or(AppError::NotFound("job"))
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "The job id from the upload")),
    responses(
        (status = 200, description = "The job's state and progress", body = Job),
        (status = 404, description = "No such job for this tenant", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn job(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Api<Json<Job>> {
    let claims = caller(&app, &headers, Action::ReadManuals).await?;
    Ok(Json(find_job(&app, &claims.tenant, parse_id(&id, "job")?).await?))
}

/// The job once it differs from `last`: from this process's board while it runs here,
/// else (it finished, or runs in another process) from the store, polled.
async fn next_change(
    app: &App,
    tenant: &str,
    last: &Job,
    watch: &mut Option<tokio::sync::watch::Receiver<Job>>,
) -> Option<Job> {
    loop {
        let seen = match watch.as_mut() {
            Some(rx) => match rx.changed().await {
                Ok(()) => Some(rx.borrow_and_update().clone()),
                // The job left the board: it has finished; the store has its end.
                Err(_) => {
                    *watch = None;
                    None
                }
            },
            None => {
                tokio::time::sleep(JOB_POLL).await;
                None
            }
        };
        let job = match seen {
            Some(job) => job,
            None => app.kb.store.job(tenant, last.id).await.ok().flatten()?,
        };
        if &job != last {
            return Some(job);
        }
    }
}

fn job_event(job: &Job) -> Event {
    let name = if job.state.is_final() { job.state.as_str() } else { "progress" };
    Event::default().event(name).json_data(job).unwrap_or_else(|_| Event::default().event(name))
}

#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = Uuid, Path, description = "The job id from the upload")),
    responses(
        (status = 200, content_type = "text/event-stream", body = Job,
         description = "Server-sent events, one per change: `progress`, then `done` or `failed`; the stream ends there"),
        (status = 404, description = "No such job for this tenant", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn job_events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Api<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let claims = caller(&app, &headers, Action::ReadManuals).await?;
    let id = parse_id(&id, "job")?;
    let first = find_job(&app, &claims.tenant, id).await?;
    let watch = app.jobs.watch(&claims.tenant, id);
    let tenant = claims.tenant;
    // The job to send next; after a final state, the stream ends.
    let stream = futures_util::stream::unfold((Some(first), watch), move |(next, mut watch)| {
        let (app, tenant) = (app.clone(), tenant.clone());
        async move {
            let job = next?;
            let following =
                if job.state.is_final() { None } else { next_change(&app, &tenant, &job, &mut watch).await };
            Some((Ok(job_event(&job)), (following, watch)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only manuals of this equipment.
    equipment: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Manuals per page (default 50, at most 200).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct ManualPage {
    pub manuals: Vec<Manual>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/manuals", tag = "manuals",
    params(ListQuery),
    responses(
        (status = 200, description = "Live manuals in upload order, one page", body = ManualPage),
        (status = 400, description = "Bad cursor or limit", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Api<Json<ManualPage>> {
    let claims = caller(&app, &headers, Action::ReadManuals).await?;
    let Query(query) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let limit = paging::limit(query.limit, PAGE_DEFAULT, PAGE_MAX)?;
    let filter = ManualFilter {
        equipment: query.equipment.filter(|e| !e.is_empty()),
        after: query.cursor.as_deref().map(paging::parse_cursor).transpose()?,
        limit: limit + 1,
    };
    let manuals = app.kb.store.list_manuals(&claims.tenant, &filter).await.map_err(RagError::from)?;
    let (manuals, next_cursor) = paging::page(manuals, limit, |m| (m.created_at, m.id));
    Ok(Json(ManualPage { manuals, next_cursor }))
}

#[utoipa::path(
    get, path = "/v1/manuals/{id}", tag = "manuals",
    params(("id" = Uuid, Path, description = "Manual id")),
    responses(
        (status = 200, description = "The manual", body = Manual),
        (status = 404, description = "No such manual for this tenant", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn show(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Api<Json<Manual>> {
    let claims = caller(&app, &headers, Action::ReadManuals).await?;
    let id = parse_id(&id, "manual")?;
    let manual = app.kb.store.manual(&claims.tenant, id).await.map_err(RagError::from)?;
    Ok(Json(manual.ok_or(AppError::NotFound("manual"))?))
}

#[derive(Serialize, ToSchema)]
pub struct PageText {
    pub manual_id: Uuid,
    pub page: u32,
    /// What the assistant reads from this page, passage by passage.
    pub text: String,
    /// The page had no text layer: nothing on it can be cited.
    pub blank: bool,
}

#[utoipa::path(
    get, path = "/v1/manuals/{id}/pages/{page}", tag = "manuals",
    params(("id" = Uuid, Path, description = "Manual id"), ("page" = u32, Path, description = "Page number, from 1")),
    responses(
        (status = 200, description = "The page's text", body = PageText),
        (status = 404, description = "No such manual or page", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn page(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((id, page)): Path<(String, String)>,
) -> Api<Json<PageText>> {
    let claims = caller(&app, &headers, Action::ReadManuals).await?;
    let id = parse_id(&id, "manual")?;
    let manual = app.kb.store.manual(&claims.tenant, id).await.map_err(RagError::from)?;
    let manual = manual.ok_or(AppError::NotFound("manual"))?;
    let page: u32 = page.parse().ok().filter(|p| (1..=manual.pages).contains(p)).ok_or(AppError::NotFound("page"))?;
    let text = app.kb.store.page_text(&claims.tenant, id, page).await.map_err(RagError::from)?.join("\n\n");
    Ok(Json(PageText { manual_id: id, page, text, blank: manual.blank_pages.contains(&page) }))
}

#[utoipa::path(
    delete, path = "/v1/manuals/{id}", tag = "manuals",
    params(("id" = Uuid, Path, description = "Manual id")),
    responses(
        (status = 204, description = "Deleted: its text, vectors and cached results are gone"),
        (status = 403, description = "Not an admin", body = ErrorResponse),
        (status = 404, description = "No such manual for this tenant", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn delete(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Api<StatusCode> {
    let claims = caller(&app, &headers, Action::ManageManuals).await?;
    let id = parse_id(&id, "manual")?;
    // Only live manuals are deleted here; one being ingested belongs to its job.
    if app.kb.store.manual(&claims.tenant, id).await.map_err(RagError::from)?.is_none() {
        return Err(AppError::NotFound("manual"));
    }
    if !app.kb.delete_manual(&claims.tenant, id).await? {
        return Err(AppError::NotFound("manual"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct EquipmentCount {
    pub id: String,
    pub manuals: u32,
}

#[derive(Serialize, ToSchema)]
pub struct EquipmentList {
    pub equipment: Vec<EquipmentCount>,
}

#[utoipa::path(
    get, path = "/v1/equipment", tag = "manuals",
    responses((status = 200, description = "Equipment ids with their count of manuals", body = EquipmentList)),
    security(("bearer" = []))
)]
pub async fn equipment(State(app): State<Arc<App>>, headers: HeaderMap) -> Api<Json<EquipmentList>> {
    let claims = caller(&app, &headers, Action::ReadManuals).await?;
    let rows = app.kb.store.equipment(&claims.tenant).await.map_err(RagError::from)?;
    Ok(Json(EquipmentList {
        equipment: rows.into_iter().map(|(id, manuals)| EquipmentCount { id, manuals }).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct SearchRequest {
    /// The question, as a technician would ask it.
    pub question: String,
    /// Only this equipment's manuals.
    pub equipment: Option<String>,
    /// Pipeline profile whose retrieval settings to use (default: the server's).
    pub pipeline: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchPassage {
    pub manual_id: Uuid,
    pub title: String,
    pub page: u32,
    pub text: String,
    /// Cosine similarity to the question (0 when found by its words only).
    pub score: f32,
}

#[derive(Serialize, ToSchema)]
pub struct SearchSentence {
    /// Index into `passages`.
    pub passage: usize,
    pub sentence: String,
    pub score: f32,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    /// The passages a voice turn would use, best first.
    pub passages: Vec<SearchPassage>,
    /// Their sentences that answer the question, best first: what the answer is made of.
    pub evidence: Vec<SearchSentence>,
}

#[utoipa::path(
    post, path = "/v1/search", tag = "search",
    request_body = SearchRequest,
    responses(
        (status = 200, description = "What a voice turn would find", body = SearchResults),
        (status = 400, description = "No question, or an unknown pipeline", body = ErrorResponse),
        (status = 429, description = "Over the searches limit (`Retry-After` says when to retry)", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn search(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<SearchRequest>, JsonRejection>,
) -> Api<Json<SearchResults>> {
    let claims = caller(&app, &headers, Action::ReadManuals).await?;
    app.limits.charge(Limit::Searches, &claims, 1).await?;
    let Json(req) = body.map_err(|e| AppError::BadRequest(e.body_text()))?;
    if req.question.trim().is_empty() {
        return Err(AppError::BadRequest("question is empty".into()));
    }
    let pipeline = app
        .pipelines
        .get(req.pipeline.as_deref())
        .ok_or_else(|| AppError::BadRequest(format!("unknown pipeline {:?}", req.pipeline.unwrap_or_default())))?;
    let found = lookup(&app.kb, &claims.tenant, req.equipment.as_deref(), req.question.trim(), &pipeline);
    let (passages, evidence, _) = fair::on_behalf_of(&claims.tenant, found).await?;
    Ok(Json(SearchResults {
        passages: passages
            .into_iter()
            .map(|p| SearchPassage {
                manual_id: p.manual_id,
                title: p.title,
                page: p.page,
                text: p.text,
                score: p.score,
            })
            .collect(),
        evidence: evidence
            .into_iter()
            .map(|e| SearchSentence { passage: e.passage, sentence: e.sentence, score: e.score })
            .collect(),
    }))
}
