//! Traces split across sources, joined whole before they are evaluated.
//!
//! A trace whose spans arrive more than `trace_idle_period` apart (queues, batch jobs, late
//! exporters) lands in several blocks, or in blocks and the live head. Each part's nested-set
//! numbers and trace-level columns (`rootName`, `rootServiceName`, `traceDuration`, the trace's
//! start) were computed from that part alone: a part without its root has 0s and empty root
//! names, so `{ name = "A" } >> { name = "D" }` with A and D in different blocks found nothing
//! (Tempo has the same flaw, tempo#6393). Such traces are known without reading anything: a
//! block records its incomplete parts in `meta.json` (no root, or a span whose parent is not in
//! the block), and in the head an incomplete part has spans with `nested_set_left = 0`; every
//! split trace has such a part, since two parts cannot both hold the root.
//!
//! Their rows in every source in range are read whole (`trace_id IN (…)`, which the blocks'
//! trace-ID statistics and blooms prune); the numbers are recomputed over all parts from parent
//! IDs (spans ordered by start time, then span ID), the trace-level columns from all parts,
//! exact duplicates (a span received twice, same ID, kind, start and end) kept once; then the
//! per-span plan of the search runs over the corrected rows, so every condition, structural
//! operator and pipeline sees the whole trace. Unsplit traces pay nothing. A span whose parent
//! never arrived keeps 0s, as in a block: it matches span conditions but takes no part in
//! structural relations, and a trace without any root has an empty `rootName`.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeBinaryArray, Int32Array, RecordBatch,
    StringArray, UInt64Array,
};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Int32Type, UInt64Type};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, col, lit};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

use super::plan::{self, Compiled, Range};
use super::sources::{Source, Sources};
use super::table::BlocksTable;
use super::{collect_counted, df_err};
use crate::catalog::{Catalog, IncompleteTraces};
use crate::convert::flatten::NestedSet;
use crate::error::{EngineError, Result};
use crate::ids::TraceId;
use crate::nested_set::{SpanLink, nested_set_numbers};
use crate::schema::col as c;

/// The per-span rows of the split traces, every source's, and the bytes read for them.
pub(crate) struct Joined {
    /// Batches of `plan::span_rows` over the corrected rows.
    pub rows: Vec<RecordBatch>,
    /// Bytes read from storage.
    pub bytes: u64,
}

/// What numbering a split trace needs of one span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WholeSpan {
    /// Start, unix nanoseconds.
    pub start: u64,
    /// Span ID.
    pub span_id: [u8; 8],
    /// OTLP kind.
    pub kind: i32,
    /// End, unix nanoseconds (the start for a span that ended before it started).
    pub end: u64,
    /// Parent span ID; `None` for a root.
    pub parent: Option<[u8; 8]>,
}

impl SpanLink for WholeSpan {
    fn span_id(&self) -> [u8; 8] {
        self.span_id
    }
    fn parent_span_id(&self) -> Option<[u8; 8]> {
        self.parent
    }
    fn kind(&self) -> i32 {
        self.kind
    }
}

/// The one numbering of a split trace, which its evaluation and its answer share: spans
/// ordered by start, span ID, kind, end and parent, a span received twice kept once, Tempo's
/// nested sets over the rest. Returns each kept span's index in `spans`, with its numbers, in
/// that order.
pub(crate) fn number_whole(spans: &[WholeSpan]) -> Vec<(usize, NestedSet)> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i], i));
    order.dedup_by_key(|i| spans[*i]);
    let kept: Vec<WholeSpan> = order.iter().map(|&i| spans[i]).collect();
    order.into_iter().zip(nested_set_numbers(&kept)).collect()
}

/// Where a span of a split trace is among the rows read.
struct Place {
    source: usize,
    batch: usize,
    row: usize,
}

/// The corrected columns of one batch, row by row.
struct Patch {
    left: Vec<i32>,
    right: Vec<i32>,
    parent: Vec<i32>,
    trace_start: Vec<u64>,
    trace_duration: Vec<u64>,
    root_service: Vec<String>,
    root_name: Vec<String>,
    keep: Vec<bool>,
}

impl Patch {
    fn new(rows: usize) -> Self {
        Self {
            left: vec![0; rows],
            right: vec![0; rows],
            parent: vec![0; rows],
            trace_start: vec![0; rows],
            trace_duration: vec![0; rows],
            root_service: vec![String::new(); rows],
            root_name: vec![String::new(); rows],
            keep: vec![true; rows],
        }
    }

