//! Compaction: several blocks of a tenant merged into one, streamed.
//!
//! Why: a busy tenant gets about 288 blocks a day at the default `max_block_duration` of 5 m,
//! every query opens each of them, and a trace whose spans arrived minutes apart is split across
//! several. Merging a time window's blocks brings a day to a few blocks and makes split traces
//! whole again.
//!
//! How: every input block is two runs sorted by trace ID (its row groups of non-root spans, then
//! its row groups of root spans; blocks from before roots were kept apart are one run). The
//! runs of all inputs are merged by trace ID, a trace at a time. The merged block chooses its hot
//! columns again from the key counts its inputs recorded (as a block written from the merged
//! spans would; a tenant's blocks choose from the same traffic, so usually every input chose
//! the same). A trace wholly in one such input, numbered and without a span
//! twice, is copied as Arrow rows: its nested sets and trace-level columns stand. The rest
//! (split traces, spans received twice, rows of inputs with other hot columns) are turned back
//! into spans, a batch at a time (the round trip is exact, docs/schema.md), joined,
//! deduplicated, numbered over the whole trace and turned into rows in the merged columns. The
//! merged block records the union of its inputs' keys and values ([`super::recorded`]).
//!
//! The [`BlockEncoder`] writes everything a block has (trace-ID order, roots apart,
//! bloom, trace-ID cuts, recorded keys and values), cut into time slices ([`SliceGrid`]): each
//! trace goes whole to the slice its start falls in. Memory is one batch per run, the pending
//! batches and the row groups in progress (two per slice, at most 16 slices), whatever the
//! inputs' size; with `spill_dir` set (as `serve` sets it) the merged file goes to local disk
//! until stored ([`super::spill`]). Copying rows instead of converting every span took a day
//! of 286 blocks from 84k to 223–266k spans per CPU-second (docs/benchmarks.md).
//!
//! A span received twice is one with the same ID, parent, kind, start and end; it is kept once.
//!
//! Visibility: the merged block's `meta.json` lists its inputs (`compactedFrom`), and the
//! catalog hides every block a visible block lists. Writing that one object therefore retires
//! the inputs at the same instant the merged block appears: a crash before it leaves the
//! inputs, after it the merged block; a reader never sees both or neither. Inputs are deleted
//! later, once queries that listed them are done (`compacted_block_retention`).

use std::sync::Arc;

use arrow::array::{Array, FixedSizeBinaryArray, Int32Array, RecordBatch, UInt64Array};
use futures::StreamExt;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::file::statistics::Statistics;

use super::meta::BlockMeta;
use super::object_reader::ObjectReader;
use super::pace::Pace;
use super::reader::{column, parquet_err};
use super::recorded::RecordedKeys;
use super::slices::SliceGrid;
use super::writer::{BlockEncoder, BlockWriteOptions, EncodedBlock};
use crate::catalog::Catalog;
use crate::convert::flatten::{FlatSpan, flatten};
use crate::convert::from_arrow::batches_to_resource_spans;
use crate::convert::to_arrow::spans_to_batch;
use crate::error::{EngineError, Result};
use crate::hot::KeyScan;
use crate::nested_set::prepare_traces;
use crate::schema::{HotColumn, col, span_schema};

/// Rows read from a run at a time, at most and at least.
///
/// Each batch and each hand-over to the encoder costs per column (~120 of them) whatever its
/// rows: over the day of 287 blocks, 4,096 rows read and 16,384 spans encoded at a time merged
/// 15–20% faster than 1,024 and 8,192 (docs/benchmarks.md), for ~100 MiB more peak RSS.
const RUN_BATCH_ROWS: std::ops::RangeInclusive<usize> = 1024..=4096;
/// Rows read at a time over all runs together, while each run gets at least the least.
///
/// Every run holds its batch, its reader's buffers and the batches its pending rows pin, so
/// what a merge holds follows runs × rows. A sliced input is two runs per slice: the last
/// merge of a 10M-span window (two inputs of 16 slices and one of none, 66 runs) held 1.0 GiB
/// of heap at 4,096 rows a run and 0.75 GiB at 1,024, merging as fast (docs/benchmarks.md).
const RUNS_ROWS: usize = 65_536;

