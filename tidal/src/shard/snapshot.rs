//! Shard snapshots: the whole [`ShardState`] as of one seq, written atomically (temp file,
//! fsync, rename, directory fsync) and checked by CRC32C when read.
//!
//! File `snapshots/snap-s{shard:04}-{seq:020}.snap`:
//!
//! ```text
//! offset size field
//!      0    8 magic  b"TDLSNAP1"
//!      8    2 version u16 (=3; 2 stays readable)
//!     10    2 reserved (0)
//!     12    4 shard u32
//!     16    8 seq u64          (last record the snapshot covers)
//!     24    8 body_len u64
//!     32    4 body_crc32c u32
//!     36    4 header_crc32c u32 (CRC32C of bytes 0..36)
//!     40    . body: postcard(SnapshotBody)
//! ```
//!
//! Version 3 bodies begin with the shard's pinned [`ShardParams`] (shard count, state limits,
//! decay); a snapshot whose parameters differ from the store's is refused
//! ([`SnapshotError::Params`]), since applying more records to it would build a state no
//! other replica has. Version 2 bodies have none and are taken as the store's.
//!
//! Retention keeps the newest [`SNAPSHOTS_KEPT`] snapshots and the WAL from the oldest of
//! them on, so a damaged newest snapshot falls back to the older one plus the WAL.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{ItemEntry, ShardParams, ShardState};
use super::user::{UserStateRef, UserStateWire};
use crate::hlc::Hlc;
use crate::session::{Ack, IdempotencyStore};
use crate::wal::WalError;
use crate::wal::vfs::Vfs;

/// A snapshot is written and fsynced in slices of this size (see [`write()`]).
pub const SYNC_SLICE_BYTES: usize = 4 << 20;
/// Snapshots kept per shard.
pub const SNAPSHOTS_KEPT: usize = 2;
const MAGIC: &[u8; 8] = b"TDLSNAP1";
/// 2: items carry decayed ranking sums; users remember evicted sessions.
/// 3: the body starts with the pinned shard parameters.
const VERSION: u16 = 3;
const VERSION_V2: u16 = 2;
const HEADER_BYTES: usize = 40;

#[derive(Serialize)]
struct BodyRef<'a> {
    params: ShardParams,
    applied_seq: u64,
    last_hlc: Hlc,
    items: Vec<(&'a str, &'a ItemEntry)>,
    /// Items and kinds by name, never by the shard's ids (see `shard::user`).
    users: Vec<(&'a str, UserStateRef<'a>)>,
    idempotency: Vec<(&'a str, Ack)>,
}

/// A v2 body: a v3 body without the parameters. Ids borrow from the snapshot bytes.
#[derive(Deserialize)]
struct BodyOwned<'a> {
    applied_seq: u64,
    last_hlc: Hlc,
    #[serde(borrow)]
    items: Vec<(&'a str, ItemEntry)>,
    #[serde(borrow)]
    users: Vec<(&'a str, UserStateWire)>,
    idempotency: Vec<(String, Ack)>,
}

/// A v3 body (postcard has no `flatten`: the fields of [`BodyOwned`] after the parameters).
#[derive(Deserialize)]
struct BodyOwnedV3<'a> {
    params: ShardParams,
    applied_seq: u64,
    last_hlc: Hlc,
    #[serde(borrow)]
    items: Vec<(&'a str, ItemEntry)>,
    #[serde(borrow)]
    users: Vec<(&'a str, UserStateWire)>,
    idempotency: Vec<(String, Ack)>,
}

/// Why snapshot bytes were refused; the caller falls back to an older snapshot or the WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("shorter than its header")]
    Short,
    #[error("bad magic")]
    Magic,
    #[error("header checksum mismatch")]
    HeaderCrc,
    #[error("unsupported version {0}")]
    Version(u16),
    #[error("belongs to shard {found}, not {expected}")]
    Shard { found: u32, expected: u32 },
    #[error("body is {have} bytes, header says {declared}")]
    BodyLen { have: u64, declared: u64 },
    #[error("body checksum mismatch")]
    BodyCrc,
    #[error("decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("seq in body disagrees with header")]
    Seq,
    #[error("pinned parameters differ: the snapshot has {snapshot:?}, the store {store:?}")]
    Params { snapshot: Box<ShardParams>, store: Box<ShardParams> },
    /// The body decoded but breaks an invariant of the state (a user naming an item the
    /// snapshot does not hold).
    #[error("inconsistent state: user {user:?} {reason}")]
    Inconsistent { user: String, reason: String },
}

/// The file name of a snapshot.
pub fn file_name(shard: u32, seq: u64) -> String {
    format!("snap-s{shard:04}-{seq:020}.snap")
}

/// `(shard, seq)` from a snapshot file name.
pub fn parse_file_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("snap-s")?.strip_suffix(".snap")?;
    let (shard, seq) = rest.split_once('-')?;
    if shard.len() != 4 || seq.len() != 20 {
        return None;
    }
    Some((shard.parse().ok()?, seq.parse().ok()?))
}

