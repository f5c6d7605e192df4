//! Forage: a personal discovery feed built on Tidal. It pulls candidate items from many
//! sources into a SQLite catalog, explores sources with a multi-armed bandit, ranks items,
//! and stores every impression and piece of feedback as Tidal signals.
//!
//! Built so far: [`sources`] (RSS, Atom, JSON Feed over HTTP with conditional GET, files,
//! Markdown folders, OPML), the SQLite [`catalog`] (migrations, dedup, FTS5), the Thompson
//! sampling [`bandit`] with impression logging and offline IPS evaluation, [`rank`], and
//! [`embed`] (all-MiniLM-L6-v2 in candle, with a lexical fallback).
//! Next (see the open issue): labels, the HTTP API, the web UI and the CLI.

pub mod app;
pub mod bandit;
pub mod catalog;
pub mod embed;
pub mod labels;
pub mod rank;
pub mod server;
pub mod sources;
pub mod store;
