//! TraceQL search: the `limit` newest matching traces, exactly, at the cost of the answer.
//!
//! ```text
//! per source (the head, then blocks and the time slices of merged blocks by end time, newest
//! first; two in flight)
//!   Projection(ids, nested sets, trace_start, leaf0.., v0.., k0..)   -- DataFusion, one
//!     Filter(leaf0 OR leaf1 OR ... AND time range)                   -- partition per block,
//!       Parquet scan with the predicate pushed down                 -- `plan::span_rows`
//!   → TraceStage: group the block's rows per trace, evaluate the newest first
//!   → Newest: the `limit` newest traces so far
//! stop when the `limit`-th trace found starts after everything left unread ends
//! split traces: read again whole from every source, nested sets and trace-level columns
//!   recomputed over all their parts, then evaluated (`query::split_traces`, `TraceStage::joined`)
//! response: the answer's traces from the sources that can hold them
//! ```
//!
//! Why this is exact: a block holds every span it has of a trace, and its `end` bounds the
//! start of every trace part in it; so does each time slice of a merged block, which holds
//! whole traces (docs/schema.md). Once `limit` traces are held and the worst starts after
//! the `end` of every unread block, no unread trace can rank above it. A trace in the answer
//! has all its parts in blocks read (a part's block ends at or after the trace's root span
//! ends, which is after the trace starts). Traces split across sources are evaluated whole,
//! over their parts in every source in range, whatever was read before the stop.
//!
//! Why this is fast: `{ }` over 24 h reads the newest block or two, as it would over one hour;
//! memory is two blocks' matching rows, never a table of every trace in the window; and only
//! the answer's traces are read whole ([`response`]).

mod matched_values;
mod newest;
mod on_cluster;
mod response;
pub mod trace_filter;
mod trace_stage;

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::{SessionConfig, SessionContext};
use parking_lot::Mutex;

use self::newest::Newest;
use self::trace_stage::TraceStage;
use super::plan::{self, Compiled, Range};
use super::sources::Sources;
use super::split_traces;
use super::table::{BlockPart, BlocksTable};
use super::{Partial, QueryEngine, bytes_scanned, df_err};
use crate::block::meta::BlockMeta;
use crate::error::{EngineError, Result};
use crate::tempopb::{SearchMetrics, SearchResponse, TraceSearchMetadata};

/// A TraceQL search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The TraceQL text.
    pub query: String,
    /// Most traces returned (newest first).
    pub limit: usize,
    /// Most spans returned per spanset.
    pub spss: usize,
    /// Only traces overlapping `[start, end]` (unix nanoseconds).
    pub range: Range,
}

/// The plans of a query, for `explain`.
pub struct Explained {
    /// What the planner compiled.
    pub compiled: Compiled,
    /// Logical plan, optimised.
    pub logical: String,
    /// Physical plan.
    pub physical: String,
}

/// How often a streamed search sends partial answers after its first.
const PARTIAL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A streamed search's state: where partials go, which traces were sent, and when.
struct Progress {
    sink: Partial<SearchResponse>,
    sent: std::collections::HashSet<(usize, crate::ids::TraceId)>,
    last: Option<std::time::Instant>,
}

impl Progress {
    fn new(sink: Partial<SearchResponse>) -> Self {
        Self {
            sink,
            sent: Default::default(),
            last: None,
        }
    }
}

/// What one tenant's part of a search works on.
struct Job<'a> {
    c: &'a Compiled,
    range: Range,
    spss: usize,
    /// Which of the query's tenants.
    tenant: usize,
    /// Every match is wanted (no limit, so no block is skipped): see [`QueryEngine::search_session`].
    every: bool,
}

/// The jobs of `src`: its blocks, and its head when it has one.
fn jobs(src: &Sources) -> u32 {
    let head = src
        .tables
        .iter()
        .filter(|s| BlocksTable::of(s.table.as_ref()).is_none())
        .count();
    (src.blocks.len() + head).min(u32::MAX as usize) as u32
}

/// Blocks one search reads at once: one per core of the 2-core machines Allegro targets; more
/// would read blocks an early stop makes useless.
const BLOCKS_IN_FLIGHT: usize = 2;