/// Rows each of `runs` runs reads at a time.
fn run_batch_rows(runs: usize) -> usize {
    (RUNS_ROWS / runs.max(1)).clamp(*RUN_BATCH_ROWS.start(), *RUN_BATCH_ROWS.end())
}
/// Spans of a slice handed to the encoder at a time.
const ENCODE_BATCH_SPANS: usize = 16_384;
/// Most spans waiting over all slices: each pins the input batch it came from. Handing over
/// 65,536 at a time merged 5% faster still but took peak RSS to 0.95 GiB.
const PENDING_SPANS: usize = 2 * ENCODE_BATCH_SPANS;

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
    /// Spans that went through the span path (split or resent traces, or inputs whose columns
    /// differ) rather than being copied as rows.
    pub rewritten: u64,
    /// Time the merge waited for flushing to catch up ([`Pace`]).
    pub paused: std::time::Duration,
}

/// One sorted run of one input block, read a batch at a time.
struct Run {
    stream: ParquetRecordBatchStream<ObjectReader>,
    meta: Arc<BlockMeta>,
    /// Which input block it reads.
    input: usize,
    /// What its rows are: all roots, none, or both (blocks from before roots were kept apart).
    kind: RunKind,
    batch: Option<Arc<RecordBatch>>,
    ids: Option<FixedSizeBinaryArray>,
    /// `nested_set_parent` of the batch, for runs of both kinds.
    parents: Option<Int32Array>,
    row: usize,
}

/// Which spans a run holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum RunKind {
    Roots,
    NotRoots,
    Both,
}

/// Rows `start..start + len` of a batch, all roots or all not.
struct Piece {
    batch: Arc<RecordBatch>,
    start: usize,
    len: usize,
    roots: bool,
}

impl Run {
    /// Moves to the next non-empty batch; `false` at the end.
    async fn refill(&mut self) -> Result<bool> {
        self.batch = None;
        self.ids = None;
        self.parents = None;
        self.row = 0;
        while let Some(b) = self.stream.next().await {
            let b = b.map_err(|e| parquet_err(&self.meta, e))?;
            if b.num_rows() == 0 {
                continue;
            }
            self.ids = Some(fixed(&b, col::TRACE_ID)?.clone());
            if self.kind == RunKind::Both {
                self.parents = Some(column::<Int32Array>(&b, col::NESTED_SET_PARENT)?.clone());
            }
            self.batch = Some(Arc::new(b));
            return Ok(true);
        }
        Ok(false)
    }

    /// The trace ID at the current row.
    fn current(&self) -> Option<&[u8]> {
        self.ids.as_ref().map(|ids| ids.value(self.row))
    }

    /// Takes the rows of trace `id` (to the next batch too, where the trace continues there),
    /// as pieces tagged with this run's input.
    async fn take(&mut self, id: &[u8], out: &mut Vec<(usize, Piece)>) -> Result<()> {
        while self.current() == Some(id) {
            let (Some(b), Some(ids)) = (self.batch.as_ref(), self.ids.as_ref()) else {
                break;
            };
            let start = self.row;
            while self.row < b.num_rows() && ids.value(self.row) == id {
                self.row += 1;
            }
            let piece = |start, len, roots| Piece {
                batch: b.clone(),
                start,
                len,
                roots,
            };
            match (self.kind, self.parents.as_ref()) {
                (RunKind::Both, Some(parents)) => {
                    // Cut where rows turn from roots to not or back.
                    let mut at = start;
                    while at < self.row {
                        let root = parents.value(at) < 0;
                        let len = (at..self.row)
                            .take_while(|i| (parents.value(*i) < 0) == root)
                            .count();
                        out.push((self.input, piece(at, len, root)));
                        at += len;
                    }
                }
                (kind, _) => out.push((
                    self.input,
                    piece(start, self.row - start, kind == RunKind::Roots),
                )),
            }
            if self.row == b.num_rows() {
                self.refill().await?;
            }
        }
        Ok(())
    }
}

