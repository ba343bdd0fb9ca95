//! TraceQL search with a cluster configured: the live head is read here, as without one (its
//! spans are in this process's memory already); blocks are read on the cluster, in waves.
//!
//! A search reads parts newest first and stops as soon as no unread part can hold a trace
//! newer than the `limit`-th found (the module above), most often after a block or two. Each
//! job sent to the cluster costs a scheduling round trip (20–160 ms measured for SQL,
//! docs/benchmarks.md), so parts go in waves that double: 2, 4, 8, … parts, a wave holding at
//! most [`WAVE_SPANS`] spans. A search that stops early costs one small job; one that must
//! read everything (a rare match over a day) costs `log2(parts)` jobs, each read by every
//! executor at once. The stop is checked before each wave exactly as before each part, so
//! the answer is the same as in one process.
//!
//! Each wave's per-span rows are planned here, as one process plans them, and evaluated per
//! trace on the executors (`TraceFilterExec`, [`super::trace_filter`]): a partition passes on
//! only the rows of its best `limit` traces with a match, and those of split traces. What
//! comes back is evaluated again here by the per-trace stage, exactly as without a cluster:
//! the rows of a few traces per part instead of every row a leaf matches. A wave's rows come
//! back as one stream, its parts' rows interleaved, so the stage groups them by trace (as it
//! does the head's, `sorted: false`); it holds a wave's rows until the wave ends: at most
//! `limit` traces' rows per partition.
//!
//! A wave's partitions are tasks, and each task costs Ballista's scheduler and executors a
//! fixed few milliseconds (launch, status, result fetch; planning the job is under 1 ms), more
//! per task as a wave has more: at 10M spans over 100 blocks and one task slot per executor, a
//! wave of 19 one-part tasks took about 100 ms and one of 38 took 330–460 ms. So a task reads
//! at least [`PARTS_PER_TASK`] consecutive parts, and a wave has at most [`TASKS_PER_WAVE`]
//! tasks. A search matching nothing over those 100 blocks took 745 ms with a task per part
//! and waves of at most 2M spans, 474 ms with four parts a task, and about 400 ms with up to
//! 16M spans a wave as well (docs/benchmarks.md).

use std::sync::Arc;

use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use parking_lot::Mutex;

use super::newest::Newest;
use super::trace_filter::{Pass, TraceFilterExec};
use super::trace_stage::{Rows, TraceStage};
use super::{Input, Job, Progress, input, search_config};
use crate::block::meta::BlockMeta;
use crate::error::{EngineError, Result};
use crate::query::plan;
use crate::query::remote::Remote;
use crate::query::sources::Sources;
use crate::query::spans_table::SpansTable;
use crate::query::table::{BlockPart, BlocksTable};
use crate::query::{Optimizer, QueryEngine, bytes_scanned, df_err, split_traces};
use crate::tempopb::SearchMetrics;

/// Most spans one wave's parts hold.
///
/// The rows a wave sends back are held until it ends; since [`TraceFilterExec`] runs on the
/// executors those are at most `limit` traces' rows per partition, whatever the spans read,
/// so this budget bounds the executors' work per wave (how much an early stop can waste), not
/// the memory held here. It was 2M when every matching row came back: a search matching
/// nothing over 100 blocks of 100k spans took 8 waves (2, 4, 8, 16, 20, 20, 20, 10 parts),
/// and over 1,000 such blocks it would take 50; at 16M it takes 6 and 12.
const WAVE_SPANS: u64 = 16_000_000;

/// Fewest parts one task of a wave reads.
const PARTS_PER_TASK: usize = 4;

/// Most tasks of one wave (more parts make each task read more).
const TASKS_PER_WAVE: usize = 16;

/// Parts in the first wave; each next wave has twice as many.
const FIRST_WAVE: usize = 2;

/// Spans in `part`: a slice's share of its block when the block is cut in slices.
fn spans_of(part: &BlockPart) -> u64 {
    match (&part.block.slices, part.slice) {
        (Some(slices), Some(_)) => part.block.total_spans / slices.len().max(1) as u64,
        _ => part.block.total_spans,
    }
}

