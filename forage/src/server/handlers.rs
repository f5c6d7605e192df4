//! The route handlers: parse and check the request, run the app operation on the blocking
//! pool, answer JSON (or an [`ApiError`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tidal_export::ExportFormat;

use super::{ApiError, ServerState};
use crate::app::{AppError, ExportRequest, FeedRequest, FeedbackRequest, Forage, LabelEdit, NewLabel};

type Answer = Result<Response, ApiError>;

/// Runs `f` on the blocking pool.
async fn run<T, F>(state: &ServerState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Forage) -> Result<T, AppError> + Send + 'static,
{
    let app = state.app.clone();
    match tokio::task::spawn_blocking(move || f(&app)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())),
    }
}

fn ok(value: impl serde::Serialize) -> Answer {
    Ok(Json(value).into_response())
}

fn created(value: impl serde::Serialize) -> Answer {
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            status,
            "body_too_large",
            format!("body above {} bytes", super::BODY_BYTES_MAX),
        );
    }
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", text)
}

fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(v)| v).map_err(|r| body_error(r.status(), r.body_text()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text()))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|r| ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", r.body_text()).field("id"))
}

pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route (see /openapi.json)")
}

pub async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.app.metrics_text()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedParams {
    user: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    label: Option<i64>,
    source: Option<i64>,
    exclude: Option<String>,
}

