//! Feedback: like, dislike, skip, open (a click) and dwell, written to Tidal with an
//! idempotency key so a retried request counts once. Like/dislike/skip/open also move the
//! item's source arm (the bandit's counter signal, written in the same batch). Once Tidal
//! acknowledged it, the feedback is applied to the user's remembered state (`app::users`):
//! their taste and the content bandit move at once.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidal::{Signal, SignalKind};

use super::{AppError, Forage};
use crate::bandit;

/// Longest dwell accepted: a day.
pub const DWELL_MS_MAX: u64 = 24 * 3600 * 1000;
/// Longest caller-given idempotency key (the derived keys are shorter).
pub const KEY_BYTES_MAX: usize = 100;

/// A piece of feedback.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackRequest {
    pub user: Option<String>,
    pub item: String,
    /// `like`, `dislike`, `skip`, `open` or `dwell`.
    pub kind: String,
    /// The feed page's context id, when the item was shown in a feed.
    pub context: Option<String>,
    /// How long the user stayed on the item (`dwell` only).
    pub dwell_ms: Option<u64>,
    pub idempotency_key: Option<String>,
}

/// What a piece of feedback did.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FeedbackAnswer {
    /// The same feedback was already recorded (a retry): nothing changed.
    pub duplicate: bool,
    pub kind: String,
    pub item: String,
}

fn kind_of(name: &str) -> Result<SignalKind, AppError> {
    match name {
        "like" => Ok(SignalKind::Like),
        "dislike" => Ok(SignalKind::Dislike),
        "skip" => Ok(SignalKind::Skip),
        "open" => Ok(SignalKind::Click),
        "dwell" => Ok(SignalKind::Dwell),
        other => Err(AppError::invalid(
            "kind",
            format!("`{other}` is not one of like, dislike, skip, open, dwell"),
        )),
    }
}

/// The key a request without one gets: the same (user, item, kind, context) is one event.
fn derived_key(user: &str, req: &FeedbackRequest) -> String {
    let mut h = Sha256::new();
    for part in [user, &req.item, &req.kind, req.context.as_deref().unwrap_or("-")] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("fb-{hex}")
}

impl Forage {
    /// Records a piece of feedback (see the module docs). Unknown items are 404; nothing is
    /// written for bad input.
    pub fn feedback(&self, req: &FeedbackRequest) -> Result<FeedbackAnswer, AppError> {
        let user = self.user_or_default(req.user.as_deref())?.to_owned();
        let kind = kind_of(&req.kind)?;
        if let Some(key) = &req.idempotency_key
            && (key.is_empty() || key.len() > KEY_BYTES_MAX)
        {
            return Err(AppError::invalid("idempotency_key", format!("must be 1..={KEY_BYTES_MAX} bytes")));
        }
        if let Some(context) = &req.context
            && (context.is_empty() || context.len() > bandit::CONTEXT_ID_BYTES_MAX)
        {
            let max = bandit::CONTEXT_ID_BYTES_MAX;
            return Err(AppError::invalid("context", format!("must be 1..={max} bytes")));
        }
        let item = self.catalog().get_item(&req.item)?;
        let item = item.ok_or_else(|| AppError::NotFound(format!("no item `{}`", req.item)))?;
        let key = req.idempotency_key.clone().unwrap_or_else(|| derived_key(&user, req));
        let arm = item.source_id.to_string();
        let signals = if kind == SignalKind::Dwell {
            let dwell_ms = match req.dwell_ms {
                Some(ms) if ms > 0 && ms <= DWELL_MS_MAX => ms,
                _ => {
                    return Err(AppError::invalid(
                        "dwell_ms",
                        format!("dwell needs dwell_ms in 1..={DWELL_MS_MAX}"),
                    ));
                }
            };
            let mut s = Signal::new(&user, &item.id, SignalKind::Dwell);
            s.value = dwell_ms as f64 / 1000.0;
            s.context = req.context.clone();
            s.source = Some(arm);
            s.idempotency_key = Some(key);
            vec![s]
        } else {
            if req.dwell_ms.is_some() {
                return Err(AppError::invalid("dwell_ms", "only `dwell` feedback takes dwell_ms"));
            }
            bandit::feedback_signals(&user, &item.id, &arm, req.context.as_deref(), kind.clone(), Some(&key))?
        };
        // Loaded before the write: a state built from Tidal after it would hold it already.
        let entry = self.users.get(&user, self.store.as_ref())?;
        let acks = self.store.write(signals)?;
        super::users::lock(&entry).apply(&item.id, &kind, super::now_ms().max(0) as u64);
        let duplicate = acks.iter().all(|a| a.duplicate);
        self.metrics.feedback(&req.kind, duplicate);
        Ok(FeedbackAnswer { duplicate, kind: req.kind.clone(), item: item.id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_separate_kinds_and_contexts() {
        let req = |kind: &str, context: Option<&str>| FeedbackRequest {
            item: "it-1".into(),
            kind: kind.into(),
            context: context.map(str::to_owned),
            ..FeedbackRequest::default()
        };
        let a = derived_key("me", &req("like", Some("c1")));
        assert_eq!(a, derived_key("me", &req("like", Some("c1"))));
        assert_ne!(a, derived_key("me", &req("skip", Some("c1"))));
        assert_ne!(a, derived_key("me", &req("like", Some("c2"))));
        assert_ne!(a, derived_key("you", &req("like", Some("c1"))));
        assert!(a.len() < tidal::signal::IDEMPOTENCY_KEY_BYTES_MAX);
        assert!(kind_of("open").is_ok_and(|k| k == SignalKind::Click));
        assert!(kind_of("love").is_err());
    }
}
