//! Counting queries answered from blocks' span counts per minute ([`crate::block::rollup`])
//! instead of their spans.
//!
//! A first stage qualifies when it only counts (`rate()`, `count_over_time()`), its filter and
//! `by()` keys read only the rollup's columns (`name`, `status`, `kind`,
//! `resource.service.name`, and `nestedSetParent` in a root test), and it is a range query
//! whose step is whole minutes or at least five minutes. A block qualifies when it has a rollup
//! and (for a query naming `resource.service.name`) every service name in it is a string, as
//! the rollup's one text column assumes. The rollup's rows then go through the same
//! translation, filter and aggregation as span rows, each weighing its `span_count`.
//!
//! A minute lies wholly inside one interval unless a boundary cuts it. Tempo's default steps
//! are whole minutes for ranges of 6 h or more, but Drilldown's are `range / 64` seconds
//! (1,350 s over 24 h, 337 s over 6 h) and cut about one minute per interval. Those minutes are
//! left out of the rollup rows and counted from the spans of the covered blocks that hold one
//! (`cut`: a few arithmetic operations on the start time, no per-minute predicate list), so
//! the answer is exact either way: the same number per series and interval as the span scan.
//! Merged blocks are read only in the time slices that hold a cut minute. Measured on the day
//! benchmark (docs/benchmarks.md, "Rollups"), 24 h of `rate() by (resource.service.name)`:
//! 299 → 84 ms over 287 five-minute blocks (about 64 of them read for their cut minutes), and
//! 225 → 149 → 62 ms over the same day merged into 25 hour-long blocks (from spans; cut minutes
//! from whole blocks; from slices).
//!
//! The rest (blocks without a rollup, the live head) is scanned as before, and both feed one
//! [`Raw`]. Exemplars still come from the spans (their own small pass over a few blocks).

use std::collections::HashSet;
use std::sync::Arc;

use allegro_traceql::ast::{FieldExpr, FieldKind, FieldRef, Intrinsic, Scope};
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, cast, col, lit};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use uuid::Uuid;

use super::compile::{FirstStage, Func};
use super::grid::Grid;
use super::plan::{self, Needs};
use super::raw::Raw;
use crate::block::meta::{BlockMeta, BlockSlice};
use crate::block::rollup::{BUCKET_NANOS, bucket_end, schema};
use crate::catalog::Catalog;
use crate::error::Result;
use crate::query::plan::is_root_test;
use crate::query::sources::{Source, Sources};
use crate::query::spans_table::SpansTable;
use crate::query::table::BlocksTable;
use crate::query::translate::KnownTypes;
use crate::query::{collect_counted, df_err};
use crate::schema::{AttrScope, HotType, col as c};
use crate::tempopb::SearchMetrics;

/// Rollups read at once.
const READS_AT_ONCE: usize = 16;

/// Whether `st` over `grid` can be answered from rollups (see the module docs).
pub(crate) fn applies(st: &FirstStage, grid: &Grid) -> bool {
    // Minutes cut by an interval boundary are counted from spans: worth it while they are
    // a small share (at most one minute in five).
    let minutes = !grid.instant && (whole_minutes(grid) || grid.step >= MIN_UNALIGNED_STEP);
    let counts = matches!(st.func, Func::Rate | Func::Count);
    let filter = match &st.simple {
        Some(None) => true,
        Some(Some(cond)) => reads_rollup_columns(cond),
        None => false,
    };
    minutes && counts && filter && st.by.iter().all(is_rollup_column)
}

/// Shortest step not a whole number of minutes that rollups answer: one minute in five, at
/// most, is cut by a boundary and counted from spans (Drilldown's steps are `range / 64`
/// seconds: 337 s over 6 h, 1,350 s over 24 h).
const MIN_UNALIGNED_STEP: u64 = 5 * BUCKET_NANOS;

/// Whether every interval boundary of `grid` is a whole minute.
fn whole_minutes(grid: &Grid) -> bool {
    grid.step.is_multiple_of(BUCKET_NANOS) && grid.start.is_multiple_of(BUCKET_NANOS)
}

