//! Tests of the batch header layouts: round trips, the pinned byte map (against the code and
//! against `docs/wal-format.md`), and the header checks.

use crate::hlc::Hlc;
use crate::wal::header::*;

fn sample_v2() -> BatchHeader {
    BatchHeader {
        version: HEADER_VERSION_V2,
        flags: 0,
        shard_id: Some(0x0403_0201),
        origin_node: 7,
        record_count: 3,
        first_seq: 0x1112_1314_1516_1718,
        hlc_min: Hlc(0x2122_2324_2526_2728),
        hlc_max: Hlc(0x3132_3334_3536_3738),
        payload_len: 0x0000_4142,
        payload_crc32c: 0x5152_5354,
        epoch: 0,
    }
}

fn sample_v3() -> BatchHeader {
    BatchHeader { version: HEADER_VERSION_V3, epoch: 0x6162_6364_6566_6768, ..sample_v2() }
}

#[test]
fn v2_round_trip() {
    let header = sample_v2();
    let bytes = header.encode_v2();
    assert_eq!(BatchHeader::decode(&bytes), Ok((header, HEADER_V2_BYTES)));
    assert_eq!(header.encoded_len(), HEADER_V2_BYTES);
    assert_eq!(header.batch_len(), HEADER_V2_BYTES + 0x4142);
    assert_eq!(header.next_seq(), 0x1112_1314_1516_1718 + 3);
}

#[test]
fn v3_round_trip_carries_the_epoch() {
    let header = sample_v3();
    let bytes = header.encode_v3();
    assert_eq!(BatchHeader::decode(&bytes), Ok((header, HEADER_V2_BYTES)));
    assert_eq!(header.encoded_len(), HEADER_V2_BYTES);
    assert_eq!(header.encode(), bytes.to_vec());
    // The same header written as v2 loses its epoch, and v2 stays readable.
    let (v2, _) = BatchHeader::decode(&header.encode_v2()).unwrap();
    assert_eq!((v2.version, v2.epoch), (HEADER_VERSION_V2, 0));
}

#[test]
fn v1_round_trip_has_no_shard_and_no_hlc_range() {
    let header = BatchHeader {
        version: HEADER_VERSION_V1,
        shard_id: None,
        origin_node: 0,
        hlc_min: Hlc::ZERO,
        hlc_max: Hlc::ZERO,
        ..sample_v2()
    };
    let bytes = header.encode_v1();
    assert_eq!(bytes.len(), HEADER_V1_BYTES);
    assert_eq!(BatchHeader::decode(&bytes), Ok((header, HEADER_V1_BYTES)));
    // Encoding a v2 header as v1 drops what v1 cannot hold.
    let (decoded, _) = BatchHeader::decode(&sample_v2().encode_v1()).unwrap();
    assert_eq!((decoded.shard_id, decoded.hlc_min, decoded.hlc_max), (None, Hlc::ZERO, Hlc::ZERO));
}

