//! Labels in the catalog: label definitions, the user's confirmations and rejections, the
//! item-to-label assignments, and the reads and batched writes the embedding worker needs.
//!
//! Owns the SQL of the `labels`, `label_feedback` and `item_labels` tables. The similarity
//! maths lives in `crate::labels`; this module only stores its results. Invariants:
//! - a label's name is unique (a duplicate is [`CatalogError::Conflict`]), non-empty and at most
//!   [`LABEL_NAME_BYTES_MAX`] bytes; it has 1..=[`LABEL_EXAMPLES_MAX`] examples and a threshold
//!   strictly inside (0, 1). Checked on every write; `examples` is re-parsed and checked on read
//!   (a row that does not parse is corruption, never guessed at);
//! - deleting a label or an item removes its assignments and feedback (`ON DELETE CASCADE`);
//! - batched writes skip items that vanished between the read and the write (a source removed
//!   while the worker was embedding), so a concurrent delete never fails a batch;
//! - multi-row writes run in one transaction: a failed write changes nothing.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};

use super::{Catalog, CatalogError};

/// Longest label name, in bytes.
pub const LABEL_NAME_BYTES_MAX: usize = 64;
/// Most example texts of one label.
pub const LABEL_EXAMPLES_MAX: usize = 64;
/// Longest example text, in bytes.
pub const LABEL_EXAMPLE_BYTES_MAX: usize = 2048;
/// Most labels in one catalog (every item is scored against each of them).
pub const LABELS_MAX: usize = 256;
/// Most items returned by one [`Catalog::items_without_embedding`] call.
pub const PENDING_ITEMS_MAX: usize = 1024;

/// A new label as the user defines it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelSpec {
    pub name: String,
    pub examples: Vec<String>,
    /// Least cosine similarity to the label's prototype for an item to get the label, set
    /// by hand; `None` calibrates it from the examples (`crate::labels::calibrate`).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// Only the threshold decides: no nearest-label fallback for items no label reaches.
    #[serde(default)]
    pub strict: bool,
}

/// A change to a label; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelPatch {
    pub name: Option<String>,
    pub examples: Option<Vec<String>>,
    /// A threshold set by hand (the label stops being calibrated).
    pub threshold: Option<f32>,
    /// `Some(true)`: calibrate the threshold again (ignored when `threshold` is given).
    pub calibrated: Option<bool>,
    pub strict: Option<bool>,
}

/// A stored label with its feedback counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Label {
    pub id: i64,
    pub name: String,
    pub examples: Vec<String>,
    /// The threshold set by hand; for a calibrated label, the value in use is computed
    /// from the examples whenever prototypes are built (see `crate::labels::calibrate`).
    #[serde(serialize_with = "short_f32")]
    pub threshold: f32,
    /// The threshold is calibrated from the examples and the other labels.
    pub calibrated: bool,
    /// No nearest-label fallback.
    pub strict: bool,
    pub created_ms: i64,
    /// Items the user confirmed for this label.
    pub confirmed: usize,
    /// Items the user rejected for this label.
    pub rejected: usize,
}

/// Writes an f32 as the shortest decimal that reads back as it (`0.28`, not
/// `0.2800000011920929`, which a plain widening to f64 would print).
fn short_f32<S: serde::Serializer>(x: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(x.to_string().parse::<f64>().unwrap_or(f64::from(*x)))
}

/// A label assigned to an item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ItemLabel {
    pub label_id: i64,
    pub name: String,
    pub score: f32,
}

/// One embedded item ready to store: its vector and the labels it was assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedItem {
    pub item_id: String,
    pub vector: Vec<f32>,
    /// `(label_id, score)` pairs.
    pub labels: Vec<(i64, f32)>,
}

fn invalid(field: &'static str, reason: String) -> CatalogError {
    CatalogError::InvalidInput { field, reason }
}

fn check_name(name: &str) -> Result<(), CatalogError> {
    if name.trim().is_empty() || name.len() > LABEL_NAME_BYTES_MAX {
        let reason = format!("length {} not in 1..={LABEL_NAME_BYTES_MAX} (and not blank)", name.len());
        return Err(invalid("name", reason));
    }
    Ok(())
}

