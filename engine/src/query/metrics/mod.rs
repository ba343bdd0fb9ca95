//! TraceQL metrics (`/api/metrics/query_range`, `/api/metrics/query`): every first stage is a
//! DataFusion aggregation over the same span tables as search ([`plan`]); the final stage
//! (rates, quantiles, exemplars, second stages, arithmetic) runs on the small aggregated
//! result ([`raw`], [`series`]).

pub mod compare;
pub mod compile;
pub mod explain;
pub mod grid;
pub mod plan;
pub mod raw;
pub mod rollup;
pub mod series;
mod tally;
mod whole;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use allegro_traceql::ast::{BinaryOp, FieldExpr, FieldKind, Query, SecondStage, Static};
use arrow::array::{ArrayRef, FixedSizeBinaryBuilder, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use uuid::Uuid;

use self::compile::{FirstStage, Func, Node, compile_metrics};
use self::grid::{Grid, default_step};
use self::plan::{Needs, Sampling};
use self::raw::{ExemplarPicker, Raw};
use self::series::{SeriesSet, combine, filter, to_proto, top_bottom, with_scalar};
use super::plan::is_root_test;
use super::sources::{Source, Sources};
use super::spans_table::SpansTable;
use super::table::BlocksTable;
use super::{Partial, QueryEngine, collect_counted, df_err};
use crate::block::meta::BlockMeta;
use crate::error::{EngineError, Result};
use crate::tempopb::{
    InstantSeries, PartialStatus, QueryInstantResponse, QueryRangeResponse, SearchMetrics,
};

/// Spans the exemplar pass aims to look at.
const EXEMPLAR_SPANS: u64 = 50_000;

/// `req` over the recent store only, when `req` reads everything and its range reaches back
/// past the recent window: the partial answer worth sending first.
fn recent_first(req: &MetricsRequest, limits: &MetricsLimits) -> Option<MetricsRequest> {
    let recent_from =
        crate::now_unix_nanos().saturating_sub(limits.recent_window.as_nanos() as u64);
    (req.mode == Mode::All && req.start < recent_from && req.end > recent_from).then(|| {
        MetricsRequest {
            mode: Mode::Recent,
            ..req.clone()
        }
    })
}

/// Which data a metrics query reads (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The recent store: the live head plus blocks that ended within the recent window.
    Recent,
    /// Blocks only.
    Blocks,
    /// Everything (default).
    #[default]
    All,
}

impl Mode {
    /// Parses `recent`, `blocks` or `all` (Tempo's `queryMode`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "recent" => Some(Mode::Recent),
            "blocks" | "backend" => Some(Mode::Blocks),
            "all" | "" => Some(Mode::All),
            _ => None,
        }
    }
}

/// The query frontend's metrics limits (Tempo `query_frontend.metrics`).
#[derive(Debug, Clone)]
pub struct MetricsLimits {
    /// Longest range.
    pub max_duration: Duration,
    /// Most intervals.
    pub max_intervals: u64,
    /// Exemplars per series by default and at most.
    pub max_exemplars: u32,
    /// Most series returned (more → partial response).
    pub max_series: u32,
    /// How far back the recent store reaches.
    pub recent_window: Duration,
    /// Spans a `with(sample=true)` query aims to read when each counts toward its one series
    /// (no filter but root spans, no `by()`, no buckets); four times as many otherwise, as a
    /// filter or grouping leaves fewer spans per series point.
    pub sample_target_spans: u64,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        Self {
            max_duration: Duration::from_secs(24 * 3600),
            max_intervals: 10_000,
            max_exemplars: 100,
            max_series: 1000,
            recent_window: Duration::from_secs(15 * 60),
            sample_target_spans: 500_000,
        }
    }
}

/// A metrics query.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    /// The TraceQL.
    pub query: String,
    /// Range start, unix ns.
    pub start: u64,
    /// Range end, unix ns.
    pub end: u64,
    /// Step, ns (`None`: Tempo's default for the range).
    pub step: Option<u64>,
    /// Exemplars per series (`None`: the limit's default).
    pub exemplars: Option<u32>,
    /// Most series (`None`: the limit's default).
    pub max_series: Option<u32>,
    /// Which data.
    pub mode: Mode,
}

/// What `sample=true` weighs: the spans a query reads and how they cluster.
#[derive(Debug, Clone, Copy)]
struct ReadVolume {
    /// Spans the scan reads.
    spans: u64,
    /// Intervals of the grid.
    intervals: u64,
    /// Spans per sampled trace among them (1 for root spans).
    per_trace: f64,
    /// Share of the spans whose block straddles an interval boundary: a block inside one
    /// interval contributes its exact span count there (ratio weights), so only these spans'
    /// split between intervals is estimated.
    straddling: f64,
}

/// Relative error per point that `sample=true` aims at, by the model in [`sampling`].
const SAMPLE_ERROR: f64 = 0.045;