fn le(bytes: &[u8], at: usize, size: usize) -> u64 {
    bytes[at..at + size].iter().rev().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Every v2 field at its documented offset, with its documented size.
#[test]
fn v2_byte_map_pins_every_offset() {
    let h = sample_v2();
    let b = h.encode_v2();
    assert_eq!(b.len(), 64);
    assert_eq!(&b[0..4], b"TDLB");
    assert_eq!(le(&b, 0, 4), u64::from(BATCH_MAGIC));
    assert_eq!(le(&b, 4, 2), 2);
    assert_eq!(le(&b, 6, 2), 0);
    assert_eq!(le(&b, 8, 4), 0x0403_0201);
    assert_eq!(le(&b, 12, 4), 3);
    assert_eq!(le(&b, 16, 8), 0x1112_1314_1516_1718);
    assert_eq!(le(&b, 24, 8), 0x2122_2324_2526_2728);
    assert_eq!(le(&b, 32, 8), 0x3132_3334_3536_3738);
    assert_eq!(le(&b, 40, 4), 0x4142);
    assert_eq!(le(&b, 44, 4), 0x5152_5354);
    assert_eq!(le(&b, 48, 4), u64::from(h.origin_node));
    assert_eq!(&b[52..60], &[0u8; 8]);
    assert_eq!(le(&b, 60, 4), u64::from(crc32c::crc32c(&b[..60])));
}

/// v3 is v2 with version 3 and the leader epoch where v2 keeps reserved bytes.
#[test]
fn v3_byte_map_pins_every_offset() {
    let h = sample_v3();
    let (b2, b3) = (h.encode_v2(), h.encode_v3());
    assert_eq!(le(&b3, 4, 2), 3);
    assert_eq!(le(&b3, 52, 8), 0x6162_6364_6566_6768);
    assert_eq!(le(&b3, 60, 4), u64::from(crc32c::crc32c(&b3[..60])));
    // Every other byte is where v2 has it.
    assert_eq!(&b3[..4], &b2[..4]);
    assert_eq!(&b3[6..52], &b2[6..52]);
}

#[test]
fn v1_byte_map_pins_every_offset() {
    let h = BatchHeader { version: HEADER_VERSION_V1, ..sample_v2() };
    let b = h.encode_v1();
    assert_eq!(le(&b, 0, 4), u64::from(BATCH_MAGIC));
    assert_eq!(le(&b, 4, 2), 1);
    assert_eq!(le(&b, 6, 2), 0);
    assert_eq!(le(&b, 8, 4), 3);
    assert_eq!(le(&b, 12, 8), 0x1112_1314_1516_1718);
    assert_eq!(le(&b, 20, 4), 0x4142);
    assert_eq!(le(&b, 24, 4), 0x5152_5354);
    assert_eq!(le(&b, 28, 4), u64::from(crc32c::crc32c(&b[..28])));
}

/// Rows `(offset, size, field)` of the byte-map table between the given markers.
fn doc_table(doc: &str, version: &str) -> Vec<(usize, usize, String)> {
    let start = format!("<!-- byte-map:{version} -->");
    let end = format!("<!-- /byte-map:{version} -->");
    let body = doc
        .split(&start)
        .nth(1)
        .and_then(|rest| rest.split(&end).next())
        .expect("byte map markers in the doc");
    body.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let offset = cells.get(1)?.parse().ok()?;
            let size = cells.get(2)?.parse().ok()?;
            Some((offset, size, cells.get(3)?.to_string()))
        })
        .collect()
}

/// The doc's byte maps say exactly what the code's offsets say, so neither can drift.
#[test]
fn doc_byte_maps_match_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/wal-format.md");
    let doc = std::fs::read_to_string(path).expect("docs/wal-format.md");
    let row = |offset: usize, size: usize, field: &str| (offset, size, field.to_string());
    let v2 = vec![
        row(V2_MAGIC, 4, "magic"),
        row(V2_VERSION, 2, "version"),
        row(V2_FLAGS, 2, "flags"),
        row(V2_SHARD, 4, "shard_id"),
        row(V2_RECORD_COUNT, 4, "record_count"),
        row(V2_FIRST_SEQ, 8, "first_seq"),
        row(V2_HLC_MIN, 8, "hlc_min"),
        row(V2_HLC_MAX, 8, "hlc_max"),
        row(V2_PAYLOAD_LEN, 4, "payload_len"),
        row(V2_PAYLOAD_CRC, 4, "payload_crc32c"),
        row(V2_ORIGIN_NODE, 4, "origin_node"),
        row(V2_RESERVED, V2_HEADER_CRC - V2_RESERVED, "reserved"),
        row(V2_HEADER_CRC, 4, "header_crc32c"),
    ];
    assert_eq!(doc_table(&doc, "v2"), v2);
    let mut v3 = v2.clone();
    v3[11] = row(V3_EPOCH, 8, "leader_epoch");
    assert_eq!(doc_table(&doc, "v3"), v3);
    let v1 = vec![
        row(V2_MAGIC, 4, "magic"),
        row(V2_VERSION, 2, "version"),
        row(V1_FLAGS, 2, "flags"),
        row(V1_RECORD_COUNT, 4, "record_count"),
        row(V1_FIRST_SEQ, 8, "first_seq"),
        row(V1_PAYLOAD_LEN, 4, "payload_len"),
        row(V1_PAYLOAD_CRC, 4, "payload_crc32c"),
        row(V1_HEADER_CRC, 4, "header_crc32c"),
    ];
    assert_eq!(doc_table(&doc, "v1"), v1);
    // The tables tile their headers with no gap or overlap.
    for (table, len) in [(v2, HEADER_V2_BYTES), (v3, HEADER_V2_BYTES), (v1, HEADER_V1_BYTES)] {
        let end = table.iter().try_fold(0, |at, (offset, size, _)| (at == *offset).then_some(at + size));
        assert_eq!(end, Some(len));
    }
}