/// The row groups of a block as runs, per time slice (the whole block when it has none):
/// those holding only root spans and the rest, told apart by their `nested_set_parent`
/// statistics.
fn runs_of(
    meta: &BlockMeta,
    footer: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
) -> Result<Vec<(RunKind, Vec<usize>)>> {
    let md = footer.metadata();
    let slices: Vec<Vec<usize>> = match &meta.slices {
        Some(slices) => slices
            .iter()
            .map(|s| s.row_groups.iter().map(|&g| g as usize).collect())
            .collect(),
        None => vec![(0..md.num_row_groups()).collect()],
    };
    let leaf = super::reader::leaf(md, col::NESTED_SET_PARENT)?;
    let mut runs = Vec::new();
    for groups in slices {
        let (mut rest, mut roots) = (Vec::new(), Vec::new());
        let mut rest_has_roots = false;
        for i in groups {
            let rg = md.row_groups().get(i).ok_or_else(|| {
                EngineError::corrupt(
                    "meta.json",
                    format!(
                        "block {} lists row group {i} in a slice; its data has {}",
                        meta.block_id,
                        md.num_row_groups()
                    ),
                )
            })?;
            let (min, max) = match rg.column(leaf).statistics() {
                Some(Statistics::Int32(s)) => (s.min_opt().copied(), s.max_opt().copied()),
                _ => (None, None),
            };
            if max.is_some_and(|m| m < 0) {
                roots.push(i);
            } else {
                rest_has_roots |= min.is_none_or(|m| m < 0);
                rest.push(i);
            }
        }
        let rest_kind = if rest_has_roots {
            RunKind::Both
        } else {
            RunKind::NotRoots
        };
        runs.extend(
            [(rest_kind, rest), (RunKind::Roots, roots)]
                .into_iter()
                .filter(|(_, groups)| !groups.is_empty()),
        );
    }
    Ok(runs)
}

/// Merges `inputs` (blocks of one tenant) into one block, written and published through
/// `catalog`, retiring the inputs, waiting at each step as `pace` says; see the module docs.
pub async fn compact(
    catalog: &Catalog,
    inputs: &[Arc<BlockMeta>],
    opts: &BlockWriteOptions,
    pace: &Pace,
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
    let mut done = Compacted::default();
    let mut planned = Vec::new();
    for (input, m) in inputs.iter().enumerate() {
        let footer = catalog.footer(&store, m).await?;
        for (kind, groups) in runs_of(m, &footer)? {
            planned.push((input, m, footer.clone(), kind, groups));
        }
        done.bytes_in += m.size;
    }
    let batch_rows = run_batch_rows(planned.len());
    let mut runs = Vec::new();
    for (input, m, footer, kind, groups) in planned {
        let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
            catalog.checked_reader(&store, m).await?,
            (*footer).clone(),
        )
        .with_row_groups(groups)
        .with_batch_size(batch_rows)
        .build()
        .map_err(|e| parquet_err(m, e))?;
        let mut run = Run {
            stream,
            meta: m.clone(),
            input,
            kind,
            batch: None,
            ids: None,
            parents: None,
            row: 0,
        };
        if run.refill().await? {
            runs.push(run);
        }
    }
    let mut block = merge(&tenant, inputs, runs, opts, pace, &mut done).await?;
    block.meta.compaction_level = inputs.iter().map(|m| m.compaction_level).max().unwrap_or(0) + 1;
    block.meta.compacted_from = Some(inputs.iter().map(|m| m.block_id).collect());
    done.bytes_out = block.meta.size;
    catalog.add_block(&block).await?;
    let meta = block.meta;
    drop(block.data);
    // What the merge held is free: back to the OS before the next merge allocates.
    crate::allocator::release();
    Ok((meta, done))
}

/// The hot columns of the merged block: chosen again from the key counts the inputs recorded,
/// as if from the merged spans; for inputs without counts, those of the inputs holding most
/// spans.
fn merged_hot(
    inputs: &[Arc<BlockMeta>],
    recorded: &RecordedKeys,
    opts: &BlockWriteOptions,
) -> Vec<HotColumn> {
    let spans = inputs.iter().map(|m| m.total_spans).sum();
    let counts = recorded
        .key_types
        .as_deref()
        .and_then(|k| KeyScan::of_recorded(spans, k));
    if let Some(scan) = counts {
        return opts.hot.choose_from(&scan);
    }
    let mut spans: Vec<(&Vec<HotColumn>, u64)> = Vec::new();
    for m in inputs {
        match spans.iter_mut().find(|(h, _)| **h == m.hot_columns) {
            Some((_, n)) => *n += m.total_spans,
            None => spans.push((&m.hot_columns, m.total_spans)),
        }
    }
    spans
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(h, _)| h.clone())
        .unwrap_or_default()
}

