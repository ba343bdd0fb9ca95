//! The per-trace stage of a search or of a structural metrics pipeline where the rows are
//! read: on a cluster's executors, each partition's traces evaluated there and only what the
//! answer needs sent on.
//!
//! Without it, every row a leaf matches crossed from the executors to the serving process,
//! which evaluated the traces (`trace_stage`): a search whose leaves match far more spans
//! than its structure, or that matches nothing, shipped most of the store (at 10M spans, a
//! sibling search matching nothing took 2.2 s on the cluster against 0.66 s in one process,
//! docs/benchmarks.md). A partition of these plans reads whole blocks or time slices (file
//! scans are not cut by byte range), head groups or joined split traces, which hold whole
//! traces but for the split ones, so each trace can be evaluated in its partition. What a
//! partition passes on ([`Pass`]):
//!
//! - for a search, the rows of its `limit` best traces the program finds something in, by
//!   the answer's order (newest start, then smallest ID): a trace with `limit` better ones in
//!   its own partition cannot be among the `limit` best of all, so the cut is exact; the
//!   serving process evaluates them again exactly as it would have (a few traces per part,
//!   not every matching row);
//! - for a metrics pipeline with spanset or structural operators, one row of each span its
//!   found spansets hold: the spans the pipeline chooses, which the serving process only
//!   collects;
//! - either way, the rows of split traces untouched: they are evaluated joined, in the serving
//!   process, which also learns from them which leaves their parts met.
//!
//! A partition's matching rows are held until it ends, reserved from the task's memory pool.

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
    pass: Pass,
    properties: Arc<PlanProperties>,
}

/// What a partition of a [`TraceFilterExec`] passes on (besides split traces' rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Every row of its best `n` traces with a match (a search).
    BestTraces(usize),
    /// The rows of every span a found spanset holds (a metrics pipeline's chosen spans).
    MatchedSpans,
}

impl TraceFilterExec {
    /// Filters `input`'s per-span rows ([`crate::query::plan::span_rows`]) by `program`,
    /// passing the rows of `split` untouched and what `pass` says of the others.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        program: Arc<Program>,
        split: Arc<IncompleteTraces>,
        pass: Pass,
    ) -> Self {
        Self {
            required: program.required_leaves(),
            properties: properties_over(&input),
            input,
            program,
            split,
            pass: match pass {
                Pass::BestTraces(n) => Pass::BestTraces(n.max(1)),
                p => p,
            },
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

    /// What a partition passes on.
    pub fn pass(&self) -> Pass {
        self.pass
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
            "TraceFilterExec: leaves={}, split={}, pass={:?}",
            self.program.leaves,
            self.split.len(),
            self.pass
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
            pass: self.pass,
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
            pass: self.pass,
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
    pass: Pass,
}

/// Where a trace's rows are in a partition's batches, and their span IDs: (batch, row, span).
type RowsAt = Vec<(u32, u32, [u8; 8])>;

/// One trace's rows in a partition: its start (the earliest of its rows'), where its rows are
/// and the rows as the program reads them.
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
                let row = cols.row(i);
                t.at.push((bi, i as u32, row.span_id));
                bytes += std::mem::size_of::<SpanRow>()
                    + row.values.capacity() * std::mem::size_of::<Option<f64>>()
                    + row
                        .keys
                        .iter()
                        .flatten()
                        .map(String::capacity)
                        .sum::<usize>()
                    + std::mem::size_of::<(u32, u32, [u8; 8])>();
                t.rows.push(row);
            }
            held.try_grow(bytes)?;
            batches.push(b);
            keep.push(mask);
        }
        // The traces found, and the spans their spansets hold.
        let mut found: Vec<(u64, TraceId, RowsAt, Vec<[u8; 8]>)> = Vec::new();
        for (id, mut t) in traces {
            if let Some(sets) = evaluated(&self.program, &self.required, &mut t.rows).map_err(df)? {
                let spans = match self.pass {
                    Pass::BestTraces(_) => Vec::new(),
                    Pass::MatchedSpans => {
                        let mut spans: Vec<[u8; 8]> =
                            sets.iter().flat_map(|s| &s.spans).map(|s| s.0).collect();
                        spans.sort_unstable();
                        spans.dedup();
                        spans
                    }
                };
                found.push((t.start, id, t.at, spans));
            }
        }
        if let Pass::BestTraces(n) = self.pass {
            found.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            found.truncate(n);
        }
        for (_, _, at, spans) in found {
            // Of a span received twice, its first row only.
            let mut taken = vec![false; spans.len()];
            for (b, i, span) in at {
                let pass = match self.pass {
                    Pass::BestTraces(_) => true,
                    Pass::MatchedSpans => spans
                        .binary_search(&span)
                        .is_ok_and(|k| !std::mem::replace(&mut taken[k], true)),
                };
                keep[b as usize][i as usize] |= pass;
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
    /// batches), with `split` passed untouched and the others as `pass` says.
    async fn passed(partitions: &[Vec<Vec<Span>>], split: &[u8], pass: Pass) -> Vec<u8> {
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
            pass,
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
        assert_eq!(
            passed(&one, &[5], Pass::BestTraces(10)).await,
            [11, 12, 31, 32, 41, 42, 51]
        );
        // The two newest of three found; trace 2 never.
        assert_eq!(
            passed(&one, &[5], Pass::BestTraces(2)).await,
            [11, 12, 31, 32, 51]
        );
        assert_eq!(passed(&one, &[], Pass::BestTraces(1)).await, [31, 32]);
        // Trace 5 is no longer split: alone, it finds nothing.
        assert_eq!(
            passed(&one, &[], Pass::BestTraces(10)).await,
            [11, 12, 31, 32, 41, 42]
        );
        // Per partition: trace 4 is the best of its own.
        let apart = vec![
            vec![first, vec![second[0], second[1]]],
            vec![vec![second[2], second[3]]],
        ];
        assert_eq!(
            passed(&apart, &[], Pass::BestTraces(1)).await,
            [31, 32, 41, 42]
        );
        // A metrics pipeline's chosen spans: the b spans under an a, in every trace found.
        assert_eq!(
            passed(&one, &[5], Pass::MatchedSpans).await,
            [12, 32, 42, 51]
        );
        assert_eq!(passed(&apart, &[], Pass::MatchedSpans).await, [12, 32, 42]);
    }

    #[tokio::test]
    async fn ties_go_to_the_smaller_trace_id() {
        let spans = vec![
            (7, 71, (1, 4, -1), 100, A),
            (7, 72, (2, 3, 1), 100, B),
            (6, 61, (1, 4, -1), 100, A),
            (6, 62, (2, 3, 1), 100, B),
        ];
        assert_eq!(
            passed(&[vec![spans]], &[], Pass::BestTraces(1)).await,
            [61, 62]
        );
    }
}
