//! The per-trace stage of a search, block by block.
//!
//! A block holds whole traces but for the few recorded as incomplete ([`BlockMeta`]'s
//! `incomplete_traces`: no root, or a span whose parent is elsewhere), so every other trace is
//! evaluated from one block's rows alone. A block (or a time slice of one) is written sorted by
//! trace ID with its roots apart in row groups of their own, so it is read as two streams: its matching roots first, held by
//! trace (a row per trace at most), then its other matching spans, which arrive trace by trace;
//! each trace is evaluated, with its root, as soon as its last row has passed. Memory is a
//! block's roots and one trace's rows — not a hash table over every trace in the window (that
//! took 918 MiB for `{ }` over 4.6M spans, and the time grew faster than the window), nor over
//! every row of a block. The head's rows come in no order and are grouped in a table.
//!
//! Rows of traces split across sources — incomplete in some block in range, or in the live
//! head — are skipped here: they are read again whole, joined and evaluated once
//! ([`crate::query::split_traces`], [`TraceStage::joined`]). Traces older than the `limit`-th found
//! so far are skipped without being evaluated. Held rows are reserved from the query's memory
//! pool.
//!
//! [`BlockMeta`]: crate::block::meta::BlockMeta

use std::collections::HashMap;
use std::sync::Arc;

use allegro_traceql::ast::{FieldExpr, FieldKind, FieldRef, Intrinsic};
use allegro_udfs::spansets::eval::SpanRow;
use allegro_udfs::spansets::program::Program;
use allegro_udfs::spansets::typed::FoundSet;
use allegro_udfs::spansets::{SpanColumns, evaluate};
use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch, UInt64Array};
use arrow::datatypes::UInt64Type;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use parking_lot::Mutex;

use super::newest::{Found, Newest};
use crate::catalog::IncompleteTraces;
use crate::error::{EngineError, Result};
use crate::ids::TraceId;
use crate::query::df_err;
use crate::query::plan::{Compiled, is_root_test, out};
use crate::schema::col as c;

/// Evaluates a compiled search per trace; see the module docs.
pub(crate) struct TraceStage {
    program: Arc<Program>,
    /// Leaf masks a trace must meet to be worth evaluating ([`Program::required_leaves`]).
    required: Vec<u64>,
    /// Traces split across sources, evaluated joined instead.
    split: IncompleteTraces,
    /// Whether every leaf condition reads only the span's own values, so that a part's rows
    /// show which leaves the whole trace meets (not so for `rootName`, nested sets, ...).
    part_local: bool,
    /// The leaves each split trace's parts met so far, over every block read.
    split_leaves: Mutex<HashMap<TraceId, u64>>,
    /// The query's memory pool: rows held per trace are reserved from it, so a search over
    /// blocks too big for the budget is refused like any other operator going over.
    pool: Arc<dyn MemoryPool>,
}

/// The per-span rows of one block (or of the head).
pub(crate) struct Rows {
    /// A block's root spans, read first.
    pub roots: Option<SendableRecordBatchStream>,
    /// Every other span.
    pub rest: Option<SendableRecordBatchStream>,
    /// Whether `rest` is sorted by trace ID (a block's is; the head's is not).
    pub sorted: bool,
}

/// Bytes one held row takes: the row, its values and keys, and its share of the per-trace
/// table (an ID, a start and a vector per trace; counted per row as an upper bound).
fn row_bytes(r: &SpanRow) -> usize {
    let keys: usize = r.keys.iter().flatten().map(String::capacity).sum();
    std::mem::size_of::<SpanRow>()
        + r.values.capacity() * std::mem::size_of::<Option<f64>>()
        + r.keys.capacity() * std::mem::size_of::<Option<String>>()
        + keys
        + std::mem::size_of::<(TraceId, u64, Vec<SpanRow>)>()
}