/// The per-span plans over one source, partition `i` reading `parts[i]` (a block or a time
/// slice of one; one partition and no parts for the head).
///
/// A block keeps its root spans apart, in row groups of their own (see `BlockEncoder`), each part
/// sorted by trace ID; so a block is read as two plans, roots first: with a block's roots at
/// hand, the other spans stream by trace ID and each trace is evaluated as soon as its rows
/// have passed ([`TraceStage::block`]). Each plan's row-group statistics on
/// `nested_set_parent` skip the other part.
struct Input {
    /// The roots' plan (`None` for the head, or when no root can match).
    roots: Option<Arc<dyn ExecutionPlan>>,
    /// Every other span (the head: every span); `None` when none can match.
    rest: Option<Arc<dyn ExecutionPlan>>,
    /// The logical plan before the split, for `explain`.
    logical: datafusion::logical_expr::LogicalPlan,
    parts: Vec<BlockPart>,
    /// The head's partitions: the latest a trace in each can start (empty for blocks).
    head_ends: Vec<u64>,
}

impl Input {
    fn plans(&self) -> impl Iterator<Item = &Arc<dyn ExecutionPlan>> {
        self.roots.iter().chain(self.rest.iter())
    }
}

/// One partition to read: input, partition, the latest a trace in it can start, and whether
/// its rows come sorted by trace ID (a block's do; the head's do not).
struct Unit {
    input: usize,
    partition: usize,
    end: u64,
    sorted: bool,
}

/// Whether the optimiser proved `plan` empty (an `EmptyExec` under single-input nodes).
fn reads_nothing(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.name() == datafusion::physical_plan::empty::EmptyExec::static_name() {
        return true;
    }
    match plan.children().as_slice() {
        [only] => reads_nothing(only),
        _ => false,
    }
}

impl QueryEngine {
    /// A session whose file scans stay one partition per block: no splitting of files, no
    /// round-robin repartitioning, and no stealing of another partition's unopened files.
    ///
    /// A search filters rows inside the Parquet decoder (row selection), which pays when few
    /// rows match and the limit stops the reading early. When `every` match is wanted, every
    /// block is read whole anyway and decoding whole pages and filtering after is cheaper:
    /// `traceql('{ resource.service.name = "api-gateway" } >> { status = error }')` over 10M
    /// spans took 615 ms with row selection, 425 ms without (`allegro-bench sql --query`).
    fn search_session(&self, every: bool) -> SessionContext {
        self.session_with(super::Optimizer::TraceQl, search_config(every))
    }

    /// The per-span plans of `src`'s sources.
    async fn inputs(
        &self,
        ctx: &SessionContext,
        src: &Sources,
        c: &Compiled,
        range: Range,
    ) -> Result<Vec<Input>> {
        let state = ctx.state();
        let mut out = Vec::with_capacity(src.tables.len());
        for s in &src.tables {
            let Some(t) = BlocksTable::of(s.table.as_ref()) else {
                out.extend(input(&state, s.with_table(s.table.clone()), c, range).await?);
                continue;
            };
            // A block's traces start and end within its own time range (trace-level columns
            // are derived from the block's spans), so a block inside the window needs no time
            // filter: dropping it saves decoding two 8-byte columns of every row, 16% of
            // `{ A } ~ { B }` over 6h (489 → 413 ms at 10M spans).
            let inside = |b: &BlockMeta| {
                range.is_none_or(|(s, e)| s <= b.start_unix_nano && b.end_unix_nano <= e)
            };
            let parts = [
                (t.subset(&|b| inside(b)), None),
                (t.subset(&|b| !inside(b)), range),
            ];
            for (blocks, range) in parts {
                let Some(blocks) = blocks else { continue };
                // String views point into the pages instead of copying every value out.
                let per_part = Arc::new(blocks.with_string_views().per_part(range));
                out.extend(input(&state, s.with_table(per_part), c, range).await?);
            }
        }
        Ok(out)
    }

    /// Explains a search over `tenant`'s data: the compiled program and the per-span plans.
    pub async fn explain(&self, tenant: &str, req: &SearchRequest) -> Result<Explained> {
        let (t, req) = (tenant.to_string(), req.clone());
        self.budgeted(&[tenant.to_string()], move |e| {
            let (t, req) = (t.clone(), req.clone());
            async move { e.explain_now(&t, &req).await }
        })
        .await
    }