/// Snapshots of `shard` in `dir`, newest first.
pub fn list(vfs: &dyn Vfs, dir: &Path, shard: u32) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let names = vfs.list_dir(dir).map_err(|e| WalError::io("list snapshots", dir, e))?;
    let mut found: Vec<(u64, PathBuf)> = names
        .iter()
        .filter_map(|n| parse_file_name(n).filter(|(s, _)| *s == shard).map(|(_, seq)| (seq, dir.join(n))))
        .collect();
    found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    Ok(found)
}

/// Serialises the state (whose pinned parameters are `params`) into a snapshot file's bytes.
pub fn encode(state: &ShardState, params: &ShardParams) -> Result<Vec<u8>, String> {
    let body = BodyRef {
        params: *params,
        applied_seq: state.applied_seq,
        last_hlc: state.last_hlc,
        items: state.items.iter().map(|(_, k, v)| (k, v)).collect(),
        users: state.users.iter().map(|(_, k, v)| (k, state.user_ref(v))).collect(),
        idempotency: state.idempotency.entries().collect(),
    };
    let body = postcard::to_extend(&body, Vec::new()).map_err(|e| format!("encode: {e}"))?;
    Ok(frame(VERSION, state, &body))
}

/// The header of a snapshot of `state` with `body`, followed by the body.
fn frame(version: u16, state: &ShardState, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_BYTES];
    out[0..8].copy_from_slice(MAGIC);
    out[8..10].copy_from_slice(&version.to_le_bytes());
    out[12..16].copy_from_slice(&state.shard.to_le_bytes());
    out[16..24].copy_from_slice(&state.applied_seq.to_le_bytes());
    out[24..32].copy_from_slice(&(body.len() as u64).to_le_bytes());
    out[32..36].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[0..36]);
    out[36..40].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks and decodes snapshot bytes into a shard state with the store's `params`.
