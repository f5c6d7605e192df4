//! Frames: how the TCP transport cuts a byte stream into messages.
//!
//! One frame is
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `len`: body length in bytes, `u32` little-endian |
//! | 4 | 4 | `crc`: CRC32C of the body, `u32` little-endian |
//! | 8 | `len` | body |
//!
//! This module owns the encoder and an incremental [`FrameDecoder`] over a byte buffer. Both
//! are pure (no sockets), so the fuzz target and the unit tests drive the same code the
//! connections run.
//!
//! Invariants:
//! - the decoder checks `len` against its body limit *before* it reserves memory for the body,
//!   so one frame never costs more than the limit plus one read chunk, whatever the peer sends;
//! - a frame whose CRC does not match is never returned; after any [`FrameError`] the stream
//!   is out of sync and the connection must be closed (there is no resynchronisation).

use std::io::{self, Read};

use crate::transport::MESSAGE_BYTES_MAX;

/// Bytes of the frame header (`len` and `crc`).
pub const FRAME_HEADER_BYTES: usize = 8;

/// Largest body of a data frame: the largest message the transport carries.
pub const FRAME_BYTES_MAX: usize = MESSAGE_BYTES_MAX;

/// Bytes asked of the socket per read when no large frame is pending.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// A buffer larger than this is released once it holds no undecoded bytes, so a connection
/// that once carried a large frame does not keep its memory.
const BUFFER_KEEP_BYTES_MAX: usize = 4 * READ_CHUNK_BYTES;

/// Why a byte stream is not a valid sequence of frames.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header announces a body larger than the limit of this connection.
    #[error("frame body of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: usize },
    /// The body does not match its CRC32C.
    #[error("frame CRC mismatch: header says {expected:#010x}, body has {actual:#010x}")]
    BadCrc { expected: u32, actual: u32 },
}

/// Appends one frame carrying `body` to `out`.
///
/// The caller checks `body.len()` against [`FRAME_BYTES_MAX`] first (sends refuse larger
/// messages with `SendError::TooLarge`); a body that does not fit a `u32` cannot be framed.
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    // Invariant: every caller refuses bodies above FRAME_BYTES_MAX (or a handshake limit),
    // both far below u32::MAX.
    let len = u32::try_from(body.len()).expect("frame body length checked against FRAME_BYTES_MAX");
    out.reserve(FRAME_HEADER_BYTES + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// An incremental frame decoder: bytes go in as they arrive ([`FrameDecoder::push`] or
/// [`FrameDecoder::read_from`]), whole checked bodies come out ([`FrameDecoder::next_frame`]).
#[derive(Debug)]
pub struct FrameDecoder {
    /// `buf[start..end]` is received and not decoded yet; `buf[end..]` is zeroed room for the
    /// next read (kept across reads, so each byte of room is zeroed once).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    body_bytes_max: usize,
}

impl FrameDecoder {
    /// A decoder that refuses bodies larger than `body_bytes_max`.
    pub fn new(body_bytes_max: usize) -> FrameDecoder {
        FrameDecoder { buf: Vec::new(), start: 0, end: 0, body_bytes_max }
    }

    /// Changes the body limit (the handshake uses a small one, data frames a large one);
    /// bytes already buffered are kept.
    pub fn set_body_bytes_max(&mut self, body_bytes_max: usize) {
        self.body_bytes_max = body_bytes_max;
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes of memory the buffer holds (for tests of the allocation bound).
    pub fn buffer_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Reads once from `reader` into the buffer; returns the bytes read (0 at end of stream).
    ///
    /// While a frame with a valid length is pending, room for exactly the rest of that frame
    /// is made; otherwise one chunk. The buffer never grows past one frame plus one chunk.
    pub fn read_from(&mut self, reader: &mut impl Read) -> io::Result<usize> {
        let lacking = match self.pending_frame_bytes() {
            Some(total) => total.saturating_sub(self.buffered()),
            None => 0,
        };
        self.make_room(lacking.max(READ_CHUNK_BYTES));
        let n = reader.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Moves undecoded bytes to the front and makes sure `room` zeroed bytes follow them.
    fn make_room(&mut self, room: usize) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let needed = self.end + room;
        if self.buf.len() < needed {
            // reserve_exact: a doubling growth could reach twice the frame limit.
            self.buf.reserve_exact(needed - self.buf.len());
            self.buf.resize(needed, 0);
        }
    }

    /// The next whole frame's body, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let rest = &self.buf[self.start..self.end];
        let Some((len, crc)) = parse_header(rest) else { return Ok(None) };
        if len > self.body_bytes_max as u64 {
            return Err(FrameError::TooLarge { len, max: self.body_bytes_max });
        }
        let total = FRAME_HEADER_BYTES + len as usize;
        if rest.len() < total {
            return Ok(None);
        }
        let body = &rest[FRAME_HEADER_BYTES..total];
        let actual = crc32c::crc32c(body);
        if actual != crc {
            return Err(FrameError::BadCrc { expected: crc, actual });
        }
        let body = body.to_vec();
        self.start += total;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > BUFFER_KEEP_BYTES_MAX {
                self.buf = Vec::new();
            }
        }
        Ok(Some(body))
    }

    /// Header plus body bytes of the frame at the front, if its header is in and its length
    /// is within the limit.
    fn pending_frame_bytes(&self) -> Option<usize> {
        let (len, _) = parse_header(&self.buf[self.start..self.end])?;
        (len <= self.body_bytes_max as u64).then(|| FRAME_HEADER_BYTES + len as usize)
    }
}

