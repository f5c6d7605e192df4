//! Fuzzes `decode_batch` and the record iterator over a whole "segment": any bytes must
//! decode into batches or stop with an error, never panic, and whatever decodes must hold
//! the invariants the reader relies on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal::wal::{decode_batch, records};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok((header, payload, len)) = decode_batch(rest) {
        assert!(len >= header.encoded_len() && len <= rest.len());
        assert_eq!(payload.len(), header.payload_len as usize);
        assert!(header.record_count >= 1 && header.hlc_min <= header.hlc_max);
        let mut count = 0u32;
        for record in records(payload) {
            if record.is_err() {
                break;
            }
            count += 1;
        }
        assert!(count <= header.record_count);
        rest = &rest[len..];
    }
});