/// The sampling a query's hints ask for, given what its scan reads.
///
/// `sample=true` takes the larger of two rates. One reads `sample_target_spans` spans. The
/// other bounds the error per point: a point's estimate sums whole sampled traces over the
/// straddling spans, so its relative error is about √(straddling · per_trace / (rate · n)) for
/// `n` spans per point, and the rate is solved for [`SAMPLE_ERROR`]. (On the benchmark the
/// model overstates the measured error by about a fifth.) Filtered, grouped or bucketed queries
/// spread their spans over fewer per series point, so they read four times as many spans and aim
/// at half the error.
fn sampling(
    q: &Query,
    st: &FirstStage,
    vol: ReadVolume,
    limits: &MetricsLimits,
) -> Option<Sampling> {
    let fixed = |name: &str| match q.hint(name) {
        Some(Static::Float(f)) => Some(*f),
        _ => None,
    };
    if let Some(r) = fixed("sample")
        .or(fixed("trace_sample"))
        .or(fixed("span_sample"))
    {
        return Sampling::at(r);
    }
    if q.hint("sample") != Some(&Static::Bool(true)) || vol.spans == 0 {
        return None;
    }
    let counts_every_span = st.by.is_empty()
        && !st.func.bucketed()
        && match &st.simple {
            Some(None) => true,
            Some(Some(c)) => roots_or_true(c),
            None => false,
        };
    let (target, error) = match counts_every_span {
        true => (limits.sample_target_spans, SAMPLE_ERROR),
        false => (
            limits.sample_target_spans.saturating_mul(4),
            SAMPLE_ERROR / 2.0,
        ),
    };
    let spans = vol.spans as f64;
    let per_point = spans / vol.intervals.max(1) as f64;
    let bounded = vol.straddling * vol.per_trace.max(1.0) / (error * error * per_point);
    let rate = (target as f64 / spans).max(bounded);
    (rate < 1.0).then(|| Sampling::at(rate)).flatten()
}

/// The [`ReadVolume`] of `sources` on `grid`; `roots` when the scan reads root spans only.
fn read_volume(sources: &[Sources], grid: &Grid, roots: bool) -> ReadVolume {
    let (mut spans, mut traces, mut straddling) = (0u64, 0u64, 0.0);
    let step = grid.step.max(1) as f64;
    for src in sources {
        spans += src.spans();
        traces += src.traces();
        // The live head is sampled by trace ID with 1/rate weights: all of it estimates.
        straddling += src.live_spans as f64;
        for b in &src.blocks {
            let len = b.end_unix_nano.saturating_sub(b.start_unix_nano) as f64;
            straddling += b.total_spans as f64 * (len / step).min(1.0);
        }
    }
    let per_trace = if roots {
        1.0
    } else {
        spans as f64 / traces.max(1) as f64
    };
    ReadVolume {
        spans: if roots { traces } else { spans },
        intervals: grid.intervals() as u64,
        per_trace,
        straddling: straddling / spans.max(1) as f64,
    }
}

impl QueryEngine {
    /// The grid of a range request, checked against the limits.
    pub fn range_grid(req: &MetricsRequest, limits: &MetricsLimits) -> Result<Grid> {
        check_range(req, limits)?;
        let step = req.step.unwrap_or_else(|| default_step(req.start, req.end));
        let grid = Grid::range(req.start, req.end, step)?;
        let intervals = grid.intervals() as u64;
        if intervals > limits.max_intervals {
            return Err(EngineError::InvalidInput(format!(
                "range specified by start and end ({}) exceeds {} intervals at step {}; \
                 use a larger step",
                humantime::format_duration(Duration::from_nanos(req.end - req.start)),
                limits.max_intervals,
                humantime::format_duration(Duration::from_nanos(step)),
            )));
        }
        Ok(grid)
    }

    /// [`Self::query_range`], telling `partial` first the answer over the recent store (the
    /// live head and the blocks that ended within `recent_window`) when the range reaches back
    /// beyond it: the newest intervals are there at once, the older ones come with the whole
    /// answer, which is returned. A client merging by time keeps the later value of a point
    /// (Grafana does), as with Tempo's streamed sums of the jobs done so far.
    pub async fn query_range_streamed(
        &self,
        tenants: &[String],
        req: &MetricsRequest,
        limits: &MetricsLimits,
        partial: Option<Partial<QueryRangeResponse>>,
    ) -> Result<QueryRangeResponse> {
        if let Some(p) = partial
            && let Some(recent) = recent_first(req, limits)
        {
            p(self.query_range(tenants, &recent, limits).await?);
        }
        self.query_range(tenants, req, limits).await
    }

    /// [`Self::query_instant`], telling `partial` first the value over the recent store, as
    /// [`Self::query_range_streamed`] does (a client shows the latest message: Grafana does).
    pub async fn query_instant_streamed(
        &self,
        tenants: &[String],
        req: &MetricsRequest,
        limits: &MetricsLimits,
        partial: Option<Partial<QueryInstantResponse>>,
    ) -> Result<QueryInstantResponse> {
        if let Some(p) = partial
            && let Some(recent) = recent_first(req, limits)
        {
            p(self.query_instant(tenants, &recent, limits).await?);
        }
        self.query_instant(tenants, req, limits).await
    }

    /// `/api/metrics/query_range`.
    pub async fn query_range(
        &self,
        tenants: &[String],
        req: &MetricsRequest,
        limits: &MetricsLimits,
    ) -> Result<QueryRangeResponse> {
        let (ts, req, limits) = (tenants.to_vec(), req.clone(), limits.clone());
        self.budgeted(tenants, move |e| {
            let (ts, req, limits) = (ts.clone(), req.clone(), limits.clone());
            async move { e.query_range_now(&ts, &req, &limits).await }
        })
        .await
    }

