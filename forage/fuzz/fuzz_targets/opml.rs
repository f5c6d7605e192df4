//! Fuzzes the OPML parser (hand-written): any bytes parse or fail with an error, never
//! panic, and every feed it returns has a non-empty URL within the limits.

#![no_main]

use forage::sources::opml::{OPML_OUTLINES_MAX, parse_opml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(feeds) = parse_opml(data) {
        assert!(feeds.len() <= OPML_OUTLINES_MAX);
        assert!(feeds.iter().all(|f| !f.url.is_empty()));
    }
});
