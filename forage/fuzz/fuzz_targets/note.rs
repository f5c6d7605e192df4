//! Fuzzes the Markdown/text note reader's title split: any text gives a non-empty title.

#![no_main]

use forage::sources::folder::split_title;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (title, _summary) = split_title(text, "fallback");
        assert!(!title.is_empty());
    }
});
