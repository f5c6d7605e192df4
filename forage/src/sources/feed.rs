//! Feed parsing: RSS 0.9x/1.0/2.0, Atom and JSON Feed bytes into catalog items, via feed-rs.
//!
//! Owns the mapping from feed-rs's model to [`NewItem`]: titles and summaries become plain
//! text (HTML and XHTML stripped), a missing date stays `None` (never "now", which would make
//! old items look fresh), and the link is the entry's `alternate` link when it has one.
//! Invariant: any bytes give either items or [`SourceError::Parse`]; nothing panics.

use feed_rs::model::{Entry, Feed};

use super::SourceError;
use super::text::{collapse_whitespace, html_to_text};
use crate::catalog::NewItem;

/// Largest feed document parsed.
pub const FEED_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most entries taken from one feed; later ones are ignored.
pub const FEED_ITEMS_MAX: usize = 2000;
/// Longest summary kept, in characters.
pub const SUMMARY_CHARS_MAX: usize = 2000;
/// Most authors kept per item.
const AUTHORS_MAX: usize = 8;

/// A parsed feed: its title and its items in document order.
#[derive(Debug, Clone, Default)]
pub struct ParsedFeed {
    pub title: Option<String>,
    pub items: Vec<NewItem>,
}

/// Parses a feed document (RSS, Atom or JSON Feed, detected from the content).
pub fn parse_feed(bytes: &[u8]) -> Result<ParsedFeed, SourceError> {
    if bytes.len() > FEED_BYTES_MAX {
        return Err(SourceError::Parse {
            reason: format!("{} bytes, at most {FEED_BYTES_MAX}", bytes.len()),
        });
    }
    let feed: Feed =
        feed_rs::parser::parse(bytes).map_err(|e| SourceError::Parse { reason: e.to_string() })?;
    let title = feed.title.map(|t| html_to_text(&t.content)).filter(|t| !t.is_empty());
    let items = feed.entries.iter().take(FEED_ITEMS_MAX).map(entry_to_item).collect();
    Ok(ParsedFeed { title, items })
}

fn entry_to_item(e: &Entry) -> NewItem {
    let url = e
        .links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .or_else(|| e.links.first())
        .map(|l| l.href.trim().to_owned())
        .filter(|u| !u.is_empty());
    let summary_html = e
        .summary
        .as_ref()
        .map(|t| t.content.as_str())
        .filter(|s| !s.trim().is_empty())
        .or_else(|| e.content.as_ref().and_then(|c| c.body.as_deref()))
        .unwrap_or("");
    let mut title = e.title.as_ref().map(|t| html_to_text(&t.content)).unwrap_or_default();
    let summary = truncate_chars(&html_to_text(summary_html), SUMMARY_CHARS_MAX);
    if title.is_empty() {
        title = truncate_chars(&summary, 80);
    }
    let authors = e
        .authors
        .iter()
        .filter_map(|p| p.name.as_deref().map(collapse_whitespace))
        .filter(|n| !n.is_empty())
        .take(AUTHORS_MAX)
        .collect();
    NewItem {
        guid: Some(e.id.trim().to_owned()).filter(|g| !g.is_empty()),
        url,
        title,
        summary,
        published_ms: e.published.or(e.updated).map(|d| d.timestamp_millis()),
        authors,
    }
}

/// The first `chars_max` characters of `s`.
pub(crate) fn truncate_chars(s: &str, chars_max: usize) -> String {
    s.chars().take(chars_max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_with_cdata_html_becomes_text() {
        let rss = br#"<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
            <item><title><![CDATA[A <em>bold</em> move]]></title><link>https://e.x/a</link>
            <guid>g-a</guid><description><![CDATA[<p>Hello &amp; <b>bye</b></p>]]></description>
            <pubDate>Mon, 02 Jan 2023 10:00:00 GMT</pubDate></item></channel></rss>"#;
        let f = parse_feed(rss).expect("parse");
        assert_eq!(f.title.as_deref(), Some("T"));
        let it = &f.items[0];
        assert_eq!(it.title, "A bold move");
        assert_eq!(it.summary, "Hello & bye");
        assert_eq!(it.guid.as_deref(), Some("g-a"));
        assert_eq!(it.url.as_deref(), Some("https://e.x/a"));
        assert_eq!(it.published_ms, Some(1_672_653_600_000));
    }

    #[test]
    fn garbage_is_a_parse_error() {
        for bad in [&b""[..], b"<rss><channel><item>", b"{\"version\":", b"\xff\xfe\x00"] {
            assert!(matches!(parse_feed(bad), Err(SourceError::Parse { .. })));
        }
    }
}
