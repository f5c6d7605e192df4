//! Forage: a personal discovery feed built on Tidal. It pulls candidate items from many
//! sources into a SQLite catalog, explores sources with a multi-armed bandit, ranks items,
//! and stores every impression and piece of feedback as Tidal signals.
//!
//! Layers, bottom up: [`sources`] (RSS, Atom, JSON Feed over HTTP with conditional GET,
//! files, Markdown folders, OPML), the SQLite [`catalog`] (migrations, dedup, FTS5, labels,
//! embeddings), [`embed`] (all-MiniLM-L6-v2 in candle, a lexical fallback, the background
//! worker), [`labels`] (prototypes refined by feedback, evaluation), [`bandit`] (Thompson
//! sampling over sources, linear Thompson sampling over content, impression logging, offline
//! IPS evaluation), [`taste`] (what each user was shown and liked), [`rank`], [`store`] (Tidal embedded
//! or over HTTP), [`app`] (every operation of the product), [`server`] (the JSON API and the
//! embedded web UI). The `forage` binary is the CLI over [`app`].

pub mod app;
pub mod bandit;
pub mod catalog;
pub mod embed;
pub mod labels;
pub mod rank;
pub mod server;
pub mod sources;
pub mod store;
pub mod taste;
