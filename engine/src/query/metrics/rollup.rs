//! Counting queries answered from blocks' span counts per minute ([`crate::block::rollup`])
//! instead of their spans.
//!
//! A first stage qualifies when it only counts (`rate()`, `count_over_time()`), its filter and
//! `by()` keys read only the rollup's columns (`name`, `status`, `kind`,
//! `resource.service.name`, and `nestedSetParent` in a root test), and its intervals are whole
//! minutes (a range query whose step is a multiple of a minute: Tempo's default step is, for
//! every range of an hour or more). A block qualifies when it has a rollup and (for a query
//! naming `resource.service.name`) every service name in it is a string, as the rollup's one
//! text column assumes. The rollup's rows then go through the same translation, filter and
//! aggregation as span rows, each weighing its `span_count`: the answer is exact, the same
//! number per series and interval as the span scan gives. The rest (blocks without a rollup,
//! the live head) is scanned as before, and both feed one [`Raw`].
//!
//! Exemplars still come from the spans (their own small pass over a few blocks).

use std::collections::HashSet;
use std::sync::Arc;

use allegro_traceql::ast::{FieldExpr, FieldKind, FieldRef, Intrinsic, Scope};
use arrow::array::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use uuid::Uuid;

use super::compile::{FirstStage, Func};
use super::grid::Grid;
use super::plan::{self, Needs};
use super::raw::Raw;
use crate::block::meta::BlockMeta;
use crate::block::rollup::{BUCKET_NANOS, schema};
use crate::catalog::Catalog;
use crate::error::Result;
use crate::query::plan::is_root_test;
use crate::query::sources::{Source, Sources};
use crate::query::spans_table::SpansTable;
use crate::query::translate::KnownTypes;
use crate::query::{collect_counted, df_err};
use crate::schema::{AttrScope, HotType};
use crate::tempopb::SearchMetrics;

/// Rollups read at once.
const READS_AT_ONCE: usize = 16;

/// Whether `st` over `grid` can be answered from rollups (see the module docs).
pub(crate) fn applies(st: &FirstStage, grid: &Grid) -> bool {
    let whole_minutes = !grid.instant
        && grid.step.is_multiple_of(BUCKET_NANOS)
        && grid.start.is_multiple_of(BUCKET_NANOS);
    let counts = matches!(st.func, Func::Rate | Func::Count);
    let filter = match &st.simple {
        Some(None) => true,
        Some(Some(cond)) => reads_rollup_columns(cond),
        None => false,
    };
    whole_minutes && counts && filter && st.by.iter().all(is_rollup_column)
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
    let rows = plan::rows(&source, table, st, grid, needs, None)?;
    let spans = Arc::new(SpansTable::try_new(&ctx.state(), &[rows]).await?);
    let p = plan::aggregate(spans, None, st, grid, needs, None)?;
    let df = ctx.execute_logical_plan(p).await.map_err(df_err)?;
    let (batches, bytes) = collect_counted(ctx, df).await?;
    cost.inspected_bytes += bytes;
    raw.add_batches(&batches, st.by.len(), grid.intervals(), false)?;
    Ok(covered)
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
        // Steps that are not whole minutes, and instant queries.
        let odd = Grid::range(10 * HOUR, 34 * HOUR, 90_000_000_000).unwrap();
        assert!(!applies(&q, &odd));
        let seconds = Grid::range(10 * HOUR, 11 * HOUR, 15_000_000_000).unwrap();
        assert!(!applies(&q, &seconds));
        assert!(!applies(&q, &Grid::instant(10 * HOUR, 34 * HOUR).unwrap()));
    }
}
