//! The Parquet writer: rows are gathered into Arrow column builders and written as record
//! batches of [`BATCH_ROWS`] rows through `parquet`'s `ArrowWriter` (SNAPPY), with row groups
//! of at most [`ROW_GROUP_ROWS`] rows, so memory stays bounded by one batch plus the
//! row group being encoded.
//!
//! The Arrow schema follows [`columns`]: strings are `Utf8` (`context` and
//! `negative_source` nullable), `label` is `Boolean`, `margin` `Float64`, `shard` `UInt32`
//! and the seqs, HLCs and `exported_at_ms` are `UInt64`. Nothing time-dependent goes into
//! the file's metadata, so the bytes are a pure function of the rows.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, StringBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use super::ExportError;
use super::rows::{Cell, Col, ColType, ExportFormat, Row, RowSink, columns};

/// Rows per record batch handed to the Parquet writer.
pub const BATCH_ROWS: usize = 8192;
/// Rows per Parquet row group (the writer buffers one row group's encoded pages).
pub const ROW_GROUP_ROWS: usize = 131_072;

enum Builder {
    Str(StringBuilder),
    Bool(BooleanBuilder),
    F64(Float64Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
}

impl Builder {
    fn new(ty: ColType) -> Self {
        match ty {
            ColType::Str | ColType::NullableStr => Builder::Str(StringBuilder::new()),
            ColType::Bool => Builder::Bool(BooleanBuilder::new()),
            ColType::F64 => Builder::F64(Float64Builder::new()),
            ColType::U32 => Builder::U32(UInt32Builder::new()),
            ColType::U64 => Builder::U64(UInt64Builder::new()),
        }
    }

    /// Appends a cell; a cell of another type than the column's is a bug, written as null.
    fn append(&mut self, cell: Cell<'_>) {
        match (self, cell) {
            (Builder::Str(b), Cell::Str(s)) => b.append_value(s),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::F64(b), Cell::F64(v)) => b.append_value(v),
            (Builder::U32(b), Cell::U32(v)) => b.append_value(v),
            (Builder::U64(b), Cell::U64(v)) => b.append_value(v),
            (builder, _) => builder.append_null(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Builder::Str(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::U32(b) => b.append_null(),
            Builder::U64(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::U32(b) => Arc::new(b.finish()),
            Builder::U64(b) => Arc::new(b.finish()),
        }
    }
}

/// The Arrow schema of a format.
pub(crate) fn schema(format: ExportFormat) -> SchemaRef {
    let fields: Vec<Field> = columns(format)
        .into_iter()
        .map(|col| {
            let (data_type, nullable) = match col.ty() {
                ColType::Str => (DataType::Utf8, false),
                ColType::NullableStr => (DataType::Utf8, true),
                ColType::Bool => (DataType::Boolean, false),
                ColType::F64 => (DataType::Float64, false),
                ColType::U32 => (DataType::UInt32, false),
                ColType::U64 => (DataType::UInt64, false),
            };
            Field::new(col.name(), data_type, nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// Writes rows of one format as Parquet.
pub(crate) struct ParquetSink<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    columns: Vec<Col>,
    builders: Vec<Builder>,
    rows: usize,
}

impl<W: Write + Send> ParquetSink<W> {
    pub fn new(out: W, format: ExportFormat) -> Result<Self, ExportError> {
        let schema = schema(format);
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))?;
        let columns = columns(format);
        let builders = columns.iter().map(|c| Builder::new(c.ty())).collect();
        Ok(ParquetSink { writer, schema, columns, builders, rows: 0 })
    }

    fn flush_batch(&mut self) -> Result<(), ExportError> {
        if self.rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays)?;
        self.writer.write(&batch)?;
        self.rows = 0;
        Ok(())
    }
}

impl<W: Write + Send> RowSink for ParquetSink<W> {
    fn push(&mut self, row: &Row<'_>) -> Result<(), ExportError> {
        for (col, builder) in self.columns.iter().zip(&mut self.builders) {
            builder.append(col.cell(row));
        }
        self.rows += 1;
        if self.rows >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), ExportError> {
        self.flush_batch()?;
        let mut out = self.writer.into_inner()?;
        out.flush()?;
        Ok(())
    }
}