fn parse_header(bytes: &[u8]) -> Option<(u64, u32)> {
    let header: &[u8; FRAME_HEADER_BYTES] = bytes.get(..FRAME_HEADER_BYTES)?.try_into().ok()?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    Some((u64::from(len), crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            encode_frame(body, &mut out);
        }
        out
    }

    #[test]
    fn byte_layout_is_len_crc_body() {
        let out = frames(&[b"abc"]);
        assert_eq!(&out[0..4], &3u32.to_le_bytes());
        assert_eq!(&out[4..8], &crc32c::crc32c(b"abc").to_le_bytes());
        assert_eq!(&out[8..], b"abc");
    }

    #[test]
    fn decodes_frames_fed_one_byte_at_a_time() {
        let bodies: [&[u8]; 4] = [b"", b"one", &[7u8; 300], b"last"];
        let stream = frames(&bodies);
        let mut decoder = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for byte in &stream {
            decoder.push(std::slice::from_ref(byte));
            while let Some(body) = decoder.next_frame().unwrap() {
                got.push(body);
            }
        }
        assert_eq!(got, bodies.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn read_from_handles_short_reads() {
        // A reader that hands out at most 5 bytes per call, as a slow socket would.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(5).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let big = vec![42u8; 3 * READ_CHUNK_BYTES + 17];
        let stream = frames(&[b"x", &big, b"y"]);
        let mut reader = Trickle(&stream);
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
        let mut got = Vec::new();
        while decoder.read_from(&mut reader).unwrap() > 0 {
            while let Some(body) = decoder.next_frame().unwrap() {
                got.push(body);
            }
        }
        assert_eq!(got, vec![b"x".to_vec(), big, b"y".to_vec()]);
    }

    /// What decoding `pieces` in order yields: the frames, then the error that stopped it.
    fn decode_pieces<'a>(
        limit: usize,
        pieces: impl Iterator<Item = &'a [u8]>,
    ) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut decoder = FrameDecoder::new(limit);
        let mut got = Vec::new();
        for piece in pieces {
            decoder.push(piece);
            loop {
                match decoder.next_frame() {
                    Ok(Some(body)) => got.push(body),
                    Ok(None) => break,
                    Err(e) => return (got, Some(e)),
                }
            }
        }
        (got, None)
    }

    /// The property the `decode_frame` fuzz target checks, on seeded streams of frames with
    /// random damage: how the bytes arrive never changes what decodes.
    #[test]
    fn chunking_never_changes_what_decodes() {
        let mut rng = crate::transport::rng::SimRng::new(10);
        for _ in 0..300 {
            let bodies: Vec<Vec<u8>> = (0..rng.below(6))
                .map(|_| (0..rng.below(300)).map(|_| rng.below(256) as u8).collect())
                .collect();
            let mut stream = frames(&bodies.iter().map(Vec::as_slice).collect::<Vec<_>>());
            if !stream.is_empty() && rng.chance(0.5) {
                let at = rng.below(stream.len() as u64) as usize;
                stream[at] ^= 1 << rng.below(8);
            }
            let whole = decode_pieces(256, std::iter::once(&stream[..]));
            let step = rng.below(40) as usize + 1;
            assert_eq!(decode_pieces(256, stream.chunks(step)), whole, "step {step}");
            let clean = whole.1.is_none() && bodies.iter().all(|b| b.len() <= 256);
            if clean && whole.0.len() == bodies.len() {
                assert_eq!(whole.0, bodies);
            }
        }
    }

    #[test]
    fn a_flipped_body_bit_is_a_crc_error() {
        let mut stream = frames(&[b"hello"]);
        stream[FRAME_HEADER_BYTES + 1] ^= 0x10;
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&stream);
        assert!(matches!(decoder.next_frame(), Err(FrameError::BadCrc { .. })));
    }

    #[test]
    fn an_oversize_length_is_refused_before_the_body_arrives() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&101u32.to_le_bytes());
        assert_eq!(decoder.next_frame(), Ok(None), "half a header is not an error yet");
        decoder.push(&0u32.to_le_bytes());
        assert_eq!(decoder.next_frame(), Err(FrameError::TooLarge { len: 101, max: 100 }));
        let mut at_limit = FrameDecoder::new(100);
        at_limit.push(&frames(&[&[1u8; 100]]));
        assert_eq!(at_limit.next_frame().unwrap().map(|b| b.len()), Some(100));
    }

    #[test]
    fn a_huge_announced_length_reserves_no_more_than_a_chunk() {
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
        let mut header = u32::MAX.to_le_bytes().to_vec();
        header.extend_from_slice(&[0; 4]);
        let mut reader: &[u8] = &header;
        decoder.read_from(&mut reader).unwrap();
        let mut empty: &[u8] = &[];
        decoder.read_from(&mut empty).unwrap();
        assert!(decoder.buffer_bytes() <= 2 * READ_CHUNK_BYTES, "{}", decoder.buffer_bytes());
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn a_large_frame_reserves_about_its_own_size() {
        let body = vec![3u8; 5 << 20];
        let stream = frames(&[&body]);
        let mut reader: &[u8] = &stream;
        let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
        while decoder.next_frame().unwrap().is_none() {
            assert!(decoder.read_from(&mut reader).unwrap() > 0, "stream ended early");
            assert!(decoder.buffer_bytes() <= stream.len() + READ_CHUNK_BYTES, "{}", decoder.buffer_bytes());
        }
    }
}