    async fn query_range_now(
        &self,
        tenants: &[String],
        req: &MetricsRequest,
        limits: &MetricsLimits,
    ) -> Result<QueryRangeResponse> {
        let (q, node) = compile_metrics(&req.query)?;
        let grid = Self::range_grid(req, limits)?;
        let exemplars = exemplar_limit(&q, req.exemplars, limits);
        let (set, cost) = self
            .run(tenants, &q, &node, &grid, req.mode, exemplars, limits)
            .await?;
        let max = req.max_series.unwrap_or(limits.max_series).max(1) as usize;
        let mut series = to_proto(&set, &grid);
        let (status, message) = self.with_damage(tenants, truncate(&mut series, max));
        Ok(QueryRangeResponse {
            series,
            metrics: Some(cost),
            status,
            message,
        })
    }

    /// `/api/metrics/query`: one value per series over `[start, end]`.
    pub async fn query_instant(
        &self,
        tenants: &[String],
        req: &MetricsRequest,
        limits: &MetricsLimits,
    ) -> Result<QueryInstantResponse> {
        let (ts, req, limits) = (tenants.to_vec(), req.clone(), limits.clone());
        self.budgeted(tenants, move |e| {
            let (ts, req, limits) = (ts.clone(), req.clone(), limits.clone());
            async move { e.query_instant_now(&ts, &req, &limits).await }
        })
        .await
    }

