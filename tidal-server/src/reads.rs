//! The `GET /v1/...` reads. Each accepts `min_seq=TOKEN` (a [`SeqToken`] such as
//! `0:12,3:40`, usually the `token` of an ingest answer) and `wait_ms` (default
//! [`WAIT_MS_DEFAULT`], at most [`WAIT_MAX`]): the read first waits until the store applied
//! the token, or answers 503 `not_yet` with `Retry-After`. Every answer reports the seqs it
//! reflects (`seqs` per shard, or `seq` of the user's shard) and a `token` for chaining.
//!
//! The wait blocks on a condition variable, so it runs on the blocking pool; a token the
//! store already applied is answered without leaving the worker.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use tidal_client::wire::{
    HardNegatives, ItemBody, KindTotals, LastLabel, RecoveryBrief, StatsBody, WithToken,
};

use super::AppState;
use super::error::ApiError;
use tidal::error::Error;
use tidal::query::visibility::{SeqToken, WAIT_MAX};
use tidal::query::{SessionHistory, TOP_K_MAX, TopK, UserView};

/// Wait for `min_seq` unless the request says otherwise.
pub const WAIT_MS_DEFAULT: u64 = 1000;
/// Items `GET /v1/top` returns unless `k` says otherwise.
pub const TOP_K_DEFAULT: usize = 10;

/// Query parameters every read accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    pub min_seq: Option<String>,
    pub wait_ms: Option<u64>,
}

/// Query parameters of `GET /v1/top`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopParams {
    pub k: Option<usize>,
    pub offset: Option<usize>,
    pub min_seq: Option<String>,
    pub wait_ms: Option<u64>,
}

type Answer<T> = Result<Json<WithToken<T>>, ApiError>;

fn query<T>(params: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    params.map(|Query(p)| p).map_err(|rejection| {
        let message = rejection.body_text();
        // "Failed to deserialize query string: wait_ms: invalid digit ..." names the field.
        let field = message
            .split_once(": ")
            .and_then(|(_, rest)| rest.split_once(": "))
            .map(|(path, _)| path.to_owned())
            .filter(|path| !path.is_empty() && !path.contains(' '));
        let error = ApiError::new(rejection.status(), "invalid_query", message);
        match field {
            Some(field) => error.field(field),
            None => error,
        }
    })
}

fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(p)| p).map_err(|r| ApiError::new(r.status(), "invalid_path", r.body_text()))
}

/// The token that names every shard's seq in `seqs`.
pub fn token_of(seqs: &[u64]) -> String {
    SeqToken(seqs.iter().enumerate().map(|(shard, seq)| (shard as u32, *seq)).collect()).to_string()
}

/// Waits until the store applied `min_seq`, for at most `wait_ms`.
pub async fn visible(state: &AppState, min_seq: Option<&str>, wait_ms: Option<u64>) -> Result<(), ApiError> {
    let wait_ms = wait_ms.unwrap_or(WAIT_MS_DEFAULT);
    let wait_max_ms = WAIT_MAX.as_millis() as u64;
    if wait_ms > wait_max_ms {
        let message = format!("wait_ms is {wait_ms}; at most {wait_max_ms}");
        return Err(ApiError::bad_request("invalid_query", message).field("wait_ms"));
    }
    let Some(text) = min_seq else { return Ok(()) };
    let bad_token = |message: String| ApiError::bad_request("invalid_token", message).field("min_seq");
    let (plain, epochs) =
        crate::cluster::split_epochs(text).map_err(|e| bad_token(format!("min_seq: {e}")))?;
    let token: SeqToken = plain.parse().map_err(|e| bad_token(format!("min_seq: {e}")))?;
    let waited = wait_visible(state, token, wait_ms, bad_token).await;
    waited?;
    crate::cluster::check_epochs(state, &epochs).await
}

async fn wait_visible(
    state: &AppState,
    token: SeqToken,
    wait_ms: u64,
    bad_token: impl Fn(String) -> ApiError,
) -> Result<(), ApiError> {
    let map = |error: Error| match error {
        Error::InvalidRequest(message) => bad_token(message),
        other => ApiError::from_store(other),
    };
    match state.db.wait_for(&token, Duration::ZERO) {
        Ok(()) => return Ok(()),
        Err(Error::NotYet { .. }) if wait_ms > 0 => {}
        Err(error) => return Err(map(error)),
    }
    let db = state.db.clone();
    let waited =
        tokio::task::spawn_blocking(move || db.wait_for(&token, Duration::from_millis(wait_ms))).await;
    match waited {
        Ok(result) => result.map_err(map),
        Err(join) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", join.to_string())),
    }
}

