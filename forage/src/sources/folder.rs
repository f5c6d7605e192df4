//! A folder of Markdown/text files as a source.
//!
//! Owns the mapping from files to items: the title is the first `# ` heading (else the file
//! name without its extension), the summary is the remaining text, the GUID is the path
//! relative to the folder with `/` separators (stable across machines), the date is the file's
//! modification time. Invariants: the walk is bounded in depth, file count and file size; hidden
//! entries and symlinks are skipped (a symlink loop cannot trap the walk); files are visited in
//! sorted order, so the result is deterministic.

use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use super::SourceError;
use super::feed::{SUMMARY_CHARS_MAX, truncate_chars};
use super::text::collapse_whitespace;
use crate::catalog::NewItem;

/// Deepest sub-folder visited.
pub const FOLDER_DEPTH_MAX: usize = 8;
/// Most files taken from one folder.
pub const FOLDER_FILES_MAX: usize = 5000;
/// Largest file read; larger files are skipped.
pub const FILE_BYTES_MAX: u64 = 1024 * 1024;
/// File extensions read (lower case).
pub const EXTENSIONS: &[&str] = &["md", "markdown", "txt"];

/// Reads every Markdown/text file under `root` into items.
pub fn load_folder(root: &Path) -> Result<Vec<NewItem>, SourceError> {
    let mut items = Vec::new();
    walk(root, root, 0, &mut items)?;
    Ok(items)
}

fn walk(root: &Path, dir: &Path, depth: usize, items: &mut Vec<NewItem>) -> Result<(), SourceError> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(|e| SourceError::io("read folder", dir, e))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if items.len() >= FOLDER_FILES_MAX {
            return Ok(());
        }
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() && depth < FOLDER_DEPTH_MAX {
            // Only the root must be readable; an unreadable sub-folder is skipped.
            if let Err(e) = walk(root, &path, depth + 1, items) {
                tracing::warn!(error = %e, "skipping unreadable folder");
            }
        } else if ft.is_file() && has_text_extension(&path) {
            // One unreadable file must not hide the rest of the folder: skip it and say so.
            match load_file(root, &path) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipping unreadable file"),
            }
        }
    }
    Ok(())
}

fn has_text_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn load_file(root: &Path, path: &Path) -> Result<Option<NewItem>, SourceError> {
    let meta = fs::metadata(path).map_err(|e| SourceError::io("stat", path, e))?;
    if meta.len() > FILE_BYTES_MAX {
        tracing::warn!(path = %path.display(), bytes = meta.len(), "skipping oversized file");
        return Ok(None);
    }
    let bytes = fs::read(path).map_err(|e| SourceError::io("read", path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let rel = path.strip_prefix(root).unwrap_or(path);
    let guid = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let (title, body) = split_title(&text, &stem);
    let published_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok());
    Ok(Some(NewItem {
        guid: Some(guid),
        url: None,
        title,
        summary: truncate_chars(&collapse_whitespace(&body), SUMMARY_CHARS_MAX),
        published_ms,
        authors: Vec::new(),
    }))
}

/// Splits a document into its title (first `# ` heading, else `fallback`) and the other text.
pub fn split_title(text: &str, fallback: &str) -> (String, String) {
    let mut title = None;
    let mut body = Vec::new();
    for line in text.lines() {
        match line.trim_start().strip_prefix("# ") {
            Some(h) if title.is_none() => title = Some(h.trim().to_owned()),
            _ => body.push(line),
        }
    }
    let title = title.filter(|t| !t.is_empty()).unwrap_or_else(|| fallback.to_owned());
    (title, body.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_from_heading_or_fallback() {
        assert_eq!(split_title("intro\n# Big Idea\nmore", "f"), ("Big Idea".into(), "intro\nmore".into()));
        assert_eq!(split_title("## sub\ntext", "file").0, "file");
        assert_eq!(split_title("", "empty").0, "empty");
    }

    #[test]
    fn walks_sorted_skips_hidden_and_other_extensions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        fs::write(root.join("b.md"), "# Bee\nbuzz").expect("w");
        fs::write(root.join("a.txt"), "plain words").expect("w");
        fs::write(root.join("sub/c.markdown"), "# Sea\nwaves").expect("w");
        fs::write(root.join(".hidden.md"), "# no").expect("w");
        fs::write(root.join("img.png"), "x").expect("w");
        let items = load_folder(root).expect("load");
        let guids: Vec<_> = items.iter().filter_map(|i| i.guid.clone()).collect();
        assert_eq!(guids, ["a.txt", "b.md", "sub/c.markdown"]);
        assert_eq!(items[0].title, "a");
        assert_eq!(items[1].title, "Bee");
        assert_eq!(items[1].summary, "buzz");
    }

    #[test]
    fn missing_folder_is_an_io_error() {
        assert!(matches!(load_folder(Path::new("/nonexistent/forage")), Err(SourceError::Io { .. })));
    }
}
