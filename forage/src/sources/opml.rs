//! OPML import: subscription lists into sources.
//!
//! feed-rs keeps its XML reader private and the workspace has no XML crate of its own, so this
//! is a small, careful tag scanner: it skips comments, CDATA, processing instructions and
//! doctype, reads attributes quoted with `"` or `'` (a `>` inside a value is fine), matches
//! names case-insensitively (`xmlUrl`, `xmlurl`, `XMLURL` all occur in the wild), decodes
//! entities, and reads nested outlines at any depth. Invariants: any bytes give outlines or
//! [`SourceError::Opml`]; input size and outline count are bounded.

use std::path::Path;

use super::text::{collapse_whitespace, unescape_entities};
use super::{SourceError, SourceKind};
use crate::catalog::Catalog;

/// Largest OPML document read.
pub const OPML_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most subscriptions taken from one document.
pub const OPML_OUTLINES_MAX: usize = 10_000;

/// One subscription from an OPML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpmlFeed {
    pub url: String,
    pub title: Option<String>,
}

/// Parses an OPML document into its subscriptions (outlines with an `xmlUrl`), in order.
pub fn parse_opml(bytes: &[u8]) -> Result<Vec<OpmlFeed>, SourceError> {
    if bytes.len() > OPML_BYTES_MAX {
        return Err(opml_err(format!("{} bytes, at most {OPML_BYTES_MAX}", bytes.len())));
    }
    let doc = String::from_utf8_lossy(bytes);
    let mut feeds = Vec::new();
    let mut saw_opml = false;
    let mut rest: &str = &doc;
    while let Some(lt) = rest.find('<') {
        rest = &rest[lt..];
        if let Some(skipped) = skip_special(rest)? {
            rest = skipped;
            continue;
        }
        let (name, attrs, after) = parse_tag(rest)?;
        rest = after;
        if name.eq_ignore_ascii_case("opml") {
            saw_opml = true;
        }
        if name.eq_ignore_ascii_case("outline")
            && feeds.len() < OPML_OUTLINES_MAX
            && let Some(feed) = outline_feed(&attrs)
        {
            feeds.push(feed);
        }
    }
    if !saw_opml {
        return Err(opml_err("no <opml> element".into()));
    }
    Ok(feeds)
}

fn opml_err(reason: String) -> SourceError {
    SourceError::Opml { reason }
}

/// Skips a comment, CDATA section, processing instruction or declaration at the start of `s`.
fn skip_special(s: &str) -> Result<Option<&str>, SourceError> {
    for (open, close) in [("<!--", "-->"), ("<![CDATA[", "]]>"), ("<?", "?>"), ("<!", ">")] {
        if let Some(body) = s.strip_prefix(open) {
            let end = body.find(close).ok_or_else(|| opml_err(format!("unterminated {open}")))?;
            return Ok(Some(&body[end + close.len()..]));
        }
    }
    Ok(None)
}

type Attrs = Vec<(String, String)>;

/// Parses the tag at the start of `s` (which begins with `<`); returns its name, attributes
/// (values unescaped) and the rest of the input after `>`.
fn parse_tag(s: &str) -> Result<(String, Attrs, &str), SourceError> {
    let body = s.strip_prefix('<').unwrap_or(s);
    let body = body.strip_prefix('/').unwrap_or(body);
    let name_end = body.find(|c: char| c.is_whitespace() || c == '/' || c == '>').unwrap_or(body.len());
    let name = body[..name_end].to_owned();
    let mut rest = &body[name_end..];
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("/>").or_else(|| rest.strip_prefix('>')) {
            return Ok((name, attrs, after));
        }
        if rest.is_empty() {
            return Err(opml_err(format!("unterminated <{name}> tag")));
        }
        let eq = rest.find('=').ok_or_else(|| opml_err(format!("attribute without value in <{name}>")))?;
        let key = rest[..eq].trim().to_owned();
        let value_part = rest[eq + 1..].trim_start();
        let quote = value_part.chars().next().filter(|c| *c == '"' || *c == '\'');
        let quote = quote.ok_or_else(|| opml_err(format!("unquoted value of {key:?} in <{name}>")))?;
        let inner = &value_part[1..];
        let close = inner.find(quote).ok_or_else(|| opml_err(format!("unterminated value of {key:?}")))?;
        attrs.push((key, unescape_entities(&inner[..close])));
        rest = &inner[close + 1..];
    }
}

