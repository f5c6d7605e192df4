//! Fuzzes the labelled JSONL reader of `forage labels eval`: lines parse or fail with an
//! error naming the line, never panic.

#![no_main]

use forage::labels::eval::parse_examples;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_examples(text);
    }
});
