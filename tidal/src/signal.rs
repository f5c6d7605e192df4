//! The signal model: what one feedback event is, its kinds, and validation.
//!
//! A [`Signal`] is the unit a client writes. [`SignalRef`] is the borrowed view the
//! WAL decodes into and the shard state applies, so replay does not allocate per field.
//! Every limit is a named constant; [`Signal::validate`] names the offending field.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest user, item, session, context or source id, in bytes.
pub const ID_BYTES_MAX: usize = 256;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Most attributes one signal may carry.
pub const ATTRS_MAX: usize = 16;
/// Longest attribute key, in bytes.
pub const ATTR_KEY_BYTES_MAX: usize = 64;
/// Longest attribute value, in bytes.
pub const ATTR_VALUE_BYTES_MAX: usize = 1024;
/// Longest custom kind name, in bytes.
pub const KIND_NAME_BYTES_MAX: usize = 32;
/// Most custom kinds a store may register.
pub const CUSTOM_KINDS_MAX: usize = 64;
/// Largest absolute signal value (dwell seconds, rating, weight).
pub const VALUE_ABS_MAX: f64 = 1e9;
/// Highest rating value; ratings live in `0..=RATING_MAX`.
pub const RATING_MAX: f64 = 10.0;
/// Most signals in one `write_batch` call.
pub const BATCH_SIGNALS_MAX: usize = 100_000;
/// Most bytes (estimated, as encoded) one write request may carry; keeps every group
/// commit far below the WAL's batch payload limit.
pub const REQUEST_BYTES_MAX: usize = 32 << 20;
/// Attribute that names the label of a `label` signal.
pub const LABEL_ATTR: &str = "label";

/// What a signal records. Custom kinds must be registered in the store's options.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalKind {
    Impression,
    Click,
    Like,
    Dislike,
    Skip,
    Dwell,
    Rating,
    Label,
    Custom(Box<str>),
}

impl SignalKind {
    /// The built-in kinds, in wire-code order (code = index + 1).
    pub const BUILTIN: [SignalKind; 8] = [
        SignalKind::Impression,
        SignalKind::Click,
        SignalKind::Like,
        SignalKind::Dislike,
        SignalKind::Skip,
        SignalKind::Dwell,
        SignalKind::Rating,
        SignalKind::Label,
    ];

    /// The kind's name as it appears in JSON and on the wire for custom kinds.
    pub fn as_str(&self) -> &str {
        match self {
            SignalKind::Impression => "impression",
            SignalKind::Click => "click",
            SignalKind::Like => "like",
            SignalKind::Dislike => "dislike",
            SignalKind::Skip => "skip",
            SignalKind::Dwell => "dwell",
            SignalKind::Rating => "rating",
            SignalKind::Label => "label",
            SignalKind::Custom(name) => name,
        }
    }

    /// Parses a kind name; unknown names become `Custom` (validation checks registration).
    pub fn from_name(name: &str) -> SignalKind {
        Self::BUILTIN
            .iter()
            .find(|k| k.as_str() == name)
            .cloned()
            .unwrap_or_else(|| SignalKind::Custom(name.into()))
    }

    /// Wire code: 1..=8 for built-ins, 0 for custom (the name follows on the wire).
    pub fn code(&self) -> u8 {
        match self {
            SignalKind::Custom(_) => 0,
            builtin => Self::BUILTIN.iter().position(|k| k == builtin).map_or(0, |i| i as u8 + 1),
        }
    }

    /// The built-in kind for a wire code, if the code names one.
    pub fn from_code(code: u8) -> Option<SignalKind> {
        Self::BUILTIN.get(usize::from(code).checked_sub(1)?).cloned()
    }

    /// Does this signal express that the user wanted the item?
    pub fn is_positive(&self, value: f64) -> bool {
        match self {
            SignalKind::Click | SignalKind::Like => true,
            SignalKind::Rating => value >= RATING_MAX / 2.0,
            SignalKind::Label => value > 0.0,
            _ => false,
        }
    }

