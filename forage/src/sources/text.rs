//! Plain-text helpers shared by the parsers: HTML tag stripping and XML/HTML entity decoding.
//!
//! Deliberately simple: Forage needs readable text for titles, summaries and search, not a
//! faithful rendering. Invariants: never panics on any input; output never contains a `<tag>`
//! that was markup in the input; whitespace runs collapse to one space.

/// Longest entity name considered (`&thetasym;` is the longest common one).
const ENTITY_CHARS_MAX: usize = 10;

/// Strips HTML tags (dropping `<script>`/`<style>` bodies and comments), decodes entities and
/// collapses whitespace.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let tail = &rest[lt..];
        rest = skip_markup(tail);
        out.push(' ');
    }
    out.push_str(rest);
    collapse_whitespace(&unescape_entities(&out))
}

/// Returns the input after the markup that starts `tail` (which begins with `<`).
fn skip_markup(tail: &str) -> &str {
    if let Some(body) = tail.strip_prefix("<!--") {
        return body.find("-->").map_or("", |e| &body[e + 3..]);
    }
    let lower: String = tail.chars().take(8).collect::<String>().to_ascii_lowercase();
    for tag in ["script", "style"] {
        if lower.starts_with(&format!("<{tag}")) {
            let close = format!("</{tag}");
            let lower_tail = tail.to_ascii_lowercase();
            return match lower_tail.find(&close) {
                Some(c) => tail[c..].find('>').map_or("", |e| &tail[c + e + 1..]),
                None => "",
            };
        }
    }
    tail.find('>').map_or("", |e| &tail[e + 1..])
}

/// Collapses runs of whitespace into single spaces and trims the ends.
pub fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Decodes `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&nbsp;` and numeric references.
/// Unknown or malformed entities are kept as written.
pub fn unescape_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.char_indices().take(ENTITY_CHARS_MAX + 1).find(|&(_, c)| c == ';').map(|(i, _)| i);
        match semi.and_then(|i| decode_entity(&after[..i]).map(|c| (i, c))) {
            Some((i, c)) => {
                out.push(c);
                rest = &after[i + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        "mdash" => Some('—'),
        "ndash" => Some('–'),
        "hellip" => Some('…'),
        "rsquo" => Some('’'),
        "lsquo" => Some('‘'),
        "rdquo" => Some('”'),
        "ldquo" => Some('“'),
        _ => {
            let num = name.strip_prefix('#')?;
            let code = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_scripts_and_comments() {
        let html = "<p>Hello <b>world</b></p><script>alert('x')</script><!-- c --><STYLE>p{}</STYLE>ok";
        assert_eq!(html_to_text(html), "Hello world ok");
    }

    #[test]
    fn decodes_entities_and_keeps_unknown() {
        assert_eq!(
            unescape_entities("a &amp; b &lt;c&gt; &#65;&#x42; &bogus; & x"),
            "a & b <c> AB &bogus; & x"
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in ["<", "<<>>", "&", "&#;", "&#xffffffff;", "<script", "<!--", "é<é>é", "&#1114112;"] {
            let _ = html_to_text(s);
        }
    }
}
