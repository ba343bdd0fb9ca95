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

/// Most bytes held by all row groups in progress together: past it, the largest is closed
/// early (a smaller row group; nothing else changes).
///
/// A row group in progress holds its encoded pages plus, per column, the page being filled
/// and the dictionary being built, and row groups are cut by rows: a merge fills up to 32 at
/// once (roots and the rest of 16 slices), so spans with large attributes could make them
/// hold GiBs. Ordinary spans stay far below (the writers of a merge of a 10M-span window held
/// ~0.2 GiB and never reached this bound).
pub const IN_PROGRESS_BYTES: usize = 384 << 20;

/// A row group being filled.
struct Filling {
    writers: Vec<ArrowColumnWriter>,
    rows: usize,
    /// The trace-ID bucket of each row (see [`TraceCuts`]).
    buckets: Vec<u16>,
    /// What its writers held after its last write.
    bytes: usize,
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
    /// Row groups closed before they were full, to keep to the memory budget.
    pub closed_early: u64,
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
    /// Most bytes the row groups in progress may hold together.
    budget: usize,
    /// Row groups closed early for the budget.
    closed_early: u64,
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
            budget: IN_PROGRESS_BYTES,
            closed_early: 0,
        })
    }

    /// The same with at most `bytes` in the row groups in progress together.
    pub fn with_budget(mut self, bytes: usize) -> Self {
        self.budget = bytes;
        self
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
                    bytes: 0,
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
            filling.bytes = filling.writers.iter().map(|w| w.memory_size()).sum();
            at += len;
            if filling.rows == full {
                self.close(slice, roots)?;
            }
        }
        self.keep_to_budget()
    }

    /// Closes the largest row groups in progress while together they hold more than the
    /// budget.
    fn keep_to_budget(&mut self) -> Result<()> {
        loop {
            let mut held = 0;
            let mut largest: Option<(usize, usize, bool)> = None;
            for (slice, parts) in self.filling.iter().enumerate() {
                for (roots, f) in [(false, &parts[0]), (true, &parts[1])] {
                    let Some(f) = f else { continue };
                    held += f.bytes;
                    if largest.is_none_or(|(bytes, ..)| f.bytes > bytes) {
                        largest = Some((f.bytes, slice, roots));
                    }
                }
            }
            match largest {
                Some((_, slice, roots)) if held > self.budget => {
                    self.close(slice, roots)?;
                    self.closed_early += 1;
                }
                _ => return Ok(()),
            }
        }
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
            closed_early: self.closed_early,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, FixedSizeBinaryArray, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    /// `n` rows of trace IDs `first..first + n`, each with a 1 KiB name.
    fn rows(schema: &SchemaRef, slice: usize, first: u8, n: u8) -> Rows {
        let ids: Vec<[u8; 16]> = (first..first + n).map(|i| [i; 16]).collect();
        let names: Vec<String> = (first..first + n)
            .map(|i| format!("{i:04}{}", "x".repeat(1020)))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(FixedSizeBinaryArray::try_from_iter(ids.into_iter()).expect("ids")),
                Arc::new(StringArray::from(names)),
            ],
        )
        .expect("batch");
        Rows {
            slice,
            roots: false,
            batch,
        }
    }

    /// Writes two slices in alternating batches within `budget`; returns what was written
    /// and, per slice, the names read back from its row groups in order.
    fn write(budget: usize) -> (Written, Vec<Vec<String>>) {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new(col::TRACE_ID, DataType::FixedSizeBinary(16), false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let mut out = Vec::new();
        let mut groups = RowGroups::new(&mut out, schema.clone(), WriterProperties::default(), 64)
            .expect("writer")
            .with_budget(budget);
        for (slice, first) in [(0, 0), (1, 100), (0, 10), (1, 110), (0, 20)] {
            groups
                .write(rows(&schema, slice, first, 10))
                .expect("write");
        }
        let written = groups.finish().expect("finish");
        let file = Bytes::from(out);
        let per_slice = written
            .slices
            .iter()
            .map(|groups| {
                let reader = ParquetRecordBatchReaderBuilder::try_new(file.clone())
                    .expect("footer")
                    .with_row_groups(groups.iter().map(|&g| g as usize).collect())
                    .build()
                    .expect("reader");
                let mut names = Vec::new();
                for b in reader {
                    let b = b.expect("batch");
                    let col = b
                        .column(1)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .expect("names");
                    names.extend((0..col.len()).map(|i| col.value(i)[..4].to_string()));
                }
                names
            })
            .collect();
        (written, per_slice)
    }

    #[test]
    fn row_groups_over_the_memory_budget_are_closed_early_and_the_rows_stay_in_order() {
        let (roomy, expected) = write(IN_PROGRESS_BYTES);
        assert_eq!(roomy.closed_early, 0);
        // 64 rows a group: each slice's rows fit in one.
        assert_eq!(roomy.row_groups, 2);
        let slice0: Vec<String> = (0..30).map(|i| format!("{i:04}")).collect();
        let slice1: Vec<String> = (100..120).map(|i| format!("{i:04}")).collect();
        assert_eq!(expected, [slice0, slice1]);
        // A budget below one batch's pages: every write closes what it filled.
        let (tight, got) = write(1);
        assert_eq!(tight.closed_early, 5);
        assert_eq!(tight.row_groups, 5);
        assert_eq!(tight.slices, [vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(got, expected);
    }
}