    /// `b` with the corrected columns, duplicates left out.
    fn apply(self, b: &RecordBatch) -> Result<RecordBatch> {
        let replaced: [(&str, ArrayRef); 7] = [
            (c::NESTED_SET_LEFT, Arc::new(Int32Array::from(self.left))),
            (c::NESTED_SET_RIGHT, Arc::new(Int32Array::from(self.right))),
            (
                c::NESTED_SET_PARENT,
                Arc::new(Int32Array::from(self.parent)),
            ),
            (
                c::TRACE_START,
                Arc::new(UInt64Array::from(self.trace_start)),
            ),
            (
                c::TRACE_DURATION,
                Arc::new(UInt64Array::from(self.trace_duration)),
            ),
            (
                c::TRACE_ROOT_SERVICE,
                Arc::new(StringArray::from(self.root_service)),
            ),
            (
                c::TRACE_ROOT_NAME,
                Arc::new(StringArray::from(self.root_name)),
            ),
        ];
        let schema = b.schema();
        let mut columns = b.columns().to_vec();
        for (name, array) in replaced {
            let i = schema.index_of(name)?;
            columns[i] = cast(&array, schema.field(i).data_type())?;
        }
        let patched = RecordBatch::try_new(schema, columns)?;
        Ok(filter_record_batch(
            &patched,
            &BooleanArray::from(self.keep),
        )?)
    }
}

fn lost(what: &str) -> EngineError {
    EngineError::Internal(format!("split-trace rows lost column {what}"))
}

/// The traces of a source set split across its sources.
pub(crate) struct Split {
    /// Every split trace: incomplete in some block in range (as the blocks record), or in the
    /// head.
    pub ids: IncompleteTraces,
    /// The latest each can start: the earliest end of the blocks that list it, as a trace
    /// starts before any part of it ends (absent when only the head lists it).
    latest: HashMap<TraceId, u64, foldhash::fast::RandomState>,
}

impl Split {
    /// Those that may start at or after `from`.
    pub(crate) fn starting_from(&self, from: u64) -> IncompleteTraces {
        self.ids
            .iter()
            .filter(|id| self.latest.get(id).is_none_or(|l| *l >= from))
            .copied()
            .collect()
    }
}

/// The split traces of `src`; see [`Split`].
pub(crate) async fn split_traces(catalog: &Catalog, src: &Sources) -> Result<Split> {
    let mut ids = src.live_split.clone();
    let lists: Vec<_> = futures::stream::iter(src.blocks.iter().cloned())
        .map(|b| async move { catalog.incomplete_traces(&b).await.map(|l| (b, l)) })
        .buffered(32)
        .try_collect()
        .await?;
    let mut latest: HashMap<TraceId, u64, foldhash::fast::RandomState> = HashMap::default();
    for (b, l) in lists {
        for id in l.iter() {
            ids.insert(*id);
            let e = latest.entry(*id).or_insert(u64::MAX);
            *e = (*e).min(b.end_unix_nano);
        }
    }
    Ok(Split { ids, latest })
}

/// Rows of the traces in `ids` (`negated`: of every other trace).
pub(crate) fn of_traces(ids: &IncompleteTraces, negated: bool) -> Expr {
    let mut ids: Vec<TraceId> = ids.iter().copied().collect();
    ids.sort_unstable();
    col(c::TRACE_ID).in_list(
        ids.iter()
            .map(|id| lit(ScalarValue::FixedSizeBinary(16, Some(id.0.to_vec()))))
            .collect(),
        negated,
    )
}

/// Every source's rows of some split traces, joined whole.
pub(crate) struct Patched {
    /// Per source of the set (same order), its parts of the traces with the numbers and
    /// trace-level columns of the whole trace, spans received twice kept once; `None` where
    /// the source holds no part.
    pub tables: Vec<Option<Arc<dyn TableProvider>>>,
    /// Bytes read from storage.
    pub bytes: u64,
}

