//! The per-trace stage of a search, block by block.
//!
//! A block holds whole traces but for the few recorded as incomplete ([`BlockMeta`]'s
//! `incomplete_traces`: no root, or a span whose parent is elsewhere), so every other trace is
//! evaluated from one block's rows alone: memory is one block's matching rows, not a hash table
//! over every trace in the window (that table took 918 MiB for `{ }` over 4.6M spans, and the
//! time grew faster than the window). Rows of traces that may have parts elsewhere — incomplete
//! in some block in range, or in the live head — are kept aside and evaluated over all their
//! parts once every block has been read ([`TraceStage::merged`]).
//!
//! Within a block only traces that could still enter the answer are grouped and evaluated,
//! newest first, until the block can offer nothing better.
//!
//! [`BlockMeta`]: crate::block::meta::BlockMeta

use std::collections::HashMap;
use std::sync::Arc;

use allegro_udfs::spansets::eval::SpanRow;
use allegro_udfs::spansets::program::Program;
use allegro_udfs::spansets::{SpanColumns, evaluate};
use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use parking_lot::Mutex;

use super::newest::{Found, Newest};
use crate::catalog::IncompleteTraces;
use crate::error::{EngineError, Result};
use crate::ids::TraceId;
use crate::query::df_err;
use crate::query::plan::{Compiled, out};
use crate::schema::col as c;

/// A row of a trace evaluated over all its parts.
pub(crate) struct MergeRow {
    id: TraceId,
    start: u64,
    row: SpanRow,
}

/// Evaluates a compiled search per trace; see the module docs.
pub(crate) struct TraceStage {
    program: Arc<Program>,
    /// Traces that may have parts in more than one source.
    merge: IncompleteTraces,
}

fn lost(what: &str) -> EngineError {
    EngineError::Internal(format!("search rows lost column {what}"))
}

impl TraceStage {
    /// The stage of `c`, merging the traces in `merge`.
    pub(crate) fn new(c: &Compiled, merge: IncompleteTraces) -> Self {
        Self {
            program: Arc::new(c.program.clone()),
            merge,
        }
    }

    /// The span columns of `b`, in [`SpanColumns`] order.
    fn span_columns(&self, b: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let p = &self.program;
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

    /// Reads one block's per-span rows (or the head's): rows of traces to merge are returned;
    /// the other traces are evaluated and offered to `newest` as `tenant`'s.
    pub(crate) async fn block(
        &self,
        mut rows: SendableRecordBatchStream,
        newest: &Mutex<Newest>,
        tenant: usize,
    ) -> Result<Vec<MergeRow>> {
        let mut traces: HashMap<TraceId, (u64, Vec<SpanRow>), foldhash::fast::RandomState> =
            HashMap::default();
        let mut merge = Vec::new();
        while let Some(b) = rows.next().await {
            let b = b.map_err(df_err)?;
            if b.num_rows() == 0 {
                continue;
            }
            let ids = b
                .column_by_name(c::TRACE_ID)
                .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
                .ok_or_else(|| lost(c::TRACE_ID))?;
            let starts = b
                .column_by_name(out::TRACE_START)
                .and_then(|a| a.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| lost(out::TRACE_START))?;
            let arrays = self.span_columns(&b)?;
            let cols = SpanColumns::new(&arrays, &self.program).map_err(df_err)?;
            // Rows of traces older than the bar cannot make the answer.
            let bar = newest.lock().bar().map_or(0, |(s, _)| s);
            for i in 0..b.num_rows() {
                let id = TraceId::from_bytes(ids.value(i))?;
                let start = starts.value(i);
                if self.merge.contains(&id) {
                    merge.push(MergeRow {
                        id,
                        start,
                        row: cols.row(i),
                    });
                } else if start >= bar {
                    let t = traces.entry(id).or_insert_with(|| (start, Vec::new()));
                    t.0 = t.0.min(start);
                    t.1.push(cols.row(i));
                }
            }
        }
        self.offer(traces.into_iter().collect(), newest, tenant)?;
        Ok(merge)
    }

    /// Evaluates traces from every part kept aside by [`TraceStage::block`].
    pub(crate) fn merged(
        &self,
        rows: Vec<MergeRow>,
        newest: &Mutex<Newest>,
        tenant: usize,
    ) -> Result<()> {
        let mut traces: HashMap<TraceId, (u64, Vec<SpanRow>), foldhash::fast::RandomState> =
            HashMap::default();
        for r in rows {
            let t = traces.entry(r.id).or_insert_with(|| (r.start, Vec::new()));
            t.0 = t.0.min(r.start);
            t.1.push(r.row);
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
            if !newest.lock().could_enter(start, &id) {
                // Sorted: every later trace ranks lower still.
                break;
            }
            let sets =
                evaluate(&self.program, &mut rows).map_err(|e| EngineError::InvalidInput(e.0))?;
            if let Some(sets) = sets {
                newest.lock().offer(Found {
                    start,
                    id,
                    tenant,
                    sets,
                });
            }
        }
        Ok(())
    }
}
