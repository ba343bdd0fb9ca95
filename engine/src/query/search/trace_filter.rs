//! The per-trace stage of a search where the rows are read: on a cluster's executors, each
//! partition's traces evaluated there and only what can make the answer sent on.
//!
//! Without it, every row a leaf matches crossed from the executors to the serving process,
//! which evaluated the traces (`trace_stage`): a search whose leaves match far more spans
//! than its structure, or that matches nothing, shipped most of the store (at 10M spans, a
//! sibling search matching nothing took 2.2 s on the cluster against 0.66 s in one process,
//! docs/benchmarks.md). A search partition reads whole blocks or time slices, which hold whole
//! traces but for the split ones, so each trace can be evaluated in its partition:
//!
//! - a trace the program finds nothing in is dropped;
//! - of those it finds something in, the partition keeps the `limit` best by the answer's
//!   order (newest start, then smallest ID): a trace with `limit` better ones in its own
//!   partition cannot be among the `limit` best of all, so the cut is exact;
//! - the rows of split traces pass untouched: they are evaluated joined, in the serving
//!   process, which also learns from them which leaves their parts met.
//!
//! What passes is the kept traces' rows unchanged, so the serving process evaluates them again
//! exactly as it would have (a few traces per partition, not every matching row). A
//! partition's matching rows are held until it ends, reserved from the task's memory pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use allegro_udfs::spansets::SpanColumns;
use allegro_udfs::spansets::eval::SpanRow;
use allegro_udfs::spansets::program::Program;
use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};

use super::trace_stage::{columns, evaluated};
use crate::catalog::IncompleteTraces;
use crate::ids::TraceId;

/// Evaluates each partition's traces and passes on the rows of those that can make the
/// answer; see the module docs.
#[derive(Debug)]
pub struct TraceFilterExec {
    input: Arc<dyn ExecutionPlan>,
    program: Arc<Program>,
    required: Vec<u64>,
    /// Traces split across sources: passed untouched.
    split: Arc<IncompleteTraces>,
    /// Most traces a partition passes on.
    limit: usize,
    properties: Arc<PlanProperties>,
}

impl TraceFilterExec {
    /// Filters `input`'s per-span rows ([`crate::query::plan::span_rows`]) by `program`,
    /// passing the rows of `split` untouched and at most `limit` found traces per partition.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        program: Arc<Program>,
        split: Arc<IncompleteTraces>,
        limit: usize,
    ) -> Self {
        Self {
            required: program.required_leaves(),
            properties: properties_over(&input),
            input,
            program,
            split,
            limit: limit.max(1),
        }
    }

    /// The per-trace program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The split traces, whose rows pass untouched.
    pub fn split(&self) -> &IncompleteTraces {
        &self.split
    }

    /// Most traces a partition passes on.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The input's rows, fewer of them, in the input's partitions, emitted once each is read.
fn properties_over(input: &Arc<dyn ExecutionPlan>) -> Arc<PlanProperties> {
    let p = input.properties();
    Arc::new(PlanProperties::new(
        p.equivalence_properties().clone(),
        p.output_partitioning().clone(),
        EmissionType::Final,
        p.boundedness,
    ))
}

impl DisplayAs for TraceFilterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "TraceFilterExec: leaves={}, split={}, limit={}",
            self.program.leaves,
            self.split.len(),
            self.limit
        )
    }
}