/// Whether the minute ending at `m` (`(m − 1 min, m]`, Int64 ns) has an interval boundary of
/// `grid` strictly inside it. Boundaries are `start + k·step`; the first after `m − 1 min`
/// lies `step − ((m − 1 min − start) mod step)` later, inside the minute when that is under a
/// minute. `+ step` keeps the dividend positive for minutes from one step before the start.
fn cut(grid: &Grid, m: Expr) -> Expr {
    let (minute, start, step) = (BUCKET_NANOS as i64, grid.start as i64, grid.step as i64);
    ((m - lit(minute) - lit(start) + lit(step)) % lit(step)).gt(lit(step - minute))
}

/// The minute ends of `grid` cut by a boundary, in order.
fn cut_minutes(grid: &Grid) -> Vec<u64> {
    (0..=grid.intervals() as u64)
        .map(|k| grid.start + k * grid.step)
        .filter(|b| !b.is_multiple_of(BUCKET_NANOS))
        .map(bucket_end)
        .collect()
}

/// Whether spans starting in `[first, last]` may fall in one of the `cut` minutes (sorted
/// ends).
fn holds_cut_minute((first, last): (u64, u64), cut: &[u64]) -> bool {
    let i = cut.partition_point(|&m| m < first);
    cut.get(i)
        .is_some_and(|&m| m.saturating_sub(BUCKET_NANOS) < last)
}

/// Whether the query names `resource.service.name` (then a block's service names must all be
/// strings for its rollup to answer).
fn names_service(st: &FirstStage) -> bool {
    fn walk(e: &FieldExpr) -> bool {
        match &e.kind {
            FieldKind::Ref(r) => is_service(r),
            FieldKind::Static(_) => false,
            FieldKind::Binary { lhs, rhs, .. } => walk(lhs) || walk(rhs),
            FieldKind::Unary { expr, .. } | FieldKind::List { expr, .. } => walk(expr),
        }
    }
    st.by.iter().any(is_service) || matches!(&st.simple, Some(Some(c)) if walk(c))
}

fn is_service(r: &FieldRef) -> bool {
    matches!(r, FieldRef::Attribute(a) if a.scope == Scope::Resource && !a.parent && a.name == "service.name")
}

/// A field the rollup holds as the span table does.
fn is_rollup_column(r: &FieldRef) -> bool {
    is_service(r)
        || matches!(
            r,
            FieldRef::Intrinsic(Intrinsic::Name | Intrinsic::Status | Intrinsic::Kind)
        )
}

/// Whether `cond` reads only rollup columns; `nestedSetParent` only in a root test, the one
/// question the rollup's clamped column answers as the span's own value does.
fn reads_rollup_columns(cond: &FieldExpr) -> bool {
    if is_root_test(cond) {
        return true;
    }
    match &cond.kind {
        FieldKind::Ref(r) => is_rollup_column(r),
        FieldKind::Static(_) => true,
        FieldKind::Binary { lhs, rhs, .. } => {
            reads_rollup_columns(lhs) && reads_rollup_columns(rhs)
        }
        FieldKind::Unary { expr, .. } => reads_rollup_columns(expr),
        FieldKind::List { .. } => false,
    }
}

/// Whether `b`'s rollup answers a query (`service`: one naming `resource.service.name`).
fn block_qualifies(b: &BlockMeta, service: bool) -> bool {
    if b.rollup.is_none() {
        return false;
    }
    if !service {
        return true;
    }
    // Unknown key types: a service name may be a number, kept out of the text column.
    b.key_types.as_ref().is_some_and(|k| {
        k.iter()
            .filter(|t| t.scope == AttrScope::Resource && t.key == "service.name")
            .all(|t| t.types.iter().all(|&ty| ty == HotType::String))
    })
}

/// How many of `blocks` have a rollup that answers `st` (as far as their metas tell).
pub(crate) fn qualifying(st: &FirstStage, blocks: &[Arc<BlockMeta>]) -> usize {
    let service = names_service(st);
    blocks
        .iter()
        .filter(|b| block_qualifies(b, service))
        .count()
}