fn check_examples(examples: &[String]) -> Result<(), CatalogError> {
    if examples.is_empty() || examples.len() > LABEL_EXAMPLES_MAX {
        let reason = format!("{} examples, want 1..={LABEL_EXAMPLES_MAX}", examples.len());
        return Err(invalid("examples", reason));
    }
    for (index, ex) in examples.iter().enumerate() {
        if ex.trim().is_empty() || ex.len() > LABEL_EXAMPLE_BYTES_MAX {
            let reason = format!("example {index}: length {} not in 1..={LABEL_EXAMPLE_BYTES_MAX}", ex.len());
            return Err(invalid("examples", reason));
        }
    }
    Ok(())
}

fn check_threshold(threshold: f32) -> Result<(), CatalogError> {
    // The negated comparison also rejects NaN.
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(invalid("threshold", format!("{threshold} not in the open interval (0, 1)")));
    }
    Ok(())
}

/// Maps a UNIQUE violation on `labels.name` to [`CatalogError::Conflict`].
fn name_conflict(e: rusqlite::Error, name: &str) -> CatalogError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            CatalogError::Conflict { what: format!("a label named {name:?} already exists") }
        }
        _ => CatalogError::Sqlite(e),
    }
}

fn examples_json(examples: &[String]) -> Result<String, CatalogError> {
    serde_json::to_string(examples).map_err(|e| invalid("examples", e.to_string()))
}

fn label_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Label, String)> {
    let examples_text: String = r.get(2)?;
    let threshold: f64 = r.get(3)?;
    let confirmed: i64 = r.get(5)?;
    let rejected: i64 = r.get(6)?;
    let label = Label {
        id: r.get(0)?,
        name: r.get(1)?,
        examples: Vec::new(),
        threshold: threshold as f32,
        calibrated: r.get(7)?,
        strict: r.get(8)?,
        created_ms: r.get(4)?,
        confirmed: usize::try_from(confirmed).unwrap_or(0),
        rejected: usize::try_from(rejected).unwrap_or(0),
    };
    Ok((label, examples_text))
}

/// Parses and checks the stored examples (the read side of the write-side checks).
fn finish_label((mut label, examples_text): (Label, String)) -> Result<Label, CatalogError> {
    label.examples = serde_json::from_str(&examples_text)
        .map_err(|e| CatalogError::Corrupt { reason: format!("examples of label {}: {e}", label.id) })?;
    check_examples(&label.examples)
        .map_err(|e| CatalogError::Corrupt { reason: format!("label {}: stored {e}", label.id) })?;
    Ok(label)
}

const LABEL_COLUMNS: &str = "l.id, l.name, l.examples, l.threshold, l.created_ms,
    (SELECT COUNT(*) FROM label_feedback f WHERE f.label_id = l.id AND f.confirm = 1),
    (SELECT COUNT(*) FROM label_feedback f WHERE f.label_id = l.id AND f.confirm = 0),
    l.calibrated, l.strict";

/// Inserts one assignment unless the item or the label is gone.
const INSERT_ITEM_LABEL: &str = "INSERT OR REPLACE INTO item_labels (item_id, label_id, score)
     SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM items WHERE id = ?1)
         AND EXISTS (SELECT 1 FROM labels WHERE id = ?2)";

/// Stores one embedding unless the item is gone.
const INSERT_EMBEDDING: &str = "INSERT OR REPLACE INTO embeddings (item_id, model, dims, vector)
     SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM items WHERE id = ?1)";