fn answer<T>(body: T, token: String) -> Answer<T> {
    Ok(Json(WithToken { body, token }))
}

/// `GET /v1/items/{id}`: the item merged across shards.
pub async fn item(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Answer<ItemBody> {
    let (id, params) = (path(id)?, query(params)?);
    visible(&state, params.min_seq.as_deref(), params.wait_ms).await?;
    let view =
        state.db.item(&id).ok_or_else(|| ApiError::not_found(format!("no item `{id}`")).field("id"))?;
    let s = &view.state;
    let kinds = s
        .kinds()
        .map(|(kind, count, value_sum)| (kind.to_string(), KindTotals { count, value_sum }))
        .collect();
    let body = ItemBody {
        item: view.item.clone(),
        kinds,
        last_rating: s.last_rating(),
        last_label: s.last_label().map(|(label, confirmed)| LastLabel { label: label.to_owned(), confirmed }),
        first_hlc: s.first_hlc(),
        last_hlc: s.last_hlc(),
        score: state.db.score(&id),
        seqs: view.seqs.clone(),
    };
    let token = token_of(&body.seqs);
    answer(body, token)
}

/// `GET /v1/top?k=&offset=`: the best items by decayed score.
pub async fn top(
    State(state): State<Arc<AppState>>,
    params: Result<Query<TopParams>, QueryRejection>,
) -> Answer<TopK> {
    let params = query(params)?;
    let k = params.k.unwrap_or(TOP_K_DEFAULT);
    if k > TOP_K_MAX {
        return Err(
            ApiError::bad_request("invalid_query", format!("k is {k}; at most {TOP_K_MAX}")).field("k")
        );
    }
    visible(&state, params.min_seq.as_deref(), params.wait_ms).await?;
    let top = state.db.top_k(k, params.offset.unwrap_or(0))?;
    let token = token_of(&top.seqs);
    answer(top, token)
}

fn user_token(shard: u32, seq: u64) -> String {
    SeqToken(vec![(shard, seq)]).to_string()
}

fn no_user(id: &str) -> ApiError {
    ApiError::not_found(format!("no user `{id}`")).field("id")
}

/// `GET /v1/users/{id}`: hard negatives, recent history and sessions.
pub async fn user(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Answer<UserView> {
    let (id, params) = (path(id)?, query(params)?);
    visible(&state, params.min_seq.as_deref(), params.wait_ms).await?;
    let view = state.db.user(&id).ok_or_else(|| no_user(&id))?;
    let token = user_token(view.shard, view.seq);
    answer(view, token)
}

/// `GET /v1/users/{id}/sessions/{session}`: the session's recent signals and SeqNo HWM.
pub async fn session(
    State(state): State<Arc<AppState>>,
    ids: Result<Path<(String, String)>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Answer<SessionHistory> {
    let ((id, session), params) = (path(ids)?, query(params)?);
    visible(&state, params.min_seq.as_deref(), params.wait_ms).await?;
    let history = state.db.session_history(&id, &session).ok_or_else(|| {
        ApiError::not_found(format!("no session `{session}` of user `{id}`")).field("session")
    })?;
    let token = user_token(state.db.router().shard_for(&id), history.seq);
    answer(history, token)
}

/// `GET /v1/users/{id}/hard-negatives`: items the user rejected and has not wanted since.
pub async fn hard_negatives(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Answer<HardNegatives> {
    let (id, params) = (path(id)?, query(params)?);
    visible(&state, params.min_seq.as_deref(), params.wait_ms).await?;
    let view = state.db.user(&id).ok_or_else(|| no_user(&id))?;
    let token = user_token(view.shard, view.seq);
    answer(HardNegatives { user: view.user, hard_negatives: view.hard_negatives, seq: view.seq }, token)
}

/// `GET /v1/stats`: per-shard counters and what opening recovered.
pub async fn stats(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Answer<StatsBody> {
    let params = query(params)?;
    visible(&state, params.min_seq.as_deref(), params.wait_ms).await?;
    let shards = state.db.stats();
    let report = state.db.recovery_report();
    let recovery = RecoveryBrief {
        elapsed_ms: report.elapsed.as_millis() as u64,
        records_replayed: report.records_replayed(),
        wal_bytes: report.wal_bytes(),
        torn_tails: report.shards.iter().filter(|s| s.torn_tail.is_some()).count(),
    };
    let seqs: Vec<u64> = shards.iter().map(|s| s.applied_seq).collect();
    let token = token_of(&seqs);
    answer(StatsBody { shards, recovery, seqs }, token)
}