fn outline_feed(attrs: &Attrs) -> Option<OpmlFeed> {
    let get = |k: &str| attrs.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.trim());
    let url = get("xmlUrl").filter(|u| !u.is_empty())?.to_owned();
    let title = get("title").or_else(|| get("text")).map(collapse_whitespace).filter(|t| !t.is_empty());
    Some(OpmlFeed { url, title })
}

/// Makes a relative `file://` or `folder://` path (or a bare relative path, taken as a feed
/// file) absolute against `base_dir`; other URLs are returned unchanged.
pub fn resolve_url(url: &str, base_dir: &Path) -> String {
    let (scheme, path) = match url.split_once("://") {
        Some((s @ ("file" | "folder"), p)) => (s, p),
        Some(_) => return url.to_owned(),
        None => ("file", url),
    };
    if Path::new(path).is_absolute() {
        return url.to_owned();
    }
    format!("{scheme}://{}", base_dir.join(path).display())
}

/// Parses an OPML document and adds each subscription as a source (existing URLs are kept).
/// Relative paths resolve against `base_dir`. Returns the source ids in document order.
pub fn import_opml(
    catalog: &Catalog,
    bytes: &[u8],
    base_dir: &Path,
    interval_s: i64,
    now_ms: i64,
) -> Result<Vec<i64>, SourceError> {
    let mut ids = Vec::new();
    for feed in parse_opml(bytes)? {
        let url = resolve_url(&feed.url, base_dir);
        let kind = SourceKind::of_url(&url)?;
        let id = catalog.add_source(&url, kind.name(), interval_s, now_ms)?;
        if let Some(title) = feed.title {
            catalog.set_title_if_missing(id, &title)?;
        }
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_outlines_in_any_case_and_quotes() {
        let doc = br#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE opml>
<opml version="2.0"><head><title>subs &amp; more</title></head><body>
  <!-- <outline xmlUrl="http://commented.out/"/> -->
  <outline text="Tech">
    <outline type="rss" text="A &amp; B" xmlUrl="https://a.example/feed?x=1&amp;y=2" htmlUrl="https://a.example/"/>
    <outline text='Single' XMLURL='https://b.example/rss' title="B > title"/>
  </outline>
  <outline text="no feed here"/>
</body></opml>"#;
        let feeds = parse_opml(doc).expect("parse");
        assert_eq!(feeds.len(), 2);
        assert_eq!(feeds[0].url, "https://a.example/feed?x=1&y=2");
        assert_eq!(feeds[0].title.as_deref(), Some("A & B"));
        assert_eq!(feeds[1].url, "https://b.example/rss");
        assert_eq!(feeds[1].title.as_deref(), Some("B > title"));
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in
            [&b"<outline xmlUrl=\"x\"/>"[..], b"<opml><outline xmlUrl=\"x", b"<opml><!-- x", b"<opml><o a=b>"]
        {
            assert!(
                matches!(parse_opml(bad), Err(SourceError::Opml { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn relative_paths_resolve_against_base() {
        let base = Path::new("/srv/samples");
        assert_eq!(resolve_url("file://feeds/a.xml", base), "file:///srv/samples/feeds/a.xml");
        assert_eq!(resolve_url("folder://notes", base), "folder:///srv/samples/notes");
        assert_eq!(resolve_url("feeds/b.xml", base), "file:///srv/samples/feeds/b.xml");
        assert_eq!(resolve_url("file:///abs.xml", base), "file:///abs.xml");
        assert_eq!(resolve_url("https://x/y", base), "https://x/y");
    }
}