    async fn explain_now(&self, tenant: &str, req: &SearchRequest) -> Result<Explained> {
        let compiled = plan::compile_search(&req.query)?;
        let ctx = self.search_session(false);
        let src = self.sources(tenant, req.range).await?;
        if src.tables.is_empty() {
            return Ok(Explained {
                compiled,
                logical: "EmptyRelation (no blocks or live spans in range)".into(),
                physical: "EmptyExec".into(),
            });
        }
        let inputs = self.inputs(&ctx, &src, &compiled, req.range).await?;
        let state = ctx.state();
        let blocks: usize = inputs
            .iter()
            .map(|i| {
                let ids: std::collections::HashSet<_> =
                    i.parts.iter().map(|p| p.block.block_id).collect();
                ids.len()
            })
            .sum();
        let head = inputs.iter().any(|i| i.parts.is_empty());
        // A plan that reads nothing is not a bug to the reader if it says why.
        let pruned = src.blocks.len() - blocks.min(src.blocks.len());
        let head_pruned = src.live_spans > 0 && !head;
        if inputs.is_empty() {
            return Ok(Explained {
                compiled,
                logical: format!(
                    "EmptyRelation: nothing to read. All {} block(s) in range{} were pruned: \
                     their metadata (attribute keys and types per scope) shows the query's \
                     conditions cannot hold in them",
                    src.blocks.len(),
                    if head_pruned {
                        " and the live head"
                    } else {
                        ""
                    }
                ),
                physical: "EmptyExec".into(),
            });
        }
        let mut logical = String::new();
        if pruned > 0 || head_pruned {
            logical.push_str(&format!(
                "Pruned before planning: {pruned} of {} block(s){}, whose metadata shows the \
                 query's conditions cannot hold in them\n",
                src.blocks.len(),
                if head_pruned {
                    " and the live head"
                } else {
                    ""
                }
            ));
        }
        logical += &format!(
            "TraceStage: the {} newest matching traces, read newest first from {blocks} block(s){}; \
             stops once no unread block can hold a newer trace\n",
            req.limit.max(1),
            if head { " and the live head" } else { "" }
        );
        let mut physical = String::new();
        for (i, input) in inputs.iter().enumerate() {
            let o = state.optimize(&input.logical).map_err(df_err)?;
            logical.push_str(&format!("-- spans input {i} --\n{}\n", o.display_indent()));
            let what = if input.parts.is_empty() {
                format!(
                    "the live head, {} partition(s) of whole traces",
                    input.head_ends.len()
                )
            } else {
                let slices = input.parts.iter().filter(|p| p.slice.is_some()).count();
                let whole = input.parts.len() - slices;
                format!(
                    "{whole} whole block(s) and {slices} time slice(s) of blocks, one partition each"
                )
            };
            for (part, plan) in [("roots", &input.roots), ("spans", &input.rest)] {
                let Some(plan) = plan else { continue };
                let part = if input.parts.is_empty() {
                    "spans"
                } else {
                    part
                };
                physical.push_str(&format!(
                    "-- {part} of input {i}: {what} --\n{}",
                    datafusion::physical_plan::displayable(plan.as_ref()).indent(true)
                ));
            }
        }
        Ok(Explained {
            compiled,
            logical,
            physical,
        })
    }

    /// Runs a TraceQL search over the tenants (`a|b` federates) and assembles Tempo's response.
    pub async fn search(&self, tenants: &[String], req: &SearchRequest) -> Result<SearchResponse> {
        self.search_streamed(tenants, req, None).await
    }

