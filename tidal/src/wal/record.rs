//! WAL records: one signal with its HLC, as it sits inside a batch payload.
//!
//! This module owns the record framing and the record body encoding:
//!
//! ```text
//! payload = record*            record = len u32 LE | body      (len = body bytes)
//! body    = record_version u8 (=1) | postcard(WireRecord)
//! ```
//!
//! Invariants: `1 <= len <= RECORD_BODY_BYTES_MAX`; a body decodes using every one of its
//! bytes; the kind travels as [`SignalKind::code`] and carries a name exactly when the code
//! is 0 (custom). Decoding borrows every string from the input (only a custom kind's name
//! and a non-empty attribute list allocate) and never panics, whatever the bytes.
//!
//! The wire form is postcard's encoding of `WireRecord` (its serde derive is the reference),
//! but both directions are written by hand: `put_wire` writes the same bytes serde would,
//! and `WireCursor` (varints, length-prefixed UTF-8, option tags, little-endian f64) reads
//! them, skipping serde's serializer and visitor machinery on the write and replay paths.
//! The reader accepts exactly the bytes postcard accepts and fails with the same
//! `postcard::Error`. `tests_record` holds both to serde: the encoders byte for byte on
//! random signals, the decoders on random and damaged bodies.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hlc::Hlc;
use crate::signal::{SignalKind, SignalRef};
use crate::wal::WalError;

/// Version byte at the start of every record body this code writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Largest record body (version byte + postcard bytes). Signals are bounded by the limits in
/// [`crate::signal`] to well under this; the cap keeps one bad length from claiming a
/// whole segment.
pub const RECORD_BODY_BYTES_MAX: usize = 64 * 1024;
/// Bytes of the length prefix in front of every body.
pub const RECORD_LEN_BYTES: usize = 4;
/// Smallest possible framed record: the length prefix plus the version byte.
pub const RECORD_BYTES_MIN: usize = RECORD_LEN_BYTES + 1;

/// The postcard wire form of a record. Field order is the wire order: never reorder, only
/// add a new record version. Strings borrow from the buffer being decoded.
#[derive(Serialize, Deserialize)]
struct WireRecord<'a> {
    /// First, so a reader can peek the HLC without decoding the rest.
    hlc: u64,
    /// [`SignalKind::code`]: 1..=8 built-in, 0 custom.
    kind: u8,
    /// The custom kind's name; present iff `kind == 0`.
    #[serde(borrow)]
    kind_name: Option<&'a str>,
    user: &'a str,
    item: &'a str,
    value: f64,
    #[serde(borrow)]
    session: Option<&'a str>,
    session_seq: Option<u64>,
    #[serde(borrow)]
    context: Option<&'a str>,
    #[serde(borrow)]
    source: Option<&'a str>,
    #[serde(borrow)]
    idempotency_key: Option<&'a str>,
    /// Borrowed when encoding (no copy of the signal's list), owned when decoding (the list
    /// becomes the decoded `SignalRef`'s `attrs` without another copy).
    #[serde(borrow)]
    attrs: Cow<'a, [(&'a str, &'a str)]>,
}

/// Why a record (or the framing around it) is not valid.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The length prefix or the body runs past the end of the payload.
    Truncated { have: usize, need: usize },
    /// A length prefix of 0 or above [`RECORD_BODY_BYTES_MAX`].
    BadLength(u32),
    /// A body whose version byte this code does not know.
    UnknownVersion(u8),
    /// The postcard body does not decode.
    Decode(postcard::Error),
    /// The body decoded but left bytes unused.
    TrailingBytes(usize),
    /// A kind code that names no kind, or a name where none belongs (or none where one does).
    BadKind { code: u8, has_name: bool },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated { have, need } => {
                write!(f, "record truncated: {have} of {need} bytes")
            }
            RecordError::BadLength(len) => {
                write!(f, "record length {len} outside 1..={RECORD_BODY_BYTES_MAX}")
            }
            RecordError::UnknownVersion(v) => write!(f, "unknown record version {v}"),
            RecordError::Decode(e) => write!(f, "record does not decode: {e}"),
            RecordError::TrailingBytes(n) => write!(f, "record leaves {n} bytes unused"),
            RecordError::BadKind { code, has_name } => {
                write!(f, "bad kind code {code} (name present: {has_name})")
            }
        }
    }
}

impl std::error::Error for RecordError {}

