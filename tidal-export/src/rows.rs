//! Rows: the column sets of the three formats, and turning one context's selection into
//! rows handed to a [`RowSink`].
//!
//! Column order is part of the output format (`docs/export.md` lists it): the format's
//! own columns, then `split`, then the provenance columns. Both writers take the order from
//! [`columns`], so JSON Lines and Parquet agree. Rows of a context are produced in a fixed
//! order (pairs along diagonals of the chosen × rejected grid, see [`pairs`]), so the same
//! input gives the same bytes.

use serde::Serialize;

use super::ExportError;
use super::contexts::ClosedContext;
use super::hooks::{Hooks, PromptContext};
use super::negatives::{Chosen, NegativeSource, Selection};
use tidal::shard::router::stable_hash;

/// The smallest margin a reward row carries (margins are floored so they stay > 0).
pub const MARGIN_MIN: f64 = 1e-3;

/// Which rows an export writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// TRL DPO: `{prompt, chosen, rejected}`, one row per (chosen, rejected) pair.
    Dpo,
    /// TRL KTO: `{prompt, completion, label}`, one row per chosen (true) and rejected (false).
    Kto,
    /// Reward modelling: `{prompt, chosen, rejected, margin}`, one row per pair.
    Reward,
}

impl ExportFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Dpo => "dpo",
            ExportFormat::Kto => "kto",
            ExportFormat::Reward => "reward",
        }
    }
}

/// Which side of the split a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// Deterministic from (seed, user, session): `test` when the hash, as a fraction of
    /// 2^64, falls below `test_fraction`.
    pub fn of(user: &str, session: &str, test_fraction: f64, seed: u64) -> Split {
        let mut bytes = Vec::with_capacity(8 + user.len() + 1 + session.len());
        bytes.extend_from_slice(&seed.to_le_bytes());
        bytes.extend_from_slice(user.as_bytes());
        bytes.push(0x1f);
        bytes.extend_from_slice(session.as_bytes());
        let unit = (stable_hash(&bytes) >> 11) as f64 / (1u64 << 53) as f64;
        if unit < test_fraction { Split::Test } else { Split::Train }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// The provenance of every row of one context.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Provenance<'a> {
    pub ctx: &'a ClosedContext,
    pub shard: u32,
    pub split: Split,
    pub format: ExportFormat,
    pub exported_at_ms: u64,
}

/// The format-specific part of a row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Body<'a> {
    Pair { chosen: &'a str, rejected: &'a str, chosen_id: &'a str, rejected_id: &'a str, margin: f64 },
    Single { completion: &'a str, item_id: &'a str, label: bool },
}

/// One output row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Row<'a> {
    pub prompt: &'a str,
    pub body: Body<'a>,
    pub negative_source: Option<NegativeSource>,
    pub prov: &'a Provenance<'a>,
}

/// Where rows go: a JSON Lines or Parquet writer.
pub(crate) trait RowSink {
    fn push(&mut self, row: &Row<'_>) -> Result<(), ExportError>;
    /// Flushes everything; the output is complete only after this returns `Ok`.
    fn finish(self: Box<Self>) -> Result<(), ExportError>;
}

/// One output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Col {
    Prompt,
    Chosen,
    Rejected,
    Completion,
    Label,
    Margin,
    ChosenId,
    RejectedId,
    ItemId,
    Split,
    User,
    Session,
    Context,
    Shard,
    FirstSeq,
    LastSeq,
    HlcMin,
    HlcMax,
    NegativeSource,
    ExportedAtMs,
    Format,
}

/// The storage type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColType {
    Str,
    NullableStr,
    Bool,
    F64,
    U32,
    U64,
}

/// One value of a row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Cell<'a> {
    Str(&'a str),
    Null,
    Bool(bool),
    F64(f64),
    U32(u32),
    U64(u64),
}

const PROVENANCE: [Col; 12] = [
    Col::Split,
    Col::User,
    Col::Session,
    Col::Context,
    Col::Shard,
    Col::FirstSeq,
    Col::LastSeq,
    Col::HlcMin,
    Col::HlcMax,
    Col::NegativeSource,
    Col::ExportedAtMs,
    Col::Format,
];

/// The columns of a format, in output order.
pub(crate) fn columns(format: ExportFormat) -> Vec<Col> {
    let own: &[Col] = match format {
        ExportFormat::Dpo => &[Col::Prompt, Col::Chosen, Col::Rejected, Col::ChosenId, Col::RejectedId],
        ExportFormat::Kto => &[Col::Prompt, Col::Completion, Col::Label, Col::ItemId],
        ExportFormat::Reward => {
            &[Col::Prompt, Col::Chosen, Col::Rejected, Col::Margin, Col::ChosenId, Col::RejectedId]
        }
    };
    own.iter().chain(PROVENANCE.iter()).copied().collect()
}

