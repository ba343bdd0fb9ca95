//! Compaction: several blocks of a tenant merged into one, streamed.
//!
//! Why: a busy tenant gets about 288 blocks a day at the default `max_block_duration` of 5 m,
//! every query opens each of them, and a trace whose spans arrived minutes apart is split across
//! several. Merging a time window's blocks brings a day to a few blocks and makes split traces
//! whole again.
//!
//! How: every input block is two runs sorted by trace ID (its row groups of non-root spans, then
//! its row groups of root spans; blocks from before roots were kept apart are one run). The
//! runs of all inputs are merged by trace ID a batch at a time; each trace's rows, from every
//! run, are turned back into spans (the round trip is exact, docs/schema.md), a span received
//! twice (same ID, parent, kind, start and end) is kept once, and the spans go to a
//! [`BlockEncoder`], which numbers nested sets and derives trace-level columns over the whole
//! trace, chooses hot columns from the merged data and writes everything a block has (trace-ID
//! order, roots apart, bloom, trace-ID cuts, recorded keys and values). Memory is one batch per
//! run plus the encoder's batch, whatever the inputs' size.
//!
//! Visibility: the merged block's `meta.json` lists its inputs (`compactedFrom`), and the
//! catalog hides every block a visible block lists. Writing that one object therefore retires
//! the inputs at the same instant the merged block appears: a crash before it leaves the
//! inputs, after it the merged block; a reader never sees both or neither. Inputs are deleted
//! later, once queries that listed them are done (`compacted_block_retention`).

use std::sync::Arc;

use arrow::array::{Array, FixedSizeBinaryArray, RecordBatch};
use futures::StreamExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::file::statistics::Statistics;

use super::meta::BlockMeta;
use super::object_reader::ObjectReader;
use super::reader::{object_reader, parquet_err};
use super::writer::{BlockEncoder, BlockWriteOptions, EncodedBlock};
use crate::catalog::Catalog;
use crate::convert::flatten::{FlatSpan, flatten};
use crate::convert::from_arrow::batches_to_resource_spans;
use crate::error::{EngineError, Result};
use crate::schema::col;

/// Rows read from a run at a time.
const RUN_BATCH_ROWS: usize = 1024;
/// Spans handed to the encoder at a time.
const ENCODE_BATCH_SPANS: usize = 8192;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Compacted {
    /// Spans read from the inputs.
    pub spans_in: u64,
    /// Spans written (fewer when some were received twice).
    pub spans_out: u64,
    /// Traces written.
    pub traces: u64,
    /// Bytes read from the inputs' `data.parquet`.
    pub bytes_in: u64,
    /// Bytes of the merged block's `data.parquet`.
    pub bytes_out: u64,
}

/// One sorted run of one input block, read a batch at a time.
struct Run {
    stream: ParquetRecordBatchStream<ObjectReader>,
    meta: Arc<BlockMeta>,
    batch: Option<RecordBatch>,
    ids: Option<FixedSizeBinaryArray>,
    row: usize,
}

impl Run {
    /// Moves to the next non-empty batch; `false` at the end.
    async fn refill(&mut self) -> Result<bool> {
        self.batch = None;
        self.ids = None;
        self.row = 0;
        while let Some(b) = self.stream.next().await {
            let b = b.map_err(|e| parquet_err(&self.meta, e))?;
            if b.num_rows() == 0 {
                continue;
            }
            let ids = b
                .column_by_name(col::TRACE_ID)
                .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
                .cloned()
                .ok_or_else(|| EngineError::corrupt("data.parquet", "no trace_id column"))?;
            self.ids = Some(ids);
            self.batch = Some(b);
            return Ok(true);
        }
        Ok(false)
    }

    /// The trace ID at the current row.
    fn current(&self) -> Option<&[u8]> {
        self.ids.as_ref().map(|ids| ids.value(self.row))
    }

    /// Takes the current batch's rows of trace `id`, moving on (to the next batch too, where
    /// the trace continues there).
    async fn take(&mut self, id: &[u8], out: &mut Vec<RecordBatch>) -> Result<()> {
        while self.current() == Some(id) {
            let (Some(b), Some(ids)) = (self.batch.as_ref(), self.ids.as_ref()) else {
                break;
            };
            let start = self.row;
            while self.row < b.num_rows() && ids.value(self.row) == id {
                self.row += 1;
            }
            out.push(b.slice(start, self.row - start));
            if self.row == b.num_rows() {
                self.refill().await?;
            }
        }
        Ok(())
    }
}

/// The row groups of `meta`'s block holding only root spans (written last, apart), found by
/// their `nested_set_parent` statistics; the rest are the other run.
fn runs_of(footer: &parquet::arrow::arrow_reader::ArrowReaderMetadata) -> Result<[Vec<usize>; 2]> {
    let md = footer.metadata();
    let leaf = super::reader::leaf(md, col::NESTED_SET_PARENT)?;
    let (mut rest, mut roots) = (Vec::new(), Vec::new());
    for (i, rg) in md.row_groups().iter().enumerate() {
        let only_roots = match rg.column(leaf).statistics() {
            Some(Statistics::Int32(s)) => s.max_opt().is_some_and(|m| *m < 0),
            _ => false,
        };
        if only_roots {
            roots.push(i);
        } else {
            rest.push(i);
        }
    }
    Ok([rest, roots])
}