    /// [`Self::search`], telling `partials` what it has found while it runs; returns the whole
    /// answer. Each partial holds the traces found since the last one (assembled as the final
    /// answer is, so a client that keeps the first copy of each trace shows the same rows) and
    /// the metrics so far, `completedJobs` of `totalJobs` included. A trace sent early may
    /// later be pushed out of the newest `limit` by newer ones; the answer returned is exact.
    pub async fn search_streamed(
        &self,
        tenants: &[String],
        req: &SearchRequest,
        partials: Option<Partial<SearchResponse>>,
    ) -> Result<SearchResponse> {
        let (ts, req) = (tenants.to_vec(), req.clone());
        self.budgeted(tenants, move |e| {
            let (ts, req, partials) = (ts.clone(), req.clone(), partials.clone());
            async move {
                let mut progress = partials.map(Progress::new);
                e.search_now(&ts, &req, progress.as_mut()).await
            }
        })
        .await
    }

    async fn search_now(
        &self,
        tenants: &[String],
        req: &SearchRequest,
        mut progress: Option<&mut Progress>,
    ) -> Result<SearchResponse> {
        let compiled = plan::compile_search(&req.query)?;
        let newest = Arc::new(Mutex::new(Newest::new(req.limit)));
        let mut metrics = SearchMetrics::default();
        let mut sources: Vec<Sources> = Vec::with_capacity(tenants.len());
        for tenant in tenants {
            let src = self.sources(tenant, req.range).await?;
            src.account(&mut metrics);
            sources.push(src);
        }
        // A job is a block or a tenant's head; those an early stop leaves unread are done too.
        metrics.total_jobs = sources.iter().map(jobs).sum();
        metrics.completed_jobs = 0;
        for (t, src) in sources.iter().enumerate() {
            let at = Job {
                c: &compiled,
                range: req.range,
                spss: req.spss,
                tenant: t,
                every: false,
            };
            self.newest_first(src, &at, &newest, &mut metrics, progress.as_deref_mut())
                .await?;
        }
        metrics.completed_jobs = metrics.total_jobs;
        let found = std::mem::replace(&mut *newest.lock(), Newest::new(1)).into_sorted();
        let mut assembled = std::collections::HashMap::with_capacity(found.len());
        for (t, src) in sources.iter().enumerate() {
            let mine: Vec<&newest::Found> = found.iter().filter(|f| f.tenant == t).collect();
            let metas = self.assemble(src, &mine, &compiled, req.spss).await?;
            for (f, meta) in mine.iter().zip(metas) {
                assembled.insert((t, f.id), meta);
            }
        }
        // In the answer's order: newest first, ties by trace ID.
        let traces = found
            .iter()
            .filter_map(|f| assembled.remove(&(f.tenant, f.id)))
            .collect();
        Ok(SearchResponse {
            traces,
            metrics: Some(metrics),
        })
    }

    /// Every trace of `tenant` over `range` with spansets for `c`, not only the newest: the
    /// search's block-by-block per-trace stage with no limit (a `Newest` that never fills, so
    /// no block is skipped). For `traceql()` in SQL; the matches are held, one entry per
    /// matching trace with its spansets' span IDs.
    pub(crate) async fn every_match(
        &self,
        tenant: &str,
        c: &Compiled,
        range: Range,
        cost: &mut SearchMetrics,
    ) -> Result<Vec<newest::Found>> {
        let src = self.sources(tenant, range).await?;
        src.account(cost);
        let all = Arc::new(Mutex::new(Newest::new(usize::MAX)));
        let at = Job {
            c,
            range,
            spss: 0,
            tenant: 0,
            every: true,
        };
        self.newest_first(&src, &at, &all, cost, None).await?;
        let found = std::mem::replace(&mut *all.lock(), Newest::new(1)).into_sorted();
        Ok(found)
    }

    /// The answers for `mine`, traces of `src`'s tenant, in that order.
    async fn assemble(
        &self,
        src: &Sources,
        mine: &[&newest::Found],
        c: &Compiled,
        spss: usize,
    ) -> Result<Vec<TraceSearchMetadata>> {
        let Some(oldest) = mine.iter().map(|f| f.start).min() else {
            return Ok(Vec::new());
        };
        // Every part of an answer trace is in a block that ends after the trace starts
        // (see the module docs), whether or not its spans matched, and in the head.
        let tables: Vec<Arc<dyn TableProvider>> = src
            .tables
            .iter()
            .filter_map(|s| match BlocksTable::of(s.table.as_ref()) {
                None => Some(s.table.clone()),
                Some(t) => t
                    .subset(&|b| b.end_unix_nano >= oldest)
                    .map(|t| Arc::new(t) as Arc<dyn TableProvider>),
            })
            .collect();
        self.answer(&tables, mine, c, spss).await
    }

