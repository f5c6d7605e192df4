//! `POST /v1/signals`: a JSON array of signals, one signal object, or NDJSON
//! (`Content-Type: application/x-ndjson`, one signal per line). The batch is validated
//! whole: one bad signal rejects the request and nothing of it is written. The answer is
//! the acks in input order and the `token` that makes the next read see them.
//!
//! Errors name the signal and field: `signals[3].kind` (index among the request's
//! signals; NDJSON messages also give the line). The body is read with its own bound:
//! past `body_bytes_max` the rest is drained (up to [`DRAIN_FACTOR`] times the limit) so
//! the client reads a clean 413 instead of a reset connection.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::{Body, HttpBody};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::error::Category;

use super::AppState;
use super::error::ApiError;
use tidal::error::Error;
use tidal::query::visibility::SeqToken;
use tidal::shard::role::AckMode;
use tidal::signal::Signal;

/// Content type of a JSON array or object body.
pub const JSON: &str = "application/json";
/// Content type of an NDJSON body.
pub const NDJSON: &str = "application/x-ndjson";
/// An oversized body is read and dropped up to this multiple of the limit before the 413.
pub const DRAIN_FACTOR: usize = 4;

pub use tidal_client::wire::IngestAnswer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
}

/// `POST /v1/signals`.
pub async fn post_signals(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestAnswer>, ApiError> {
    let result = match IngestParams::parse(query.as_deref()) {
        Ok(params) => ingest(&state, &params, &headers, body).await,
        Err(e) => Err(e),
    };
    match &result {
        Ok(answer) => {
            let duplicates = answer.acks.iter().filter(|a| a.duplicate).count() as u64;
            state.metrics.signals_duplicate.fetch_add(duplicates, Ordering::Relaxed);
            state.metrics.signals_written.fetch_add(answer.acks.len() as u64 - duplicates, Ordering::Relaxed);
        }
        Err(_) => {
            state.metrics.ingest_rejected.fetch_add(1, Ordering::Relaxed);
        }
    }
    result.map(Json)
}

/// Query parameters of `POST /v1/signals`.
#[derive(Debug, Default)]
pub struct IngestParams {
    /// `leader` or `quorum`: when the write is acknowledged (default: the cluster's, or
    /// `quorum`; the same on a standalone store).
    pub ack: Option<String>,
}

impl IngestParams {
    /// Parses the query string by hand, so that every mistake (a repeated `ack`) is a JSON
    /// 400 naming the parameter, like every other error. Unknown parameters are ignored.
    fn parse(query: Option<&str>) -> Result<IngestParams, ApiError> {
        let mut params = IngestParams::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != "ack" {
                continue;
            }
            if params.ack.is_some() {
                return Err(
                    ApiError::bad_request("invalid_query", "`ack` is given more than once").field("ack")
                );
            }
            params.ack = Some(value.to_string());
        }
        Ok(params)
    }
}

fn ack_mode(state: &AppState, params: &IngestParams) -> Result<AckMode, ApiError> {
    match &params.ack {
        None => Ok(state.cluster.as_ref().map_or(AckMode::Quorum, |c| c.default_ack())),
        Some(text) => {
            text.parse().map_err(|e: String| ApiError::bad_request("invalid_query", e).field("ack"))
        }
    }
}

async fn ingest(
    state: &AppState,
    params: &IngestParams,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestAnswer, ApiError> {
    let ack = ack_mode(state, params)?;
    let format = format_of(headers)?;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let bytes = read_body(body, declared, state.limits.body_bytes_max).await?;
    let max = state.limits.batch_signals_max;
    let signals = match format {
        Format::Json => parse_json(&bytes)?,
        Format::Ndjson => parse_ndjson(&bytes, max)?,
    };
    if signals.len() > max {
        return Err(batch_too_large(signals.len(), max));
    }
    let sequenced = Sequenced::of(&signals);
    let pending = match state.db.submit_with(signals, ack) {
        Ok(pending) => pending,
        // Refused before anything was enqueued: the leader can take the request whole.
        Err(Error::NotLeader { leader: Some(leader), .. }) if crate::forward::may_forward(state, headers) => {
            return crate::forward::forward(state, leader, params.ack.as_deref(), headers, bytes).await;
        }
        Err(error) => {
            Err(error).map_err(|e| not_leader(state, e).unwrap_or_else(|e| sequenced.explain(e)))?
        }
    };
    drop(bytes);
    let acks = pending.wait_async().await;
    let acks = acks.map_err(|e| not_leader(state, e).unwrap_or_else(|e| sequenced.explain(e)))?;
    let token = crate::cluster::token_with_epochs(state, &SeqToken::from_acks(&acks).to_string());
    Ok(IngestAnswer { acks, token })
}

/// A write that reached a follower: 421 naming the leader (and its API, when known).
fn not_leader(state: &AppState, error: Error) -> Result<ApiError, Error> {
    let Error::NotLeader { shard, epoch, leader } = error else { return Err(error) };
    let api = leader.and_then(|l| state.cluster.as_ref()?.api_of(l));
    let whom = match (leader, &api) {
        (Some(l), Some(api)) => format!("node {l} at http://{api}"),
        (Some(l), None) => format!("node {l}"),
        (None, _) => "no node yet (a leader is being chosen; retry shortly)".to_string(),
    };
    let message = format!("this node does not lead shard {shard} (epoch {epoch}); send the write to {whom}");
    let mut e = ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", message);
    if leader.is_none() {
        e = e.retry_after(1);
    }
    Ok(e)
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        JSON => Ok(Format::Json),
        NDJSON | "application/ndjson" => Ok(Format::Ndjson),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type is `{value}`; send {JSON} (array or object) or {NDJSON}"),
        )
        .field("Content-Type")),
    }
}