    /// Does this signal explicitly reject the item (an explicit negative)?
    pub fn is_negative(&self, value: f64) -> bool {
        match self {
            SignalKind::Dislike | SignalKind::Skip => true,
            SignalKind::Rating => value < RATING_MAX / 2.0,
            SignalKind::Label => value <= 0.0,
            _ => false,
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SignalKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SignalKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(SignalKind::from_name(&name))
    }
}

/// One feedback event, as a client writes it. The store stamps the HLC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signal {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Position of this signal in its session, starting at 1 (SeqNo). Needs `session`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_seq: Option<u64>,
    pub item: String,
    pub kind: SignalKind,
    #[serde(default = "default_value")]
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, String>,
}

fn default_value() -> f64 {
    1.0
}

/// A signal that failed validation: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

impl InvalidField {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InvalidField { field: field.into(), reason: reason.into() }
    }
}

impl Signal {
    /// A signal with value 1.0 and no optional fields.
    pub fn new(user: impl Into<String>, item: impl Into<String>, kind: SignalKind) -> Self {
        Signal {
            user: user.into(),
            session: None,
            session_seq: None,
            item: item.into(),
            kind,
            value: 1.0,
            context: None,
            source: None,
            idempotency_key: None,
            attrs: BTreeMap::new(),
        }
    }

    /// Checks every field against its limit. `custom_kinds` lists the registered custom kinds.
    pub fn validate(&self, custom_kinds: &[String]) -> Result<(), InvalidField> {
        check_id("user", &self.user, true)?;
        check_id("item", &self.item, true)?;
        if let Some(session) = &self.session {
            check_id("session", session, true)?;
        }
        match (self.session_seq, &self.session) {
            (Some(0), _) => return Err(InvalidField::new("session_seq", "must be at least 1")),
            (Some(_), None) => return Err(InvalidField::new("session_seq", "needs a session")),
            _ => {}
        }
        if let Some(context) = &self.context {
            check_id("context", context, true)?;
        }
        if let Some(source) = &self.source {
            check_id("source", source, true)?;
        }
        if let Some(key) = &self.idempotency_key {
            check_text("idempotency_key", key, IDEMPOTENCY_KEY_BYTES_MAX, true)?;
        }
        self.validate_kind_and_value(custom_kinds)?;
        self.validate_attrs()
    }

    fn validate_kind_and_value(&self, custom_kinds: &[String]) -> Result<(), InvalidField> {
        if let SignalKind::Custom(name) = &self.kind {
            check_text("kind", name, KIND_NAME_BYTES_MAX, true)?;
            if !custom_kinds.iter().any(|k| k == name.as_ref()) {
                return Err(InvalidField::new("kind", format!("unknown kind `{name}`")));
            }
        }
        let v = self.value;
        if !v.is_finite() || v.abs() > VALUE_ABS_MAX {
            return Err(InvalidField::new("value", format!("must be finite and within ±{VALUE_ABS_MAX}")));
        }
        match self.kind {
            SignalKind::Dwell if v < 0.0 => Err(InvalidField::new("value", "dwell seconds must be >= 0")),
            SignalKind::Rating if !(0.0..=RATING_MAX).contains(&v) => {
                Err(InvalidField::new("value", format!("rating must be within 0..={RATING_MAX}")))
            }
            SignalKind::Label if !self.attrs.contains_key(LABEL_ATTR) => {
                Err(InvalidField::new("attrs.label", "a label signal names its label"))
            }
            _ => Ok(()),
        }
    }

    fn validate_attrs(&self) -> Result<(), InvalidField> {
        if self.attrs.len() > ATTRS_MAX {
            return Err(InvalidField::new("attrs", format!("at most {ATTRS_MAX} attributes")));
        }
        for (key, value) in &self.attrs {
            check_text("attrs", key, ATTR_KEY_BYTES_MAX, true)?;
            check_text(&format!("attrs.{key}"), value, ATTR_VALUE_BYTES_MAX, false)?;
        }
        Ok(())
    }

