//! Fuzzes the TCP transport's decoders: the incremental `FrameDecoder`, fed the input in
//! pieces of a size the first byte chooses, must return exactly the frames (or the error)
//! that decoding the whole input at once returns, never a body over its limit, and every body
//! it returns must re-encode to the bytes it came from. The handshake's `Hello::decode` must
//! refuse or round-trip any bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tidal_replication::transport::tcp::frame::{FrameDecoder, FrameError, encode_frame};
use tidal_replication::transport::tcp::handshake::Hello;

/// A small limit, so that inputs reach both sides of it.
const LIMIT: usize = 4096;

/// The frames of `pieces` fed in order, and the error that stopped decoding, if any.
fn decode<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new(LIMIT);
    let mut frames = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => frames.push(body),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else { return };
    let whole = decode(std::iter::once(stream));
    let pieces = decode(stream.chunks(usize::from(split).max(1)));
    assert_eq!(whole, pieces, "decoding must not depend on how the bytes arrive");
    let mut reencoded = Vec::new();
    for body in &whole.0 {
        assert!(body.len() <= LIMIT);
        encode_frame(body, &mut reencoded);
    }
    assert_eq!(&stream[..reencoded.len()], &reencoded[..], "frames re-encode to their bytes");
    if let Ok(hello) = Hello::decode(stream) {
        assert_eq!(hello.encode(), stream, "a hello that decodes re-encodes exactly");
    }
});
