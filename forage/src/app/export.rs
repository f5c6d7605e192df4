//! Preference export through Tidal's exporter, with Forage's hooks: item texts (title and
//! summary from the catalog) and mined hard negatives from the embeddings.
//!
//! The bandit's counter users (`forage-arms:…`, see [`crate::bandit`]) hold bookkeeping
//! signals, not preferences: their rows are dropped on the way out ([`RowFilter`]), and the
//! summary counts the rows actually written.
//!
//! Mined negatives of a context: items whose cosine similarity to one of its chosen items
//! lies in the band [`MINED_SIM_MIN`] ..= 1 − [`MINED_MARGIN`] (similar enough to be a hard
//! case; at least the margin below the chosen item's similarity to itself, so near-duplicates
//! are never called negatives), that the user never engaged with, most similar first.

use std::collections::HashMap;
use std::io::Write;

use tidal_export::{
    ExportFormat, ExportOptions, Hooks, ItemTextProvider, MinedNegatives, PromptBuilder, PromptContext,
};

use super::index::IndexHandle;
use super::{AppError, Forage};
use crate::store::ExportSummary;

/// Lowest cosine similarity to a chosen item for a mined negative.
pub const MINED_SIM_MIN: f32 = 0.3;
/// How far below a chosen item's self-similarity (1) a mined negative must stay.
pub const MINED_MARGIN: f32 = 0.1;
/// Most mined negatives offered per context (the exporter caps them again).
pub const MINED_PER_CONTEXT_MAX: usize = 8;
/// Longest item text in a row.
pub const TEXT_CHARS_MAX: usize = 1000;

/// An export request.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub format: ExportFormat,
    pub test_fraction: f64,
    pub seed: u64,
}

impl Default for ExportRequest {
    fn default() -> Self {
        ExportRequest {
            format: ExportFormat::Dpo,
            test_fraction: tidal_export::TEST_FRACTION_DEFAULT,
            seed: 0,
        }
    }
}

struct Texts(HashMap<String, String>);

impl ItemTextProvider for Texts {
    fn text(&self, item: &str) -> Option<String> {
        self.0.get(item).cloned()
    }
}

/// Prompts that name the user and the titles (not the whole texts) of what they chose
/// earlier in the same feed page: `User me. Earlier in this feed they chose: A; B.`
struct Prompts(HashMap<String, String>);

impl PromptBuilder for Prompts {
    fn prompt(&self, context: &PromptContext<'_>) -> String {
        if context.earlier_items.is_empty() {
            return format!("User {}. Nothing chosen earlier in this feed.", context.user);
        }
        let titles: Vec<&str> =
            context.earlier_items.iter().map(|id| self.0.get(*id).map_or(*id, String::as_str)).collect();
        format!("User {}. Earlier in this feed they chose: {}.", context.user, titles.join("; "))
    }
}

struct Miner {
    /// Read per call, so an export never holds the index against catch-ups for long.
    index: IndexHandle,
}

impl MinedNegatives for Miner {
    fn mine(&self, _user: &str, chosen: &[&str], engaged: &dyn Fn(&str) -> bool) -> Vec<String> {
        let index = self.index.read();
        let mut best: HashMap<&str, f32> = HashMap::new();
        for c in chosen {
            let Some(ce) = index.embedding(c) else { continue };
            for (id, e) in index.embeddings() {
                let sim: f32 = ce.iter().zip(e.iter()).map(|(a, b)| a * b).sum();
                if (MINED_SIM_MIN..=1.0 - MINED_MARGIN).contains(&sim) && !chosen.contains(&&**id) {
                    let slot = best.entry(id).or_insert(sim);
                    *slot = slot.max(sim);
                }
            }
        }
        let mut ranked: Vec<(&str, f32)> = best.into_iter().filter(|(id, _)| !engaged(id)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        ranked.into_iter().take(MINED_PER_CONTEXT_MAX).map(|(id, _)| id.to_owned()).collect()
    }
}

fn item_text(title: &str, summary: &str) -> String {
    let text = if summary.is_empty() { title.to_owned() } else { format!("{title}. {summary}") };
    text.chars().take(TEXT_CHARS_MAX).collect()
}

impl Forage {
    /// Writes preference rows as JSON Lines into `out`. Rows are keyed by the feed contexts
    /// (each feed page is one context).
    pub fn export(
        &self,
        req: &ExportRequest,
        out: &mut (dyn Write + Send),
    ) -> Result<ExportSummary, AppError> {
        if !(0.0..=1.0).contains(&req.test_fraction) {
            return Err(AppError::invalid("test_fraction", "must be within 0..=1"));
        }
        let (texts, prompts) = {
            let catalog = self.catalog();
            let (mut texts, mut titles) = (HashMap::new(), HashMap::new());
            let mut offset = 0;
            loop {
                let page = catalog.list_items(None, offset, crate::catalog::PAGE_ITEMS_MAX)?;
                if page.is_empty() {
                    break;
                }
                offset += page.len();
                for i in page {
                    texts.insert(i.id.clone(), item_text(&i.title, &i.summary));
                    titles.insert(i.id, i.title);
                }
            }
            (Texts(texts), Prompts(titles))
        };
        let miner = Miner { index: self.candidate_index()? };
        let options = ExportOptions {
            format: req.format,
            by_context_id: true,
            test_fraction: req.test_fraction,
            seed: req.seed,
            exported_at_ms: super::now_ms().max(0) as u64,
            ..ExportOptions::default()
        };
        let hooks = Hooks {
            item_text: Some(&texts),
            prompt: Some(&prompts),
            mined: Some(&miner),
            ..Hooks::default()
        };
        let mut filter = RowFilter { out, line: Vec::new(), summary: ExportSummary::default() };
        self.store.export_jsonl(&mut filter, &options, &hooks)?;
        filter.finish().map_err(|e| AppError::Unavailable(format!("writing the export: {e}")))
    }
}

/// Passes JSON Lines rows through, except the rows of the bandit's counter users; counts
/// what it keeps.
struct RowFilter<'a> {
    out: &'a mut (dyn Write + Send),
    line: Vec<u8>,
    summary: ExportSummary,
}