/// The rows of `split`'s traces in every source of `src` (blocks ending before `from` left
/// out: they hold no part of a trace starting after it), joined per trace, run through the
/// per-span plan of `c` over `range`.
pub(crate) async fn join(
    ctx: &SessionContext,
    src: &Sources,
    split: &IncompleteTraces,
    c: &Compiled,
    range: Range,
    from: Option<u64>,
) -> Result<Joined> {
    // Only the columns the per-span plan reads (and those numbering needs) are read: a
    // block has some 180, and decoding them all was most of a join's cost.
    let state = ctx.state();
    let needs = |s: &Source| -> Result<Option<Vec<String>>> {
        scanned_columns(&state, &plan::span_rows(s, c, range)?).map(Some)
    };
    let patched = patch(ctx, src, split, from, &needs).await?;
    let mut out = Joined {
        rows: Vec::new(),
        bytes: patched.bytes,
    };
    for (s, table) in src.tables.iter().zip(patched.tables) {
        let Some(table) = table else {
            continue;
        };
        let plan = plan::span_rows(&s.with_table(table), c, range)?;
        let df = ctx.execute_logical_plan(plan).await.map_err(df_err)?;
        out.rows.extend(df.collect().await.map_err(df_err)?);
    }
    Ok(out)
}

/// Columns numbering a split trace reads or rewrites.
const NUMBERING: [&str; 15] = [
    c::TRACE_ID,
    c::SPAN_ID,
    c::PARENT_SPAN_ID,
    c::KIND,
    c::START_TIME,
    c::DURATION,
    c::SERVICE_NAME,
    c::NAME,
    c::NESTED_SET_LEFT,
    c::NESTED_SET_RIGHT,
    c::NESTED_SET_PARENT,
    c::TRACE_START,
    c::TRACE_DURATION,
    c::TRACE_ROOT_SERVICE,
    c::TRACE_ROOT_NAME,
];

