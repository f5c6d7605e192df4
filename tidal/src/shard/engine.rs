//! The pure shard engine: every decision of the apply path, with no I/O.
//!
//! The engine decides what a group of write requests means against a shard's state
//! ([`plan_group`]: session SeqNo rules, idempotency keys, in-group duplicates) and applies
//! records to the state ([`apply_records`], [`apply_batch`]: CRDT aggregates credited to the
//! batch's origin node, the index deltas, the new applied seq). It never touches a clock, a
//! file, a lock or a channel: stamps come in as an argument ([`Stamps`]), outcomes go out as
//! values ([`Applied`]), and the runtime (the writer thread, recovery, a follower) does the
//! WAL, fsync, index and publication work. openraft's engine/runtime split, for one shard.
//!
//! Invariant: for the same state and the same records, every caller gets the same state and
//! the same outcome, so the leader's writer, recovery and a follower agree byte for byte.

use foldhash::HashMap;

use super::state::ShardState;
use crate::error::{Error, Result};
use crate::hlc::Hlc;
use crate::session::{Ack, IdempotencyStore, SeqCheck, check_seq};
use crate::signal::{Signal, SignalRef};
use crate::wal::header::BatchHeader;
use crate::wal::record::records;

/// Where new records' HLC stamps come from (the runtime passes its clock; tests a counter).
pub type Stamps<'s> = &'s mut dyn FnMut() -> Hlc;

/// The decision for one signal of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A new record: index into the group's records.
    New(usize),
    /// A retry: the original ack.
    Duplicate(Ack),
}

/// What a group of requests becomes: the records to append (in order, seqs from the group's
/// base seq) and, per request, its slots or the error that rejected it whole.
pub struct GroupPlan<'a> {
    pub records: Vec<(Hlc, SignalRef<'a>)>,
    pub requests: Vec<Result<Vec<Slot>>>,
}

/// The ack of a slot once the group's `records` are appended at `base_seq`.
pub fn slot_ack(shard: u32, base_seq: u64, records: &[(Hlc, SignalRef<'_>)], slot: Slot) -> Ack {
    match slot {
        Slot::New(i) => Ack::new(shard, base_seq + i as u64, records[i].0),
        Slot::Duplicate(ack) => ack,
    }
}

impl GroupPlan<'_> {
    /// Retries answered with their original ack.
    pub fn duplicates(&self) -> usize {
        self.requests.iter().flatten().flatten().filter(|s| matches!(s, Slot::Duplicate(_))).count()
    }
}

/// Decisions of the group so far that the shard state does not show yet.
#[derive(Default)]
struct Overlay {
    sessions: HashMap<String, (u64, Vec<(u64, Ack)>)>,
    idempotency: HashMap<String, Ack>,
}

/// Decides every request of a group against `state`, as if each earlier request of the group
/// had already been applied. A session gap or stale duplicate rejects its request whole, and
/// nothing of that request reaches the records. `base_seq` is the seq the first record will
/// get. Pure: the state is only read.
pub fn plan_group<'a>(
    state: &ShardState,
    requests: &'a [Vec<Signal>],
    base_seq: u64,
    stamps: Stamps<'_>,
) -> GroupPlan<'a> {
    // Sized once: a record is about 180 bytes, and regrowing the list copied them all.
    let mut records = Vec::with_capacity(requests.iter().map(Vec::len).sum());
    let mut overlay = Overlay::default();
    let requests = requests
        .iter()
        .map(|signals| plan_request(state, signals, base_seq, &mut overlay, &mut records, stamps))
        .collect();
    GroupPlan { records, requests }
}

fn plan_request<'a>(
    state: &ShardState,
    signals: &'a [Signal],
    base_seq: u64,
    group: &mut Overlay,
    records: &mut Vec<(Hlc, SignalRef<'a>)>,
    stamps: Stamps<'_>,
) -> Result<Vec<Slot>> {
    let mut local = Overlay::default();
    // The request's records go straight into the group's list; a refused request takes
    // back every one it added.
    let start = records.len();
    let mut slots = Vec::with_capacity(signals.len());
    for signal in signals {
        if let Some(ack) = find_duplicate_key(state, group, &local, signal) {
            slots.push(Slot::Duplicate(ack.as_duplicate()));
            continue;
        }
        match check_session(state, group, &local, signal) {
            Ok(None) => {}
            Ok(Some(dup)) => {
                slots.push(Slot::Duplicate(dup));
                continue;
            }
            Err(e) => {
                records.truncate(start);
                return Err(e);
            }
        }
        let hlc = stamps();
        let index = records.len();
        let ack = Ack::new(state.shard, base_seq + index as u64, hlc);
        note(&mut local, state, group, signal, ack);
        records.push((hlc, signal.as_ref()));
        slots.push(Slot::New(index));
    }
    group.sessions.extend(local.sessions);
    group.idempotency.extend(local.idempotency);
    Ok(slots)
}

