//! The accepted connections: [`JsonListener`] wraps the TCP listener so that the answers
//! hyper writes on its own are JSON errors like every other answer of the API.
//!
//! hyper answers a request it cannot parse before any route or middleware sees it: 400 for
//! a bad request line or header, 414 for a request target over its fixed limit (65534
//! bytes), 431 for a head over its buffer. Those answers carry `content-length: 0` and no
//! body. [`JsonErrors`] recognises such a head in the first write of a response and writes
//! in its place the same status with the `{"error": {code, message, field}}` body.
//!
//! Invariants: the API itself never answers an error with an empty body ([`ApiError`]
//! always has one), so an error head with `content-length: 0` can only be hyper's. hyper
//! closes the connection after such an answer, so replacing its bytes cannot desynchronise
//! a keep-alive stream. Writes are not vectored, so a head always arrives in one write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::error::ApiError;

/// The TCP listener whose connections are [`JsonErrors`].
pub struct JsonListener(pub TcpListener);

impl axum::serve::Listener for JsonListener {
    type Io = JsonErrors<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        (JsonErrors { inner: stream, pending: Vec::new(), pending_at: 0 }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection whose bodiless error heads (hyper's own answers) get a JSON body.
pub struct JsonErrors<T> {
    inner: T,
    /// Replacement bytes not yet written, from `pending_at` on.
    pending: Vec<u8>,
    pending_at: usize,
}

/// The JSON answer that replaces hyper's bodiless error `head`, if it is one.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let text = text.strip_suffix("\r\n\r\n")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    let status = StatusCode::from_u16(code).ok().filter(|s| s.is_client_error() || s.is_server_error())?;
    let headers: Vec<&str> = lines.collect();
    if !headers.iter().any(|h| h.eq_ignore_ascii_case("content-length: 0")) {
        return None;
    }
    let (code, message) = match status {
        StatusCode::URI_TOO_LONG => ("uri_too_long", "the request target is longer than 65534 bytes"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers_too_large", "the request line and headers exceed the server's buffer")
        }
        StatusCode::BAD_REQUEST => ("bad_request", "the request line or a header is not valid HTTP/1.1"),
        _ => ("http_error", "the request could not be parsed"),
    };
    let field = match status {
        StatusCode::URI_TOO_LONG => Some("path"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Some("headers"),
        _ => None,
    };
    let error = ApiError::new(status, code, message);
    let error = match field {
        Some(field) => error.field(field),
        None => error,
    };
    let body = error_body(error)?;
    let mut out = format!("{status_line}\r\n").into_bytes();
    let replaced = |h: &&&str| {
        let h = h.to_ascii_lowercase();
        h.starts_with("content-") || h.starts_with("connection:")
    };
    for header in headers.iter().filter(|h| !replaced(h)) {
        out.extend_from_slice(format!("{header}\r\n").as_bytes());
    }
    let length = body.len();
    out.extend_from_slice(
        format!("content-type: application/json\r\ncontent-length: {length}\r\n").as_bytes(),
    );
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&body);
    Some(out)
}

/// The JSON bytes [`ApiError`]'s response carries (it is built from a byte vector, so the
/// body is one ready frame).
fn error_body(error: ApiError) -> Option<Vec<u8>> {
    use axum::body::HttpBody;
    let mut body = error.into_response().into_body();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    match Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().ok().map(|b| b.to_vec()),
        _ => None,
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes what is left of a replacement; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_at < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_at += n;
        }
        self.pending.clear();
        self.pending_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        // Only a short buffer that is exactly a head can be one of hyper's error answers.
        if buf.len() < 1024
            && buf.starts_with(b"HTTP/1.")
            && let Some(json) = replacement(buf)
        {
            this.pending = json;
            // The replacement is ours to finish: report hyper's bytes as written.
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_error_heads_become_json_and_others_pass() {
        let head =
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(head).expect("replaced")).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n") && head.contains("date: Tue"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "uri_too_long");
        assert_eq!(json["error"]["field"], "path");
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n";
        assert_eq!(replacement(ours), None, "an answer with a body is left alone");
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(replacement(ok), None, "a success is left alone");
        assert_eq!(
            replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"),
            None,
            "not a whole head"
        );
    }
}
