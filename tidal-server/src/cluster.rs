//! The cluster side of the HTTP API, for a node started with a cluster file.
//!
//! The server knows the cluster only through [`ClusterView`] (implemented by the binary over
//! the replication runtime), so this crate needs no replication code. It adds:
//!
//! - `GET /v1/cluster/status`: every shard replica on this node (role, epoch, leader, seqs,
//!   followers' lag);
//! - `POST /v1/cluster/shards/{shard}/promote`: make this node the shard's leader;
//! - epochs in tokens: in a cluster an ingest token reads `shard:seq@epoch`, and a read
//!   given such a token checks, once the seq is applied, that this replica's record at that
//!   seq has that epoch. A token from a history this replica does not share (a write a
//!   deposed leader acknowledged and that was set aside) is a 409 `token_not_in_history`,
//!   never a wrong answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tidal::shard::role::AckMode;

use crate::AppState;
use crate::error::ApiError;

/// What the server asks of the cluster it is part of.
pub trait ClusterView: Send + Sync {
    /// The status of this node's replicas, as JSON.
    fn status(&self) -> serde_json::Value;
    /// The HTTP address of node `node`, for telling clients where the leader is.
    fn api_of(&self, node: u32) -> Option<String>;
    /// Makes this node the leader of `shard`.
    fn promote(&self, shard: u32) -> Result<(), String>;
    /// The epoch of this replica's record at `seq` of `shard` (`None`: it does not hold it).
    fn epoch_at(&self, shard: u32, seq: u64) -> Option<u64>;
    /// The epoch this node leads `shard` in (`None`: it does not lead it).
    fn leading_epoch(&self, shard: u32) -> Option<u64>;
    /// The cluster's default acknowledgement mode.
    fn default_ack(&self) -> AckMode;
    /// Replication metrics in Prometheus text (appended to `/metrics`).
    fn metrics_text(&self) -> String;
}

/// `GET /v1/cluster/status`.
pub async fn status(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = cluster_of(&state)?;
    Ok(Json(cluster.status()))
}

/// `POST /v1/cluster/shards/{shard}/promote`.
pub async fn promote(
    State(state): State<Arc<AppState>>,
    Path(shard): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cluster = cluster_of(&state)?;
    let shard: u32 = shard.parse().ok().filter(|s| *s < state.db.shard_count()).ok_or_else(|| {
        ApiError::bad_request("invalid_shard", format!("no shard `{shard}` on this store")).field("shard")
    })?;
    let cluster = cluster.clone();
    let promoted = tokio::task::spawn_blocking(move || cluster.promote(shard)).await;
    match promoted {
        Ok(Ok(())) => Ok(Json(serde_json::json!({ "shard": shard, "promoted": true }))),
        Ok(Err(reason)) => Err(ApiError::new(StatusCode::CONFLICT, "promotion_refused", reason)),
        Err(join) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", join.to_string())),
    }
}

fn cluster_of(state: &AppState) -> Result<&Arc<dyn ClusterView>, ApiError> {
    state.cluster.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this server is not part of a cluster".to_string(),
        )
    })
}

/// `(shard, seq, epoch)` parts of a token.
pub type TokenEpochs = Vec<(u32, u64, u64)>;

/// Splits `0:41@3,1:7@3` into the plain token (`0:41,1:7`) and the epochs `[(0, 41, 3), ...]`.
pub fn split_epochs(token: &str) -> Result<(String, TokenEpochs), String> {
    let mut plain = Vec::new();
    let mut epochs = Vec::new();
    for part in token.split(',') {
        match part.split_once('@') {
            None => plain.push(part.to_string()),
            Some((seq_part, epoch)) => {
                let epoch: u64 =
                    epoch.parse().map_err(|_| format!("`{part}`: the epoch after `@` is not a number"))?;
                let (shard, seq) =
                    seq_part.split_once(':').ok_or_else(|| format!("`{part}` is not shard:seq@epoch"))?;
                let shard = shard.parse().map_err(|_| format!("`{part}`: bad shard"))?;
                let seq = seq.parse().map_err(|_| format!("`{part}`: bad seq"))?;
                epochs.push((shard, seq, epoch));
                plain.push(seq_part.to_string());
            }
        }
    }
    Ok((plain.join(","), epochs))
}

