//! `GET /v1/export`: the preference export ([`tidal_export`]) streamed as the response
//! body, JSON Lines or Parquet, cut at the seqs applied when the request arrived (sent in the
//! `x-tidal-seqs` header as a read token).
//!
//! The exporter runs on the blocking pool and writes into a bounded channel that feeds the
//! body, so memory stays at a few chunks whatever the export's size, and a client that goes
//! away stops the export. One export runs at a time (409 `export_busy` otherwise). An error
//! after the headers went out can only cut the body short: check the row count, or use
//! `tidal export`, which writes a file atomically.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::reads::token_of;
use tidal_export::{ExportFormat, ExportOptions, FileFormat, Hooks, export_to_writer};

/// Set while an export streams; exports are heavy, so they run one at a time.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Query parameters of `GET /v1/export`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// `dpo` (default), `kto` or `reward`.
    pub format: Option<String>,
    /// `jsonl` (default) or `parquet`.
    pub file: Option<String>,
    pub test_fraction: Option<f64>,
    pub seed: Option<u64>,
    pub by_context_id: Option<bool>,
}

/// `GET /v1/export?format=dpo&file=parquet`: streams the export.
pub async fn export(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ExportParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (options, file_format) = options_of(&params, state.db.clock().now().physical_ms())?;
    if EXPORTING.swap(true, Ordering::AcqRel) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "export_busy",
            "another export is running; retry later",
        ));
    }
    let seqs = token_of(&state.db.applied_seqs());
    let db = state.db.clone();
    let body = axum::body::Body::from_stream(tidal_export::stream::spawn_producer(move |out| {
        let outcome = export_to_writer(&db, out, file_format, &options, &Hooks::default());
        EXPORTING.store(false, Ordering::Release);
        outcome.map(|_| ()).map_err(|e| e.to_string())
    }));
    let (content_type, extension) = match file_format {
        FileFormat::Jsonl => ("application/x-ndjson", "jsonl"),
        FileFormat::Parquet => ("application/vnd.apache.parquet", "parquet"),
    };
    let disposition = format!("attachment; filename=\"tidal-export.{extension}\"");
    let headers = [
        (header::CONTENT_TYPE, content_type.to_owned()),
        (header::CONTENT_DISPOSITION, disposition),
        (header::HeaderName::from_static("x-tidal-seqs"), seqs),
    ];
    Ok((headers, body).into_response())
}

fn options_of(params: &ExportParams, now_ms: u64) -> Result<(ExportOptions, FileFormat), ApiError> {
    let format = match params.format.as_deref().unwrap_or("dpo") {
        "dpo" => ExportFormat::Dpo,
        "kto" => ExportFormat::Kto,
        "reward" => ExportFormat::Reward,
        other => {
            let msg = format!("format `{other}`: expected dpo, kto or reward");
            return Err(ApiError::bad_request("invalid_query", msg).field("format"));
        }
    };
    let file_format = match params.file.as_deref().unwrap_or("jsonl") {
        "jsonl" => FileFormat::Jsonl,
        "parquet" => FileFormat::Parquet,
        other => {
            let msg = format!("file `{other}`: expected jsonl or parquet");
            return Err(ApiError::bad_request("invalid_query", msg).field("file"));
        }
    };
    let mut options = ExportOptions { format, ..ExportOptions::default() };
    options.exported_at_ms = now_ms;
    if let Some(fraction) = params.test_fraction {
        options.test_fraction = fraction;
    }
    if let Some(seed) = params.seed {
        options.seed = seed;
    }
    options.by_context_id = params.by_context_id.unwrap_or(false);
    options.validate().map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    Ok((options, file_format))
}