    async fn query_instant_now(
        &self,
        tenants: &[String],
        req: &MetricsRequest,
        limits: &MetricsLimits,
    ) -> Result<QueryInstantResponse> {
        let (q, node) = compile_metrics(&req.query)?;
        check_range(req, limits)?;
        let grid = Grid::instant(req.start, req.end)?;
        let (set, cost) = self
            .run(tenants, &q, &node, &grid, req.mode, 0, limits)
            .await?;
        let max = req.max_series.unwrap_or(limits.max_series).max(1) as usize;
        let mut series: Vec<InstantSeries> = set
            .values()
            .filter_map(|s| {
                let v = *s.values.first()?;
                (!v.is_nan()).then(|| InstantSeries {
                    labels: series::key_values(&s.labels),
                    value: v,
                })
            })
            .collect();
        let (status, message) = self.with_damage(tenants, truncate(&mut series, max));
        Ok(QueryInstantResponse {
            series,
            metrics: Some(cost),
            status,
            message,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        tenants: &[String],
        q: &Query,
        node: &Node,
        grid: &Grid,
        mode: Mode,
        exemplars: u32,
        limits: &MetricsLimits,
    ) -> Result<(SeriesSet, SearchMetrics)> {
        let mut cost = SearchMetrics::default();
        let mut picker = ExemplarPicker::new(exemplars as usize);
        let set = Box::pin(self.eval(tenants, q, node, grid, mode, &mut picker, limits, &mut cost))
            .await?;
        Ok((set, cost))
    }

    #[allow(clippy::too_many_arguments)]
    async fn eval(
        &self,
        tenants: &[String],
        q: &Query,
        node: &Node,
        grid: &Grid,
        mode: Mode,
        picker: &mut ExemplarPicker,
        limits: &MetricsLimits,
        cost: &mut SearchMetrics,
    ) -> Result<SeriesSet> {
        Ok(match node {
            Node::Query(st) => {
                let set = self
                    .first_stage(tenants, q, st, grid, mode, picker, limits, cost)
                    .await?;
                second_stages(set, &st.stages, grid)
            }
            Node::Number(_) => {
                return Err(EngineError::InvalidInput(
                    "a metrics query needs at least one `| function()`".into(),
                ));
            }
            Node::Binary { op, lhs, rhs } => {
                let f = |a: f64, b: f64| compile::arith(*op, a, b).unwrap_or(f64::NAN);
                match (lhs.as_ref(), rhs.as_ref()) {
                    (Node::Number(n), other) => {
                        let s = Box::pin(
                            self.eval(tenants, q, other, grid, mode, picker, limits, cost),
                        )
                        .await?;
                        with_scalar(s, *n, true, f)
                    }
                    (other, Node::Number(n)) => {
                        let s = Box::pin(
                            self.eval(tenants, q, other, grid, mode, picker, limits, cost),
                        )
                        .await?;
                        with_scalar(s, *n, false, f)
                    }
                    (l, r) => {
                        let l =
                            Box::pin(self.eval(tenants, q, l, grid, mode, picker, limits, cost))
                                .await?;
                        let r =
                            Box::pin(self.eval(tenants, q, r, grid, mode, picker, limits, cost))
                                .await?;
                        combine(l, r, f)
                    }
                }
            }
            Node::Staged { node, stages } => {
                let s =
                    Box::pin(self.eval(tenants, q, node, grid, mode, picker, limits, cost)).await?;
                second_stages(s, stages, grid)
            }
        })
    }

    /// The sources a metrics query reads.
    async fn metric_sources(
        &self,
        tenant: &str,
        grid: &Grid,
        mode: Mode,
        limits: &MetricsLimits,
    ) -> Result<Sources> {
        let range = Some((grid.start, grid.end));
        let recent_from =
            crate::now_unix_nanos().saturating_sub(limits.recent_window.as_nanos() as u64);
        match mode {
            Mode::All => self.sources_picked(tenant, range, &|_| true, true).await,
            Mode::Blocks => self.sources_picked(tenant, range, &|_| true, false).await,
            Mode::Recent => {
                self.sources_picked(tenant, range, &|b| b.end_unix_nano >= recent_from, true)
                    .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn first_stage(
        &self,
        tenants: &[String],
        q: &Query,
        st: &FirstStage,
        grid: &Grid,
        mode: Mode,
        picker: &mut ExemplarPicker,
        limits: &MetricsLimits,
        cost: &mut SearchMetrics,
    ) -> Result<SeriesSet> {
        let mut per_tenant = Vec::with_capacity(tenants.len());
        let roots = matches!(&st.simple, Some(Some(c)) if roots_only(c));
        for t in tenants {
            per_tenant.push(self.metric_sources(t, grid, mode, limits).await?);
        }
        // Blocks keep root spans in row groups of their own, so a root-span filter reads
        // about one span per trace.
        let sampling = sampling(q, st, read_volume(&per_tenant, grid, roots), limits);
        if let Func::Compare { .. } = st.func {
            return self.compare(&per_tenant, st, grid, sampling, cost).await;
        }
        let wants_exemplars = picker.max() > 0 && !grid.instant;
        let needs = Needs {
            ids: st.simple.is_none(),
            sampling,
            counted: false,
        };
        // Exemplars come from a second, small pass: over one block per exemplar time slice
        // (opening a block is most of that pass's cost), and in those over the traces whose
        // IDs sort lowest, a uniform pick that the trace-ID order of blocks lets the scan prune
        // to a few pages. So the main pass never reads span and trace IDs.
        let ex_blocks = wants_exemplars.then(|| {
            exemplar_blocks(
                per_tenant.iter().flat_map(|s| s.blocks.iter()),
                grid,
                picker.slices(),
            )
        });
        let ex_needs = ex_blocks.as_ref().map(|chosen| {
            let ex_spans: u64 = per_tenant
                .iter()
                .map(|s| {
                    s.live_spans
                        + s.blocks
                            .iter()
                            .filter(|b| chosen.contains(&b.block_id))
                            .map(|b| b.total_spans)
                            .sum::<u64>()
                })
                .sum();
            let share = (EXEMPLAR_SPANS as f64 / ex_spans.max(1) as f64)
                .min(sampling.map_or(1.0, |s| s.rate()));
            Needs {
                ids: true,
                sampling: Sampling::at(share),
                counted: false,
            }
        });
        // Candidates per (interval, series): enough for Tempo's two per time slice.
        let per_group = wants_exemplars.then(|| {
            let slices = (picker.max() / 2).max(1) as i64;
            let intervals = grid.intervals().max(1) as i64;
            (2 * ((slices + intervals - 1) / intervals)).clamp(2, 100)
        });
        let mut raw = Raw::default();
        let from_rollups = rollup::applies(st, grid);
        // With a cluster configured, the main pass's aggregation over the translated spans
        // runs there: executors scan the blocks (sampled ones too) and merge the partial
        // aggregates. Rollups and the per-trace stages of structural pipelines stay here;
        // docs/scale-out.md.
        let on_cluster = self.remote.as_ref().map(|r| {
            (
                self.session_on(super::Optimizer::TraceQl, |c| c, Some(r)),
                r,
            )
        });
        for src in &per_tenant {
            src.account(cost);
            if src.tables.is_empty() {
                continue;
            }
            let ctx = self.session();
            // Blocks whose span counts per minute answer the query are not scanned.
            let covered = match from_rollups {
                true => {
                    rollup::count_from_rollups(&self.catalog, &ctx, src, st, grid, &mut raw, cost)
                        .await?
                }
                false => HashSet::new(),
            };
            let matched = self
                .matched_spans(
                    (&ctx, on_cluster.as_ref()),
                    src,
                    st,
                    (grid.start, grid.end),
                    sampling,
                    cost,
                )
                .await?;
            let whole = match st.reads_whole_trace() {
                true => self.whole(&ctx, src, cost).await?,
                false => None,
            };
            let whole = whole.as_ref();
            // The exemplar pass runs alongside the main one: each spends part of its time
            // waiting on reads and planning.
            let passes = [(Some(needs), None), (ex_needs, per_group)]
                .into_iter()
                .filter_map(|(pass, per_group)| Some((pass?, per_group)))
                .map(|(pass, per_group)| {
                    let inputs = src
                        .tables
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| {
                            let table = match (&ex_blocks, per_group) {
                                (Some(chosen), Some(_)) => {
                                    blocks_kept(s, &|b| chosen.contains(&b.block_id))?
                                }
                                _ if covered.is_empty() => s.table.clone(),
                                _ => blocks_kept(s, &|b| !covered.contains(&b.block_id))?,
                            };
                            // Whether each plan reads blocks (the first of a table of
                            // blocks; the others read joined split traces, in memory).
                            let blocks = BlocksTable::of(s.table.as_ref()).is_some();
                            let plans = whole::plans(whole, i, s, table, |s, t, except| {
                                plan::rows(s, t, st, grid, pass, except)
                            });
                            Some(plans.map(|v| {
                                let v = v.into_iter().enumerate();
                                v.map(|(k, p)| (p, blocks && k == 0)).collect::<Vec<_>>()
                            }))
                        })
                        .collect::<Result<Vec<_>>>()
                        .map(|v| v.into_iter().flatten().collect::<Vec<_>>());
                    let (ctx, matched) = (&ctx, matched.clone());
                    let remote = on_cluster.as_ref().filter(|_| per_group.is_none());
                    async move {
                        let (there, here) = there_and_here(inputs?, remote.is_some());
                        let (mut batches, mut bytes, mut any) = (Vec::new(), 0, false);
                        for (group, remote) in [(there, remote), (here, None)] {
                            if group.is_empty() {
                                continue;
                            }
                            any = true;
                            let table = Arc::new(SpansTable::try_new(&ctx.state(), &group).await?);
                            let p =
                                plan::aggregate(table, matched.clone(), st, grid, pass, per_group)?;
                            match remote {
                                Some((cluster, r)) => {
                                    let df =
                                        cluster.execute_logical_plan(p).await.map_err(df_err)?;
                                    batches.extend(df.collect().await.map_err(|e| r.failure(e))?);
                                }
                                None => {
                                    let df = ctx.execute_logical_plan(p).await.map_err(df_err)?;
                                    let (b, n) = collect_counted(ctx, df).await?;
                                    batches.extend(b);
                                    bytes += n;
                                }
                            }
                        }
                        Ok::<_, EngineError>(any.then(|| (batches, bytes, per_group.is_some())))
                    }
                });
            for (batches, bytes, exemplars) in futures::future::try_join_all(passes)
                .await?
                .into_iter()
                .flatten()
            {
                cost.inspected_bytes += bytes;
                raw.add_batches(&batches, st.by.len(), grid.intervals(), exemplars)?;
            }
        }
        let duration = plan::is_duration(&st.func);
        Ok(raw::finish(st, raw, grid, duration, picker))
    }

    /// Spans chosen by a pipeline with spanset or structural operators: the search program
    /// per trace over every trace overlapping `range` (unix ns, inclusive), as a
    /// `(m_trace, m_span)` table; with a cluster (`on_cluster`), evaluated on its executors.
    /// `None` for a simple first stage, whose filter runs in the Parquet scan instead.
    pub(crate) async fn matched_spans(
        &self,
        (ctx, on_cluster): (&SessionContext, Option<&OnCluster<'_>>),
        src: &Sources,
        st: &FirstStage,
        range: (u64, u64),
        sampling: Option<Sampling>,
        cost: &mut SearchMetrics,
    ) -> Result<Option<Arc<dyn datafusion::catalog::TableProvider>>> {
        if st.simple.is_some() {
            return Ok(None);
        }
        // Traces split across sources are evaluated over their joined parts, not part by
        // part (`split_traces`).
        let range = Some(range);
        let split = super::split_traces::split_traces(&self.catalog, src).await?;
        let joined =
            super::split_traces::join(ctx, src, &split.ids, &st.pipeline, range, None).await?;
        cost.inspected_bytes += joined.bytes;
        let sampled = |p: datafusion::logical_expr::LogicalPlan| match sampling {
            None => Ok(p),
            Some(smp) => datafusion::logical_expr::LogicalPlanBuilder::from(p)
                .filter(smp.filter())
                .and_then(|b| b.build())
                .map_err(df_err),
        };
        // Per source, its plan and whether it reads blocks.
        let mut inputs = src
            .tables
            .iter()
            .map(|s| {
                let mut p = super::plan::span_rows(s, &st.pipeline, range)?;
                if !split.ids.is_empty() {
                    p = datafusion::logical_expr::LogicalPlanBuilder::from(p)
                        .filter(super::split_traces::of_traces(&split.ids, true))
                        .and_then(|b| b.build())
                        .map_err(df_err)?;
                }
                Ok((sampled(p)?, BlocksTable::of(s.table.as_ref()).is_some()))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(first) = joined.rows.first() {
            let mem = datafusion::datasource::MemTable::try_new(first.schema(), vec![joined.rows])
                .map_err(df_err)?;
            let p = datafusion::logical_expr::LogicalPlanBuilder::scan(
                "joined",
                datafusion::datasource::provider_as_source(Arc::new(mem)),
                None,
            )
            .and_then(|b| b.build())
            .map_err(df_err)?;
            inputs.push((sampled(p)?, false));
        }
        let (there, here) = there_and_here(inputs, on_cluster.is_some());
        let mut found = match on_cluster {
            Some((cluster, remote)) if !there.is_empty() => {
                self.matched_on_cluster(&there, st, cluster, remote).await?
            }
            _ => Vec::new(),
        };
        if !here.is_empty() {
            found.push(self.matched_here(ctx, &here, st, cost).await?);
        }
        let schema = matched_schema();
        let mem = MemTable::try_new(schema, vec![found]).map_err(df_err)?;
        Ok(Some(Arc::new(mem)))
    }

    /// [`QueryEngine::matched_spans`] of the per-span plans `inputs` in this process, as one
    /// batch of `(m_trace, m_span)`.
    async fn matched_here(
        &self,
        ctx: &SessionContext,
        inputs: &[datafusion::logical_expr::LogicalPlan],
        st: &FirstStage,
        cost: &mut SearchMetrics,
    ) -> Result<RecordBatch> {
        let spans = Arc::new(SpansTable::try_new(&ctx.state(), inputs).await?);
        let p = super::plan::spansets(spans, &st.pipeline)?
            .build()
            .map_err(df_err)?;
        let df = ctx.execute_logical_plan(p).await.map_err(df_err)?;
        let (batches, bytes) = collect_counted(ctx, df).await?;
        cost.inspected_bytes += bytes;
        let mut traces = FixedSizeBinaryBuilder::new(16);
        let mut spans = FixedSizeBinaryBuilder::new(8);
        for b in &batches {
            let ids = b
                .column_by_name(crate::schema::col::TRACE_ID)
                .and_then(|a| {
                    a.as_any()
                        .downcast_ref::<arrow::array::FixedSizeBinaryArray>()
                })
                .ok_or_else(|| EngineError::Internal("spansets plan lost trace_id".into()))?;
            let sets = b
                .column_by_name(super::plan::out::SPANSETS)
                .ok_or_else(|| EngineError::Internal("spansets plan lost spansets".into()))?;
            for i in 0..b.num_rows() {
                let decoded = allegro_udfs::spansets::typed::decode(sets, i).map_err(df_err)?;
                let mut seen = HashSet::new();
                for set in decoded.into_iter().flatten() {
                    for (id, _) in set.spans {
                        if seen.insert(id) {
                            traces
                                .append_value(ids.value(i))
                                .map_err(|e| EngineError::Internal(format!("matched ids: {e}")))?;
                            spans
                                .append_value(id)
                                .map_err(|e| EngineError::Internal(format!("matched ids: {e}")))?;
                        }
                    }
                }
            }
        }
        let cols: Vec<ArrayRef> = vec![Arc::new(traces.finish()), Arc::new(spans.finish())];
        RecordBatch::try_new(matched_schema(), cols)
            .map_err(|e| EngineError::Internal(format!("matched ids: {e}")))
    }
}

/// Per-source plans (each with whether it reads blocks) by where they run: with a cluster,
/// those of blocks there and the rest here; without one, all here. The rest are rows in this
/// process's memory (the head, joined split traces): read where they are, they cost no
/// round trip, where on the cluster every task would fetch them from here first.
fn there_and_here<T>(inputs: Vec<(T, bool)>, cluster: bool) -> (Vec<T>, Vec<T>) {
    let (there, here): (Vec<_>, Vec<_>) = match cluster {
        true => inputs.into_iter().partition(|(_, blocks)| *blocks),
        false => (Vec::new(), inputs),
    };
    let plans = |v: Vec<(T, bool)>| v.into_iter().map(|(p, _)| p).collect();
    (plans(there), plans(here))
}

/// The schema of a pipeline's chosen spans: `(m_trace, m_span)`.
fn matched_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new(plan::out::M_TRACE, DataType::FixedSizeBinary(16), false),
        Field::new(plan::out::M_SPAN, DataType::FixedSizeBinary(8), false),
    ]))
}

/// A cluster to run on: a session whose plans run there, and how its failures read.
type OnCluster<'a> = (SessionContext, &'a Arc<dyn super::remote::Remote>);

impl QueryEngine {
    /// [`QueryEngine::matched_spans`] of the per-span plans `inputs` (of blocks) on a cluster:
    /// planned here with partitions that hold whole traces, each partition's traces evaluated
    /// on the executors (`TraceFilterExec`), one row per chosen span sent back.
    async fn matched_on_cluster(
        &self,
        inputs: &[datafusion::logical_expr::LogicalPlan],
        st: &FirstStage,
        cluster: &SessionContext,
        remote: &Arc<dyn super::remote::Remote>,
    ) -> Result<Vec<RecordBatch>> {
        use super::search::trace_filter::{Pass, TraceFilterExec};
        use crate::schema::col as c;
        use datafusion::logical_expr::{LogicalPlanBuilder, col};
        let planning = self.session_with(
            super::Optimizer::TraceQl,
            super::search::search_config(false),
        );
        let spans = SpansTable::try_new(&planning.state(), inputs).await?;
        let filtered = TraceFilterExec::new(
            spans.plan().clone(),
            Arc::new(st.pipeline.program.clone()),
            Arc::default(),
            Pass::MatchedSpans,
        );
        let table = SpansTable::from_plan(Arc::new(filtered));
        let p = LogicalPlanBuilder::scan(
            "matched",
            datafusion::datasource::provider_as_source(Arc::new(table)),
            None,
        )
        .and_then(|b| {
            b.project(vec![
                col(c::TRACE_ID).alias(plan::out::M_TRACE),
                col(c::SPAN_ID).alias(plan::out::M_SPAN),
            ])
        })
        .and_then(|b| b.build())
        .map_err(df_err)?;
        let df = cluster.execute_logical_plan(p).await.map_err(df_err)?;
        let batches = df.collect().await.map_err(|e| remote.failure(e))?;
        let schema = matched_schema();
        batches
            .into_iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| EngineError::Internal(format!("matched ids: {e}")))
    }
}

/// Whether `cond` keeps root spans only: a top-level conjunct `nestedSetParent < 0` (Traces
/// Drilldown's "root spans" signal), `<= -1` or `= -1`.
fn roots_only(cond: &FieldExpr) -> bool {
    match &cond.kind {
        FieldKind::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => roots_only(lhs) || roots_only(rhs),
        _ => is_root_test(cond),
    }
}

/// True when `cond` keeps every span of the rows it reads: root-span tests and `true`, joined
/// by `&&`.
fn roots_or_true(cond: &FieldExpr) -> bool {
    match &cond.kind {
        FieldKind::Static(Static::Bool(true)) => true,
        FieldKind::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } => roots_or_true(lhs) && roots_or_true(rhs),
        _ => is_root_test(cond),
    }
}