/// Merges `inputs` (blocks of one tenant) into one block, written and published through
/// `catalog`, retiring the inputs; see the module docs.
pub async fn compact(
    catalog: &Catalog,
    inputs: &[Arc<BlockMeta>],
    opts: &BlockWriteOptions,
) -> Result<(BlockMeta, Compacted)> {
    let Some(first) = inputs.first() else {
        return Err(EngineError::InvalidInput("nothing to compact".into()));
    };
    let tenant = first.tenant_id.clone();
    if let Some(other) = inputs.iter().find(|m| m.tenant_id != tenant) {
        return Err(EngineError::Internal(format!(
            "compaction of tenant {tenant} was given a block of {}",
            other.tenant_id
        )));
    }
    let store = catalog.store().clone();
    let mut runs = Vec::new();
    let mut done = Compacted::default();
    for m in inputs {
        let footer = catalog.footer(&store, m).await?;
        for groups in runs_of(&footer)? {
            if groups.is_empty() {
                continue;
            }
            let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
                object_reader(&store, m),
                (*footer).clone(),
            )
            .with_row_groups(groups)
            .with_batch_size(RUN_BATCH_ROWS)
            .build()
            .map_err(|e| parquet_err(m, e))?;
            let mut run = Run {
                stream,
                meta: m.clone(),
                batch: None,
                ids: None,
                row: 0,
            };
            if run.refill().await? {
                runs.push(run);
            }
        }
        done.bytes_in += m.size;
    }
    let expected: u64 = inputs.iter().map(|m| m.total_objects).sum();
    let mut encoder: Option<BlockEncoder> = None;
    // Rows of whole traces gathered across runs, converted to spans a few thousand at a
    // time: one conversion per batch, not per trace (88k → 100k spans/s over a day of 286
    // blocks).
    let mut rows: Vec<RecordBatch> = Vec::new();
    let mut gathered = 0usize;
    // The next trace: the smallest ID any run is at.
    while let Some(id) = runs
        .iter()
        .filter_map(Run::current)
        .min()
        .map(<[u8]>::to_vec)
    {
        let before = rows.len();
        for r in runs.iter_mut() {
            r.take(&id, &mut rows).await?;
        }
        runs.retain(|r| r.batch.is_some());
        gathered += rows[before..]
            .iter()
            .map(RecordBatch::num_rows)
            .sum::<usize>();
        if gathered >= ENCODE_BATCH_SPANS {
            encode(&mut encoder, &tenant, &mut rows, expected, opts, &mut done)?;
            gathered = 0;
        }
    }
    encode(&mut encoder, &tenant, &mut rows, expected, opts, &mut done)?;
    let Some(encoder) = encoder else {
        return Err(EngineError::Internal(format!(
            "compaction of {} blocks of tenant {tenant} read no spans",
            inputs.len()
        )));
    };
    let mut block: EncodedBlock = encoder.finish()?;
    block.meta.compaction_level = inputs.iter().map(|m| m.compaction_level).max().unwrap_or(0) + 1;
    block.meta.compacted_from = Some(inputs.iter().map(|m| m.block_id).collect());
    done.bytes_out = block.meta.size;
    catalog.add_block(&block).await?;
    Ok((block.meta, done))
}

/// Hands the traces whose rows are in `rows` (every row of each) to the encoder, starting it
/// with the first batch; a span received twice is kept once.
fn encode(
    encoder: &mut Option<BlockEncoder>,
    tenant: &str,
    rows: &mut Vec<RecordBatch>,
    expected: u64,
    opts: &BlockWriteOptions,
    done: &mut Compacted,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    done.spans_in += rows.iter().map(|b| b.num_rows() as u64).sum::<u64>();
    let spans = whole_spans(rows)?;
    rows.clear();
    done.spans_out += spans.len() as u64;
    let mut previous = None;
    for s in &spans {
        if previous != Some(s.trace_id) {
            done.traces += 1;
            previous = Some(s.trace_id);
        }
    }
    match encoder {
        Some(e) => e.push(spans),
        None => {
            *encoder = Some(BlockEncoder::start(tenant, spans, expected as usize, opts)?);
            Ok(())
        }
    }
}

/// The spans of `rows`, sorted by trace, a span received twice kept once.
fn whole_spans(rows: &[RecordBatch]) -> Result<Vec<FlatSpan>> {
    let (mut spans, rejected) = flatten(batches_to_resource_spans(rows)?);
    if let Some(r) = rejected.first() {
        return Err(EngineError::corrupt(
            "data.parquet",
            format!("a span cannot be stored again: {}", r.reason),
        ));
    }
    let key = |s: &FlatSpan| {
        (
            s.trace_id,
            s.span.start_time_unix_nano,
            s.span_id,
            s.parent_span_id,
            s.span.kind,
            s.span.end_time_unix_nano,
        )
    };
    spans.sort_by_key(key);
    spans.dedup_by(|b, a| key(a) == key(b));
    Ok(spans)
}