/// One trace's rows in one part of the output (not roots, or roots): copied, or rewritten from
/// spans (its rows, if any, are in the converted batch under its ID).
enum Out {
    Copied(Piece),
    Rewritten(Vec<u8>),
}

/// Output traces gathered per time slice until the slice has a batch's worth, then converted
/// (the rewritten ones, all at once) and handed to the encoder in trace-ID order, roots apart.
///
/// Per slice, because a batch is gathered column by column from every input batch its pieces
/// came from: flushing every slice whenever the slices together held a batch gathered seven
/// times as often, a few rows each, and cost a fifth of the merge's CPU.
struct Pending {
    hot: Vec<HotColumn>,
    schema: arrow::datatypes::SchemaRef,
    slices: Vec<SlicePending>,
    /// Rows held over all slices.
    rows: usize,
    /// Keys of the spans dropped as copies, taken off the inputs' counts at the end.
    dropped: KeyScan,
}

/// One slice's traces waiting for the encoder.
#[derive(Default)]
struct SlicePending {
    /// The slice's non-root rows, then its root rows, each in trace-ID order.
    parts: [Vec<Out>; 2],
    rewrite: Vec<RecordBatch>,
    rows: usize,
}

impl Pending {
    /// Adds a trace to `slice`: its pieces copied when `copy`, else rewritten from them.
    /// Returns the rows the slice now holds.
    fn add(&mut self, id: &[u8], pieces: Vec<(usize, Piece)>, copy: bool, slice: usize) -> usize {
        if self.slices.len() <= slice {
            self.slices.resize_with(slice + 1, Default::default);
        }
        let rows: usize = pieces.iter().map(|(_, p)| p.len).sum();
        self.rows += rows;
        let s = &mut self.slices[slice];
        s.rows += rows;
        if copy {
            for (_, p) in pieces {
                s.parts[usize::from(p.roots)].push(Out::Copied(p));
            }
        } else {
            for (_, p) in pieces {
                s.rewrite.push(p.batch.slice(p.start, p.len));
            }
            for part in &mut s.parts {
                part.push(Out::Rewritten(id.to_vec()));
            }
        }
        s.rows
    }

    /// Hands every slice's rows to the encoder.
    fn flush_all(&mut self, encoder: &mut BlockEncoder, done: &mut Compacted) -> Result<()> {
        for slice in 0..self.slices.len() {
            self.flush(slice, encoder, done)?;
        }
        Ok(())
    }