    /// After a job: counts it and, when `progress` asks for one, sends a partial answer with
    /// the traces found since the last (assembled as the final answer is).
    async fn job_done(
        &self,
        src: &Sources,
        at: &Job<'_>,
        newest: &Mutex<Newest>,
        metrics: &mut SearchMetrics,
        progress: Option<&mut Progress>,
    ) -> Result<()> {
        metrics.completed_jobs += 1;
        let Some(p) = progress else {
            return Ok(());
        };
        let held = newest.lock().snapshot();
        let mut fresh: Vec<&newest::Found> = held
            .iter()
            .filter(|f| !p.sent.contains(&(f.tenant, f.id)))
            .collect();
        fresh.sort_by_key(|f| (std::cmp::Reverse(f.start), f.id));
        let due = p.last.is_none_or(|l| l.elapsed() >= PARTIAL_EVERY);
        // The first traces go out at once (what streaming is for); later ones at most every
        // PARTIAL_EVERY, as assembling them reads their rows again.
        let traces = if !fresh.is_empty() && (p.sent.is_empty() || due) {
            let metas = self.assemble(src, &fresh, at.c, at.spss).await?;
            p.sent.extend(fresh.iter().map(|f| (f.tenant, f.id)));
            metas
        } else if due {
            Vec::new()
        } else {
            return Ok(());
        };
        p.last = Some(std::time::Instant::now());
        (p.sink)(SearchResponse {
            traces,
            metrics: Some(*metrics),
        });
        Ok(())
    }

    /// Reads `src` (tenant number `tenant`) newest first into `newest`, until nothing unread
    /// can rank.
    async fn newest_first(
        &self,
        src: &Sources,
        at: &Job<'_>,
        newest: &Arc<Mutex<Newest>>,
        metrics: &mut SearchMetrics,
        mut progress: Option<&mut Progress>,
    ) -> Result<()> {
        if src.tables.is_empty() {
            return Ok(());
        }
        if let Some(r) = self.remote.clone() {
            return self
                .newest_first_on_cluster(src, at, newest, metrics, progress, &r)
                .await;
        }
        let (c, range, tenant) = (at.c, at.range, at.tenant);
        let ctx = self.search_session(at.every);
        let inputs = self.inputs(&ctx, src, c, range).await?;
        let split = split_traces::split_traces(&self.catalog, src).await?;
        let task: Arc<TaskContext> = ctx.task_ctx();
        let stage = Arc::new(TraceStage::new(
            c,
            split.ids.clone(),
            task.memory_pool().clone(),
        ));
        let mut units: Vec<Unit> = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            units.extend(input.head_ends.iter().enumerate().map(|(p, end)| Unit {
                input: i,
                partition: p,
                end: *end,
                sorted: false,
            }));
            units.extend(input.parts.iter().enumerate().map(|(p, b)| Unit {
                input: i,
                partition: p,
                end: b.end(),
                sorted: true,
            }));
        }
        // Blocks and the head's partitions by the latest start they can hold.
        units.sort_by_key(|u| std::cmp::Reverse(u.end));
        let mut running = tokio::task::JoinSet::new();
        let mut next = units.iter();
        loop {
            while running.len() < BLOCKS_IN_FLIGHT {
                let Some(u) = next.next() else { break };
                if newest.lock().beyond(u.end) {
                    // Sorted by end: no block after this one can offer anything either.
                    next = units[units.len()..].iter();
                    break;
                }
                let input = &inputs[u.input];
                let open = |p: &Option<Arc<dyn ExecutionPlan>>| {
                    p.as_ref()
                        .map(|p| p.execute(u.partition, task.clone()))
                        .transpose()
                        .map_err(df_err)
                };
                let rows = trace_stage::Rows {
                    roots: open(&input.roots)?,
                    rest: open(&input.rest)?,
                    sorted: u.sorted,
                };
                let (stage, newest) = (stage.clone(), newest.clone());
                running.spawn(async move { stage.block(rows, &newest, tenant).await });
            }
            match running.join_next().await {
                None => break,
                Some(done) => {
                    done.map_err(|e| {
                        EngineError::Internal(format!("a block read of the search failed: {e}"))
                    })??;
                    self.job_done(src, at, newest, metrics, progress.as_deref_mut())
                        .await?;
                }
            }
        }
        let read: u64 = inputs
            .iter()
            .flat_map(Input::plans)
            .map(bytes_scanned)
            .sum();
        self.join_split(&ctx, src, at, (&stage, &split), newest, metrics)
            .await?;
        metrics.inspected_bytes += read;
        Ok(())
    }

    /// The search's last step over `src`: the traces split across its sources that can still
    /// rank, joined from the blocks that can hold them and evaluated whole.
    async fn join_split(
        &self,
        ctx: &SessionContext,
        src: &Sources,
        at: &Job<'_>,
        (stage, split): (&TraceStage, &split_traces::Split),
        newest: &Arc<Mutex<Newest>>,
        metrics: &mut SearchMetrics,
    ) -> Result<()> {
        let bar = newest.lock().bar().map(|(s, _)| s);
        let ids = stage.split_candidates(match bar {
            Some(from) => split.starting_from(from),
            None => split.ids.clone(),
        });
        let joined = split_traces::join(ctx, src, &ids, at.c, at.range, bar).await?;
        stage.joined(&joined.rows, newest, at.tenant)?;
        metrics.inspected_bytes += joined.bytes;
        Ok(())
    }
}