pub async fn feed(
    State(state): State<Arc<ServerState>>,
    q: Result<Query<FeedParams>, QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let exclude = p
        .exclude
        .map(|e| e.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let req = FeedRequest {
        user: p.user,
        limit: p.limit,
        cursor: p.cursor,
        label: p.label,
        source: p.source,
        exclude,
        preview: false,
    };
    ok(run(&state, move |app| app.feed(&req)).await?)
}

pub async fn feedback(
    State(state): State<Arc<ServerState>>,
    body: Result<Json<FeedbackRequest>, JsonRejection>,
) -> Answer {
    let req = json_body(body)?;
    ok(run(&state, move |app| app.feedback(&req)).await?)
}

pub async fn item(State(state): State<Arc<ServerState>>, id: Result<Path<String>, PathRejection>) -> Answer {
    let id = path(id)?;
    ok(run(&state, move |app| app.item(&id)).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    q: String,
    limit: Option<usize>,
}

pub async fn search(
    State(state): State<Arc<ServerState>>,
    q: Result<Query<SearchParams>, QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let items = run(&state, move |app| app.search(&p.q, p.limit.unwrap_or(20))).await?;
    ok(json!({ "items": items }))
}

pub async fn labels(State(state): State<Arc<ServerState>>) -> Answer {
    let labels = run(&state, |app| app.labels()).await?;
    ok(json!({ "labels": labels }))
}

pub async fn create_label(
    State(state): State<Arc<ServerState>>,
    body: Result<Json<NewLabel>, JsonRejection>,
) -> Answer {
    let new = json_body(body)?;
    created(run(&state, move |app| app.create_label(new)).await?)
}

pub async fn edit_label(
    State(state): State<Arc<ServerState>>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<LabelEdit>, JsonRejection>,
) -> Answer {
    let (id, edit) = (path(id)?, json_body(body)?);
    ok(run(&state, move |app| app.edit_label(id, edit)).await?)
}

pub async fn delete_label(
    State(state): State<Arc<ServerState>>,
    id: Result<Path<i64>, PathRejection>,
) -> Answer {
    let id = path(id)?;
    run(&state, move |app| app.delete_label(id)).await?;
    ok(json!({ "deleted": true }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelFeedback {
    item: String,
    confirm: bool,
}

pub async fn label_feedback(
    State(state): State<Arc<ServerState>>,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<LabelFeedback>, JsonRejection>,
) -> Answer {
    let (id, fb) = (path(id)?, json_body(body)?);
    ok(run(&state, move |app| app.label_feedback(id, &fb.item, fb.confirm)).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserParams {
    user: Option<String>,
}

pub async fn sources(
    State(state): State<Arc<ServerState>>,
    q: Result<Query<UserParams>, QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let sources = run(&state, move |app| app.sources(p.user.as_deref())).await?;
    ok(json!({ "sources": sources }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSource {
    url: String,
    interval_s: Option<i64>,
}

pub async fn add_source(
    State(state): State<Arc<ServerState>>,
    body: Result<Json<NewSource>, JsonRejection>,
) -> Answer {
    let new = json_body(body)?;
    created(run(&state, move |app| app.add_source(&new.url, new.interval_s)).await?)
}

pub async fn remove_source(
    State(state): State<Arc<ServerState>>,
    id: Result<Path<i64>, PathRejection>,
) -> Answer {
    let id = path(id)?;
    run(&state, move |app| app.remove_source(id)).await?;
    ok(json!({ "deleted": true }))
}

pub async fn refresh_source(
    State(state): State<Arc<ServerState>>,
    id: Result<Path<i64>, PathRejection>,
) -> Answer {
    let id = path(id)?;
    let done = run(&state, move |app| app.refresh(Some(id))).await?;
    ok(json!({ "sources": done }))
}

pub async fn refresh_all(State(state): State<Arc<ServerState>>) -> Answer {
    let done = run(&state, |app| app.refresh(None)).await?;
    ok(json!({ "sources": done }))
}

pub async fn import_opml(
    State(state): State<Arc<ServerState>>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let bytes = body.map_err(|r| body_error(r.status(), r.body_text()))?;
    if bytes.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "empty body: send an OPML document",
        )
        .field("opml"));
    }
    let added = run(&state, move |app| app.import_opml(&bytes)).await?;
    created(json!({ "added": added }))
}

pub async fn stats(
    State(state): State<Arc<ServerState>>,
    q: Result<Query<UserParams>, QueryRejection>,
) -> Answer {
    let p = query(q)?;
    ok(run(&state, move |app| app.stats(p.user.as_deref())).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    format: Option<String>,
    test_fraction: Option<f64>,
    seed: Option<u64>,
}

pub async fn export(
    State(state): State<Arc<ServerState>>,
    q: Result<Query<ExportParams>, QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let format = match p.format.as_deref().unwrap_or("dpo") {
        "dpo" => ExportFormat::Dpo,
        "kto" => ExportFormat::Kto,
        "reward" => ExportFormat::Reward,
        other => {
            let message = format!("format `{other}` is not one of dpo, kto, reward");
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message).field("format"));
        }
    };
    let mut req = ExportRequest { format, ..ExportRequest::default() };
    req.test_fraction = p.test_fraction.unwrap_or(req.test_fraction);
    req.seed = p.seed.unwrap_or(0);
    if !(0.0..=1.0).contains(&req.test_fraction) {
        let message = format!("test_fraction {} is not within 0..=1", req.test_fraction);
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_input", message).field("test_fraction"));
    }
    // Streamed: memory stays at a few chunks whatever the export's size.
    let app = state.app.clone();
    let body = axum::body::Body::from_stream(tidal_export::stream::spawn_producer(move |out| {
        app.export(&req, out)
            .map(|summary| tracing::info!(rows = summary.rows, "export served"))
            .map_err(|e| e.to_string())
    }));
    let disposition = format!("attachment; filename=\"forage-{}.jsonl\"", format.as_str());
    let headers = [
        (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    Ok((headers, body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    user: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

/// Entries on a history or saved-list page unless the request says otherwise.
const PAGE_LIMIT_DEFAULT: usize = 50;

pub async fn history(
    State(state): State<Arc<ServerState>>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let (offset, limit) = (p.offset.unwrap_or(0), p.limit.unwrap_or(PAGE_LIMIT_DEFAULT));
    ok(run(&state, move |app| app.history(p.user.as_deref(), offset, limit)).await?)
}

pub async fn saved(
    State(state): State<Arc<ServerState>>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> Answer {
    let p = query(q)?;
    let (offset, limit) = (p.offset.unwrap_or(0), p.limit.unwrap_or(PAGE_LIMIT_DEFAULT));
    let items = run(&state, move |app| app.saved(p.user.as_deref(), offset, limit)).await?;
    ok(json!({ "items": items }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveBody {
    user: Option<String>,
    item: String,
}

pub async fn save(
    State(state): State<Arc<ServerState>>,
    body: Result<Json<SaveBody>, JsonRejection>,
) -> Answer {
    let b = json_body(body)?;
    created(run(&state, move |app| app.save(b.user.as_deref(), &b.item)).await?)
}

pub async fn unsave(
    State(state): State<Arc<ServerState>>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<UserParams>, QueryRejection>,
) -> Answer {
    let (id, p) = (path(id)?, query(q)?);
    run(&state, move |app| app.unsave(p.user.as_deref(), &id)).await?;
    ok(json!({ "deleted": true }))
}
