//! Fuzzes feed parsing (RSS, Atom, JSON Feed through feed-rs, then our conversion and
//! HTML-to-text): never a panic, and the items respect the limits.

#![no_main]

use forage::sources::feed::{FEED_ITEMS_MAX, SUMMARY_CHARS_MAX, parse_feed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(feed) = parse_feed(data) {
        assert!(feed.items.len() <= FEED_ITEMS_MAX);
        assert!(feed.items.iter().all(|i| i.summary.chars().count() <= SUMMARY_CHARS_MAX + 1));
    }
});