/// Counts `src`'s qualifying blocks from their rollups into `raw`; the blocks it covered, which
/// the span scan then leaves out.
pub(crate) async fn count_from_rollups(
    catalog: &Catalog,
    ctx: &SessionContext,
    src: &Sources,
    st: &FirstStage,
    grid: &Grid,
    raw: &mut Raw,
    cost: &mut SearchMetrics,
) -> Result<HashSet<Uuid>> {
    let service = names_service(st);
    let mut covered = HashSet::new();
    let mut rows: Vec<RecordBatch> = Vec::new();
    // Cold, each rollup is one read: several at once, as a trace lookup reads blooms.
    // Owned metas: closures over borrowed ones are not general enough for a `Send` future.
    let wanted: Vec<Arc<BlockMeta>> = src
        .blocks
        .iter()
        .filter(|b| block_qualifies(b, service))
        .cloned()
        .collect();
    let mut loads = futures::stream::iter(wanted)
        .map(move |b: Arc<BlockMeta>| async move { (b.block_id, catalog.rollup(&b).await) })
        .buffered(READS_AT_ONCE);
    while let Some((id, r)) = loads.next().await {
        if let Some(r) = r {
            covered.insert(id);
            rows.push(r.as_ref().clone());
        }
    }
    tracing::debug!(
        blocks = covered.len(),
        of = src.blocks.len(),
        rows = rows.iter().map(RecordBatch::num_rows).sum::<usize>(),
        "counting from rollups"
    );
    if rows.is_empty() {
        return Ok(covered);
    }
    // As many partitions as the session runs at once.
    let n = ctx.state().config().target_partitions().max(1);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n.min(rows.len())];
    for (i, r) in rows.into_iter().enumerate() {
        parts[i % n].push(r);
    }
    let table: Arc<dyn TableProvider> =
        Arc::new(MemTable::try_new(schema(), parts).map_err(df_err)?);
    // Service names as the qualifying blocks hold them: strings only.
    let mut types = KnownTypes::new();
    types
        .entry((AttrScope::Resource, "service.name".to_string()))
        .or_default()
        .insert(HotType::String);
    let source = Source {
        hot: Vec::new(),
        others: Some(HashSet::new()),
        keys: None,
        types: Some(types),
        table: table.clone(),
        live_ends: None,
    };
    let needs = Needs {
        ids: false,
        sampling: None,
        counted: true,
    };
    let aligned = whole_minutes(grid);
    let minute = cast(col(c::START_TIME), DataType::Int64);
    let uncut = (!aligned).then(|| !cut(grid, minute));
    let rows = plan::rows(&source, table, st, grid, needs, uncut.as_ref())?;
    count(ctx, vec![rows], st, grid, needs, raw, cost).await?;
    if aligned {
        return Ok(covered);
    }
    // The minutes cut by a boundary, from the covered blocks' spans: only blocks holding one
    // are read, and only those minutes' spans are counted.
    let cut_ends = cut_minutes(grid);
    let ceil = (cast(col(c::START_TIME), DataType::Int64) + lit(BUCKET_NANOS as i64 - 1))
        / lit(BUCKET_NANOS as i64)
        * lit(BUCKET_NANOS as i64);
    let in_cut = cut(grid, ceil);
    let needs = Needs {
        counted: false,
        ..needs
    };
    // Merged blocks are read by time slice (row groups of their own), only the slices
    // holding a cut minute: one partition each, so file scans must not be split further.
    let keep = |b: &BlockMeta, s: Option<&BlockSlice>| {
        let (first, last) = s.map_or((b.start_unix_nano, b.end_unix_nano), |s| {
            (s.start_unix_nano, s.end_unix_nano)
        });
        covered.contains(&b.block_id) && holds_cut_minute((first, last), &cut_ends)
    };
    let mut plans = Vec::new();
    for s in &src.tables {
        let Some(blocks) = BlocksTable::of(s.table.as_ref()) else {
            continue;
        };
        let t = blocks.parts_where(&keep);
        if !t.parts().is_empty() {
            plans.push(plan::rows(s, Arc::new(t), st, grid, needs, Some(&in_cut))?);
        }
    }
    if !plans.is_empty() {
        let config = ctx
            .copied_config()
            .set_bool("datafusion.optimizer.repartition_file_scans", false);
        let state = SessionStateBuilder::new_from_existing(ctx.state())
            .with_config(config)
            .build();
        let parts = SessionContext::new_with_state(state);
        count(&parts, plans, st, grid, needs, raw, cost).await?;
    }
    Ok(covered)
}