/// Appends one framed record (`len u32 | body`) to `out`. On error `out` is left as it was.
pub fn encode_record(out: &mut Vec<u8>, hlc: Hlc, signal: &SignalRef<'_>) -> Result<(), WalError> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_LEN_BYTES]);
    out.push(RECORD_VERSION);
    put_wire(out, hlc, signal);
    let body_len = out.len() - start - RECORD_LEN_BYTES;
    if body_len > RECORD_BODY_BYTES_MAX {
        out.truncate(start);
        return Err(WalError::TooLarge(format!(
            "record body of {body_len} bytes exceeds RECORD_BODY_BYTES_MAX ({RECORD_BODY_BYTES_MAX})"
        )));
    }
    // body_len <= 64 KiB, so it fits the u32 prefix.
    out[start..start + RECORD_LEN_BYTES].copy_from_slice(&(body_len as u32).to_le_bytes());
    Ok(())
}

/// Writes the postcard form of `WireRecord` for `signal` by hand, field by field in wire
/// order: the bytes serde's derive writes (`tests_record` holds the two to each other), at a
/// fraction of the instructions (no serializer state, no per-field dispatch).
fn put_wire(out: &mut Vec<u8>, hlc: Hlc, signal: &SignalRef<'_>) {
    put_varint(out, hlc.0);
    out.push(signal.kind.code());
    put_opt_str(out, if let SignalKind::Custom(name) = &signal.kind { Some(name) } else { None });
    put_str(out, signal.user);
    put_str(out, signal.item);
    out.extend_from_slice(&signal.value.to_bits().to_le_bytes());
    put_opt_str(out, signal.session);
    match signal.session_seq {
        None => out.push(0),
        Some(n) => {
            out.push(1);
            put_varint(out, n);
        }
    }
    put_opt_str(out, signal.context);
    put_opt_str(out, signal.source);
    put_opt_str(out, signal.idempotency_key);
    put_varint(out, signal.attrs.len() as u64);
    for (key, value) in signal.attrs.iter() {
        put_str(out, key);
        put_str(out, value);
    }
}

/// postcard's unsigned varint: 7 bits a byte, low first, the high bit set on all but the last.
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// serde's encoding of the record body after the version byte (tests hold [`put_wire`]
/// to it).
#[cfg(test)]
pub(crate) fn encode_wire_serde(hlc: Hlc, signal: &SignalRef<'_>) -> Vec<u8> {
    let kind_name = match &signal.kind {
        SignalKind::Custom(name) => Some(name.as_ref()),
        _ => None,
    };
    let wire = WireRecord {
        hlc: hlc.0,
        kind: signal.kind.code(),
        kind_name,
        user: signal.user,
        item: signal.item,
        value: signal.value,
        session: signal.session,
        session_seq: signal.session_seq,
        context: signal.context,
        source: signal.source,
        idempotency_key: signal.idempotency_key,
        attrs: Cow::Borrowed(&signal.attrs),
    };
    postcard::to_allocvec(&wire).expect("encodes")
}

/// Decodes one record body (without its length prefix). Every byte must be used.
pub fn decode_record(body: &[u8]) -> Result<(Hlc, SignalRef<'_>), RecordError> {
    let (wire, rest) = decode_wire(body)?;
    if !rest.is_empty() {
        return Err(RecordError::TrailingBytes(rest.len()));
    }
    let kind = match (wire.kind, wire.kind_name) {
        (0, Some(name)) => SignalKind::Custom(name.into()),
        (code, None) => SignalKind::from_code(code).ok_or(RecordError::BadKind { code, has_name: false })?,
        (code, Some(_)) => {
            return Err(RecordError::BadKind { code, has_name: true });
        }
    };
    let signal = SignalRef {
        user: wire.user,
        session: wire.session,
        session_seq: wire.session_seq,
        item: wire.item,
        kind,
        value: wire.value,
        context: wire.context,
        source: wire.source,
        idempotency_key: wire.idempotency_key,
        attrs: wire.attrs.into_owned(),
    };
    Ok((Hlc(wire.hlc), signal))
}

fn decode_wire(body: &[u8]) -> Result<(WireRecord<'_>, &[u8]), RecordError> {
    let (&version, rest) = body.split_first().ok_or(RecordError::Truncated { have: 0, need: 1 })?;
    if version != RECORD_VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let mut cursor = WireCursor { rest };
    let wire = cursor.record().map_err(RecordError::Decode)?;
    Ok((wire, cursor.rest))
}