fn find_duplicate_key(state: &ShardState, group: &Overlay, local: &Overlay, s: &Signal) -> Option<Ack> {
    let key = IdempotencyStore::scoped_key(&s.user, s.idempotency_key.as_deref()?);
    local
        .idempotency
        .get(&key)
        .or_else(|| group.idempotency.get(&key))
        .copied()
        .or_else(|| state.idempotency.get(&key))
}

fn check_session(state: &ShardState, group: &Overlay, local: &Overlay, s: &Signal) -> Result<Option<Ack>> {
    let (Some(session), Some(n)) = (s.session.as_deref(), s.session_seq) else {
        return Ok(None);
    };
    let key = IdempotencyStore::scoped_key(&s.user, session);
    let check = match local.sessions.get(&key).or_else(|| group.sessions.get(&key)) {
        Some((hwm, acks)) => check_seq(*hwm, acks, n),
        None => state.session_check(&s.user, session, n),
    };
    match check {
        SeqCheck::Apply => Ok(None),
        SeqCheck::Duplicate(ack) => Ok(Some(ack)),
        SeqCheck::Gap { expected } => {
            Err(Error::SessionGap { user: s.user.clone(), session: session.to_owned(), expected, got: n })
        }
        SeqCheck::StaleDuplicate { hwm } => {
            Err(Error::StaleDuplicate { user: s.user.clone(), session: session.to_owned(), got: n, hwm })
        }
    }
}

/// Records a planned write in the request's overlay.
fn note(local: &mut Overlay, state: &ShardState, group: &Overlay, s: &Signal, ack: Ack) {
    if let Some(key) = &s.idempotency_key {
        local.idempotency.insert(IdempotencyStore::scoped_key(&s.user, key), ack);
    }
    let (Some(session), Some(n)) = (s.session.as_deref(), s.session_seq) else {
        return;
    };
    let key = IdempotencyStore::scoped_key(&s.user, session);
    let entry = local.sessions.entry(key.clone()).or_insert_with(|| match group.sessions.get(&key) {
        Some(known) => known.clone(),
        None => state.session(&s.user, session).map_or_else(
            || (state.evicted_hwm(&s.user, session), Vec::new()),
            |st| (st.hwm, st.recent_acks().copied().collect()),
        ),
    });
    entry.0 = n;
    entry.1.push((n, ack));
}

/// What applying records did: the shard's new applied seq and, per record, the item (its id
/// in the shard's item map: `state.items.key(id)`) and its contribution to the store-wide
/// ranking (the runtime adds them to its index).
#[derive(Debug, Default)]
pub struct Applied {
    pub applied_seq: u64,
    pub index_deltas: Vec<(u32, f64)>,
}

/// Applies `records` (seqs `first_seq..`) written by node `origin`. The caller guarantees
/// `first_seq == state.applied_seq + 1` (the writer by construction; [`apply_batch`] checks).
pub fn apply_records(
    state: &mut ShardState,
    first_seq: u64,
    origin: u32,
    records: &[(Hlc, SignalRef<'_>)],
) -> Applied {
    let mut index_deltas = Vec::with_capacity(records.len());
    state.apply_group(first_seq, origin, records, |delta| index_deltas.push(delta));
    Applied { applied_seq: state.applied_seq, index_deltas }
}

/// What [`apply_batch`] made of a batch.
#[derive(Debug)]
pub enum BatchOutcome {
    /// Applied; the state is at `applied.applied_seq`.
    Applied(Applied),
    /// Every record was applied before (a re-delivery): nothing changed.
    Duplicate,
    /// The batch starts beyond the next seq: the records from `expected` are missing.
    Gap { expected: u64 },
}

/// Applies one verified WAL batch (header and payload as decoded from disk or the wire) to
/// `state`, exactly once: a batch wholly at or below the applied seq is a duplicate, one
/// that starts beyond the next seq is a gap, and one that overlaps the applied seq applies
/// only its new records. Records are credited to the header's origin node; a v1 header
/// (which has none) to `v1_origin`, the node of the store that wrote it.
pub fn apply_batch(
    state: &mut ShardState,
    header: &BatchHeader,
    payload: &[u8],
    v1_origin: u32,
) -> Result<BatchOutcome> {
    let next = state.applied_seq + 1;
    if header.next_seq() <= next {
        return Ok(BatchOutcome::Duplicate);
    }
    if header.first_seq > next {
        return Ok(BatchOutcome::Gap { expected: next });
    }
    let origin = if header.version == 1 { v1_origin } else { header.origin_node };
    // Decode every record before applying any: a bad record changes nothing.
    let decoded: Vec<(Hlc, SignalRef<'_>)> = records(payload)
        .enumerate()
        .map(|(i, r)| {
            r.map_err(|e| Error::InvalidState(format!("record seq {}: {e}", header.first_seq + i as u64)))
        })
        .collect::<Result<_>>()?;
    let skip = (next - header.first_seq) as usize;
    Ok(BatchOutcome::Applied(apply_records(state, next, origin, &decoded[skip..])))
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
