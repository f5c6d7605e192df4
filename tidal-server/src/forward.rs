//! Forwarding a write to the shard's leader.
//!
//! A node of a cluster that receives a write for a shard it does not lead (refused before
//! anything was enqueued, so nothing of it was written here) sends the request as it came,
//! body, content type, `ack` and bearer token, to the leader's API and answers with the
//! leader's answer. A forwarded request carries `x-tidal-forwarded`, and is never forwarded
//! again: a batch whose shards have several leaders, or a leader that changed meanwhile, gets
//! the leader's 421 `not_leader`, which names where to go.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use tidal_client::wire::{ErrorBody, IngestAnswer};

use crate::AppState;
use crate::error::ApiError;

/// The header a forwarded request carries.
pub const FORWARDED: &str = "x-tidal-forwarded";

/// Whether this request may be forwarded (a cluster node, not forwarded already).
pub fn may_forward(state: &AppState, headers: &HeaderMap) -> bool {
    state.cluster.is_some() && !headers.contains_key(FORWARDED)
}

/// Sends the request to node `leader`'s API; its answer becomes ours.
pub async fn forward(
    state: &AppState,
    leader: u32,
    ack: Option<&str>,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<IngestAnswer, ApiError> {
    let Some(api) = state.cluster.as_ref().and_then(|c| c.api_of(leader)) else {
        let message = format!("node {leader} leads the shard, but its address is unknown here");
        return Err(ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", message));
    };
    let mut url = format!("http://{api}/v1/signals");
    if let Some(ack) = ack {
        url.push_str(&format!("?ack={}", tidal_client::client::encode_component(ack)));
    }
    let header_of = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (content_type, authorization) = (header_of(header::CONTENT_TYPE), header_of(header::AUTHORIZATION));
    let timeout = state.limits.request_timeout;
    let sent =
        tokio::task::spawn_blocking(move || post(&url, content_type, authorization, body, timeout)).await;
    match sent {
        Ok(Ok((200, text))) => serde_json::from_str(&text).map_err(|e| unreachable(leader, &e.to_string())),
        Ok(Ok((status, text))) => Err(relay(status, &text)),
        Ok(Err(e)) => Err(unreachable(leader, &e)),
        Err(join) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", join.to_string())),
    }
}

fn post(
    url: &str,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut request = agent.post(url).header(FORWARDED, "1");
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(auth) = authorization {
        request = request.header("authorization", auth);
    }
    let mut response = request.send(&body[..]).map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// Error codes a Tidal server answers with (a leader's code is relayed as is).
const KNOWN_CODES: &[&str] = &[
    "batch_too_large",
    "body_read",
    "body_too_large",
    "conflict",
    "corruption",
    "internal",
    "invalid_query",
    "invalid_request",
    "invalid_signal",
    "malformed_json",
    "not_leader",
    "not_ready",
    "overloaded",
    "session_gap",
    "shard_failed",
    "stale_duplicate",
    "timeout",
    "unauthorized",
    "unavailable",
    "unsupported_media_type",
];

/// The leader's error answer, passed on with its status and code.
fn relay(status: u16, text: &str) -> ApiError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(body) => {
            let code =
                KNOWN_CODES.iter().copied().find(|c| *c == body.error.code).unwrap_or("upstream_error");
            let mut e = ApiError::new(status, code, body.error.message);
            if let Some(field) = body.error.field {
                e = e.field(field);
            }
            e
        }
        Err(_) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("the leader answered {status}: {text}"),
        ),
    }
}

fn unreachable(leader: u32, reason: &str) -> ApiError {
    let message = format!("forwarding the write to the leader (node {leader}) failed: {reason}; retry");
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "leader_unreachable", message).retry_after(1)
}