/// For each of `slices` equal time slices of the grid, the block that overlaps it most.
fn exemplar_blocks<'a>(
    blocks: impl Iterator<Item = &'a Arc<BlockMeta>>,
    grid: &Grid,
    slices: u64,
) -> HashSet<Uuid> {
    let blocks: Vec<&Arc<BlockMeta>> = blocks.collect();
    let width = (grid.end - grid.start).max(1) as u128;
    let slices = slices.max(1) as u128;
    (0..slices)
        .filter_map(|k| {
            let from = grid.start + (width * k / slices) as u64;
            let to = grid.start + (width * (k + 1) / slices) as u64;
            blocks
                .iter()
                .map(|b| {
                    let overlap = b
                        .end_unix_nano
                        .min(to)
                        .saturating_sub(b.start_unix_nano.max(from));
                    (overlap, b)
                })
                .filter(|(_, b)| b.start_unix_nano <= to && b.end_unix_nano >= from)
                .max_by_key(|(overlap, _)| *overlap)
                .map(|(_, b)| b.block_id)
        })
        .collect()
}

/// `src`'s table over only the blocks `keep` accepts (the live head whole); `None` when none
/// is left.
fn blocks_kept(src: &Source, keep: &dyn Fn(&BlockMeta) -> bool) -> Option<Arc<dyn TableProvider>> {
    match BlocksTable::of(src.table.as_ref()) {
        Some(t) => t
            .subset(keep)
            .map(|t| Arc::new(t) as Arc<dyn TableProvider>),
        None => Some(src.table.clone()),
    }
}

