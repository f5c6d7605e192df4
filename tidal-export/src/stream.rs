//! Export output as a stream of chunks: [`chunk_channel`] pairs a blocking [`ChunkWriter`]
//! (what an exporter writes into, on a blocking thread) with a [`Chunks`] stream (what an
//! HTTP server turns into a response body). The channel is bounded, so memory stays at a few
//! chunks whatever the export's size, and a reader that goes away stops the writer (its next
//! write fails with `BrokenPipe`). Tidal's export endpoint and Forage's use it.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

/// Bytes buffered before a chunk is handed to the reader.
pub const CHUNK_BYTES: usize = 64 << 10;
/// Chunks queued between the writer and the reader.
pub const CHUNKS_QUEUED_MAX: usize = 16;

/// Runs `produce` on the tokio blocking pool, writing into a [`ChunkWriter`]; returns the
/// stream of its chunks. An error from `produce` is logged and ends the stream with an
/// error after the chunks sent so far (an HTTP client sees a cut connection), so validate
/// input before calling. Must be called inside a tokio runtime.
pub fn spawn_producer<F>(produce: F) -> Chunks
where
    F: FnOnce(&mut (dyn Write + Send)) -> Result<(), String> + Send + 'static,
{
    let (mut writer, chunks) = chunk_channel();
    tokio::task::spawn_blocking(move || {
        match produce(&mut writer).and_then(|()| writer.flush().map_err(|e| e.to_string())) {
            Ok(()) => drop(writer),
            Err(error) => {
                tracing::warn!(%error, "streamed export failed");
                writer.fail(error);
            }
        }
    });
    chunks
}

/// A bounded chunk channel: write into the first half (blocking), read the second (async).
pub fn chunk_channel() -> (ChunkWriter, Chunks) {
    let (tx, rx) = mpsc::channel(CHUNKS_QUEUED_MAX);
    (ChunkWriter { tx, buf: Vec::with_capacity(CHUNK_BYTES) }, Chunks(rx))
}

/// Buffers written bytes into chunks for the reader. Must not be used on an async worker
/// thread (sending blocks while the channel is full).
pub struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    /// Ends the stream with an error the reader sees (after the bytes sent so far).
    pub fn fail(mut self, error: String) {
        let _ = self.send();
        let _ = self.tx.blocking_send(Err(io::Error::other(error)));
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        // The receiver is gone when the client disconnected: stop the export.
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// The channel's chunks as an async stream, in order; ends when the writer is dropped.
pub struct Chunks(mpsc::Receiver<io::Result<Vec<u8>>>);

impl futures_core::Stream for Chunks {
    type Item = io::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_arrive_in_order_and_a_gone_reader_stops_the_writer() {
        let (mut writer, mut chunks) = chunk_channel();
        let big = vec![7u8; CHUNK_BYTES + 10];
        let producer = std::thread::spawn(move || {
            writer.write_all(&big).unwrap();
            writer.write_all(b"tail").unwrap();
        });
        producer.join().unwrap();
        let mut got = Vec::new();
        while let Ok(chunk) = chunks.0.try_recv() {
            got.extend(chunk.unwrap());
        }
        assert_eq!(got.len(), CHUNK_BYTES + 14);
        assert_eq!(&got[got.len() - 4..], b"tail");

        let (mut writer, chunks) = chunk_channel();
        drop(chunks);
        let err = writer.write_all(&vec![0u8; CHUNK_BYTES]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