/// Whether `e` reads only a span's own values (and its scope's): not the trace-level columns,
/// nested-set numbers or relatives, which a part of a split trace holds for itself alone. The
/// root test `nestedSetParent < 0` (Drilldown's) holds per part: only the true root has -1.
fn part_local(e: &FieldExpr) -> bool {
    if is_root_test(e) {
        return true;
    }
    match &e.kind {
        FieldKind::Ref(FieldRef::Intrinsic(i)) => !matches!(
            i,
            Intrinsic::TraceDuration
                | Intrinsic::TraceRootName
                | Intrinsic::TraceRootService
                | Intrinsic::NestedSetLeft
                | Intrinsic::NestedSetRight
                | Intrinsic::NestedSetParent
                | Intrinsic::Parent
                | Intrinsic::ChildCount
        ),
        FieldKind::Ref(FieldRef::Attribute(a)) => !a.parent,
        FieldKind::Static(_) => true,
        FieldKind::Binary { lhs, rhs, .. } => part_local(lhs) && part_local(rhs),
        FieldKind::Unary { expr, .. } | FieldKind::List { expr, .. } => part_local(expr),
    }
}

fn lost(what: &str) -> EngineError {
    EngineError::Internal(format!("search rows lost column {what}"))
}

/// The span columns of `b` for `p`, in [`SpanColumns`] order.
fn span_columns(p: &Program, b: &RecordBatch) -> Result<Vec<ArrayRef>> {
    let mut names: Vec<String> = [
        c::NESTED_SET_LEFT,
        c::NESTED_SET_RIGHT,
        c::NESTED_SET_PARENT,
        c::SPAN_ID,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.extend((0..p.leaves).map(|i| format!("leaf{i}")));
    names.extend((0..p.values).map(|i| format!("v{i}")));
    names.extend((0..p.keys).map(|i| format!("k{i}")));
    names
        .iter()
        .map(|n| b.column_by_name(n).cloned().ok_or_else(|| lost(n)))
        .collect()
}

/// The trace IDs, trace starts and span columns (for `p`) of a batch of per-span rows
/// ([`crate::query::plan::span_rows`]).
pub(crate) fn columns(
    p: &Program,
    b: &RecordBatch,
) -> Result<(FixedSizeBinaryArray, UInt64Array, Vec<ArrayRef>)> {
    let ids = b
        .column_by_name(c::TRACE_ID)
        .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .ok_or_else(|| lost(c::TRACE_ID))?
        .clone();
    let starts = b
        .column_by_name(out::TRACE_START)
        .and_then(|a| a.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| lost(out::TRACE_START))?
        .clone();
    Ok((ids, starts, span_columns(p, b)?))
}

impl TraceStage {
    /// The stage of `c`, leaving the traces in `split` to [`TraceStage::joined`], holding rows
    /// under `pool`.
    pub(crate) fn new(c: &Compiled, split: IncompleteTraces, pool: Arc<dyn MemoryPool>) -> Self {
        Self {
            program: Arc::new(c.program.clone()),
            required: c.program.required_leaves(),
            split,
            part_local: c.leaves.iter().flatten().all(part_local),
            split_leaves: Mutex::new(HashMap::new()),
            pool,
        }
    }

    /// The traces split across sources, evaluated joined.
    pub(crate) fn split(&self) -> &IncompleteTraces {
        &self.split
    }

    /// Of `among`, the split traces whose joined evaluation can find something: all of them
    /// when a leaf reads what only the whole trace knows; otherwise those whose parts read so
    /// far met the leaves the program needs, as [`Self::consider`] asks of a whole trace. A
    /// search for something no span has joins nothing; one for errors joins the split traces
    /// with an error span. Parts in blocks an early stop skipped belong to traces that start
    /// too early to rank.
    pub(crate) fn split_candidates(&self, among: IncompleteTraces) -> IncompleteTraces {
        if !self.part_local {
            return among;
        }
        let met = self.split_leaves.lock();
        among
            .into_iter()
            .filter(|id| {
                met.get(id)
                    .is_some_and(|u| self.required.iter().all(|m| u & m != 0))
            })
            .collect()
    }

    /// Reads one block's per-span rows (or the head's): its traces but the split ones are
    /// evaluated and offered to `newest` as `tenant`'s.
    ///
    /// A block's roots come first and are held by trace (one row per trace at most); the rest
    /// of the block is sorted by trace ID, so a trace's other rows arrive one after another and
    /// each trace is evaluated, with its root, as soon as the next one begins: one trace's rows
    /// held besides the roots, no table of every row, no second copy. The head's rows come in
    /// no order and are grouped in a table of traces evaluated at the end.
    pub(crate) async fn block(
        &self,
        rows: Rows,
        newest: &Mutex<Newest>,
        tenant: usize,
    ) -> Result<()> {
        let held = MemoryConsumer::new("search per-trace rows").register(&self.pool);
        let mut table_bytes = 0;
        // Roots (a block's), or every row (the head's), by trace.
        let mut table = Table::default();
        let mut run: Option<Run> = None;
        // The last trace's row vector, emptied, for the next: no allocation per trace.
        let mut spare: Vec<SpanRow> = Vec::new();
        // Leaves met by this source's parts of split traces.
        let mut split_met: HashMap<TraceId, u64> = HashMap::new();
        let streams = [(rows.roots, true), (rows.rest, !rows.sorted)];
        for (stream, into_table) in streams {
            let Some(mut stream) = stream else { continue };
            while let Some(b) = stream.next().await {
                let b = b.map_err(df_err)?;
                if b.num_rows() == 0 {
                    continue;
                }
                let (ids, starts, arrays) = columns(&self.program, &b)?;
                let cols = SpanColumns::new(&arrays, &self.program).map_err(df_err)?;
                // Traces older than the bar cannot make the answer; the bar only rises.
                let bar = newest.lock().bar().map_or(0, |(s, _)| s);
                for (i, &start) in starts.values().iter().enumerate() {
                    let id = TraceId::from_bytes(ids.value(i))?;
                    if self.split.contains(&id) {
                        if self.part_local {
                            *split_met.entry(id).or_default() |= cols.row(i).leaves;
                        }
                        continue;
                    }
                    if into_table {
                        if start >= bar {
                            let row = cols.row(i);
                            table_bytes += row_bytes(&row);
                            hold(&mut table, id, start, row);
                        }
                        continue;
                    }
                    match run.as_mut() {
                        Some(r) if r.id == id => r.push(&cols, i, start),
                        Some(r) if r.id > id => {
                            return Err(EngineError::Internal(format!(
                                "a block's rows are not sorted by trace ID ({id} after {})",
                                r.id
                            )));
                        }
                        _ => {
                            if let Some(r) = run.take() {
                                let (bytes, rows) = self.finish(r, &mut table, newest, tenant)?;
                                table_bytes -= bytes;
                                spare = rows;
                            }
                            let rows = std::mem::take(&mut spare);
                            let mut r = Run::new(id, start, start >= bar, rows);
                            r.push(&cols, i, start);
                            run = Some(r);
                        }
                    }
                }
                held.try_resize(table_bytes + run.as_ref().map_or(0, |r| r.bytes))
                    .map_err(df_err)?;
            }
        }
        if let Some(r) = run.take() {
            self.finish(r, &mut table, newest, tenant)?;
        }
        if !split_met.is_empty() {
            let mut all = self.split_leaves.lock();
            for (id, leaves) in split_met {
                *all.entry(id).or_default() |= leaves;
            }
        }
        // The head's traces; a block's traces of which only roots matched.
        self.offer(table.into_iter().collect(), newest, tenant)
    }

    /// Evaluates the trace whose rows `r` holds, with its roots from `roots`; the bytes of
    /// the roots taken, and the trace's row vector emptied for reuse.
    fn finish(
        &self,
        mut r: Run,
        roots: &mut Table,
        newest: &Mutex<Newest>,
        tenant: usize,
    ) -> Result<(usize, Vec<SpanRow>)> {
        // Taken whether or not the trace can rank, so it is never evaluated without the rest.
        let mut bytes = 0;
        if let Some((start, root)) = roots.remove(&r.id) {
            bytes = root.iter().map(row_bytes).sum();
            r.start = r.start.min(start);
            if r.take {
                r.rows.extend(root);
            }
        }
        if r.take {
            self.consider(r.id, r.start, &mut r.rows, newest, tenant)?;
        }
        r.rows.clear();
        Ok((bytes, r.rows))
    }

    /// Evaluates split traces from the per-span rows of their joined parts
    /// ([`crate::query::split_traces`]), every source's batches together.
    pub(crate) fn joined(
        &self,
        batches: &[RecordBatch],
        newest: &Mutex<Newest>,
        tenant: usize,
    ) -> Result<()> {
        let held = MemoryConsumer::new("search rows of split traces").register(&self.pool);
        let mut bytes = 0;
        let mut traces = Table::default();
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let (ids, starts, arrays) = columns(&self.program, b)?;
            let cols = SpanColumns::new(&arrays, &self.program).map_err(df_err)?;
            for (i, &start) in starts.values().iter().enumerate() {
                let row = cols.row(i);
                bytes += row_bytes(&row);
                hold(&mut traces, TraceId::from_bytes(ids.value(i))?, start, row);
            }
            held.try_resize(bytes).map_err(df_err)?;
        }
        self.offer(traces.into_iter().collect(), newest, tenant)
    }

    /// Evaluates traces newest first while they could still enter `newest`.
    fn offer(
        &self,
        mut traces: Vec<(TraceId, (u64, Vec<SpanRow>))>,
        newest: &Mutex<Newest>,
        tenant: usize,
    ) -> Result<()> {
        traces.sort_unstable_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        for (id, (start, mut rows)) in traces {
            if !self.consider(id, start, &mut rows, newest, tenant)? {
                // Sorted: every later trace ranks lower still.
                break;
            }
        }
        Ok(())
    }

    /// Evaluates one trace and offers it to `newest` if it could enter; false when it could
    /// not (so nothing ranking lower can).
    fn consider(
        &self,
        id: TraceId,
        start: u64,
        rows: &mut Vec<SpanRow>,
        newest: &Mutex<Newest>,
        tenant: usize,
    ) -> Result<bool> {
        if rows.is_empty() || !newest.lock().could_enter(start, &id) {
            return Ok(rows.is_empty());
        }
        if let Some(sets) = evaluated(&self.program, &self.required, rows)? {
            newest.lock().offer(Found {
                start,
                id,
                tenant,
                sets,
            });
        }
        Ok(true)
    }
}