impl Col {
    pub fn name(self) -> &'static str {
        match self {
            Col::Prompt => "prompt",
            Col::Chosen => "chosen",
            Col::Rejected => "rejected",
            Col::Completion => "completion",
            Col::Label => "label",
            Col::Margin => "margin",
            Col::ChosenId => "chosen_id",
            Col::RejectedId => "rejected_id",
            Col::ItemId => "item_id",
            Col::Split => "split",
            Col::User => "user",
            Col::Session => "session",
            Col::Context => "context",
            Col::Shard => "shard",
            Col::FirstSeq => "first_seq",
            Col::LastSeq => "last_seq",
            Col::HlcMin => "hlc_min",
            Col::HlcMax => "hlc_max",
            Col::NegativeSource => "negative_source",
            Col::ExportedAtMs => "exported_at_ms",
            Col::Format => "format",
        }
    }

    pub fn ty(self) -> ColType {
        match self {
            Col::Context | Col::NegativeSource => ColType::NullableStr,
            Col::Label => ColType::Bool,
            Col::Margin => ColType::F64,
            Col::Shard => ColType::U32,
            Col::FirstSeq | Col::LastSeq | Col::HlcMin | Col::HlcMax | Col::ExportedAtMs => ColType::U64,
            _ => ColType::Str,
        }
    }

    /// The column's value in `row`; a column the row's format lacks reads as null.
    pub fn cell<'a>(self, row: &Row<'a>) -> Cell<'a> {
        let ctx = row.prov.ctx;
        match (self, row.body) {
            (Col::Prompt, _) => Cell::Str(row.prompt),
            (Col::Chosen, Body::Pair { chosen, .. }) => Cell::Str(chosen),
            (Col::Rejected, Body::Pair { rejected, .. }) => Cell::Str(rejected),
            (Col::ChosenId, Body::Pair { chosen_id, .. }) => Cell::Str(chosen_id),
            (Col::RejectedId, Body::Pair { rejected_id, .. }) => Cell::Str(rejected_id),
            (Col::Margin, Body::Pair { margin, .. }) => Cell::F64(margin),
            (Col::Completion, Body::Single { completion, .. }) => Cell::Str(completion),
            (Col::ItemId, Body::Single { item_id, .. }) => Cell::Str(item_id),
            (Col::Label, Body::Single { label, .. }) => Cell::Bool(label),
            (Col::Split, _) => Cell::Str(row.prov.split.as_str()),
            (Col::User, _) => Cell::Str(&ctx.user),
            (Col::Session, _) => Cell::Str(&ctx.session),
            (Col::Context, _) => ctx.context.as_deref().map_or(Cell::Null, Cell::Str),
            (Col::Shard, _) => Cell::U32(row.prov.shard),
            (Col::FirstSeq, _) => Cell::U64(ctx.first_seq),
            (Col::LastSeq, _) => Cell::U64(ctx.last_seq),
            (Col::HlcMin, _) => Cell::U64(ctx.hlc_min.0),
            (Col::HlcMax, _) => Cell::U64(ctx.hlc_max.0),
            (Col::NegativeSource, _) => row.negative_source.map_or(Cell::Null, |s| Cell::Str(s.as_str())),
            (Col::ExportedAtMs, _) => Cell::U64(row.prov.exported_at_ms),
            (Col::Format, _) => Cell::Str(row.prov.format.as_str()),
            _ => Cell::Null,
        }
    }
}

/// The (chosen, rejected) index pairs of a context, at most `max`: along the diagonals of
/// the grid (`i + j` = 0, 1, 2, …; within a diagonal by chosen index), so a cap keeps the
/// strongest negatives and the earliest chosen items paired with something.
pub(crate) fn pairs(chosen: usize, rejected: usize, max: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(max.min(chosen.saturating_mul(rejected)));
    if chosen == 0 || rejected == 0 {
        return out;
    }
    for diagonal in 0..chosen + rejected - 1 {
        for i in diagonal.saturating_sub(rejected - 1)..=diagonal.min(chosen - 1) {
            if out.len() == max {
                return out;
            }
            out.push((i, diagonal - i));
        }
    }
    out
}

/// What one context contributed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Emitted {
    pub rows: u64,
    pub by_source: [u64; 4],
}