/// The waves of parts of `spans` spans each (sorted newest first): index ranges, each twice
/// as many parts as the last but at most [`WAVE_SPANS`] spans (and at least one part).
fn waves(spans: &[u64]) -> Vec<std::ops::Range<usize>> {
    let (mut out, mut next, mut size) = (Vec::new(), 0, FIRST_WAVE);
    while next < spans.len() {
        let (mut end, mut held) = (next, 0);
        while end < spans.len()
            && end - next < size
            && (end == next || held + spans[end] <= WAVE_SPANS)
        {
            held += spans[end];
            end += 1;
        }
        out.push(next..end);
        next = end;
        size = size.saturating_mul(2);
    }
    out
}

impl QueryEngine {
    /// [`QueryEngine::newest_first`] with a cluster: see the module docs.
    pub(super) async fn newest_first_on_cluster(
        &self,
        src: &Sources,
        at: &Job<'_>,
        newest: &Arc<Mutex<Newest>>,
        metrics: &mut SearchMetrics,
        mut progress: Option<&mut Progress>,
        remote: &Arc<dyn Remote>,
    ) -> Result<()> {
        let (c, range, tenant) = (at.c, at.range, at.tenant);
        let ctx = self.search_session(at.every);
        let cluster = self.session_on(Optimizer::TraceQl, search_config(at.every), Some(remote));
        let split = split_traces::split_traces(&self.catalog, src).await?;
        let task = ctx.task_ctx();
        let stage = Arc::new(TraceStage::new(
            c,
            split.ids.clone(),
            task.memory_pool().clone(),
        ));
        // The head, here, its partitions newest first.
        let mut heads: Vec<Input> = Vec::new();
        for s in &src.tables {
            if BlocksTable::of(s.table.as_ref()).is_none()
                && let Some(i) =
                    input(&ctx.state(), s.with_table(s.table.clone()), c, range).await?
            {
                heads.push(i);
            }
        }
        let mut units: Vec<(usize, usize, u64)> = heads
            .iter()
            .enumerate()
            .flat_map(|(i, h)| h.head_ends.iter().enumerate().map(move |(p, e)| (i, p, *e)))
            .collect();
        units.sort_by_key(|u| std::cmp::Reverse(u.2));
        for (i, p, end) in units {
            if newest.lock().beyond(end) {
                break;
            }
            let rest = heads[i]
                .rest
                .as_ref()
                .map(|plan| plan.execute(p, task.clone()))
                .transpose()
                .map_err(df_err)?;
            let rows = Rows {
                roots: None,
                rest,
                sorted: false,
            };
            stage.block(rows, newest, tenant).await?;
            self.job_done(src, at, newest, metrics, progress.as_deref_mut())
                .await?;
        }
        // Blocks, on the cluster, in waves.
        let mut parts: Vec<(usize, BlockPart)> = Vec::new();
        for (i, s) in src.tables.iter().enumerate() {
            if let Some(t) = BlocksTable::of(s.table.as_ref()) {
                parts.extend(t.per_part(range).parts().iter().map(|p| (i, p.clone())));
            }
        }
        parts.sort_by_key(|(_, p)| std::cmp::Reverse(p.end()));
        let ordered: Vec<BlockPart> = parts.iter().map(|(_, p)| p.clone()).collect();
        for wave in waves(&ordered.iter().map(spans_of).collect::<Vec<_>>()) {
            if newest.lock().beyond(ordered[wave.start].end()) {
                break;
            }
            self.read_wave(
                (&ctx, &cluster),
                remote,
                src,
                &parts[wave.clone()],
                at,
                &stage,
                newest,
            )
            .await?;
            for _ in wave {
                self.job_done(src, at, newest, metrics, progress.as_deref_mut())
                    .await?;
            }
        }
        // Bytes read on the cluster are not reported back (as for metrics there).
        metrics.inspected_bytes += heads
            .iter()
            .flat_map(Input::plans)
            .map(bytes_scanned)
            .sum::<u64>();
        self.join_split(&ctx, src, at, (&stage, &split), newest, metrics)
            .await?;
        Ok(())
    }

