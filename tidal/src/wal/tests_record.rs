//! Tests of records and batch framing: round trips of every kind and field combination,
//! rejection of malformed bodies, and property tests that no byte string makes a decoder
//! panic.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::hlc::Hlc;
use crate::signal::{Signal, SignalKind, SignalRef};
use crate::wal::WalError;
use crate::wal::header::{BatchError, HEADER_V2_BYTES};
use crate::wal::record::*;
use crate::wal::segment::{decode_batch, encode_batch_v1, encode_batch_v2_into};
use crate::wal::tests_support::signal;

fn round_trip(hlc: Hlc, s: &Signal) {
    let mut buf = vec![0xAA]; // encode_record appends: existing bytes stay
    encode_record(&mut buf, hlc, &s.as_ref()).unwrap();
    assert_eq!(buf[0], 0xAA);
    let len = u32::from_le_bytes(buf[1..5].try_into().unwrap()) as usize;
    assert_eq!(len, buf.len() - 5);
    assert_eq!(buf[5], RECORD_VERSION);
    let (got_hlc, got) = decode_record(&buf[5..]).unwrap();
    assert_eq!(got_hlc, hlc);
    assert_eq!(got, s.as_ref());
    assert_eq!(peek_hlc(&buf[5..]), Ok(hlc));
}

#[test]
fn every_kind_round_trips_with_and_without_options() {
    let mut kinds = SignalKind::BUILTIN.to_vec();
    kinds.push(SignalKind::Custom("bookmark".into()));
    kinds.push(SignalKind::Custom("".into()));
    for kind in kinds {
        let bare = Signal::new("u", "i", kind.clone());
        round_trip(Hlc::new(1, 2), &bare);
        let full = Signal {
            user: "üser".into(),
            session: Some("s".into()),
            session_seq: Some(u64::MAX),
            item: "item/42".into(),
            kind,
            value: -0.25,
            context: Some("slate-7".into()),
            source: Some("rss".into()),
            idempotency_key: Some("k".into()),
            attrs: BTreeMap::from([("a".into(), "".into()), ("label".into(), "cats".into())]),
        };
        round_trip(Hlc(u64::MAX), &full);
    }
}

#[test]
fn built_in_kinds_travel_as_codes() {
    let mut a = Vec::new();
    encode_record(&mut a, Hlc::ZERO, &Signal::new("u", "i", SignalKind::Like).as_ref()).unwrap();
    let mut b = Vec::new();
    encode_record(&mut b, Hlc::ZERO, &Signal::new("u", "i", SignalKind::Custom("like".into())).as_ref())
        .unwrap();
    // A built-in is one code byte plus a None; a custom kind carries its name.
    assert_eq!(b.len(), a.len() + 1 + "like".len());
    assert_eq!(decode_record(&b[4..]).unwrap().1.kind, SignalKind::Custom("like".into()));
}

fn body_of(s: &Signal) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_record(&mut buf, Hlc(7), &s.as_ref()).unwrap();
    buf.split_off(RECORD_LEN_BYTES)
}

#[test]
fn malformed_bodies_are_rejected() {
    let body = body_of(&Signal::new("u", "i", SignalKind::Click));
    let mut trailing = body.clone();
    trailing.push(0);
    assert_eq!(decode_record(&trailing), Err(RecordError::TrailingBytes(1)));
    let mut version = body.clone();
    version[0] = 2;
    assert_eq!(decode_record(&version), Err(RecordError::UnknownVersion(2)));
    assert!(matches!(decode_record(&[]), Err(RecordError::Truncated { .. })));
    for cut in 1..body.len() {
        assert!(decode_record(&body[..cut]).is_err(), "cut at {cut}");
    }
    // Byte 2 is the kind (version byte, one-byte hlc varint, kind).
    let mut unknown_kind = body.clone();
    unknown_kind[2] = 9;
    assert_eq!(decode_record(&unknown_kind), Err(RecordError::BadKind { code: 9, has_name: false }));
    let mut custom_without_name = body.clone();
    custom_without_name[2] = 0;
    assert_eq!(decode_record(&custom_without_name), Err(RecordError::BadKind { code: 0, has_name: false }));
    let custom = body_of(&Signal::new("u", "i", SignalKind::Custom("x".into())));
    let mut builtin_with_name = custom.clone();
    builtin_with_name[2] = 3;
    assert_eq!(decode_record(&builtin_with_name), Err(RecordError::BadKind { code: 3, has_name: true }));
}