fn check_range(req: &MetricsRequest, limits: &MetricsLimits) -> Result<()> {
    if req.end <= req.start {
        return Err(EngineError::InvalidInput(
            "invalid range: end must be after start".into(),
        ));
    }
    let range = Duration::from_nanos(req.end - req.start);
    if range > limits.max_duration {
        return Err(EngineError::InvalidInput(format!(
            "metrics query time range exceeds the maximum allowed duration of {}",
            humantime::format_duration(limits.max_duration)
        )));
    }
    Ok(())
}

/// Exemplars per series: the hint `with(exemplars=...)` over the parameter over the default,
/// capped by the limit.
fn exemplar_limit(q: &Query, param: Option<u32>, limits: &MetricsLimits) -> u32 {
    let hinted = match q.hint("exemplars") {
        Some(Static::Bool(false)) => Some(0),
        Some(Static::Bool(true)) => Some(limits.max_exemplars),
        Some(Static::Int(n)) => Some((*n).max(0).min(u32::MAX as i64) as u32),
        _ => None,
    };
    hinted
        .or(param)
        .unwrap_or(limits.max_exemplars)
        .min(limits.max_exemplars)
}

impl QueryEngine {
    /// `status` made partial, its message extended, when damaged blocks were skipped.
    fn with_damage(&self, tenants: &[String], status: (i32, String)) -> (i32, String) {
        match self.damage_notice(tenants) {
            None => status,
            Some(d) if status.1.is_empty() => (PartialStatus::Partial as i32, d),
            Some(d) => (PartialStatus::Partial as i32, format!("{} {d}", status.1)),
        }
    }
}