    /// Hands `slice`'s rows to the encoder.
    fn flush(
        &mut self,
        slice: usize,
        encoder: &mut BlockEncoder,
        done: &mut Compacted,
    ) -> Result<()> {
        let Some(s) = self.slices.get_mut(slice) else {
            return Ok(());
        };
        if s.rows == 0 {
            return Ok(());
        }
        // The rewritten traces, converted at once, split into not-roots and roots.
        let mut converted: [Option<Arc<RecordBatch>>; 2] = [None, None];
        if !s.rewrite.is_empty() {
            let mut spans = whole_spans(&s.rewrite, &mut self.dropped)?;
            s.rewrite.clear();
            prepare_traces(&mut spans);
            let batch = spans_to_batch(&spans, &self.hot)?;
            let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())?;
            let parents: &Int32Array = column(&batch, col::NESTED_SET_PARENT)?;
            let roots = arrow::compute::kernels::cmp::lt(parents, &Int32Array::new_scalar(0))?;
            let not_roots = arrow::compute::not(&roots)?;
            for (slot, mask) in converted.iter_mut().zip([not_roots, roots]) {
                *slot = Some(Arc::new(arrow::compute::filter_record_batch(
                    &batch, &mask,
                )?));
            }
        }
        let mut out: [Option<RecordBatch>; 2] = [None, None];
        for ((part, conv), slot) in s.parts.iter_mut().zip(&converted).zip(&mut out) {
            let mut pieces: Vec<Piece> = Vec::with_capacity(part.len());
            let mut at = 0;
            let ids = conv.as_ref().map(|b| fixed(b, col::TRACE_ID)).transpose()?;
            for o in part.drain(..) {
                match o {
                    Out::Copied(p) => pieces.push(p),
                    Out::Rewritten(id) => {
                        let (Some(b), Some(ids)) = (conv, ids) else {
                            return Err(EngineError::Internal(
                                "a rewritten trace without rows".into(),
                            ));
                        };
                        let len = (at..b.num_rows())
                            .take_while(|i| ids.value(*i) == id.as_slice())
                            .count();
                        if len > 0 {
                            pieces.push(Piece {
                                batch: b.clone(),
                                start: at,
                                len,
                                roots: false,
                            });
                        }
                        at += len;
                    }
                }
            }
            *slot = gather(&self.schema, &pieces)?;
        }
        self.rows -= s.rows;
        s.rows = 0;
        let [rest, roots] = out;
        done.spans_out += rest.as_ref().map_or(0, |b| b.num_rows() as u64)
            + roots.as_ref().map_or(0, |b| b.num_rows() as u64);
        encoder.push_parts(slice, rest, roots)
    }
}

/// The rows of `pieces`, in order, as one batch (`None` for none): each column built once
/// from ranges of the pieces' batches, without slicing them first.
fn gather(schema: &arrow::datatypes::SchemaRef, pieces: &[Piece]) -> Result<Option<RecordBatch>> {
    if pieces.is_empty() {
        return Ok(None);
    }
    // Each distinct source batch once; pieces name theirs by index.
    let mut sources: Vec<&Arc<RecordBatch>> = Vec::new();
    let mut index: Vec<usize> = Vec::with_capacity(pieces.len());
    for p in pieces {
        let i = match sources.iter().rposition(|b| Arc::ptr_eq(b, &p.batch)) {
            Some(i) => i,
            None => {
                sources.push(&p.batch);
                sources.len() - 1
            }
        };
        index.push(i);
    }
    let rows: usize = pieces.iter().map(|p| p.len).sum();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for c in 0..schema.fields().len() {
        let data: Vec<arrow::array::ArrayData> =
            sources.iter().map(|b| b.column(c).to_data()).collect();
        let mut m = arrow::array::MutableArrayData::new(data.iter().collect(), false, rows);
        for (p, i) in pieces.iter().zip(&index) {
            m.try_extend(*i, p.start, p.start + p.len)?;
        }
        columns.push(arrow::array::make_array(m.freeze()));
    }
    Ok(Some(RecordBatch::try_new(schema.clone(), columns)?))
}

/// The fixed-size binary column `name` of `b` (trace and span IDs).
fn fixed<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a FixedSizeBinaryArray> {
    column(b, name)
}