#[test]
fn oversized_record_is_refused_and_leaves_the_buffer_alone() {
    let mut s = Signal::new("u", "i", SignalKind::Click);
    s.attrs = (0..70).map(|i| (format!("k{i}"), "v".repeat(1000))).collect();
    let mut buf = vec![1, 2, 3];
    let err = encode_record(&mut buf, Hlc::ZERO, &s.as_ref()).unwrap_err();
    assert!(matches!(err, WalError::TooLarge(_)), "{err}");
    assert_eq!(buf, [1, 2, 3]);
}

#[test]
fn records_iterates_and_stops_at_the_first_error() {
    let mut payload = Vec::new();
    let signals: Vec<Signal> = (0..5).map(signal).collect();
    for (i, s) in signals.iter().enumerate() {
        encode_record(&mut payload, Hlc(i as u64), &s.as_ref()).unwrap();
    }
    let decoded: Vec<_> = records(&payload).map(Result::unwrap).collect();
    assert_eq!(decoded.len(), 5);
    for (i, (hlc, s)) in decoded.iter().enumerate() {
        assert_eq!((*hlc, s), (Hlc(i as u64), &signals[i].as_ref()));
    }
    let cut = &payload[..payload.len() - 1];
    let results: Vec<_> = records(cut).collect();
    assert_eq!(results.len(), 5);
    assert!(matches!(results[4], Err(RecordError::Truncated { .. })));
    let zero_len = [0u8, 0, 0, 0, 1];
    let results: Vec<_> = records(&zero_len).collect();
    assert_eq!(results, vec![Err(RecordError::BadLength(0))]);
}