/// Aggregates the rows of `plans` (one schema) into `raw`.
async fn count(
    ctx: &SessionContext,
    plans: Vec<LogicalPlan>,
    st: &FirstStage,
    grid: &Grid,
    needs: Needs,
    raw: &mut Raw,
    cost: &mut SearchMetrics,
) -> Result<()> {
    let spans = Arc::new(SpansTable::try_new(&ctx.state(), &plans).await?);
    let p = plan::aggregate(spans, None, st, grid, needs, None)?;
    let df = ctx.execute_logical_plan(p).await.map_err(df_err)?;
    let (batches, bytes) = collect_counted(ctx, df).await?;
    cost.inspected_bytes += bytes;
    raw.add_batches(&batches, st.by.len(), grid.intervals(), false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::metrics::compile::{Node, compile_metrics};

    fn stage(q: &str) -> FirstStage {
        match compile_metrics(q).unwrap().1 {
            Node::Query(st) => *st,
            other => panic!("{other:?}"),
        }
    }

    const HOUR: u64 = 3600 * 1_000_000_000;

    #[test]
    fn counting_queries_on_rollup_columns_over_whole_minutes_qualify() {
        let day = Grid::range(10 * HOUR, 34 * HOUR, 300_000_000_000).unwrap();
        for q in [
            "{ } | rate() by (resource.service.name)",
            "{ nestedSetParent < 0 && true } | rate() by (resource.service.name)",
            "{ status = error } | count_over_time() by (resource.service.name)",
            "{ resource.service.name = \"a\" && kind = server } | rate() by (name, status)",
            "{ name =~ \"GET.*\" || status != ok } | count_over_time()",
        ] {
            assert!(applies(&stage(q), &day), "{q}");
        }
    }

    #[test]
    fn minutes_cut_by_a_boundary_are_found() {
        let m = BUCKET_NANOS;
        // Aligned to its 90 s step: boundaries at 0, 90, 180, 270 s (+ the leading one).
        let g = Grid::range(3 * m, 4 * m + 30_000_000_000, 90_000_000_000).unwrap();
        let bounds: Vec<u64> = (0..=g.intervals() as u64)
            .map(|k| g.start + k * g.step)
            .collect();
        let want: Vec<u64> = bounds
            .iter()
            .filter(|b| *b % m != 0)
            .map(|b| (b / m + 1) * m)
            .collect();
        assert!(!want.is_empty());
        assert_eq!(cut_minutes(&g), want);
        let cut = [2 * m, 5 * m];
        // Minutes (1m, 2m] and (4m, 5m].
        assert!(holds_cut_minute((m + 1, m + 2), &cut));
        assert!(holds_cut_minute((2 * m, 3 * m), &cut));
        assert!(!holds_cut_minute((2 * m + 1, 4 * m), &cut));
        assert!(holds_cut_minute((2 * m + 1, 4 * m + 1), &cut));
        assert!(!holds_cut_minute((5 * m + 1, 9 * m), &cut));
    }

    #[test]
    fn other_queries_do_not() {
        let day = Grid::range(10 * HOUR, 34 * HOUR, 300_000_000_000).unwrap();
        for q in [
            // Values, other attributes, unscoped or span-scoped service names.
            "{ } | avg_over_time(duration)",
            "{ } | quantile_over_time(duration, .9)",
            "{ span.http.route = \"/a\" } | rate()",
            "{ } | rate() by (span.http.route)",
            "{ .service.name = \"a\" } | rate()",
            "{ span.service.name = \"a\" } | rate()",
            "{ duration > 1s } | rate()",
            // nestedSetParent other than in a root test; trace-level intrinsics.
            "{ nestedSetParent = 3 } | rate()",
            "{ } | rate() by (nestedSetParent)",
            "{ rootServiceName = \"a\" } | rate()",
            // Pipelines evaluated per trace.
            "{ name = \"a\" } >> { status = error } | rate()",
        ] {
            assert!(!applies(&stage(q), &day), "{q}");
        }
        let q = stage("{ } | rate()");
        assert!(applies(&q, &day));
        // Drilldown's steps (range / 64 s), cut minutes and all.
        for step in [337, 1350] {
            let g = Grid::range(10 * HOUR, 34 * HOUR, step * 1_000_000_000).unwrap();
            assert!(applies(&q, &g), "{step}");
        }
        // Steps that are not whole minutes, and instant queries.
        let odd = Grid::range(10 * HOUR, 34 * HOUR, 90_000_000_000).unwrap();
        assert!(!applies(&q, &odd));
        let seconds = Grid::range(10 * HOUR, 11 * HOUR, 15_000_000_000).unwrap();
        assert!(!applies(&q, &seconds));
        assert!(!applies(&q, &Grid::instant(10 * HOUR, 34 * HOUR).unwrap()));
    }
}
