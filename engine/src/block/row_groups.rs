//! One Parquet file filled several row groups at a time: one in progress per slice and part
//! (non-root rows, or roots), each closed into the file when full.
//!
//! Why not `ArrowWriter`: it has one row group in progress, so the root spans a block keeps
//! apart had to wait (in memory or spilled as Arrow IPC) until every other row was written, and
//! a merge cut into time slices would need a pass per slice. Parquet's column writers encode a
//! row group on their own and splice it into the file when it closes, so every slice fills its
//! row groups as the traces arrive in trace-ID order: rows are encoded once, in one pass. What
//! is held is the encoded pages of the row groups in progress (at most [`super::slices`]'
//! slice cap times two), not the block.
//!
//! Row groups of different slices interleave in the file; each slice's row groups, in file
//! order, are in trace-ID order, and `meta.json` lists them per slice.

use std::io::Write;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

use super::trace_cuts::{self, TraceCuts};
use crate::error::{EngineError, Result};
use crate::schema::col;

/// Most rows in a row group of root spans.
///
/// Root row groups stay small: a trace lookup decodes the dictionary page of every column of
/// the row group holding its root, and over the 18k roots of an hour's merged block those pages
/// were 1.1 MB (97 KB over a 35k-span block's 1.5k roots): 3× slower lookups.
pub const ROOT_ROW_GROUP_ROWS: usize = 4096;

/// A row group being filled.
struct Filling {
    writers: Vec<ArrowColumnWriter>,
    rows: usize,
    /// The trace-ID bucket of each row (see [`TraceCuts`]).
    buckets: Vec<u16>,
}

/// Rows for the file: of slice `slice`, roots or not, in trace-ID order after the slice's
/// earlier rows of the same part.
pub struct Rows {
    /// Which slice.
    pub slice: usize,
    /// Root spans (`nestedSetParent < 0`) or not.
    pub roots: bool,
    /// The rows, in the file's schema.
    pub batch: RecordBatch,
}

/// The file written: its bytes went to the writer; its row groups per slice.
pub struct Written {
    /// Row groups in the file.
    pub row_groups: u64,
    /// Per slice, its row groups in file order (empty for a slice that got no rows).
    pub slices: Vec<Vec<u32>>,
}

/// Fills the row groups of one file.
pub struct RowGroups<W: Write + Send> {
    file: SerializedFileWriter<W>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// Rows in a full row group of non-root spans.
    group_rows: usize,
    /// Per slice, the row group in progress of its non-root rows and of its roots.
    filling: Vec<[Option<Filling>; 2]>,
    slices: Vec<Vec<u32>>,
    /// Rows per row group closed, and the buckets of their rows, in file order.
    closed_rows: Vec<usize>,
    closed_buckets: Vec<u16>,
}

impl<W: Write + Send> RowGroups<W> {
    /// A file of `schema` written to `out`, non-root row groups of `group_rows` rows.
    pub fn new(
        out: W,
        schema: SchemaRef,
        props: WriterProperties,
        group_rows: usize,
    ) -> Result<Self> {
        let (file, factory) =
            ArrowWriter::try_new(out, schema.clone(), Some(props))?.into_serialized_writer()?;
        Ok(Self {
            file,
            factory,
            schema,
            group_rows: group_rows.max(1),
            filling: Vec::new(),
            slices: Vec::new(),
            closed_rows: Vec::new(),
            closed_buckets: Vec::new(),
        })
    }

    /// Adds rows, closing the row groups they fill.
    pub fn write(&mut self, rows: Rows) -> Result<()> {
        let Rows {
            slice,
            roots,
            batch,
        } = rows;
        if self.filling.len() <= slice {
            self.filling.resize_with(slice + 1, Default::default);
            self.slices.resize_with(slice + 1, Vec::new);
        }
        let full = if roots {
            ROOT_ROW_GROUP_ROWS.min(self.group_rows)
        } else {
            self.group_rows
        };
        let mut at = 0;
        while at < batch.num_rows() {
            let filling = match &mut self.filling[slice][usize::from(roots)] {
                Some(f) => f,
                empty => empty.insert(Filling {
                    writers: self.factory.create_column_writers(self.closed_rows.len())?,
                    rows: 0,
                    buckets: Vec::new(),
                }),
            };
            let len = (full - filling.rows).min(batch.num_rows() - at);
            let part = batch.slice(at, len);
            let mut writers = filling.writers.iter_mut();
            for (field, column) in self.schema.fields().iter().zip(part.columns()) {
                for leaf in compute_leaves(field, column)? {
                    writers
                        .next()
                        .ok_or_else(|| {
                            EngineError::Internal("rows with more columns than the file".into())
                        })?
                        .write(&leaf)?;
                }
            }
            trace_buckets(&part, &mut filling.buckets);
            filling.rows += len;
            at += len;
            if filling.rows == full {
                self.close(slice, roots)?;
            }
        }
        Ok(())
    }

    /// Closes the row group in progress of `slice`'s part into the file.
    fn close(&mut self, slice: usize, roots: bool) -> Result<()> {
        let Some(f) = self.filling[slice][usize::from(roots)].take() else {
            return Ok(());
        };
        let index = u32::try_from(self.file.flushed_row_groups().len())
            .map_err(|_| EngineError::Internal("too many row groups".into()))?;
        let mut group = self.file.next_row_group()?;
        for w in f.writers {
            w.close()?.append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.slices[slice].push(index);
        self.closed_rows.push(f.rows);
        self.closed_buckets.extend(f.buckets);
        Ok(())
    }

    /// Closes every row group in progress (each slice's non-root rows, then its roots) and the
    /// file, with the trace-ID cuts of its row groups in the footer.
    pub fn finish(mut self) -> Result<Written> {
        for slice in 0..self.filling.len() {
            self.close(slice, false)?;
            self.close(slice, true)?;
        }
        if let Some(cuts) = TraceCuts::from_buckets(&self.closed_rows, &self.closed_buckets) {
            self.file.append_key_value_metadata(KeyValue::new(
                trace_cuts::KEY.to_string(),
                cuts.encode(),
            ));
        }
        let row_groups = self.file.flushed_row_groups().len() as u64;
        self.file.close()?;
        Ok(Written {
            row_groups,
            slices: self.slices,
        })
    }
}

/// Appends the trace-ID bucket of every row of `batch` (see [`TraceCuts`]).
fn trace_buckets(batch: &RecordBatch, out: &mut Vec<u16>) {
    let ids = batch.column_by_name(col::TRACE_ID).and_then(|a| {
        a.as_any()
            .downcast_ref::<arrow::array::FixedSizeBinaryArray>()
    });
    // Without IDs the counts do not add up and the block simply gets no cuts.
    if let Some(ids) = ids {
        out.extend(ids.iter().map(|id| id.map_or(0, trace_cuts::bucket)));
    }
}