fn batch_v2(n: u64) -> Vec<u8> {
    let owned: Vec<Signal> = (0..n).map(signal).collect();
    let recs: Vec<(Hlc, SignalRef<'_>)> =
        owned.iter().enumerate().map(|(i, s)| (Hlc(100 - i as u64), s.as_ref())).collect();
    let mut buf = Vec::new();
    encode_batch_v2_into(&mut buf, 9, 3, 40, &recs).unwrap();
    buf
}

#[test]
fn batch_round_trip_v2_and_v1() {
    let bytes = batch_v2(4);
    let (h, payload, total) = decode_batch(&bytes).unwrap();
    assert_eq!((h.version, h.shard_id, h.first_seq, h.record_count), (2, Some(9), 40, 4));
    assert_eq!((h.hlc_min, h.hlc_max), (Hlc(97), Hlc(100)));
    assert_eq!((total, payload.len()), (bytes.len(), bytes.len() - HEADER_V2_BYTES));
    let owned: Vec<Signal> = (0..3).map(signal).collect();
    let recs: Vec<_> = owned.iter().enumerate().map(|(i, s)| (Hlc(5 + i as u64), s.as_ref())).collect();
    let v1 = encode_batch_v1(7, &recs).unwrap();
    let (h, payload, total) = decode_batch(&v1).unwrap();
    assert_eq!((h.version, h.shard_id, h.first_seq, h.record_count), (1, None, 7, 3));
    assert_eq!((h.hlc_min, h.hlc_max), (Hlc(5), Hlc(7)), "v1 HLC range computed from records");
    assert_eq!(total, v1.len());
    assert_eq!(records(payload).count(), 3);
    assert!(encode_batch_v1(1, &[]).is_err(), "a batch holds at least one record");
}

#[test]
fn batch_damage_is_classified() {
    let bytes = batch_v2(3);
    let err = decode_batch(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(matches!(err, BatchError::ShortPayload { .. }) && err.is_tail_damage());
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    let err = decode_batch(&flipped).unwrap_err();
    assert!(matches!(err, BatchError::PayloadCrc { .. }) && err.is_tail_damage() && !err.is_header_damage());
    // A trailing batch's bytes are not part of this batch.
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    assert_eq!(decode_batch(&two).unwrap().2, bytes.len());
}

fn arb_opt() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("\\PC{0,12}")
}

fn arb_signal() -> impl Strategy<Value = Signal> {
    let kind = prop_oneof![
        (1u8..=8).prop_map(|c| SignalKind::from_code(c).unwrap()),
        "[a-z]{1,8}".prop_map(|n| SignalKind::Custom(n.into()))
    ];
    let ids = ("\\PC{0,20}", "\\PC{0,20}", arb_opt(), proptest::option::of(any::<u64>()));
    let rest = (
        kind,
        any::<f64>(),
        arb_opt(),
        arb_opt(),
        arb_opt(),
        proptest::collection::btree_map("\\PC{0,6}", "\\PC{0,10}", 0..4),
    );
    (ids, rest).prop_map(
        |((user, item, session, session_seq), (kind, value, context, source, idempotency_key, attrs))| {
            Signal { user, session, session_seq, item, kind, value, context, source, idempotency_key, attrs }
        },
    )
}

/// The hand-written record decoder and serde's agree on `rest` (a body after its version
/// byte): the same fields and remainder, or the same error.
fn decoders_agree(rest: &[u8]) {
    let (serde, manual) = (decode_wire_serde(rest), decode_wire_manual(rest));
    assert_eq!(format!("{serde:?}"), format!("{manual:?}"), "bytes {rest:02x?}");
}

#[test]
fn hand_decoder_matches_serde_on_edge_cases() {
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80; 11],                           // varint too long
        [vec![0xFF; 9], vec![0x01]].concat(),     // u64::MAX: accepted
        [vec![0xFF; 9], vec![0x02]].concat(),     // 10th byte too big
        vec![0x01, 0x01, 0x02],                   // bad option tag
        vec![0x01, 0x00, 0x00, 0x02, 0xC3, 0x28], // bad UTF-8
        vec![0x01, 0x00, 0x00, 0x05, b'a'],       // string past the end
    ];
    let mut full = Vec::new();
    let mut s = signal(3);
    s.attrs.insert("label".into(), "cats".into());
    (s.session, s.session_seq, s.context) = (Some("sess".into()), Some(300), Some("ctx".into()));
    encode_record(&mut full, Hlc::new(99, 1), &s.as_ref()).unwrap();
    let body = full[RECORD_LEN_BYTES + 1..].to_vec();
    for cut in 0..=body.len() {
        cases.push(body[..cut].to_vec());
    }
    cases.push([body.clone(), vec![7, 7]].concat());
    // The user and the item, validated as one span when the item's length is one byte:
    // invalid UTF-8 in either, a character split across them, and lengths of two bytes.
    let head = [0x01, 0x03, 0x00];
    for (user, item) in [
        (&b"\xC3\x28"[..], &b"ok"[..]),
        (b"ok", b"\xC3\x28"),
        (b"a\xC3", b"\xA9b"),
        (b"caf\xC3\xA9", b"na\xC3\xAFve"),
        (&[b'u'; 200][..], b"item"),
        (b"user", &[b'i'; 130][..]),
        (&[b'u'; 130][..], &[0xC3; 130][..]),
    ] {
        let mut case = head.to_vec();
        for text in [user, item] {
            let mut len = Vec::new();
            let mut n = text.len();
            while n >= 0x80 {
                len.push(n as u8 | 0x80);
                n >>= 7;
            }
            len.push(n as u8);
            case.extend(len.iter().chain(text));
        }
        case.extend(&1.5f64.to_le_bytes());
        for cut in [case.len(), case.len() - 9, 5] {
            cases.push(case[..cut].to_vec());
        }
        let whole = [case, vec![0, 0, 0, 0, 0, 0]].concat();
        let valid = std::str::from_utf8(user).is_ok() && std::str::from_utf8(item).is_ok();
        let decoded = decode_wire_manual(&whole).map(|(w, rest)| (w.3.0, w.3.1, rest.len()));
        match (valid, decoded) {
            (true, Ok((u, i, 0))) => assert_eq!((u.as_bytes(), i.as_bytes()), (user, item)),
            (false, Err(_)) => {}
            (valid, other) => panic!("{user:02x?}/{item:02x?}: valid {valid}, decoded {other:?}"),
        }
        cases.push(whole);
    }
    for case in &cases {
        decoders_agree(case);
    }
    assert!(decode_wire_manual(&body).is_ok_and(|(_, rest)| rest.is_empty()), "the full body decodes");
}