/// Checks that this replica's records at the token's seqs have the token's epochs.
pub async fn check_epochs(state: &AppState, epochs: &[(u32, u64, u64)]) -> Result<(), ApiError> {
    if epochs.is_empty() {
        return Ok(());
    }
    let Some(cluster) = &state.cluster else {
        let message = "min_seq carries epochs (`@`), but this server is not part of a cluster".to_string();
        return Err(ApiError::bad_request("invalid_token", message).field("min_seq"));
    };
    for &(shard, seq, epoch) in epochs {
        // The read already waited until the store applied `seq`; the replica's epoch history
        // is published by the replication thread a moment after that apply (later on a busy
        // machine). Only a record of another epoch at `seq` is a verdict: no record yet means
        // the history has not caught up, so wait for it, and if it never does, say "not yet".
        let deadline = tokio::time::Instant::now() + EPOCH_HISTORY_WAIT;
        let mut held = cluster.epoch_at(shard, seq);
        while held.is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            held = cluster.epoch_at(shard, seq);
        }
        match held {
            Some(e) if e == epoch => {}
            Some(e) => {
                let message = format!(
                    "min_seq names seq {seq} of epoch {epoch} on shard {shard}, but this replica holds a record of \
                     epoch {e} there: the token comes from a history this replica does not share"
                );
                return Err(
                    ApiError::new(StatusCode::CONFLICT, "token_not_in_history", message).field("min_seq")
                );
            }
            None => {
                let message = format!(
                    "min_seq names seq {seq} of epoch {epoch} on shard {shard}; this replica applied it, but its \
                     epoch history does not reach it yet"
                );
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_yet", message)
                    .field("min_seq")
                    .retry_after(1));
            }
        }
    }
    Ok(())
}

/// How long a read waits for the replica's epoch history to reach a token's seq.
const EPOCH_HISTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A token with each shard's leading epoch, for a node in a cluster.
pub fn token_with_epochs(state: &AppState, token: &str) -> String {
    let Some(cluster) = &state.cluster else { return token.to_string() };
    token
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|part| {
            let epoch =
                part.split_once(':').and_then(|(s, _)| s.parse().ok()).and_then(|s| cluster.leading_epoch(s));
            match epoch {
                Some(e) => format!("{part}@{e}"),
                None => part.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica whose history reaches seq 10 (epoch 2) only after `published_after`.
    struct Lagging {
        published_after: std::time::Instant,
    }

    impl ClusterView for Lagging {
        fn status(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        fn api_of(&self, _: u32) -> Option<String> {
            None
        }
        fn promote(&self, _: u32) -> Result<(), String> {
            Err("no".into())
        }
        fn epoch_at(&self, _: u32, seq: u64) -> Option<u64> {
            (seq <= 10 && std::time::Instant::now() >= self.published_after).then_some(2)
        }
        fn leading_epoch(&self, _: u32) -> Option<u64> {
            None
        }
        fn default_ack(&self) -> AckMode {
            AckMode::Quorum
        }
        fn metrics_text(&self) -> String {
            String::new()
        }
    }

    fn state(published_after: std::time::Duration) -> (AppState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = tidal::Db::open(dir.path(), tidal::Options::default()).unwrap();
        let view = Lagging { published_after: std::time::Instant::now() + published_after };
        (AppState::new(db, crate::config::Limits::default(), None).with_cluster(Arc::new(view)), dir)
    }

    #[tokio::test]
    async fn a_history_that_lags_the_apply_is_waited_for_and_only_another_epoch_is_a_conflict() {
        let (late, _dir) = state(std::time::Duration::from_millis(300));
        assert!(check_epochs(&late, &[(0, 10, 2)]).await.is_ok(), "published 300 ms after the apply");
        let err = check_epochs(&late, &[(0, 10, 3)]).await.unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::CONFLICT, "token_not_in_history"));
        let err = check_epochs(&late, &[(0, 11, 2)]).await.unwrap_err();
        assert_eq!((err.status, err.code), (StatusCode::SERVICE_UNAVAILABLE, "not_yet"), "{}", err.message);
    }

    #[test]
    fn epochs_split_off_the_token() {
        assert_eq!(split_epochs("0:41@3,1:7").unwrap(), ("0:41,1:7".to_string(), vec![(0, 41, 3)]));
        assert!(split_epochs("0:41@x").is_err());
        assert!(split_epochs("41@3").is_err());
    }
}
