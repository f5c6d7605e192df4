//! The JSON Lines writer: one JSON object per row, keys in column order, written as rows
//! arrive through a buffered writer (nothing is held back but the buffer).
//!
//! Nulls are written as `null`; numbers as JSON numbers (`u64` exactly, `f64` in the
//! shortest form that round-trips), so the bytes are a pure function of the rows.

use std::io::Write;

use super::ExportError;
use super::rows::{Cell, Col, ExportFormat, Row, RowSink, columns};

/// Writes rows of one format as JSON Lines.
pub(crate) struct JsonlSink<W: Write> {
    out: W,
    columns: Vec<Col>,
    /// The encoded `"name":` of every column, with the separator that precedes it.
    keys: Vec<String>,
}

impl<W: Write> JsonlSink<W> {
    pub fn new(out: W, format: ExportFormat) -> Self {
        let columns = columns(format);
        let keys = columns
            .iter()
            .enumerate()
            .map(|(i, col)| format!("{}\"{}\":", if i == 0 { "{" } else { "," }, col.name()))
            .collect();
        JsonlSink { out, columns, keys }
    }

    fn write_row(&mut self, row: &Row<'_>) -> Result<(), ExportError> {
        for (col, key) in self.columns.iter().zip(&self.keys) {
            self.out.write_all(key.as_bytes())?;
            match col.cell(row) {
                Cell::Str(s) => serde_json::to_writer(&mut self.out, s).map_err(std::io::Error::from)?,
                Cell::Null => self.out.write_all(b"null")?,
                Cell::Bool(b) => self.out.write_all(if b { b"true" } else { b"false" })?,
                Cell::F64(f) => serde_json::to_writer(&mut self.out, &f).map_err(std::io::Error::from)?,
                Cell::U32(n) => write!(self.out, "{n}")?,
                Cell::U64(n) => write!(self.out, "{n}")?,
            }
        }
        self.out.write_all(b"}\n")?;
        Ok(())
    }
}

impl<W: Write> RowSink for JsonlSink<W> {
    fn push(&mut self, row: &Row<'_>) -> Result<(), ExportError> {
        self.write_row(row)
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.out.flush()?;
        Ok(())
    }
}