/// Writes the rows of one context's selection.
pub(crate) fn emit(
    sel: &Selection<'_>,
    prov: &Provenance<'_>,
    hooks: &Hooks<'_>,
    (pairs_max, prompt_items_max): (usize, usize),
    sink: &mut dyn RowSink,
) -> Result<Emitted, ExportError> {
    let mut emitted = Emitted::default();
    let pairs_wanted = prov.format != ExportFormat::Kto;
    if sel.chosen.is_empty() && (pairs_wanted || sel.rejected.is_empty()) {
        return Ok(emitted);
    }
    if pairs_wanted && sel.rejected.is_empty() {
        return Ok(emitted);
    }
    let chosen_texts: Vec<String> = sel.chosen.iter().map(|c| hooks.item_text(c.item)).collect();
    let rejected_texts: Vec<String> = sel.rejected.iter().map(|r| hooks.item_text(&r.item)).collect();
    let prompt_for = |earlier: usize| prompt(sel, &chosen_texts, earlier, prompt_items_max, prov, hooks);
    let chosen_prompts: Vec<String> = (0..sel.chosen.len()).map(prompt_for).collect();
    let mut push = |row: Row<'_>| -> Result<(), ExportError> {
        if let Some(source) = row.negative_source {
            emitted.by_source[source as usize] += 1;
        }
        emitted.rows += 1;
        sink.push(&row)
    };
    if pairs_wanted {
        for (i, j) in pairs(sel.chosen.len(), sel.rejected.len(), pairs_max) {
            let (c, r) = (&sel.chosen[i], &sel.rejected[j]);
            let margin = (c.strength - r.strength).max(MARGIN_MIN);
            let body = Body::Pair {
                chosen: &chosen_texts[i],
                rejected: &rejected_texts[j],
                chosen_id: c.item,
                rejected_id: &r.item,
                margin,
            };
            push(Row { prompt: &chosen_prompts[i], body, negative_source: Some(r.source), prov })?;
        }
        return Ok(emitted);
    }
    for (i, c) in sel.chosen.iter().enumerate() {
        let body = Body::Single { completion: &chosen_texts[i], item_id: c.item, label: true };
        push(Row { prompt: &chosen_prompts[i], body, negative_source: None, prov })?;
    }
    for (j, r) in sel.rejected.iter().enumerate() {
        let earlier = sel.chosen.partition_point(|c| c.first_pos < r.anchor);
        let text = prompt_for(earlier);
        let body = Body::Single { completion: &rejected_texts[j], item_id: &r.item, label: false };
        push(Row { prompt: &text, body, negative_source: Some(r.source), prov })?;
    }
    Ok(emitted)
}

/// The prompt for a row whose earlier chosen items are `chosen[..earlier]` (the last
/// `prompt_items_max` of them).
fn prompt(
    sel: &Selection<'_>,
    chosen_texts: &[String],
    earlier: usize,
    prompt_items_max: usize,
    prov: &Provenance<'_>,
    hooks: &Hooks<'_>,
) -> String {
    let from = earlier.saturating_sub(prompt_items_max);
    let items: Vec<&str> = sel.chosen[from..earlier].iter().map(|c: &Chosen<'_>| c.item).collect();
    let texts: Vec<&str> = chosen_texts[from..earlier].iter().map(String::as_str).collect();
    let ctx = prov.ctx;
    hooks.prompt_builder().prompt(&PromptContext {
        user: &ctx.user,
        session: &ctx.session,
        context: ctx.context.as_deref(),
        earlier_items: &items,
        earlier_texts: &texts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_walk_diagonals_and_respect_the_cap() {
        assert_eq!(pairs(2, 3, 100), vec![(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (1, 2)]);
        assert_eq!(pairs(2, 3, 3), vec![(0, 0), (0, 1), (1, 0)]);
        assert_eq!(pairs(0, 3, 10), vec![]);
        assert_eq!(pairs(3, 1, 10), vec![(0, 0), (1, 0), (2, 0)]);
    }

    #[test]
    fn split_is_deterministic_and_follows_the_fraction() {
        let a = Split::of("alice", "s1", 0.5, 7);
        assert_eq!(a, Split::of("alice", "s1", 0.5, 7));
        assert_eq!(Split::of("alice", "s1", 0.0, 7), Split::Train);
        assert_eq!(Split::of("alice", "s1", 1.0, 7), Split::Test);
        let tests = (0..10_000).filter(|n| Split::of(&format!("u{n}"), "s", 0.2, 1) == Split::Test).count();
        assert!((1_700..2_300).contains(&tests), "{tests} of 10000 in test at fraction 0.2");
    }

    #[test]
    fn every_format_ends_with_the_provenance_columns() {
        for format in [ExportFormat::Dpo, ExportFormat::Kto, ExportFormat::Reward] {
            let cols = columns(format);
            assert_eq!(cols[0], Col::Prompt);
            assert_eq!(&cols[cols.len() - PROVENANCE.len()..], &PROVENANCE);
        }
    }
}