#[test]
fn every_single_bit_flip_in_a_header_is_detected() {
    for bytes in [
        sample_v2().encode_v2().to_vec(),
        sample_v3().encode_v3().to_vec(),
        BatchHeader { version: 1, ..sample_v2() }.encode_v1().to_vec(),
    ] {
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let err = BatchHeader::decode(&flipped).expect_err("flip must be detected");
            assert!(err.is_header_damage(), "bit {bit}: {err}");
        }
    }
}

/// Re-seals a v2 header after editing it, so only the field checks can reject it.
fn resealed(
    mut b: [u8; HEADER_V2_BYTES],
    edit: impl FnOnce(&mut [u8; HEADER_V2_BYTES]),
) -> [u8; HEADER_V2_BYTES] {
    edit(&mut b);
    let crc = crc32c::crc32c(&b[..60]);
    b[60..].copy_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn impossible_fields_with_a_valid_crc_are_not_tail_damage() {
    let good = sample_v2().encode_v2();
    let cases: Vec<(&str, [u8; 64])> = vec![
        ("flags", resealed(good, |b| b[6] = 1)),
        ("reserved", resealed(good, |b| b[54] = 7)),
        ("record_count 0", resealed(good, |b| b[12..16].fill(0))),
        ("first_seq 0", resealed(good, |b| b[16..24].fill(0))),
        ("seq overflow", resealed(good, |b| b[16..24].fill(0xff))),
        ("hlc order", resealed(good, |b| b[24..32].fill(0xff))),
        ("payload too big", resealed(good, |b| b[40..44].fill(0xff))),
        ("payload too small", resealed(good, |b| b[40..44].copy_from_slice(&14u32.to_le_bytes()))),
    ];
    for (what, bytes) in cases {
        let err = BatchHeader::decode(&bytes).expect_err(what);
        assert!(!err.is_tail_damage(), "{what}: {err}");
        assert!(matches!(err, BatchError::UnknownFlags(_) | BatchError::InvalidHeader(_)), "{what}: {err}");
    }
}

#[test]
fn short_and_foreign_inputs() {
    let good = sample_v2().encode_v2();
    for len in 0..HEADER_V2_BYTES {
        let err = BatchHeader::decode(&good[..len]).unwrap_err();
        assert!(matches!(err, BatchError::ShortHeader { .. }), "len {len}: {err}");
    }
    assert!(matches!(BatchHeader::decode(&[0u8; 64]), Err(BatchError::BadMagic(0))));
    let mut v4 = good;
    v4[4] = 4;
    assert_eq!(BatchHeader::decode(&v4), Err(BatchError::UnknownVersion(4)));
    assert!(BatchError::UnknownVersion(4).is_tail_damage());
    // v3 with epoch 0 was written wrong: refused, and not as a torn tail.
    let zero_epoch = BatchHeader { epoch: 0, ..sample_v3() }.encode_v3();
    let err = BatchHeader::decode(&zero_epoch).unwrap_err();
    assert!(matches!(err, BatchError::InvalidHeader(_)) && !err.is_tail_damage(), "{err}");
}