/// The serde decoder of a record body (after the version byte), for the tests that hold the
/// hand-written one to it.
#[cfg(test)]
pub(crate) fn decode_wire_serde(rest: &[u8]) -> Result<(WireRecordView<'_>, &[u8]), postcard::Error> {
    postcard::take_from_bytes::<WireRecord<'_>>(rest).map(|(w, rest)| (WireRecordView::from(w), rest))
}

/// The hand-written decoder, as [`decode_wire_serde`] returns it.
#[cfg(test)]
pub(crate) fn decode_wire_manual(rest: &[u8]) -> Result<(WireRecordView<'_>, &[u8]), postcard::Error> {
    let mut cursor = WireCursor { rest };
    cursor.record().map(|w| (WireRecordView::from(w), cursor.rest))
}

/// Every field of a decoded wire record, comparable (tests only).
#[cfg(test)]
pub(crate) type WireRecordView<'a> = (
    u64,
    u8,
    Option<&'a str>,
    (&'a str, &'a str, u64),
    (Option<&'a str>, Option<u64>, Option<&'a str>, Option<&'a str>, Option<&'a str>),
    Vec<(&'a str, &'a str)>,
);

#[cfg(test)]
impl<'a> From<WireRecord<'a>> for WireRecordView<'a> {
    fn from(w: WireRecord<'a>) -> Self {
        (
            w.hlc,
            w.kind,
            w.kind_name,
            (w.user, w.item, w.value.to_bits()),
            (w.session, w.session_seq, w.context, w.source, w.idempotency_key),
            w.attrs.into_owned(),
        )
    }
}

/// Reads postcard's wire form of [`WireRecord`], field by field in wire order, with
/// postcard's own rules and errors (see `postcard::de::Deserializer`): a varint is at most 10
/// bytes and its 10th byte holds one bit; an option tag is 0 or 1; a string is a varint
/// length and that many bytes of UTF-8; an `f64` is 8 bytes little-endian; a `u8` is one
/// byte.
struct WireCursor<'a> {
    rest: &'a [u8],
}

impl<'a> WireCursor<'a> {
    fn record(&mut self) -> Result<WireRecord<'a>, postcard::Error> {
        let hlc = self.varint()?;
        let kind = self.byte()?;
        let kind_name = self.option(Self::str)?;
        let (user, item) = self.user_and_item()?;
        Ok(WireRecord {
            hlc,
            kind,
            kind_name,
            user,
            item,
            value: self.f64()?,
            session: self.option(Self::str)?,
            session_seq: self.option(Self::varint)?,
            context: self.option(Self::str)?,
            source: self.option(Self::str)?,
            idempotency_key: self.option(Self::str)?,
            attrs: Cow::Owned(self.attrs()?),
        })
    }

    fn byte(&mut self) -> Result<u8, postcard::Error> {
        let (&byte, rest) = self.rest.split_first().ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.rest = rest;
        Ok(byte)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], postcard::Error> {
        let n = usize::try_from(n).map_err(|_| postcard::Error::DeserializeUnexpectedEnd)?;
        let (taken, rest) = self.rest.split_at_checked(n).ok_or(postcard::Error::DeserializeUnexpectedEnd)?;
        self.rest = rest;
        Ok(taken)
    }

    fn varint(&mut self) -> Result<u64, postcard::Error> {
        // One byte: every option tag and nearly every length of a record.
        if let Some((&byte, rest)) = self.rest.split_first()
            && byte < 0x80
        {
            self.rest = rest;
            return Ok(u64::from(byte));
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Result<u64, postcard::Error> {
        const BYTES_MAX: usize = 10;
        let mut out = 0u64;
        for (i, &byte) in self.rest.iter().take(BYTES_MAX).enumerate() {
            out |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                // The 10th byte carries bit 63 only.
                if i == BYTES_MAX - 1 && byte > 1 {
                    return Err(postcard::Error::DeserializeBadVarint);
                }
                self.rest = &self.rest[i + 1..];
                return Ok(out);
            }
        }
        // No last byte: the input ended first, or ten bytes all said "more".
        Err(if self.rest.len() < BYTES_MAX {
            postcard::Error::DeserializeUnexpectedEnd
        } else {
            postcard::Error::DeserializeBadVarint
        })
    }

    /// The user and the item, which follow each other on the wire. When the item's length
    /// is one byte (below 0x80: an ASCII character), the span from the user's first byte to
    /// the item's last is UTF-8 exactly when both strings are, and that byte splits it at a
    /// character boundary; one validation of the span costs much less than two of short
    /// strings. Anything else, errors included, takes the field-by-field path, so what is
    /// accepted and every error are the same either way.
    fn user_and_item(&mut self) -> Result<(&'a str, &'a str), postcard::Error> {
        let start = self.rest;
        let user_len = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        let span = self.rest;
        if let Some(&item_len) = span.get(user_len)
            && item_len < 0x80
            && let Some(both) = span.get(..user_len + 1 + usize::from(item_len))
            && let Ok(both) = std::str::from_utf8(both)
            && let (Some(user), Some(item)) = (both.get(..user_len), both.get(user_len + 1..))
        {
            self.rest = &span[both.len()..];
            return Ok((user, item));
        }
        self.rest = start;
        Ok((self.str()?, self.str()?))
    }

    fn str(&mut self) -> Result<&'a str, postcard::Error> {
        let len = self.varint()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| postcard::Error::DeserializeBadUtf8)
    }

    fn f64(&mut self) -> Result<f64, postcard::Error> {
        let bytes: [u8; 8] =
            self.take(8)?.try_into().map_err(|_| postcard::Error::DeserializeUnexpectedEnd)?;
        Ok(f64::from_le_bytes(bytes))
    }

    fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, postcard::Error>,
    ) -> Result<Option<T>, postcard::Error> {
        match self.byte()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(postcard::Error::DeserializeBadOption),
        }
    }

    fn attrs(&mut self) -> Result<Vec<(&'a str, &'a str)>, postcard::Error> {
        let len = self.varint()?;
        // Each pair takes at least two bytes: a bogus length cannot claim more memory than
        // the body could fill.
        let mut attrs =
            Vec::with_capacity(usize::try_from(len).unwrap_or(usize::MAX).min(self.rest.len() / 2));
        for _ in 0..len {
            attrs.push((self.str()?, self.str()?));
        }
        Ok(attrs)
    }
}