impl Catalog {
    /// Creates a label; returns its id. A duplicate name is [`CatalogError::Conflict`].
    pub fn create_label(&self, spec: &LabelSpec, now_ms: i64) -> Result<i64, CatalogError> {
        check_name(&spec.name)?;
        check_examples(&spec.examples)?;
        if let Some(t) = spec.threshold {
            check_threshold(t)?;
        }
        let stored = spec.threshold.unwrap_or(crate::labels::THRESHOLD_DEFAULT);
        let count: i64 = self.conn.query_row("SELECT COUNT(*) FROM labels", [], |r| r.get(0))?;
        if count as usize >= LABELS_MAX {
            return Err(invalid("labels", format!("already {count} labels, at most {LABELS_MAX}")));
        }
        self.conn
            .execute(
                "INSERT INTO labels (name, examples, threshold, created_ms, calibrated, strict)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    spec.name,
                    examples_json(&spec.examples)?,
                    f64::from(stored),
                    now_ms,
                    spec.threshold.is_none(),
                    spec.strict
                ],
            )
            .map_err(|e| name_conflict(e, &spec.name))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Changes a label's name, examples or threshold. Assignments are not recomputed here
    /// (`crate::labels::relabel_all` does that).
    pub fn update_label(&mut self, id: i64, patch: &LabelPatch) -> Result<(), CatalogError> {
        if let Some(name) = &patch.name {
            check_name(name)?;
        }
        if let Some(examples) = &patch.examples {
            check_examples(examples)?;
        }
        if let Some(threshold) = patch.threshold {
            check_threshold(threshold)?;
        }
        let examples = patch.examples.as_deref().map(examples_json).transpose()?;
        let n = self
            .conn
            .execute(
                "UPDATE labels SET name = COALESCE(?2, name), examples = COALESCE(?3, examples),
                     threshold = COALESCE(?4, threshold),
                     calibrated = CASE WHEN ?4 IS NOT NULL THEN 0 ELSE COALESCE(?5, calibrated) END,
                     strict = COALESCE(?6, strict)
                 WHERE id = ?1",
                params![
                    id,
                    patch.name,
                    examples,
                    patch.threshold.map(f64::from),
                    patch.calibrated,
                    patch.strict
                ],
            )
            .map_err(|e| name_conflict(e, patch.name.as_deref().unwrap_or("")))?;
        if n == 0 { Err(CatalogError::NoSuchLabel { id }) } else { Ok(()) }
    }

    /// Deletes a label with its assignments and feedback. Returns whether it existed.
    pub fn delete_label(&self, id: i64) -> Result<bool, CatalogError> {
        Ok(self.conn.execute("DELETE FROM labels WHERE id = ?1", [id])? > 0)
    }