    /// An upper bound of this signal's encoded size in the WAL, in bytes.
    pub fn encoded_len_estimate(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len() + 5);
        let attrs: usize = self.attrs.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        64 + self.user.len()
            + self.item.len()
            + self.kind.as_str().len()
            + text(&self.session)
            + text(&self.context)
            + text(&self.source)
            + text(&self.idempotency_key)
            + attrs
    }

    /// The borrowed view of this signal.
    pub fn as_ref(&self) -> SignalRef<'_> {
        SignalRef {
            user: &self.user,
            session: self.session.as_deref(),
            session_seq: self.session_seq,
            item: &self.item,
            kind: self.kind.clone(),
            value: self.value,
            context: self.context.as_deref(),
            source: self.source.as_deref(),
            idempotency_key: self.idempotency_key.as_deref(),
            attrs: self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        }
    }
}

fn check_id(field: &str, value: &str, non_empty: bool) -> Result<(), InvalidField> {
    check_text(field, value, ID_BYTES_MAX, non_empty)
}

fn check_text(field: &str, value: &str, max: usize, non_empty: bool) -> Result<(), InvalidField> {
    if non_empty && value.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(InvalidField::new(field, format!("longer than {max} bytes ({})", value.len())));
    }
    // Printable ASCII (most ids) needs no char decoding; anything else is checked by char
    // (C0, DEL and the C1 controls U+0080..U+009F).
    if non_empty && !printable_ascii(value.as_bytes()) && value.chars().any(char::is_control) {
        return Err(InvalidField::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Whether every byte is printable ASCII (0x20..=0x7E), eight bytes at a time: ids are
/// short, too short for the compiler's vector loop, and a byte at a time cost about 75
/// instructions per id.
fn printable_ascii(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Some byte below 0x20 (the borrow trick: exact for "any byte", n <= 0x80), or above
    // 0x7E: 0x7F becomes 0x80 when one is added, and a byte from 0x80 has its high bit.
    let outside = |w: u64| ((w.wrapping_sub(ONES * 0x20) & !w) | w.wrapping_add(ONES) | w) & HIGH != 0;
    // Unaligned little-endian reads; a read that cannot happen gives 0, which is "outside".
    let word = |at: usize| {
        bytes.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()).map_or(0, u64::from_le_bytes)
    };
    let half = |at: usize| {
        bytes.get(at..at + 4).and_then(|w| <[u8; 4]>::try_from(w).ok()).map_or(0, u32::from_le_bytes)
    };
    let n = bytes.len();
    if n >= 8 {
        // Whole words, then the last eight bytes (overlapping the last whole word).
        (0..n / 8).all(|i| !outside(word(i * 8))) && !outside(word(n - 8))
    } else if n >= 4 {
        // The first four and the last four (overlapping).
        !outside(u64::from(half(0)) | (u64::from(half(n - 4)) << 32))
    } else {
        bytes.iter().all(|b| (0x20..0x7f).contains(b))
    }
}

/// A signal borrowed from a buffer (a decoded WAL record) or from an owned [`Signal`].
#[derive(Clone, Debug, PartialEq)]
pub struct SignalRef<'a> {
    pub user: &'a str,
    pub session: Option<&'a str>,
    pub session_seq: Option<u64>,
    pub item: &'a str,
    pub kind: SignalKind,
    pub value: f64,
    pub context: Option<&'a str>,
    pub source: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    /// Sorted by key, keys unique.
    pub attrs: Vec<(&'a str, &'a str)>,
}