/// Merges the runs into one block (see the module docs).
async fn merge(
    tenant: &str,
    inputs: &[Arc<BlockMeta>],
    mut runs: Vec<Run>,
    opts: &BlockWriteOptions,
    pace: &Pace,
    done: &mut Compacted,
) -> Result<EncodedBlock> {
    let recorded = RecordedKeys::union(inputs.iter().map(|m| m.as_ref()));
    let hot = merged_hot(inputs, &recorded, opts);
    let schema = span_schema(&hot);
    // Inputs whose rows are already in the merged block's columns.
    let copyable: Vec<bool> = inputs.iter().map(|m| m.hot_columns == hot).collect();
    for r in &runs {
        if let Some(b) = &r.batch
            && copyable[r.input]
            && b.schema().fields() != schema.fields()
        {
            return Err(EngineError::corrupt(
                "data.parquet",
                format!(
                    "block {} does not have the columns its meta.json names",
                    r.meta.block_id
                ),
            ));
        }
    }
    let traces: u64 = inputs.iter().map(|m| m.total_objects).sum();
    let spans: u64 = inputs.iter().map(|m| m.total_spans).sum();
    let mut encoder = BlockEncoder::start_rows(
        tenant,
        hot.clone(),
        recorded,
        traces as usize,
        spans as usize,
        opts,
    )?;
    // Traces go to the time slice their start falls in.
    let grid = SliceGrid::new(
        inputs.iter().map(|m| m.start_unix_nano).min().unwrap_or(0),
        inputs.iter().map(|m| m.end_unix_nano).max().unwrap_or(0),
        spans,
        opts.row_group_rows,
    );
    let mut pending = Pending {
        hot,
        schema,
        slices: Vec::new(),
        rows: 0,
        dropped: KeyScan::default(),
    };
    while let Some(id) = runs
        .iter()
        .filter_map(Run::current)
        .min()
        .map(<[u8]>::to_vec)
    {
        let mut pieces: Vec<(usize, Piece)> = Vec::new();
        for r in runs.iter_mut() {
            r.take(&id, &mut pieces).await?;
        }
        runs.retain(|r| r.batch.is_some());
        let rows: usize = pieces.iter().map(|(_, p)| p.len).sum();
        done.spans_in += rows as u64;
        done.traces += 1;
        let copy = whole(&pieces, &copyable)?;
        if !copy {
            done.rewritten += rows as u64;
        }
        let slice = grid.slice_of(trace_start(&pieces)?);
        let mut stepped = false;
        if pending.add(&id, pieces, copy, slice) >= ENCODE_BATCH_SPANS {
            pending.flush(slice, &mut encoder, done)?;
            stepped = true;
        }
        // Slices that fill slowly still hold input batches: all go out past a bound.
        if pending.rows >= PENDING_SPANS {
            pending.flush_all(&mut encoder, done)?;
            stepped = true;
        }
        // Each hand-over is a step: the block writer goes first while it is behind.
        if stepped {
            done.paused += pace.step().await;
        }
    }
    pending.flush_all(&mut encoder, done)?;
    encoder.uncount(&pending.dropped);
    if encoder.spans() == 0 {
        return Err(EngineError::Internal(format!(
            "compaction of {} blocks of tenant {tenant} read no spans",
            inputs.len()
        )));
    }
    encoder.finish()
}

/// The earliest span start of a trace's rows.
fn trace_start(pieces: &[(usize, Piece)]) -> Result<u64> {
    let mut start = u64::MAX;
    for (_, p) in pieces {
        let starts: &UInt64Array = column(&p.batch, col::START_TIME)?;
        if let Some(&s) = starts.values()[p.start..p.start + p.len].iter().min() {
            start = start.min(s);
        }
    }
    Ok(start)
}

/// Whether a trace's rows (`parts`, tagged with their input) can be copied as they are: one
/// input, in the merged block's columns, every span numbered (its part has its root and every
/// parent), no span twice.
fn whole(pieces: &[(usize, Piece)], copyable: &[bool]) -> Result<bool> {
    let Some((input, _)) = pieces.first() else {
        return Ok(true);
    };
    if !copyable[*input] || pieces.iter().any(|(i, _)| i != input) {
        return Ok(false);
    }
    let mut keys: Vec<(&[u8], u64)> = Vec::new();
    for (_, p) in pieces {
        let left: &Int32Array = column(&p.batch, col::NESTED_SET_LEFT)?;
        if left.values()[p.start..p.start + p.len].contains(&0) {
            return Ok(false);
        }
        let ids = fixed(&p.batch, col::SPAN_ID)?;
        let starts: &UInt64Array = column(&p.batch, col::START_TIME)?;
        keys.extend((p.start..p.start + p.len).map(|i| (ids.value(i), starts.value(i))));
    }
    keys.sort_unstable();
    Ok(keys.windows(2).all(|w| w[0] != w[1]))
}

/// The spans of `rows`, sorted by trace, a span received twice kept once; the copies dropped
/// are counted out of `dropped`.
fn whole_spans(rows: &[RecordBatch], dropped: &mut KeyScan) -> Result<Vec<FlatSpan>> {
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
    let mut copies = Vec::new();
    spans.dedup_by(|b, a| {
        let same = key(a) == key(b);
        if same {
            // Rare (a client's retry): the copy's keys come off the recorded counts.
            copies.push(b.clone());
        }
        same
    });
    dropped.add(&copies);
    Ok(spans)
}