impl ExecutionPlan for TraceFilterExec {
    fn name(&self) -> &str {
        "TraceFilterExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // Its input's partitions hold whole traces; a repartition would cut them.
        vec![false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = <[_; 1]>::try_from(children).map_err(|c| {
            DataFusionError::Internal(format!("TraceFilterExec given {} children", c.len()))
        })?;
        Ok(Arc::new(Self {
            properties: properties_over(&input),
            input,
            program: self.program.clone(),
            required: self.required.clone(),
            split: self.split.clone(),
            limit: self.limit,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let held = MemoryConsumer::new(format!("TraceFilterExec[{partition}]"))
            .register(context.memory_pool());
        let filter = Partition {
            program: self.program.clone(),
            required: self.required.clone(),
            split: self.split.clone(),
            limit: self.limit,
        };
        let out = async move { filter.run(input, held).await };
        let batches = futures::stream::once(out)
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }
}

/// One partition's filter.
struct Partition {
    program: Arc<Program>,
    required: Vec<u64>,
    split: Arc<IncompleteTraces>,
    limit: usize,
}

/// Where a trace's rows are in a partition's batches: (batch, row).
type RowsAt = Vec<(u32, u32)>;

/// One trace's rows in a partition: its start (the earliest of its rows'), where its rows are
/// (batch, row) and the rows as the program reads them.
#[derive(Default)]
struct Trace {
    start: u64,
    at: RowsAt,
    rows: Vec<SpanRow>,
}

fn df(e: crate::error::EngineError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl Partition {
    /// Reads the partition whole, then returns the rows of the kept traces and split ones.
    async fn run(
        self,
        mut input: SendableRecordBatchStream,
        held: MemoryReservation,
    ) -> Result<Vec<RecordBatch>> {
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut keep: Vec<Vec<bool>> = Vec::new();
        let mut traces: HashMap<TraceId, Trace, foldhash::fast::RandomState> = HashMap::default();
        while let Some(b) = input.next().await {
            let b = b?;
            if b.num_rows() == 0 {
                continue;
            }
            let (ids, starts, arrays) = columns(&self.program, &b).map_err(df)?;
            let cols = SpanColumns::new(&arrays, &self.program)?;
            let bi = u32::try_from(batches.len())
                .map_err(|_| DataFusionError::Internal("too many batches".into()))?;
            let mut bytes = b.get_array_memory_size();
            let mut mask = vec![false; b.num_rows()];
            for (i, &start) in starts.values().iter().enumerate() {
                let id = TraceId::from_bytes(ids.value(i)).map_err(df)?;
                if self.split.contains(&id) {
                    mask[i] = true;
                    continue;
                }
                let t = traces.entry(id).or_insert_with(|| Trace {
                    start,
                    ..Trace::default()
                });
                t.start = t.start.min(start);
                t.at.push((bi, i as u32));
                let row = cols.row(i);
                bytes += std::mem::size_of::<SpanRow>()
                    + row.values.capacity() * std::mem::size_of::<Option<f64>>()
                    + row
                        .keys
                        .iter()
                        .flatten()
                        .map(String::capacity)
                        .sum::<usize>()
                    + std::mem::size_of::<(u32, u32)>();
                t.rows.push(row);
            }
            held.try_grow(bytes)?;
            batches.push(b);
            keep.push(mask);
        }
        // The traces found, best first, cut at `limit`.
        let mut found: Vec<(u64, TraceId, RowsAt)> = Vec::new();
        for (id, mut t) in traces {
            if evaluated(&self.program, &self.required, &mut t.rows)
                .map_err(df)?
                .is_some()
            {
                found.push((t.start, id, t.at));
            }
        }
        found.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        found.truncate(self.limit);
        for (_, _, at) in found {
            for (b, i) in at {
                keep[b as usize][i as usize] = true;
            }
        }
        let mut out = Vec::new();
        for (b, mask) in batches.iter().zip(keep) {
            if mask.iter().any(|k| *k) {
                out.push(filter_record_batch(b, &BooleanArray::from(mask))?);
            }
        }
        drop(batches);
        held.free();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::plan::{compile_search, out};
    use crate::schema::col as c;
    use arrow::array::{Array, ArrayRef, FixedSizeBinaryArray, Int32Array, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    /// One span: trace, span ID, nested set (left, right, parent), the trace's start, and which
    /// of `{ name = "a" }` (leaf 0) and `{ name = "b" }` (leaf 1) it matches.
    type Span = (u8, u8, (i32, i32, i32), u64, (bool, bool));

    fn batch(spans: &[Span]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(c::TRACE_ID, DataType::FixedSizeBinary(16), false),
            Field::new(c::NESTED_SET_LEFT, DataType::Int32, false),
            Field::new(c::NESTED_SET_RIGHT, DataType::Int32, false),
            Field::new(c::NESTED_SET_PARENT, DataType::Int32, false),
            Field::new(c::SPAN_ID, DataType::FixedSizeBinary(8), false),
            Field::new(out::TRACE_START, DataType::UInt64, false),
            Field::new("leaf0", DataType::Boolean, false),
            Field::new("leaf1", DataType::Boolean, false),
        ]));
        let ids = |n: usize, f: &dyn Fn(&Span) -> u8| {
            FixedSizeBinaryArray::try_from_iter(spans.iter().map(|s| vec![f(s); n])).unwrap()
        };
        let cols: Vec<ArrayRef> = vec![
            Arc::new(ids(16, &|s| s.0)),
            Arc::new(Int32Array::from_iter_values(spans.iter().map(|s| s.2.0))),
            Arc::new(Int32Array::from_iter_values(spans.iter().map(|s| s.2.1))),
            Arc::new(Int32Array::from_iter_values(spans.iter().map(|s| s.2.2))),
            Arc::new(ids(8, &|s| s.1)),
            Arc::new(UInt64Array::from_iter_values(spans.iter().map(|s| s.3))),
            Arc::new(BooleanArray::from_iter(spans.iter().map(|s| Some(s.4.0)))),
            Arc::new(BooleanArray::from_iter(spans.iter().map(|s| Some(s.4.1)))),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    /// The span IDs `{ name = "a" } >> { name = "b" }` passes of `partitions` (each a list of
    /// batches), with `split` passed untouched and at most `limit` traces a partition.
    async fn passed(partitions: &[Vec<Vec<Span>>], split: &[u8], limit: usize) -> Vec<u8> {
        let compiled = compile_search(r#"{ name = "a" } >> { name = "b" }"#).unwrap();
        assert_eq!(compiled.program.leaves, 2);
        let parts: Vec<Vec<RecordBatch>> = partitions
            .iter()
            .map(|p| p.iter().map(|b| batch(b)).collect())
            .collect();
        let schema = parts[0][0].schema();
        let input = MemorySourceConfig::try_new_exec(&parts, schema, None).unwrap();
        let split: IncompleteTraces = split.iter().map(|&t| TraceId([t; 16])).collect();
        let exec = Arc::new(TraceFilterExec::new(
            input,
            Arc::new(compiled.program),
            Arc::new(split),
            limit,
        ));
        let out = collect(exec, SessionContext::new().task_ctx())
            .await
            .unwrap();
        let mut ids: Vec<u8> = out
            .iter()
            .flat_map(|b| {
                let col = b.column_by_name(c::SPAN_ID).unwrap();
                let col = col.as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap();
                (0..col.len()).map(|i| col.value(i)[0]).collect::<Vec<_>>()
            })
            .collect();
        ids.sort();
        ids
    }

    const A: (bool, bool) = (true, false);
    const B: (bool, bool) = (false, true);

    #[tokio::test]
    async fn passes_the_best_found_traces_and_split_ones_whole() {
        // Trace 1 (start 100): a over b, its rows in two batches. Trace 2 (200): b over a, so
        // nothing. Trace 3 (300) and trace 4 (50): a over b. Trace 5 (10): split, one a.
        let first = vec![
            (1, 11, (1, 4, -1), 100, A),
            (2, 21, (1, 4, -1), 200, B),
            (2, 22, (2, 3, 1), 200, A),
            (3, 31, (1, 6, -1), 300, A),
            (5, 51, (0, 0, 0), 10, A),
        ];
        let second = vec![
            (1, 12, (2, 3, 1), 100, B),
            (3, 32, (4, 5, 1), 300, B),
            (4, 41, (1, 4, -1), 50, A),
            (4, 42, (2, 3, 1), 50, B),
        ];
        let one = vec![vec![first.clone(), second.clone()]];
        assert_eq!(passed(&one, &[5], 10).await, [11, 12, 31, 32, 41, 42, 51]);
        // The two newest of three found; trace 2 never.
        assert_eq!(passed(&one, &[5], 2).await, [11, 12, 31, 32, 51]);
        assert_eq!(passed(&one, &[], 1).await, [31, 32]);
        // Trace 5 is no longer split: alone, it finds nothing.
        assert_eq!(passed(&one, &[], 10).await, [11, 12, 31, 32, 41, 42]);
        // Per partition: trace 4 is the best of its own.
        let apart = vec![
            vec![first, vec![second[0], second[1]]],
            vec![vec![second[2], second[3]]],
        ];
        assert_eq!(passed(&apart, &[], 1).await, [31, 32, 41, 42]);
    }

    #[tokio::test]
    async fn ties_go_to_the_smaller_trace_id() {
        let spans = vec![
            (7, 71, (1, 4, -1), 100, A),
            (7, 72, (2, 3, 1), 100, B),
            (6, 61, (1, 4, -1), 100, A),
            (6, 62, (2, 3, 1), 100, B),
        ];
        assert_eq!(passed(&[vec![spans]], &[], 1).await, [61, 62]);
    }
}