fn batch_too_large(len: usize, max: usize) -> ApiError {
    let message = format!("the request carries {len} or more signals; at most {max} per request");
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", message).field("signals")
}

/// Reads the whole body, at most `max` bytes; beyond that, drains and answers 413.
async fn read_body(mut body: Body, declared: Option<u64>, max: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        let message = format!("the request body exceeds {max} bytes");
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message).field("body")
    };
    let drain_max = max.saturating_mul(DRAIN_FACTOR);
    if declared.is_some_and(|n| n > drain_max as u64) {
        return Err(too_large());
    }
    let capacity = declared.map_or(0, |n| n.min(max as u64) as usize);
    let mut bytes = Vec::with_capacity(capacity);
    let mut seen = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame =
            frame.map_err(|e| ApiError::bad_request("body_read", format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > max {
            if seen > drain_max {
                break;
            }
            continue;
        }
        bytes.extend_from_slice(&data);
    }
    if seen > max { Err(too_large()) } else { Ok(bytes) }
}

/// serde_json's message without its " at line L column C" suffix.
fn bare_message(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) if error.line() > 0 => text[..at].to_owned(),
        _ => text,
    }
}

fn malformed(message: String) -> ApiError {
    ApiError::bad_request("malformed_json", message)
}

/// A JSON array of signals, or one signal object.
fn parse_json(bytes: &[u8]) -> Result<Vec<Signal>, ApiError> {
    let parsed = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice::<Vec<ObjectSignal>>(bytes).map(ObjectSignal::unwrap_all),
        Some(b'{') => serde_json::from_slice::<ObjectSignal>(bytes).map(|s| vec![s.0]),
        Some(_) => {
            return Err(malformed("the body must be a JSON array of signals or one signal object".into()));
        }
        None => return Err(malformed("the body is empty".into())),
    };
    parsed.map_err(|error| diagnose_json(bytes, &error))
}

fn diagnose_json(bytes: &[u8], error: &serde_json::Error) -> ApiError {
    let located = format!("line {} column {}: {}", error.line(), error.column(), bare_message(error));
    if error.classify() != Category::Data {
        return malformed(format!("malformed JSON at {located}"));
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => {
            return malformed(format!(
                "malformed JSON at line {} column {}: {}",
                e.line(),
                e.column(),
                bare_message(&e)
            ));
        }
    };
    let message = format!("invalid signal at {located}");
    match &value {
        Value::Array(items) => match items.iter().position(|v| ObjectSignal::deserialize(v).is_err()) {
            Some(index) => invalid_signal(index, &items[index], message),
            None => ApiError::bad_request("invalid_signal", message).field("signals"),
        },
        one => invalid_signal(0, one, message),
    }
}

/// One signal per line; blank lines are skipped.
fn parse_ndjson(bytes: &[u8], max: usize) -> Result<Vec<Signal>, ApiError> {
    let mut signals = Vec::new();
    for (number, line) in bytes.split(|b| *b == b'\n').enumerate().map(|(i, l)| (i + 1, l.trim_ascii())) {
        if line.is_empty() {
            continue;
        }
        if signals.len() == max {
            return Err(batch_too_large(max + 1, max));
        }
        match serde_json::from_slice::<ObjectSignal>(line) {
            Ok(signal) => signals.push(signal.0),
            Err(error) => {
                let at = format!("line {number} column {}: {}", error.column(), bare_message(&error));
                let value =
                    (error.classify() == Category::Data).then(|| serde_json::from_slice::<Value>(line).ok());
                return Err(match value.flatten() {
                    Some(value) => invalid_signal(signals.len(), &value, format!("invalid signal at {at}")),
                    None => malformed(format!("malformed JSON at {at}")),
                });
            }
        }
    }
    Ok(signals)
}

/// A signal that was a JSON object. serde's derived `Deserialize` for a struct also takes
/// a sequence of its fields in declaration order (`["u",null,null,"i","click"]`); the API
/// documents objects only, and positional input would silently change meaning whenever a
/// field is added, so anything but an object is refused here.
struct ObjectSignal(Signal);

impl ObjectSignal {
    fn unwrap_all(signals: Vec<ObjectSignal>) -> Vec<Signal> {
        signals.into_iter().map(|s| s.0).collect()
    }
}

impl<'de> Deserialize<'de> for ObjectSignal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> Visitor<'de> for ObjectOnly {
            type Value = ObjectSignal;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a signal object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ObjectSignal, A::Error> {
                Signal::deserialize(de::value::MapAccessDeserializer::new(map)).map(ObjectSignal)
            }
        }
        deserializer.deserialize_map(ObjectOnly)
    }
}