/// The columns `plan` reads from its table, after DataFusion pushed its projection (and
/// filters) into the scan.
fn scanned_columns(state: &SessionState, plan: &LogicalPlan) -> Result<Vec<String>> {
    let optimized = state.optimize(plan).map_err(df_err)?;
    let mut names: Vec<String> = Vec::new();
    optimized
        .apply(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                names.extend(
                    scan.projected_schema
                        .fields()
                        .iter()
                        .map(|f| f.name().clone()),
                );
                for f in &scan.filters {
                    names.extend(f.column_refs().into_iter().map(|c| c.name.clone()));
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_err(df_err)?;
    Ok(names)
}

/// The rows of `split`'s traces in every source of `src` (blocks ending before `from` left
/// out), joined per trace: see [`Patched`]. `needs` names the columns a source's rows are
/// read with (`None`: all), besides those numbering needs.
pub(crate) async fn patch(
    ctx: &SessionContext,
    src: &Sources,
    split: &IncompleteTraces,
    from: Option<u64>,
    needs: &(dyn Fn(&Source) -> Result<Option<Vec<String>>> + Sync),
) -> Result<Patched> {
    let mut out = Patched {
        tables: vec![None; src.tables.len()],
        bytes: 0,
    };
    if split.is_empty() {
        return Ok(out);
    }
    let wanted = of_traces(split, false);
    // Every row of the split traces, source by source.
    let mut parts: Vec<Vec<RecordBatch>> = Vec::with_capacity(src.tables.len());
    for s in &src.tables {
        let table = match (from, BlocksTable::of(s.table.as_ref())) {
            (Some(from), Some(blocks)) => match blocks.subset(&|b| b.end_unix_nano >= from) {
                Some(t) => Arc::new(t) as Arc<dyn TableProvider>,
                None => {
                    parts.push(Vec::new());
                    continue;
                }
            },
            _ => s.table.clone(),
        };
        let mut b = LogicalPlanBuilder::scan("spans", provider_as_source(table), None)
            .and_then(|b| b.filter(wanted.clone()))
            .map_err(df_err)?;
        if let Some(mut cols) = needs(s)? {
            cols.extend(NUMBERING.iter().map(|n| n.to_string()));
            cols.sort_unstable();
            cols.dedup();
            // Column names hold dots (`span.http.route`): never parse them as qualified.
            let proj = cols.into_iter().map(|n| Expr::Column(Column::from_name(n)));
            b = b.project(proj).map_err(df_err)?;
        }
        let plan = b.build().map_err(df_err)?;
        let df = ctx.execute_logical_plan(plan).await.map_err(df_err)?;
        let (batches, bytes) = collect_counted(ctx, df).await?;
        out.bytes += bytes;
        parts.push(batches.into_iter().filter(|b| b.num_rows() > 0).collect());
    }
    let mut patches: Vec<Vec<Patch>> = parts
        .iter()
        .map(|bs| bs.iter().map(|b| Patch::new(b.num_rows())).collect())
        .collect();
    let mut traces: HashMap<TraceId, Trace, foldhash::fast::RandomState> = HashMap::default();
    for (source, batches) in parts.iter().enumerate() {
        for (batch, b) in batches.iter().enumerate() {
            spans_of(b, source, batch, &mut traces)?;
        }
    }
    for (_, (places, spans)) in traces {
        for p in &places {
            // Left out unless numbered below: a span received twice counts once.
            patches[p.source][p.batch].keep[p.row] = false;
        }
        let numbered = number_whole(&spans);
        let start = spans.iter().map(|s| s.start).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end).max().unwrap_or(0);
        let root = numbered
            .iter()
            .find(|(i, _)| spans[*i].parent.is_none())
            .map(|(i, _)| &places[*i]);
        let (root_service, root_name) = match root {
            Some(r) => root_names(&parts[r.source][r.batch], r.row)?,
            None => (String::new(), String::new()),
        };
        for (i, n) in numbered {
            let at = &places[i];
            let p = &mut patches[at.source][at.batch];
            p.keep[at.row] = true;
            p.left[at.row] = n.left;
            p.right[at.row] = n.right;
            p.parent[at.row] = n.parent;
            p.trace_start[at.row] = start;
            p.trace_duration[at.row] = end.saturating_sub(start);
            p.root_service[at.row] = root_service.clone();
            p.root_name[at.row] = root_name.clone();
        }
    }
    for ((slot, batches), patches) in out.tables.iter_mut().zip(&parts).zip(patches) {
        let Some(first) = batches.first() else {
            continue;
        };
        let patched: Vec<RecordBatch> = batches
            .iter()
            .zip(patches)
            .map(|(b, p)| p.apply(b))
            .collect::<Result<_>>()?;
        let mem = MemTable::try_new(first.schema(), vec![patched]).map_err(df_err)?;
        *slot = Some(Arc::new(mem));
    }
    Ok(out)
}

/// A split trace's spans: where each row is, and what numbering needs of it.
type Trace = (Vec<Place>, Vec<WholeSpan>);

/// Adds the spans of batch `b` (of source `source`) to their traces.
fn spans_of(
    b: &RecordBatch,
    source: usize,
    batch: usize,
    traces: &mut HashMap<TraceId, Trace, foldhash::fast::RandomState>,
) -> Result<()> {
    let binary = |name: &str| {
        b.column_by_name(name)
            .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
            .ok_or_else(|| lost(name))
    };
    let trace = binary(c::TRACE_ID)?;
    let span = binary(c::SPAN_ID)?;
    let parent = binary(c::PARENT_SPAN_ID)?;
    let kind = b
        .column_by_name(c::KIND)
        .and_then(|a| a.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| lost(c::KIND))?;
    let u64s = |name: &str| {
        b.column_by_name(name)
            .and_then(|a| a.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| lost(name))
    };
    let start = u64s(c::START_TIME)?;
    let duration = u64s(c::DURATION)?;
    let id8 = |a: &FixedSizeBinaryArray, i: usize| -> Option<[u8; 8]> {
        a.is_valid(i).then(|| a.value(i).try_into().ok()).flatten()
    };
    for row in 0..b.num_rows() {
        let s = start.value(row);
        let t = traces
            .entry(TraceId::from_bytes(trace.value(row))?)
            .or_default();
        t.0.push(Place { source, batch, row });
        t.1.push(WholeSpan {
            start: s,
            span_id: id8(span, row).ok_or_else(|| lost(c::SPAN_ID))?,
            kind: kind.value(row),
            end: end_of(s, duration.value(row)),
            parent: id8(parent, row),
        });
    }
    Ok(())
}

/// A span's end from its stored start and duration; a stored duration that wrapped (a span
/// that ended before it started, in blocks written before ingest fixed such spans) reads as 0.
pub(crate) fn end_of(start: u64, duration: u64) -> u64 {
    if duration > i64::MAX as u64 {
        start
    } else {
        start.saturating_add(duration)
    }
}

/// The service and the name of the root span at `row` of `b`.
fn root_names(b: &RecordBatch, row: usize) -> Result<(String, String)> {
    let text = |name: &str| -> Result<String> {
        let a = b.column_by_name(name).ok_or_else(|| lost(name))?;
        // One row cast, not the column: this runs once per split trace.
        let a = cast(&a.slice(row, 1), &DataType::Utf8)?;
        let a = a.as_string_opt::<i32>().ok_or_else(|| lost(name))?;
        Ok(if a.is_valid(0) {
            a.value(0).to_string()
        } else {
            String::new()
        })
    };
    Ok((text(c::SERVICE_NAME)?, text(c::NAME)?))
}
