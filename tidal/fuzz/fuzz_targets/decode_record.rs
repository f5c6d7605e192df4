//! Fuzzes `decode_record`: any bytes must decode or fail without panicking, and a record
//! that decodes must survive re-encoding unchanged in meaning (the encoding itself is not
//! canonical: postcard accepts over-long varints, so bytes may differ).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal::wal::record::{RECORD_BODY_BYTES_MAX, RECORD_LEN_BYTES};
use tidal::wal::{decode_record, encode_record};

fuzz_target!(|data: &[u8]| {
    let Ok((hlc, signal)) = decode_record(data) else {
        return;
    };
    if data.len() > RECORD_BODY_BYTES_MAX {
        return;
    }
    let mut out = Vec::new();
    encode_record(&mut out, hlc, &signal).expect("a decoded record re-encodes");
    assert!(out.len() - RECORD_LEN_BYTES <= data.len());
    let (hlc2, mut signal2) =
        decode_record(&out[RECORD_LEN_BYTES..]).expect("re-encoded record decodes");
    assert_eq!(hlc2, hlc);
    // Compare the value by bits (NaN != NaN), the rest as a whole.
    assert_eq!(signal2.value.to_bits(), signal.value.to_bits());
    let mut signal = signal;
    (signal.value, signal2.value) = (0.0, 0.0);
    assert_eq!(signal2, signal);
});
