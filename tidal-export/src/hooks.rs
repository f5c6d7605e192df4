//! The caller-supplied parts of an export: item texts, prompt texts, mined negatives and
//! progress reports, bundled in [`Hooks`].
//!
//! Every hook is optional. Without an [`ItemTextProvider`] an item's text is its id; without
//! a [`PromptBuilder`] prompts come from [`DefaultPrompt`]; without [`MinedNegatives`] no
//! negative has the source `mined`. Hooks are called from the exporting thread only, in a
//! deterministic order, so a deterministic hook keeps the export byte-identical across runs.

/// Gives the text a model sees for an item: Forage supplies titles and summaries.
pub trait ItemTextProvider {
    /// The item's text, or `None` to fall back to the item id.
    fn text(&self, item: &str) -> Option<String>;
}

/// What a prompt is built from: who, where, and what they chose earlier in the context.
#[derive(Clone, Copy, Debug)]
pub struct PromptContext<'a> {
    pub user: &'a str,
    /// The session id, `"-"` for signals without one.
    pub session: &'a str,
    /// The context id when contexts are keyed by it.
    pub context: Option<&'a str>,
    /// Ids of the items chosen earlier in this context (oldest first), at most
    /// `ExportOptions::prompt_items_max`, the most recent ones.
    pub earlier_items: &'a [&'a str],
    /// Their texts, in the same order.
    pub earlier_texts: &'a [&'a str],
}

/// Builds the prompt of a row.
pub trait PromptBuilder {
    fn prompt(&self, context: &PromptContext<'_>) -> String;
}

/// The default prompt: names the user and lists the texts of the items they chose earlier
/// in the same context, or says there is no history.
///
/// `User alice. Chosen earlier in this session: Rust 1.90 released; Tidal WAL notes.`
/// or `User alice. No history.`
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPrompt;

impl PromptBuilder for DefaultPrompt {
    fn prompt(&self, context: &PromptContext<'_>) -> String {
        if context.earlier_texts.is_empty() {
            return format!("User {}. No history.", context.user);
        }
        format!(
            "User {}. Chosen earlier in this session: {}.",
            context.user,
            context.earlier_texts.join("; ")
        )
    }
}

/// A source of mined negatives, for example an embedding index (Forage uses it).
///
/// A mined negative is an item the user never engaged with that is close to one the user
/// chose: say, items whose cosine similarity to a chosen item lies within a band
/// (similar enough to be a hard case, not so similar that it is a near-duplicate), keeping
/// a margin below the chosen item's own score.
pub trait MinedNegatives {
    /// Negatives for a context of `user` whose chosen items are `chosen` (ids, in order).
    /// `engaged(item)` tells whether the user ever had a positive or negative signal
    /// (explicit or implicit) on `item`, or any signal on it in this context; the export
    /// drops such items anyway, and also drops
    /// duplicates, chosen items and items already rejected. Results are used in the order
    /// returned, up to `ExportOptions::mined_negatives_per_context_max`.
    fn mine(&self, user: &str, chosen: &[&str], engaged: &dyn Fn(&str) -> bool) -> Vec<String>;
}

/// How far an export has come; reported every [`PROGRESS_EVERY_SIGNALS`] signals and at
/// the end of every pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExportProgress {
    /// 1 (collecting negatives) or 2 (writing rows).
    pub pass: u8,
    pub shard: u32,
    pub shards: u32,
    /// Signals read so far, both passes and all shards together.
    pub signals_read: u64,
}

/// Signals read between two progress reports.
pub const PROGRESS_EVERY_SIGNALS: u64 = 65_536;

/// The optional hooks of an export.
#[derive(Clone, Copy, Default)]
pub struct Hooks<'a> {
    pub item_text: Option<&'a dyn ItemTextProvider>,
    pub prompt: Option<&'a dyn PromptBuilder>,
    pub mined: Option<&'a dyn MinedNegatives>,
    pub progress: Option<&'a dyn Fn(ExportProgress)>,
}

impl std::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("item_text", &self.item_text.is_some())
            .field("prompt", &self.prompt.is_some())
            .field("mined", &self.mined.is_some())
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl<'a> Hooks<'a> {
    pub(crate) fn item_text(&self, item: &str) -> String {
        self.item_text.and_then(|p| p.text(item)).unwrap_or_else(|| item.to_owned())
    }

    pub(crate) fn prompt_builder(&self) -> &'a dyn PromptBuilder {
        self.prompt.unwrap_or(&DefaultPrompt)
    }
}
