//! Fuzzes the replication protocol's message decoder: any bytes give a message or an error,
//! never a panic, and a message that decodes re-encodes to bytes that decode to it again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal_replication::protocol::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let again = Message::decode(&message.encode()).expect("a re-encoded message decodes");
        assert_eq!(again, message);
    }
});