fn invalid_signal(index: usize, element: &Value, message: String) -> ApiError {
    let field = match locate_field(element) {
        Some(field) => format!("signals[{index}].{field}"),
        None => format!("signals[{index}]"),
    };
    ApiError::bad_request("invalid_signal", message).field(field)
}

/// The field that makes `element` fail to deserialize as a signal, when one can be named.
fn locate_field(element: &Value) -> Option<String> {
    let Value::Object(map) = element else { return None };
    let message = ObjectSignal::deserialize(element).err()?.to_string();
    for marker in ["missing field `", "unknown field `", "duplicate field `"] {
        if let Some(rest) = message.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_owned);
        }
    }
    // A value of the wrong type: the first key that breaks an otherwise valid signal.
    let template = serde_json::json!({ "user": "u", "item": "i", "kind": "click" });
    let Value::Object(template) = template else { return None };
    map.iter()
        .find(|(key, value)| {
            let mut probe = template.clone();
            probe.insert((*key).clone(), (*value).clone());
            ObjectSignal::deserialize(&Value::Object(probe)).is_err()
        })
        .map(|(key, _)| key.clone())
}

/// The sequenced signals of a request, to name the one a session error concerns.
struct Sequenced(Vec<(usize, String, String, u64)>);

impl Sequenced {
    fn of(signals: &[Signal]) -> Sequenced {
        let sequenced = signals
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.user.clone(), s.session.clone()?, s.session_seq?)));
        Sequenced(sequenced.collect())
    }

    fn explain(&self, error: Error) -> ApiError {
        let found = match &error {
            Error::SessionGap { user, session, got, .. }
            | Error::StaleDuplicate { user, session, got, .. } => {
                self.0.iter().find(|(_, u, s, n)| u == user && s == session && n == got).map(|entry| entry.0)
            }
            _ => None,
        };
        let api = ApiError::from_store(error);
        match found {
            Some(index) => api.field(format!("signals[{index}].session_seq")),
            None => api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ApiError) -> (&'static str, Option<String>) {
        (e.code, e.field)
    }

    #[test]
    fn json_errors_name_signal_and_field() {
        let bad = |body: &str| field(parse_json(body.as_bytes()).unwrap_err());
        let ok = r#"{"user":"u","item":"i","kind":"click"}"#;
        assert_eq!(bad("[1,"), ("malformed_json", None));
        assert_eq!(bad("nope"), ("malformed_json", None));
        assert_eq!(bad(""), ("malformed_json", None));
        let missing = format!(r#"[{ok},{{"user":"u","item":"i"}}]"#);
        assert_eq!(bad(&missing), ("invalid_signal", Some("signals[1].kind".into())));
        let unknown = format!(r#"[{ok},{ok},{{"user":"u","item":"i","kind":"like","colour":"red"}}]"#);
        assert_eq!(bad(&unknown), ("invalid_signal", Some("signals[2].colour".into())));
        let wrong_type = r#"{"user":"u","item":"i","kind":"like","session":"s","session_seq":"x"}"#;
        assert_eq!(bad(wrong_type), ("invalid_signal", Some("signals[0].session_seq".into())));
        assert_eq!(bad("[3]"), ("invalid_signal", Some("signals[0]".into())));
        // serde's derive takes a struct's fields as a sequence too; the API takes objects only.
        let positional = r#"["u",null,null,"i","click"]"#;
        assert_eq!(bad(&format!("[{positional}]")), ("invalid_signal", Some("signals[0]".into())));
        assert_eq!(bad(&format!("[{ok},{positional}]")), ("invalid_signal", Some("signals[1]".into())));
        assert_eq!(parse_json(format!("[{ok},{ok}]").as_bytes()).unwrap().len(), 2);
        assert_eq!(parse_json(ok.as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn ndjson_errors_give_the_line() {
        let ok = r#"{"user":"u","item":"i","kind":"click"}"#;
        let body = format!("{ok}\n\n{ok}\n{{\"user\":\"u\",\"item\":5,\"kind\":\"x\"}}\n");
        let e = parse_ndjson(body.as_bytes(), 10).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("invalid_signal", Some("signals[2].item")));
        assert!(e.message.contains("line 4"), "{}", e.message);
        let e = parse_ndjson(format!("{ok}\n{{oops\n").as_bytes(), 10).unwrap_err();
        assert_eq!(e.code, "malformed_json");
        assert!(e.message.contains("line 2"), "{}", e.message);
        let e = parse_ndjson(format!("{ok}\n{ok}\n{ok}\n").as_bytes(), 2).unwrap_err();
        assert_eq!(e.code, "batch_too_large");
        assert_eq!(parse_ndjson(format!("{ok}\r\n{ok}").as_bytes(), 2).unwrap().len(), 2);
        let e =
            parse_ndjson(format!("{ok}\n[\"u\",null,null,\"i\",\"click\"]\n").as_bytes(), 10).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("invalid_signal", Some("signals[1]")));
    }
}