impl SignalRef<'_> {
    /// Copies the view into an owned signal.
    pub fn to_owned_signal(&self) -> Signal {
        Signal {
            user: self.user.to_owned(),
            session: self.session.map(str::to_owned),
            session_seq: self.session_seq,
            item: self.item.to_owned(),
            kind: self.kind.clone(),
            value: self.value,
            context: self.context.map(str::to_owned),
            source: self.source.map(str::to_owned),
            idempotency_key: self.idempotency_key.map(str::to_owned),
            attrs: self.attrs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    /// The label name of a `label` signal.
    pub fn label(&self) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| *k == LABEL_ATTR).map(|(_, v)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Signal {
        Signal::new("u1", "i1", SignalKind::Click)
    }

    fn field_of(s: &Signal) -> String {
        s.validate(&["bookmark".into()]).unwrap_err().field
    }

    #[test]
    fn valid_signal_passes() {
        assert_eq!(ok().validate(&[]), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut s = ok();
        s.user.clear();
        assert_eq!(field_of(&s), "user");
        let mut s = ok();
        s.item = "x".repeat(ID_BYTES_MAX + 1);
        assert_eq!(field_of(&s), "item");
        let mut s = ok();
        s.session_seq = Some(3);
        assert_eq!(field_of(&s), "session_seq");
        let mut s = ok();
        s.value = f64::NAN;
        assert_eq!(field_of(&s), "value");
        let mut s = ok();
        s.kind = SignalKind::Rating;
        s.value = 11.0;
        assert_eq!(field_of(&s), "value");
        let mut s = ok();
        s.kind = SignalKind::from_name("teleport");
        assert_eq!(field_of(&s), "kind");
        let mut s = ok();
        s.kind = SignalKind::Label;
        assert_eq!(field_of(&s), "attrs.label");
        let mut s = ok();
        s.user = "a\u{0}b".into();
        assert_eq!(field_of(&s), "user");
        let mut s = ok();
        s.idempotency_key = Some("k".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1));
        assert_eq!(field_of(&s), "idempotency_key");
    }

    #[test]
    fn printable_ascii_is_the_byte_range_check() {
        let naive = |b: &[u8]| b.iter().all(|b| (0x20..0x7f).contains(b));
        for len in 0..20usize {
            for byte in 0..=255u8 {
                for at in [0, len / 2, len.saturating_sub(1)] {
                    let mut text = vec![b'a'; len];
                    if let Some(slot) = text.get_mut(at) {
                        *slot = byte;
                    }
                    assert_eq!(printable_ascii(&text), naive(&text), "{text:02x?}");
                }
            }
        }
        // Neighbours in one word: a borrow or a carry must not hide or invent a byte.
        for (a, b) in
            [(0x1f, 0x20), (0x20, 0x1f), (0x7e, 0x7f), (0x7f, 0x7e), (0xff, 0x00), (0x00, 0xff), (0x80, 0x7e)]
        {
            let text = [b'x', a, b, b'x', b'x', b'x', b'x', b'x', a, b];
            assert_eq!(printable_ascii(&text), naive(&text), "{text:02x?}");
        }
    }

    #[test]
    fn ids_with_control_characters_are_refused_and_other_text_passes() {
        for bad in ["a\u{1}", "\u{7f}", "tab\there", "c1\u{85}x", "\u{9f}"] {
            let mut s = ok();
            s.item = bad.into();
            assert_eq!(field_of(&s), "item", "{bad:?}");
        }
        for good in ["item 7", "~!@#$%^&*()", "é", "日本語", "\u{a0}nbsp", "emoji \u{1f600}"] {
            let mut s = ok();
            s.item = good.into();
            assert_eq!(s.validate(&[]), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn registered_custom_kind_passes() {
        let mut s = ok();
        s.kind = SignalKind::from_name("bookmark");
        assert_eq!(s.validate(&["bookmark".into()]), Ok(()));
    }

    #[test]
    fn kind_codes_round_trip() {
        for kind in SignalKind::BUILTIN {
            assert_eq!(SignalKind::from_code(kind.code()), Some(kind.clone()));
            assert_eq!(SignalKind::from_name(kind.as_str()), kind);
        }
        assert_eq!(SignalKind::from_code(0), None);
        assert_eq!(SignalKind::from_code(9), None);
    }

    #[test]
    fn json_round_trip_with_defaults() {
        let s: Signal = serde_json::from_str(r#"{"user":"u","item":"i","kind":"like"}"#).unwrap();
        assert_eq!(s.value, 1.0);
        assert_eq!(s.kind, SignalKind::Like);
        let back: Signal = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.as_ref().to_owned_signal(), s);
    }
}