/// A search session's settings; see [`QueryEngine::search_session`].
pub(crate) fn search_config(every: bool) -> impl FnOnce(SessionConfig) -> SessionConfig {
    move |c: SessionConfig| {
        c.set_bool("datafusion.execution.parquet.pushdown_filters", !every)
            .set_bool("datafusion.optimizer.repartition_file_scans", false)
            .set_bool("datafusion.optimizer.enable_round_robin_repartition", false)
            .set_bool(
                "datafusion.execution.enable_file_stream_work_stealing",
                false,
            )
    }
}

/// The plans of one source: a table of blocks read one partition per block, or the head.
/// `None` when no row of it can match.
async fn input(
    state: &datafusion::execution::SessionState,
    source: super::sources::Source,
    c: &Compiled,
    range: Range,
) -> Result<Option<Input>> {
    let parts = BlocksTable::of(source.table.as_ref())
        .map(|t| t.parts().to_vec())
        .unwrap_or_default();
    let head_ends = source.live_ends.clone().unwrap_or_default();
    let logical = plan::span_rows(&source, c, range)?;
    let parent = || datafusion::prelude::col(crate::schema::col::NESTED_SET_PARENT);
    let zero = || datafusion::prelude::lit(0i32);
    let split = if parts.is_empty() {
        vec![None, Some(logical.clone())]
    } else {
        [parent().lt(zero()), parent().gt_eq(zero())]
            .into_iter()
            .map(|f| {
                LogicalPlanBuilder::from(logical.clone())
                    .filter(f)
                    .and_then(|b| b.build())
                    .map(Some)
                    .map_err(df_err)
            })
            .collect::<Result<Vec<_>>>()?
    };
    let mut plans = Vec::with_capacity(2);
    for l in split {
        let Some(l) = l else {
            plans.push(None);
            continue;
        };
        let plan = state.create_physical_plan(&l).await.map_err(df_err)?;
        if reads_nothing(&plan) {
            // The conditions can never hold here (a key no block has).
            plans.push(None);
            continue;
        }
        let partitions = plan.output_partitioning().partition_count();
        if partitions != parts.len() + head_ends.len() {
            return Err(EngineError::Internal(format!(
                "search plan has {partitions} partitions for {} parts of blocks and {} of the head",
                parts.len(),
                head_ends.len()
            )));
        }
        plans.push(Some(plan));
    }
    let (Some(roots), Some(rest)) = (plans.first().cloned(), plans.get(1).cloned()) else {
        return Err(EngineError::Internal("search plans lost".into()));
    };
    if roots.is_none() && rest.is_none() {
        return Ok(None);
    }
    Ok(Some(Input {
        roots,
        rest,
        logical,
        parts,
        head_ends,
    }))
}