impl RowFilter<'_> {
    fn row(&mut self) -> std::io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let row: serde_json::Value = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
        let user = row.get("user").and_then(|u| u.as_str()).unwrap_or_default();
        if !user.starts_with(crate::bandit::COUNTER_USER_PREFIX) {
            let source = row.get("negative_source").and_then(|s| s.as_str()).unwrap_or("none");
            *self.summary.rows_by_source.entry(source.to_owned()).or_insert(0) += 1;
            self.summary.rows += 1;
            self.out.write_all(&line)?;
        }
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<ExportSummary> {
        if self.line.iter().any(|b| !b.is_ascii_whitespace()) {
            self.line.push(b'\n');
            self.row()?;
        }
        self.out.flush()?;
        Ok(self.summary)
    }
}

impl Write for RowFilter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for chunk in buf.split_inclusive(|b| *b == b'\n') {
            self.line.extend_from_slice(chunk);
            if chunk.ends_with(b"\n") {
                self.row()?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(vectors: &[(&str, [f32; 2])]) -> IndexHandle {
        let vectors: Vec<(&str, Vec<f32>)> = vectors.iter().map(|(id, v)| (*id, v.to_vec())).collect();
        IndexHandle::new(super::super::index::CandidateIndex::from_vectors(&vectors))
    }

    #[test]
    fn mined_negatives_stay_in_the_band_and_skip_engaged_items() {
        let unit = |deg: f32| [deg.to_radians().cos(), deg.to_radians().sin()];
        let miner = Miner {
            index: index(&[
                ("chosen", unit(0.0)),
                ("dup", unit(5.0)),    // cos 0.996: a near-duplicate
                ("close", unit(30.0)), // cos 0.87
                ("mid", unit(60.0)),   // cos 0.5
                ("far", unit(80.0)),   // cos 0.17
                ("seen", unit(45.0)),  // cos 0.71, but engaged
            ]),
        };
        let mined = miner.mine("u", &["chosen"], &|id| id == "seen");
        assert_eq!(mined, ["close", "mid"]);
        assert!(miner.mine("u", &["unknown"], &|_| false).is_empty());
    }

    #[test]
    fn prompts_name_earlier_titles() {
        let prompts = Prompts([("a".to_string(), "Alpha".to_string())].into_iter().collect());
        let context = |items: &'static [&'static str]| PromptContext {
            user: "me",
            session: "-",
            context: Some("ctx-1"),
            earlier_items: items,
            earlier_texts: &[],
        };
        assert_eq!(prompts.prompt(&context(&[])), "User me. Nothing chosen earlier in this feed.");
        assert_eq!(
            prompts.prompt(&context(&["a", "b"])),
            "User me. Earlier in this feed they chose: Alpha; b."
        );
    }

    #[test]
    fn counter_rows_are_dropped_and_counted_out() {
        let mut out = Vec::new();
        let mut filter = RowFilter { out: &mut out, line: Vec::new(), summary: ExportSummary::default() };
        let rows = "{\"user\":\"me\",\"negative_source\":\"explicit\"}\n\
                    {\"user\":\"forage-arms:me\",\"negative_source\":\"history\"}\n\
                    {\"user\":\"you\",\"negative_source\":\"mined\"}";
        // Written in awkward pieces, as a buffered writer might.
        for piece in rows.as_bytes().chunks(7) {
            filter.write_all(piece).expect("write");
        }
        let summary = filter.finish().expect("finish");
        assert_eq!(summary.rows, 2);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains("forage-arms") && text.lines().count() == 2, "{text}");
    }
}