fn truncate<T>(series: &mut Vec<T>, max: usize) -> (i32, String) {
    if series.len() <= max {
        return (PartialStatus::Complete as i32, String::new());
    }
    series.truncate(max);
    (
        PartialStatus::Partial as i32,
        format!(
            "Response exceeds maximum series limit of {max}, a partial response is returned. \
             Warning: the accuracy of each individual value is not guaranteed."
        ),
    )
}

/// `topk`, `bottomk` and comparison filters, left to right.
fn second_stages(mut set: SeriesSet, stages: &[SecondStage], grid: &Grid) -> SeriesSet {
    for s in stages {
        set = match s {
            SecondStage::TopK(n, _) => {
                top_bottom(set, (*n).max(0) as usize, true, grid.intervals())
            }
            SecondStage::BottomK(n, _) => {
                top_bottom(set, (*n).max(0) as usize, false, grid.intervals())
            }
            SecondStage::Filter(op, x) => {
                let x = *x;
                let op = *op;
                filter(set, move |v| match op {
                    BinaryOp::Gt => v > x,
                    BinaryOp::Gte => v >= x,
                    BinaryOp::Lt => v < x,
                    BinaryOp::Lte => v <= x,
                    BinaryOp::Eq => v == x,
                    BinaryOp::Neq => v != x,
                    _ => true,
                })
            }
        };
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: u128, start: u64, end: u64) -> Arc<BlockMeta> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "format": "allegro-1", "blockID": Uuid::from_u128(n), "tenantID": "t",
                "startTime": "", "endTime": "", "startUnixNano": start, "endUnixNano": end,
                "totalObjects": 1, "totalSpans": 1, "size": 1, "footerSize": 1, "bloomSize": 1,
                "rowGroups": 1, "minID": "", "maxID": "", "hotColumns": [], "compactionLevel": 0
            }))
            .unwrap(),
        )
    }

    #[test]
    fn exemplar_blocks_take_the_block_covering_most_of_each_slice() {
        // Blocks [0,40) [40,50) [50,100) [100,110) and [200,300), one beyond the range.
        let blocks = [
            block(1, 0, 40),
            block(2, 40, 50),
            block(3, 50, 100),
            block(4, 100, 110),
            block(5, 200, 300),
        ];
        let grid = Grid::range(0, 120, 10).unwrap();
        // Slices of 30: [0,30] → 1; [30,60] → 1 (10) vs 2 (10) vs 3 (10): any of the three;
        // [60,90] → 3; [90,120] → 3 (10) vs 4 (10).
        let got = exemplar_blocks(blocks.iter(), &grid, 4);
        let ids = |ns: &[u128]| {
            ns.iter()
                .map(|n| Uuid::from_u128(*n))
                .collect::<HashSet<_>>()
        };
        assert!(got.contains(&Uuid::from_u128(1)) && got.contains(&Uuid::from_u128(3)));
        assert!(!got.contains(&Uuid::from_u128(5)), "{got:?}");
        assert!(got.len() <= 4);
        // One slice per block: every block in range is taken, and no other.
        let got = exemplar_blocks(blocks.iter(), &grid, 120);
        assert_eq!(got, ids(&[1, 2, 3, 4]));
        // One slice for the whole range: the block covering most of it (3 covers 50, 1 40).
        assert_eq!(exemplar_blocks(blocks.iter(), &grid, 1), ids(&[3]));
    }

    #[test]
    fn root_span_filters_are_recognised_for_the_sampling_estimate() {
        let roots = |q: &str| match compile_metrics(q).unwrap().1 {
            Node::Query(st) => matches!(&st.simple, Some(Some(c)) if roots_only(c)),
            other => panic!("{q}: {other:?}"),
        };
        for q in [
            "{nestedSetParent<0 && true} | rate()",
            "{nestedSetParent<0 && true && status=error} | rate()",
            "{resource.service.name != nil && nestedSetParent < 0} | rate() by(name)",
            "{nestedSetParent = -1} | count_over_time()",
            "{nestedSetParent <= -1 && (kind = server || kind = client)} | rate()",
        ] {
            assert!(roots(q), "{q}");
        }
        for q in [
            "{} | rate()",
            "{true} | rate()",
            "{nestedSetParent<0 || status=error} | rate()",
            "{nestedSetParent < 1} | rate()",
            "{nestedSetParent <= 0} | rate()",
            "{!(nestedSetParent < 0)} | rate()",
            "{nestedSetParent<0} >> {status=error} | rate()",
        ] {
            assert!(!roots(q), "{q}");
        }
    }

    #[test]
    fn sample_true_reads_fewer_spans_when_each_counts_toward_one_series() {
        let limits = MetricsLimits::default();
        // 10 M spans read, no straddling block: the span target alone sets the rate.
        let many = ReadVolume {
            spans: 10_000_000,
            intervals: 64,
            per_trace: 23.0,
            straddling: 0.0,
        };
        // Returns the kept buckets of 1024 (rate = k / 1024).
        let kept = |q: &str, vol: ReadVolume| {
            let (query, node) = compile_metrics(q).unwrap();
            let Node::Query(st) = node else { panic!("{q}") };
            sampling(&query, &st, vol, &limits).map(|s| s.buckets())
        };
        // 500k / 10M = 0.05 → ⌊51.2⌋ buckets; 2M / 10M = 0.2 → ⌊204.8⌋.
        for q in [
            "{} | rate() with(sample=true)",
            "{true && true} | rate() with(sample=true)",
            "{nestedSetParent<0 && true} | count_over_time() with(sample=true)",
            "{} | avg_over_time(duration) with(sample=true)",
        ] {
            assert_eq!(kept(q, many), Some(51), "{q}");
        }
        for q in [
            "{status=error} | rate() with(sample=true)",
            "{nestedSetParent<0 && status=error} | rate() with(sample=true)",
            "{} | rate() by(resource.service.name) with(sample=true)",
            "{} | histogram_over_time(duration) with(sample=true)",
            "{} >> {} | rate() with(sample=true)",
        ] {
            assert_eq!(kept(q, many), Some(204), "{q}");
        }
        assert_eq!(
            kept("{status=error} | rate() with(sample=0.1)", many),
            Some(102)
        );
        assert_eq!(kept("{} | rate()", many), None);
        let few = ReadVolume {
            spans: 400_000,
            ..many
        };
        assert_eq!(kept("{} | rate() with(sample=true)", few), None);
        // 1.67 M spans over 64 points, every block straddling: the error bound wins,
        // 1 · 23 / (0.045² · 1.67 M / 64) = 0.4353 → ⌊445.7⌋ buckets.
        let straddled = ReadVolume {
            spans: 1_670_000,
            straddling: 1.0,
            ..many
        };
        assert_eq!(kept("{} | rate() with(sample=true)", straddled), Some(445));
        // Halving the error quadruples the rate: over 1, so exact.
        assert_eq!(
            kept("{} | rate() by(name) with(sample=true)", straddled),
            None
        );
    }
}