    /// All labels, oldest first.
    pub fn list_labels(&self) -> Result<Vec<Label>, CatalogError> {
        let sql = format!("SELECT {LABEL_COLUMNS} FROM labels l ORDER BY l.id");
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], label_from_row)?;
        rows.map(|r| finish_label(r?)).collect()
    }

    /// One label by id.
    pub fn get_label(&self, id: i64) -> Result<Option<Label>, CatalogError> {
        let sql = format!("SELECT {LABEL_COLUMNS} FROM labels l WHERE l.id = ?1");
        self.conn.query_row(&sql, [id], label_from_row).optional()?.map(finish_label).transpose()
    }

    /// Records that the user confirmed (`true`) or rejected (`false`) `item_id` for a label,
    /// replacing an earlier answer.
    pub fn set_label_feedback(
        &self,
        label_id: i64,
        item_id: &str,
        confirm: bool,
        now_ms: i64,
    ) -> Result<(), CatalogError> {
        self.require_label_and_item(label_id, item_id)?;
        self.conn.execute(
            "INSERT OR REPLACE INTO label_feedback (label_id, item_id, confirm, at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            params![label_id, item_id, confirm, now_ms],
        )?;
        Ok(())
    }

    /// The items the user confirmed and rejected for a label, oldest answer first.
    pub fn label_feedback(&self, label_id: i64) -> Result<(Vec<String>, Vec<String>), CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT item_id, confirm FROM label_feedback WHERE label_id = ?1 ORDER BY at_ms, item_id",
        )?;
        let rows = stmt.query_map([label_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))?;
        let (mut confirmed, mut rejected) = (Vec::new(), Vec::new());
        for row in rows {
            let (id, confirm) = row?;
            if confirm { confirmed.push(id) } else { rejected.push(id) }
        }
        Ok((confirmed, rejected))
    }

    /// Replaces every assignment of one label, in one transaction. Items that no longer exist
    /// are skipped.
    pub fn replace_label_assignments(
        &mut self,
        label_id: i64,
        assignments: &[(String, f32)],
    ) -> Result<(), CatalogError> {
        let tx = self.conn.transaction()?;
        let exists: Option<i64> =
            tx.query_row("SELECT 1 FROM labels WHERE id = ?1", [label_id], |r| r.get(0)).optional()?;
        if exists.is_none() {
            return Err(CatalogError::NoSuchLabel { id: label_id });
        }
        tx.execute("DELETE FROM item_labels WHERE label_id = ?1", [label_id])?;
        {
            let mut stmt = tx.prepare(INSERT_ITEM_LABEL)?;
            for (item_id, score) in assignments {
                stmt.execute(params![item_id, label_id, f64::from(*score)])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds (or re-scores) labels of one item; other labels of the item stay.
    pub fn add_item_labels(&mut self, item_id: &str, labels: &[(i64, f32)]) -> Result<(), CatalogError> {
        let tx = self.conn.transaction()?;
        insert_item_labels(&tx, item_id, labels)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes one label from one item. Returns whether it had it.
    pub fn remove_item_label(&self, item_id: &str, label_id: i64) -> Result<bool, CatalogError> {
        let n = self.conn.execute(
            "DELETE FROM item_labels WHERE item_id = ?1 AND label_id = ?2",
            params![item_id, label_id],
        )?;
        Ok(n > 0)
    }

    /// The labels of an item, best score first.
    pub fn item_labels(&self, item_id: &str) -> Result<Vec<ItemLabel>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT il.label_id, l.name, il.score FROM item_labels il JOIN labels l ON l.id = il.label_id
             WHERE il.item_id = ?1 ORDER BY il.score DESC, l.name",
        )?;
        let rows = stmt.query_map([item_id], |r| {
            Ok(ItemLabel { label_id: r.get(0)?, name: r.get(1)?, score: r.get::<_, f64>(2)? as f32 })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many items carry each label (labels with no items are absent).
    pub fn label_item_counts(&self) -> Result<HashMap<i64, usize>, CatalogError> {
        let mut stmt = self.conn.prepare("SELECT label_id, COUNT(*) FROM item_labels GROUP BY label_id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, n) = row?;
            out.insert(id, usize::try_from(n).unwrap_or(0));
        }
        Ok(out)
    }

    /// Up to `limit` (at most [`PENDING_ITEMS_MAX`]) items after insertion order `after_seq`
    /// with no embedding for `model`, oldest first, as `(seq, id, text)` where text is
    /// `title + ". " + summary` (just the title when the summary is empty). A pass passes the
    /// last seq it saw, so each call starts where the previous one stopped (keyset paging:
    /// a pass over n items reads the table once, not n / limit times).
    pub fn items_without_embedding(
        &self,
        model: &str,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String, String)>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT i.seq, i.id, i.title, i.summary FROM items i
             WHERE i.seq > ?2
               AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.item_id = i.id AND e.model = ?1)
             ORDER BY i.seq LIMIT ?3",
        )?;
        let limit = limit.min(PENDING_ITEMS_MAX) as i64;
        let rows = stmt.query_map(params![model, after_seq, limit], |r| {
            let (seq, id, title, summary): (i64, String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            let text = if summary.is_empty() { title } else { format!("{title}. {summary}") };
            Ok((seq, id, text))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many items have no embedding for `model`.
    pub fn count_items_without_embedding(&self, model: &str) -> Result<usize, CatalogError> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM items i
             WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.item_id = i.id AND e.model = ?1)",
            [model],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Every stored embedding for `model`, in item order. Memory grows with the catalog
    /// (about 1.5 KiB per item at 384 dims); it is meant for relabelling.
    pub fn all_embeddings(&self, model: &str) -> Result<Vec<(String, Vec<f32>)>, CatalogError> {
        let mut out = Vec::new();
        self.for_each_embedding(model, &mut |id, v| out.push((id, v)))?;
        Ok(out)
    }

    /// Hands every stored embedding for `model` to `f`, in item order, one row at a time
    /// (for a caller that needs the order; [`Catalog::scan_embeddings`] is the fast pass).
    pub fn for_each_embedding(
        &self,
        model: &str,
        f: &mut dyn FnMut(String, Vec<f32>),
    ) -> Result<(), CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT e.item_id, e.dims, e.vector FROM embeddings e JOIN items i ON i.id = e.item_id
             WHERE e.model = ?1 ORDER BY i.seq",
        )?;
        let mut rows = stmt.query([model])?;
        while let Some(r) = rows.next()? {
            let (item_id, dims, blob) =
                (r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?);
            let (item_id, vector) = decode_vector(&item_id, dims, &blob)?;
            f(item_id, vector);
        }
        Ok(())
    }

    /// Hands every stored embedding for `model` to `f` in storage order, one row at a time: one
    /// sequential pass over the table. [`Catalog::for_each_embedding`] walks the items in
    /// order and looks each embedding up instead: two B-tree searches per row in random
    /// order, which at a million items (1.5 GB of vectors) took most of a minute. The
    /// candidate index places each vector by its item, so it needs no order.
    pub fn scan_embeddings(
        &self,
        model: &str,
        f: &mut dyn FnMut(String, Vec<f32>),
    ) -> Result<(), CatalogError> {
        let mut stmt = self.conn.prepare("SELECT item_id, dims, vector FROM embeddings WHERE model = ?1")?;
        let mut rows = stmt.query([model])?;
        while let Some(r) = rows.next()? {
            let (item_id, dims, blob) =
                (r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Vec<u8>>(2)?);
            let (item_id, vector) = decode_vector(&item_id, dims, &blob)?;
            f(item_id, vector);
        }
        Ok(())
    }

    /// Stores a batch of embeddings for `model` and the labels assigned from them, in one
    /// transaction. Items deleted meanwhile are skipped. Returns how many embeddings were stored.
    pub fn put_embeddings_with_labels(
        &mut self,
        model: &str,
        batch: &[EmbeddedItem],
    ) -> Result<usize, CatalogError> {
        for item in batch {
            if item.vector.is_empty() || item.vector.len() > super::items::EMBEDDING_DIMS_MAX {
                let reason = format!("{}: {} dims", item.item_id, item.vector.len());
                return Err(invalid("vector", reason));
            }
        }
        let tx = self.conn.transaction()?;
        let mut stored = 0;
        {
            let mut stmt = tx.prepare(INSERT_EMBEDDING)?;
            for item in batch {
                let blob: Vec<u8> = item.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                stored += stmt.execute(params![item.item_id, model, item.vector.len() as i64, blob])?;
            }
        }
        for item in batch {
            insert_item_labels(&tx, &item.item_id, &item.labels)?;
        }
        tx.commit()?;
        Ok(stored)
    }

    fn require_label_and_item(&self, label_id: i64, item_id: &str) -> Result<(), CatalogError> {
        let label: Option<i64> =
            self.conn.query_row("SELECT 1 FROM labels WHERE id = ?1", [label_id], |r| r.get(0)).optional()?;
        if label.is_none() {
            return Err(CatalogError::NoSuchLabel { id: label_id });
        }
        let item: Option<i64> =
            self.conn.query_row("SELECT 1 FROM items WHERE id = ?1", [item_id], |r| r.get(0)).optional()?;
        if item.is_none() {
            return Err(CatalogError::NoSuchItem { id: item_id.to_owned() });
        }
        Ok(())
    }
}

fn insert_item_labels(
    tx: &Transaction<'_>,
    item_id: &str,
    labels: &[(i64, f32)],
) -> Result<(), CatalogError> {
    let mut stmt = tx.prepare_cached(INSERT_ITEM_LABEL)?;
    for (label_id, score) in labels {
        stmt.execute(params![item_id, label_id, f64::from(*score)])?;
    }
    Ok(())
}

/// Decodes a stored little-endian f32 vector; a length that disagrees with `dims` is corruption.
pub(crate) fn decode_vector(
    item_id: &str,
    dims: i64,
    blob: &[u8],
) -> Result<(String, Vec<f32>), CatalogError> {
    if dims < 0 || blob.len() != dims as usize * 4 {
        let reason = format!("embedding of {item_id}: {} bytes for {dims} dims", blob.len());
        return Err(CatalogError::Corrupt { reason });
    }
    // chunks_exact(4) yields 4-byte slices only, so indexing 0..4 cannot fail.
    let v = blob.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((item_id.to_owned(), v))
}

#[cfg(test)]
#[path = "labels_tests.rs"]
mod tests;