    /// Reads the parts of one wave (`(source, part)`) on the cluster into `stage`: per source,
    /// the parts inside the search's range and those it cuts, as the search plans them.
    #[allow(clippy::too_many_arguments)]
    async fn read_wave(
        &self,
        (local, cluster): (&SessionContext, &SessionContext),
        remote: &Arc<dyn Remote>,
        src: &Sources,
        wave: &[(usize, BlockPart)],
        at: &Job<'_>,
        stage: &Arc<TraceStage>,
        newest: &Arc<Mutex<Newest>>,
    ) -> Result<()> {
        let (c, range) = (at.c, at.range);
        let program = Arc::new(c.program.clone());
        let split = Arc::new(stage.split().clone());
        let inside = |b: &BlockMeta| {
            range.is_none_or(|(s, e)| s <= b.start_unix_nano && b.end_unix_nano <= e)
        };
        let mut sources: Vec<usize> = wave.iter().map(|(i, _)| *i).collect();
        sources.dedup();
        for i in sources {
            let s = &src.tables[i];
            let Some(t) = BlocksTable::of(s.table.as_ref()) else {
                continue;
            };
            for (within, filter) in [(true, None), (false, range)] {
                let parts: Vec<BlockPart> = wave
                    .iter()
                    .filter(|(j, p)| *j == i && inside(&p.block) == within)
                    .map(|(_, p)| p.clone())
                    .collect();
                if parts.is_empty() {
                    continue;
                }
                let per = parts.len().div_ceil(TASKS_PER_WAVE).max(PARTS_PER_TASK);
                let table = Arc::new(
                    t.with_parts(parts)
                        .parts_per_partition(per)
                        .with_string_views(),
                );
                let logical = plan::span_rows(&s.with_table(table), c, filter)?;
                // Planned here (as one process plans it), the traces evaluated on the executors.
                let rows = local
                    .state()
                    .create_physical_plan(&logical)
                    .await
                    .map_err(df_err)?;
                let limit = newest.lock().limit();
                let pass = Pass::BestTraces(limit);
                let filtered = TraceFilterExec::new(rows, program.clone(), split.clone(), pass);
                let wave = LogicalPlanBuilder::scan(
                    "wave",
                    provider_as_source(Arc::new(SpansTable::from_plan(Arc::new(filtered)))),
                    None,
                )
                .and_then(|b| b.build())
                .map_err(df_err)?;
                let df = cluster.execute_logical_plan(wave).await.map_err(df_err)?;
                let stream = df.execute_stream().await.map_err(|e| remote.failure(e))?;
                // The cluster's errors keep their meaning (its failure, or the query's own
                // mistake) through the stage, which sees only DataFusion's error type.
                let failed: Arc<Mutex<Option<EngineError>>> = Arc::default();
                let schema = stream.schema();
                let (r, slot) = (remote.clone(), failed.clone());
                let stream = stream.map(move |b| {
                    b.map_err(|e| {
                        let why = e.to_string();
                        *slot.lock() = Some(r.failure(e));
                        DataFusionError::Execution(why)
                    })
                });
                let rows = Rows {
                    roots: None,
                    rest: Some(Box::pin(RecordBatchStreamAdapter::new(schema, stream))),
                    sorted: false,
                };
                if let Err(e) = stage.block(rows, newest, at.tenant).await {
                    return Err(failed.lock().take().unwrap_or(e));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_double_and_stay_under_their_span_budget() {
        assert_eq!(waves(&[100_000; 20]), vec![0..2, 2..6, 6..14, 14..20]);
        // Big parts: a wave stops at its span budget, and a part over it goes alone.
        assert_eq!(
            waves(&[12_000_000, 7_200_000, 2_400_000, 24_000_000, 100]),
            vec![0..1, 1..3, 3..4, 4..5]
        );
        // A day of 1,000 blocks of 100k spans: 12 waves, 160 parts at most.
        let day = waves(&[100_000; 1_000]);
        assert_eq!(day.len(), 12);
        assert_eq!(day.iter().map(|w| w.len()).max(), Some(160));
        assert!(waves(&[]).is_empty());
    }
}