pub fn decode(bytes: &[u8], shard: u32, params: &ShardParams) -> Result<ShardState, SnapshotError> {
    let header = bytes.get(..HEADER_BYTES).ok_or(SnapshotError::Short)?;
    let u32_at = |o: usize| u32::from_le_bytes(header[o..o + 4].try_into().unwrap_or_default());
    let u64_at = |o: usize| u64::from_le_bytes(header[o..o + 8].try_into().unwrap_or_default());
    if &header[0..8] != MAGIC {
        return Err(SnapshotError::Magic);
    }
    if crc32c::crc32c(&header[0..36]) != u32_at(36) {
        return Err(SnapshotError::HeaderCrc);
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != VERSION && version != VERSION_V2 {
        return Err(SnapshotError::Version(version));
    }
    if u32_at(12) != shard {
        return Err(SnapshotError::Shard { found: u32_at(12), expected: shard });
    }
    let body = &bytes[HEADER_BYTES..];
    if body.len() as u64 != u64_at(24) {
        return Err(SnapshotError::BodyLen { have: body.len() as u64, declared: u64_at(24) });
    }
    if crc32c::crc32c(body) != u32_at(32) {
        return Err(SnapshotError::BodyCrc);
    }
    let owned = if version == VERSION {
        let v3: BodyOwnedV3 = postcard::from_bytes(body)?;
        if v3.params != *params {
            return Err(SnapshotError::Params { snapshot: Box::new(v3.params), store: Box::new(*params) });
        }
        let BodyOwnedV3 { applied_seq, last_hlc, items, users, idempotency, .. } = v3;
        BodyOwned { applied_seq, last_hlc, items, users, idempotency }
    } else {
        postcard::from_bytes::<BodyOwned>(body)?
    };
    if owned.applied_seq != u64_at(16) {
        return Err(SnapshotError::Seq);
    }
    into_state(owned, shard, params)
}

fn into_state(body: BodyOwned<'_>, shard: u32, params: &ShardParams) -> Result<ShardState, SnapshotError> {
    let limits = params.limits;
    let mut state = ShardState::with_params(shard, params);
    state.applied_seq = body.applied_seq;
    state.last_hlc = body.last_hlc;
    // Items first: users name them by id, which interning the items assigns.
    state.items = body.items.into_iter().collect();
    for (user, wire) in body.users {
        let decoded = state
            .user_from_wire(wire)
            .map_err(|reason| SnapshotError::Inconsistent { user: user.to_owned(), reason })?;
        state.users.insert(user, decoded);
    }
    state.idempotency = IdempotencyStore::from_entries(
        limits.idempotency_window_ms,
        limits.idempotency_keys_max,
        body.idempotency,
    );
    Ok(state)
}

/// Writes a snapshot atomically; returns its path.
pub fn write(
    vfs: &dyn Vfs,
    dir: &Path,
    state: &ShardState,
    params: &ShardParams,
) -> Result<PathBuf, WalError> {
    let bytes = encode(state, params).map_err(WalError::TooLarge)?;
    write_bytes(vfs, dir, state.shard, state.applied_seq, &bytes)
}

/// Writes the bytes of an encoded snapshot of `shard` at `seq` atomically (what a replica
/// does with a snapshot its leader shipped); returns its path.
pub fn write_bytes(
    vfs: &dyn Vfs,
    dir: &Path,
    shard: u32,
    seq: u64,
    bytes: &[u8],
) -> Result<PathBuf, WalError> {
    let path = dir.join(file_name(shard, seq));
    let tmp = path.with_extension("snap.tmp");
    if vfs.file_len(&tmp).is_ok() {
        vfs.remove_file(&tmp).map_err(|e| WalError::io("remove stale temp snapshot", &tmp, e))?;
    }
    let mut file = vfs.create_new(&tmp).map_err(|e| WalError::io("create snapshot", &tmp, e))?;
    // In slices, each made durable before the next: the WAL's fsyncs on the same file system
    // then never wait behind more than one slice of snapshot writeback.
    for slice in bytes.chunks(SYNC_SLICE_BYTES) {
        file.write_all(slice).map_err(|e| WalError::io("write snapshot", &tmp, e))?;
        file.sync_data().map_err(|e| WalError::io("fsync snapshot", &tmp, e))?;
    }
    drop(file);
    vfs.rename(&tmp, &path).map_err(|e| WalError::io("rename snapshot", &path, e))?;
    vfs.sync_dir(dir).map_err(|e| WalError::io("fsync snapshot directory", dir, e))?;
    Ok(path)
}

/// Removes snapshots beyond the newest [`SNAPSHOTS_KEPT`]. Returns the oldest kept seq once
/// [`SNAPSHOTS_KEPT`] snapshots exist (the WAL below it may then be retired), else `None`:
/// with a single snapshot the WAL stays whole, so a damaged snapshot has a fallback.
pub fn prune(vfs: &dyn Vfs, dir: &Path, shard: u32) -> Result<Option<u64>, WalError> {
    let all = list(vfs, dir, shard)?;
    for (_, path) in all.iter().skip(SNAPSHOTS_KEPT) {
        vfs.remove_file(path).map_err(|e| WalError::io("remove old snapshot", path, e))?;
    }
    if all.len() > SNAPSHOTS_KEPT {
        vfs.sync_dir(dir).map_err(|e| WalError::io("fsync snapshot directory", dir, e))?;
    }
    Ok(all.get(SNAPSHOTS_KEPT - 1).map(|(seq, _)| *seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Decay;
    use crate::shard::state::StateLimits;
    use crate::signal::{Signal, SignalKind};

    /// A version 2 snapshot (no parameters in the body), as older builds wrote.
    fn encode_v2(state: &ShardState) -> Vec<u8> {
        let items: Vec<_> = state.items.iter().map(|(_, k, v)| (k, v)).collect();
        let users: Vec<_> = state.users.iter().map(|(_, k, v)| (k, state.user_ref(v))).collect();
        let idempotency: Vec<_> = state.idempotency.entries().collect();
        let body = (state.applied_seq, state.last_hlc, items, users, idempotency);
        frame(VERSION_V2, state, &postcard::to_allocvec(&body).unwrap())
    }

    fn params() -> ShardParams {
        ShardParams { shards: 4, limits: limits(), decay: Decay { t_ref_ms: 7, half_life_ms: 1000 } }
    }

    fn limits() -> StateLimits {
        StateLimits {
            user_history_max: 8,
            user_sessions_max: 4,
            idempotency_window_ms: 1 << 40,
            idempotency_keys_max: 100,
        }
    }

    fn sample() -> ShardState {
        let mut st = ShardState::new(2, limits());
        for n in 1..=20u64 {
            let mut s = Signal::new(format!("u{}", n % 3), format!("i{}", n % 5), SignalKind::Like);
            s.session = Some("s".into());
            s.idempotency_key = Some(format!("k{n}"));
            if n % 4 == 0 {
                s.kind = SignalKind::Dislike;
            }
            st.apply(n, 1, Hlc::new(100 + n, 0), &s.as_ref());
        }
        st
    }

    fn summary(st: &ShardState) -> String {
        let mut items: Vec<_> = st.items.iter().map(|(_, k, v)| format!("{k}:{v:?}")).collect();
        items.sort();
        let mut users: Vec<_> = st
            .users
            .iter()
            .map(|(_, k, v)| format!("{k}:{}", serde_json::to_string(&st.user_ref(v)).unwrap()))
            .collect();
        users.sort();
        let idem: Vec<_> = st.idempotency.entries().map(|(k, a)| format!("{k}:{a:?}")).collect();
        format!("{} {:?} {items:?} {users:?} {idem:?}", st.applied_seq, st.last_hlc)
    }

    #[test]
    fn round_trip_restores_identical_state() {
        let st = sample();
        let back = decode(&encode(&st, &params()).unwrap(), 2, &params()).unwrap();
        assert_eq!(summary(&back), summary(&st));
        assert_eq!(back.digest(), st.digest());
        assert_eq!(back.scoring.decay, params().decay, "the decay comes with the parameters");
    }

    #[test]
    fn version_2_stays_readable_and_other_parameters_are_refused() {
        let st = sample();
        let v2 = encode_v2(&st);
        assert_eq!(u16::from_le_bytes([v2[8], v2[9]]), 2);
        assert_eq!(decode(&v2, 2, &params()).unwrap().digest(), st.digest());
        let bytes = encode(&st, &params()).unwrap();
        let other = ShardParams { limits: StateLimits { user_history_max: 9, ..limits() }, ..params() };
        assert!(matches!(decode(&bytes, 2, &other), Err(SnapshotError::Params { .. })));
        let other = ShardParams { shards: 8, ..params() };
        assert!(matches!(decode(&bytes, 2, &other), Err(SnapshotError::Params { .. })));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let bytes = encode(&sample(), &params()).unwrap();
        for offset in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[offset] ^= 0x10;
            assert!(decode(&bad, 2, &params()).is_err(), "flip at {offset} not detected");
        }
        assert!(decode(&bytes[..bytes.len() - 1], 2, &params()).is_err());
        assert!(decode(&bytes, 3, &params()).is_err(), "wrong shard");
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(3, 42)), Some((3, 42)));
        assert_eq!(parse_file_name("snap-s0003-42.snap"), None);
        assert_eq!(parse_file_name("snap-s0003-00000000000000000042.snap.tmp"), None);
    }
}

#[cfg(test)]
#[path = "snapshot_golden_tests.rs"]
mod golden_tests;