/// Reads only the HLC of a record body: the first field, so this is a version byte and a
/// varint. Used where a range is needed without decoding every string.
pub fn peek_hlc(body: &[u8]) -> Result<Hlc, RecordError> {
    let (&version, rest) = body.split_first().ok_or(RecordError::Truncated { have: 0, need: 1 })?;
    if version != RECORD_VERSION {
        return Err(RecordError::UnknownVersion(version));
    }
    let (hlc, _) = postcard::take_from_bytes::<u64>(rest).map_err(RecordError::Decode)?;
    Ok(Hlc(hlc))
}

/// The record bodies of a payload, in order, checking only the framing. After the first
/// error the iterator ends.
pub fn record_bodies(payload: &[u8]) -> RecordBodies<'_> {
    RecordBodies { rest: payload, offset: 0, failed: false }
}

/// Iterator returned by [`record_bodies`].
#[derive(Clone, Debug)]
pub struct RecordBodies<'a> {
    rest: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> RecordBodies<'a> {
    /// Offset in the payload of the next record's length prefix (or of the failure).
    pub fn offset(&self) -> usize {
        self.offset
    }

    fn next_body(&mut self) -> Result<&'a [u8], RecordError> {
        let Some((len_bytes, after)) = self.rest.split_first_chunk::<RECORD_LEN_BYTES>() else {
            return Err(RecordError::Truncated { have: self.rest.len(), need: RECORD_LEN_BYTES });
        };
        let len = u32::from_le_bytes(*len_bytes);
        if len == 0 || len as usize > RECORD_BODY_BYTES_MAX {
            return Err(RecordError::BadLength(len));
        }
        let Some((body, rest)) = after.split_at_checked(len as usize) else {
            return Err(RecordError::Truncated { have: after.len(), need: len as usize });
        };
        self.rest = rest;
        self.offset += RECORD_LEN_BYTES + body.len();
        Ok(body)
    }
}

impl<'a> Iterator for RecordBodies<'a> {
    type Item = Result<&'a [u8], RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let item = self.next_body();
        self.failed = item.is_err();
        Some(item)
    }
}

/// The decoded records of a payload, in order. After the first error the iterator ends.
pub fn records(payload: &[u8]) -> Records<'_> {
    Records { bodies: record_bodies(payload) }
}

/// Iterator returned by [`records`].
#[derive(Clone, Debug)]
pub struct Records<'a> {
    bodies: RecordBodies<'a>,
}

impl Records<'_> {
    /// Offset in the payload of the next record (or of the failure).
    pub fn offset(&self) -> usize {
        self.bodies.offset()
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<(Hlc, SignalRef<'a>), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.bodies.next()?.and_then(decode_record);
        self.bodies.failed |= item.is_err();
        Some(item)
    }
}