/// What `program` finds in one trace's `rows`, `None` when nothing; `required` is its
/// [`Program::required_leaves`]: a trace without a span for one of them is not evaluated.
pub(crate) fn evaluated(
    program: &Program,
    required: &[u64],
    rows: &mut Vec<SpanRow>,
) -> Result<Option<Vec<FoundSet>>> {
    let present = rows.iter().fold(0, |a, r| a | r.leaves);
    if required.iter().any(|m| present & m == 0) {
        return Ok(None);
    }
    evaluate(program, rows).map_err(|e| EngineError::InvalidInput(e.0))
}

/// Traces of a source read out of ID order: start and rows per trace.
type Table = HashMap<TraceId, (u64, Vec<SpanRow>), foldhash::fast::RandomState>;

/// Adds `row` to trace `id`'s rows in `table`; the trace starts at the earliest start seen.
fn hold(table: &mut Table, id: TraceId, start: u64, row: SpanRow) {
    let e = table.entry(id).or_insert_with(|| (start, Vec::new()));
    e.0 = e.0.min(start);
    e.1.push(row);
}

/// The rows of the trace being read, when a source arrives in trace-ID order.
struct Run {
    id: TraceId,
    start: u64,
    /// Whether the trace could rank when its first row was read; if not, its rows are skipped.
    take: bool,
    rows: Vec<SpanRow>,
    bytes: usize,
}

impl Run {
    fn new(id: TraceId, start: u64, take: bool, rows: Vec<SpanRow>) -> Self {
        Self {
            id,
            start,
            take,
            rows,
            bytes: 0,
        }
    }

    fn push(&mut self, cols: &SpanColumns, i: usize, start: u64) {
        if self.take {
            let row = cols.row(i);
            self.bytes += row_bytes(&row);
            self.start = self.start.min(start);
            self.rows.push(row);
        }
    }
}
