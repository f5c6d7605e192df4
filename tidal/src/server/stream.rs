//! Response bodies written by blocking code: [`streaming_body`] runs a producer on the
//! blocking pool with a writer whose bytes reach the client in chunks through a bounded
//! channel, so memory stays at a few chunks whatever the body's size, and a client that goes
//! away stops the producer (its next write fails). Tidal's export endpoint and Forage's use it.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use tokio::sync::mpsc;

/// Bytes buffered before a chunk is handed to the response.
pub const CHUNK_BYTES: usize = 64 << 10;
/// Chunks queued between the producer and the client.
pub const CHUNKS_QUEUED_MAX: usize = 16;

/// A body fed by `produce`, run on the blocking pool. An error from `produce` (after the
/// headers went out) is logged and ends the body early with an error, which the client sees
/// as a cut connection; validate input before calling this.
pub fn streaming_body<F>(produce: F) -> Body
where
    F: FnOnce(&mut (dyn Write + Send)) -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHUNKS_QUEUED_MAX);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK_BYTES) };
        let outcome = produce(&mut writer).and_then(|()| writer.flush().map_err(|e| e.to_string()));
        drop(writer);
        if let Err(error) = outcome {
            tracing::warn!(%error, "streamed response failed");
            let _ = tx.blocking_send(Err(io::Error::other(error)));
        }
    });
    Body::from_stream(Chunks(rx))
}

/// Buffers the exporter's output into chunks for the response body.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES)));
        // The receiver is gone when the client disconnected: stop the export.
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
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

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// The channel's chunks as the body's stream.
struct Chunks(mpsc::Receiver<io::Result<Bytes>>);

impl futures_core::Stream for Chunks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