/// The hand-written encoder writes exactly serde's bytes for `s`.
fn encoders_agree(hlc: Hlc, s: &Signal) {
    let mut framed = Vec::new();
    encode_record(&mut framed, hlc, &s.as_ref()).unwrap();
    assert_eq!(framed[RECORD_LEN_BYTES], RECORD_VERSION);
    assert_eq!(&framed[RECORD_LEN_BYTES + 1..], encode_wire_serde(hlc, &s.as_ref()), "{s:?}");
}

#[test]
fn hand_encoder_matches_serde_on_edge_cases() {
    let mut s = signal(7);
    encoders_agree(Hlc(0), &s);
    encoders_agree(Hlc(u64::MAX), &s);
    (s.user, s.item) = ("u".repeat(127), "i".repeat(128));
    (s.session, s.session_seq) = (Some("é".repeat(9000)), Some(u64::MAX));
    (s.value, s.kind) = (f64::NAN, SignalKind::Custom("bookmark".into()));
    (s.context, s.source, s.idempotency_key) = (Some(String::new()), Some("src".into()), Some("k".into()));
    for n in 0..200 {
        s.attrs.insert(format!("a{n:03}"), "v".repeat(n));
    }
    encoders_agree(Hlc(1 << 63), &s);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hand_encoder_matches_serde(s in arb_signal(), hlc in any::<u64>()) {
        encoders_agree(Hlc(hlc), &s);
    }

    #[test]
    fn hand_decoder_matches_serde(s in arb_signal(), hlc in any::<u64>(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4), cut in any::<usize>()) {
        let mut framed = Vec::new();
        encode_record(&mut framed, Hlc(hlc), &s.as_ref()).unwrap();
        let mut body = framed[RECORD_LEN_BYTES + 1..].to_vec();
        decoders_agree(&body);
        for (at, byte) in edits {
            if !body.is_empty() {
                let i = at % body.len();
                body[i] = byte;
            }
        }
        decoders_agree(&body);
        decoders_agree(&body[..cut % (body.len() + 1)]);
    }

    #[test]
    fn hand_decoder_matches_serde_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        decoders_agree(&bytes);
    }

    #[test]
    fn random_signals_round_trip(s in arb_signal(), hlc in any::<u64>()) {
        let mut buf = Vec::new();
        encode_record(&mut buf, Hlc(hlc), &s.as_ref()).unwrap();
        let (got_hlc, got) = decode_record(&buf[RECORD_LEN_BYTES..]).unwrap();
        prop_assert_eq!(got_hlc, Hlc(hlc));
        // NaN != NaN, so compare the value's bits and the rest separately.
        prop_assert_eq!(got.value.to_bits(), s.value.to_bits());
        let mut expected = s.as_ref();
        expected.value = got.value;
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_record(&bytes);
        let _ = peek_hlc(&bytes);
        let _ = records(&bytes).count();
        let _ = decode_batch(&bytes);
    }

    #[test]
    fn mutated_batches_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut bytes = batch_v2(3);
        for (at, byte) in edits {
            let len = bytes.len();
            bytes[at % len] = byte;
        }
        bytes.truncate(cut % (bytes.len() + 1));
        if let Ok((_, payload, _)) = decode_batch(&bytes) {
            let _ = records(payload).count();
        }
    }

    /// Garbage payloads behind a header whose CRCs pass: the record decoder is the only guard.
    #[test]
    fn sealed_garbage_payloads_never_panic(payload in proptest::collection::vec(any::<u8>(), 5..300), count in 1u32..8) {
        let header = crate::wal::header::BatchHeader {
            version: 2,
            flags: 0,
            shard_id: Some(1),
            origin_node: 7,
            record_count: count.min(payload.len() as u32 / 5),
            first_seq: 1,
            hlc_min: Hlc::ZERO,
            hlc_max: Hlc(u64::MAX),
            payload_len: payload.len() as u32,
            payload_crc32c: crc32c::crc32c(&payload),
            epoch: 0,
        };
        let mut bytes = header.encode_v2().to_vec();
        bytes.extend_from_slice(&payload);
        if let Ok((_, payload, _)) = decode_batch(&bytes) {
            let _ = records(payload).count();
        }
        let mut v1 = crate::wal::header::BatchHeader { version: 1, ..header }.encode_v1().to_vec();
        v1.extend_from_slice(&payload);
        let _ = decode_batch(&v1);
    }
}
