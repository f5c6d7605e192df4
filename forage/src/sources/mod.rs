//! Sources: where Forage's items come from.
//!
//! Owns the source kinds (`http(s)://` feeds, `file://` feeds, `folder://` Markdown/text
//! folders), their fetching and parsing, OPML import and the refresh loop. Invariants: every
//! byte read from the outside is bounded by a named limit before it is parsed; a failing source
//! yields a [`SourceError`] that is recorded on that source and never stops the others.

pub mod feed;
pub mod folder;
pub mod http;
pub mod opml;
pub mod refresh;
pub(crate) mod text;

use std::path::PathBuf;

use crate::catalog::CatalogError;

/// The kind of a source, decided by its URL scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceKind {
    /// An RSS, Atom or JSON feed over HTTP(S).
    Http,
    /// A feed file on disk (`file://path`).
    File(PathBuf),
    /// A folder of Markdown/text files (`folder://path`).
    Folder(PathBuf),
}

impl SourceKind {
    /// Classifies a source URL.
    pub fn of_url(url: &str) -> Result<SourceKind, SourceError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(SourceKind::Http)
        } else if let Some(path) = url.strip_prefix("file://") {
            Ok(SourceKind::File(PathBuf::from(path)))
        } else if let Some(path) = url.strip_prefix("folder://") {
            Ok(SourceKind::Folder(PathBuf::from(path)))
        } else {
            Err(SourceError::UnsupportedUrl { url: url.to_owned() })
        }
    }

    /// The name stored in the catalog's `sources.kind` column.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Http => "http",
            SourceKind::File(_) => "file",
            SourceKind::Folder(_) => "folder",
        }
    }
}

/// An error of one source. Recorded on the source (as its message), never fatal to a refresh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error("unsupported source url {url:?} (want http(s)://, file:// or folder://)")]
    UnsupportedUrl { url: String },
    #[error("{url}: HTTP status {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url}: timed out")]
    Timeout { url: String },
    #[error("{url}: response larger than {bytes_max} bytes")]
    TooLarge { url: String, bytes_max: u64 },
    #[error("{url}: {reason}")]
    Network { url: String, reason: String },
    #[error("cannot parse feed: {reason}")]
    Parse { reason: String },
    #[error("cannot parse OPML: {reason}")]
    Opml { reason: String },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl SourceError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> SourceError {
        SourceError::Io { op, path: path.into(), source }
    }

    /// Whether a retry may help (server errors, timeouts, network failures).
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            SourceError::Timeout { .. } | SourceError::Network { .. } => true,
            _ => false,
        }
    }
}
