//! Metrics queries as DataFusion plans. Per source (a block group or the head), the spans of
//! the query become rows of `(ts, [trace_id, span_id], [w], [v], [b], k0, t0..kn, tn)`:
//!
//! ```text
//! Aggregate(GROUP BY interval(ts), k0, t0.., [b]:
//!           count | sum(w), sum(v [* w]), min(v), max(v), count(v), traceql_exemplars(..))
//!   TableScan(spans)                       -- SpansTable: union of the sources' rows
//!     Projection(ts, v, b, k0, t0..)
//!       Filter(condition [AND start < ts <= end] [AND trace_id < sample bound])
//!         TableScan(blocks with one schema [sampled: a row range per row group] | live head)
//! ```
//!
//! Filters with spanset or structural operators first run the search program per trace
//! (`traceql_spansets`) to find the matching spans; the rows are then joined with those
//! `(trace_id, span_id)` pairs before the same aggregation. Every aggregate is mergeable
//! (counts, sums, min/max, log2-bucket counts), so partial results of tenants, and later of
//! nodes, combine exactly.

use std::sync::Arc;

use allegro_udfs::spansets::key::KeyType;
use arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::functions::unicode::expr_fn::{left, substr};
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{
    AggregateUDF, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, ScalarUDF, cast, col, lit,
};

use super::compile::{FirstStage, Func};
use super::grid::Grid;
use crate::block::meta::BlockMeta;
use crate::block::trace_cuts::BUCKETS;
use crate::error::Result;
use crate::query::df_err;
use crate::query::sources::Source;
use crate::query::table::{BlocksTable, SAMPLE_WEIGHT, string_views};
use crate::query::translate::{Translator, Typed, case_when};
use crate::schema::col as c;

/// Output columns of the per-span rows and of the aggregation.
pub mod out {
    /// Span start (UInt64 ns).
    pub const TS: &str = "ts";
    /// Sampling weight (Float64).
    pub const W: &str = "w";
    /// The function's value (Float64; durations in seconds).
    pub const V: &str = "v";
    /// Log2 bucket upper bound (Int64).
    pub const B: &str = "b";
    /// Interval index.
    pub const I: &str = "i";
    /// Spans (weighted when sampling).
    pub const N: &str = "n";
    /// Sum of values.
    pub const SUM: &str = "vsum";
    /// Smallest value.
    pub const MIN: &str = "vmin";
    /// Largest value.
    pub const MAX: &str = "vmax";
    /// Spans with a value (weighted).
    pub const NV: &str = "nv";
    /// Exemplar candidates.
    pub const EX: &str = "ex";
    /// Matched trace IDs (complex filters).
    pub const M_TRACE: &str = "m_trace";
    /// Matched span IDs (complex filters).
    pub const M_SPAN: &str = "m_span";

    /// The name of `by()` key `i` (its value as text).
    pub fn key(i: usize) -> String {
        format!("k{i}")
    }

    /// The name of the type code of `by()` key `i` (`KeyType as u8`).
    pub fn key_type(i: usize) -> String {
        format!("t{i}")
    }
}

/// Trace-level sampling: keep the traces whose ID falls in the lowest `buckets` of the 1024
/// trace-ID buckets (its top 10 bits).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    buckets: u16,
}

impl Sampling {
    /// Sampling at `rate` (0 < rate < 1), quantised to the trace-ID buckets blocks record row
    /// counts of (1/1024 of the ID space), so a block's sample is a row range of each of its
    /// row groups.
    pub fn at(rate: f64) -> Option<Self> {
        if !(rate > 0.0 && rate < 1.0) {
            return None;
        }
        let kept = ((rate * BUCKETS as f64).floor() as u16).clamp(1, BUCKETS as u16 - 1);
        Some(Self { buckets: kept })
    }

    /// The trace-ID buckets kept (those below this one).
    pub fn buckets(&self) -> usize {
        usize::from(self.buckets)
    }

    /// 1 / the fraction of the trace-ID space kept.
    pub fn weight(&self) -> f64 {
        BUCKETS as f64 / f64::from(self.buckets)
    }

    /// The kept fraction.
    pub fn rate(&self) -> f64 {
        1.0 / self.weight()
    }

    /// `trace_id < bound`: blocks are sorted by trace ID, so Parquet statistics and the page
    /// index skip everything above the bound.
    pub fn filter(&self) -> Expr {
        let mut bound = vec![0u8; 16];
        bound[..2].copy_from_slice(&(self.buckets << 6).to_be_bytes());
        col(c::TRACE_ID).lt(lit(ScalarValue::FixedSizeBinary(16, Some(bound))))
    }
}

/// Which columns the rows need beyond `ts`, `v`, `b` and the keys.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    /// `trace_id` and `span_id` (exemplars, per-trace matches).
    pub ids: bool,
    /// Sampling applied to these rows.
    pub sampling: Option<Sampling>,
    /// Each row stands for `span_count` spans (a block's rollup, [`super::rollup`]).
    pub counted: bool,
}

impl Needs {
    /// Whether rows carry a weight `w` to sum instead of being counted one each.
    fn weighted(&self) -> bool {
        self.sampling.is_some() || self.counted
    }
}

/// The value column of `func` over `t`: durations in seconds.
fn value_expr(t: &Typed) -> Expr {
    match (&t.dur, t.as_float()) {
        (Some(d), _) => cast(d.clone(), DataType::Float64) / lit(1e9),
        (None, Some(f)) => cast(f, DataType::Float64),
        (None, None) => lit(ScalarValue::Float64(None)),
    }
}

/// The log2 bucket of an integer or duration value (floats are not bucketed, as in Tempo).
fn bucket_expr(t: &Typed) -> Expr {
    let udf = ScalarUDF::from(allegro_udfs::log2_bucket::Log2Bucket::default());
    match (&t.dur, &t.int) {
        (Some(d), _) => udf.call(vec![cast(d.clone(), DataType::Int64)]),
        (None, Some(i)) => udf.call(vec![cast(i.clone(), DataType::Int64)]),
        _ => lit(ScalarValue::Int64(None)),
    }
}

/// True when the value of `func` is a duration (bucket labels in seconds).
pub fn is_duration(func: &Func) -> bool {
    func.value()
        .is_some_and(|e| Translator::new(&[]).value(e).is_ok_and(|t| t.dur.is_some()))
}

/// Spans a first stage counts: its one filter, or (per-trace evaluation to follow) any of its
/// spanset filters.
pub(crate) fn span_condition(t: &Translator, st: &FirstStage) -> Result<Expr> {
    Ok(match &st.simple {
        Some(None) => lit(true),
        Some(Some(e)) => t.condition(e)?,
        None => st
            .pipeline
            .leaves
            .iter()
            .map(|l| l.as_ref().map_or(Ok(lit(true)), |e| t.condition(e)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .reduce(Expr::or)
            .unwrap_or(lit(false)),
    })
}

/// The per-span rows of one source, scanning `table` (the source's, or a part of it).
pub(crate) fn rows(
    src: &Source,
    table: Arc<dyn TableProvider>,
    st: &FirstStage,
    grid: &Grid,
    needs: Needs,
    except: Option<&Expr>,
) -> Result<LogicalPlan> {
    let t = src.translator();
    let mut filter = span_condition(&t, st)?;
    if let Some(e) = except {
        filter = filter.and(e.clone());
    }
    // Blocks sample themselves (a row range per row group, a ratio weight per block) when
    // spans are counted one by one; per-trace evaluation needs every kept trace whole, which
    // the trace-ID filter guarantees everywhere alike.
    let (table, weight) = match (needs.sampling, BlocksTable::of(table.as_ref())) {
        (Some(s), Some(blocks)) if st.simple.is_some() => (
            Arc::new(blocks.sampled(s.buckets())) as Arc<dyn TableProvider>,
            Some(col(SAMPLE_WEIGHT)),
        ),
        (Some(s), _) => {
            filter = s.filter().and(filter);
            (table, Some(lit(s.weight())))
        }
        (None, _) if needs.counted => (
            table,
            Some(cast(
                col(crate::block::rollup::SPAN_COUNT),
                DataType::Float64,
            )),
        ),
        (None, _) => (table, None),
    };
    let mut proj = vec![col(c::START_TIME).alias(out::TS)];
    if needs.ids {
        proj.push(col(c::TRACE_ID));
        proj.push(col(c::SPAN_ID));
    }
    if let Some(w) = weight {
        proj.push(w.alias(out::W));
    }
    if let Some(e) = st.func.value() {
        let typed = t.value(e)?;
        proj.push(value_expr(&typed).alias(out::V));
        if st.func.bucketed() {
            proj.push(bucket_expr(&typed).alias(out::B));
        }
    }
    let mut listed = Vec::new();
    for (i, k) in st.by.iter().enumerate() {
        let e = allegro_traceql::ast::FieldExpr {
            kind: allegro_traceql::ast::FieldKind::Ref(k.clone()),
            span: Default::default(),
        };
        let typed = t.value(&e)?;
        if let Some(list) = typed.key_list() {
            // One row per value, below.
            proj.push(list.alias(out::key(i)));
            proj.push(lit(0u8).alias(out::key_type(i)));
            listed.push(i);
            continue;
        }
        let (text, ty) = typed.key_parts();
        proj.push(text.alias(out::key(i)));
        proj.push(ty.alias(out::key_type(i)));
    }
    let rows = scan_in_range(table, grid, filter, proj)?;
    each_value(rows, &listed)
}

/// `rows` with one row per value of each listed `by()` key (a list of typed keys): a span
/// counts once in the series of each distinct value it holds, as Tempo groups by each event's
/// value and each element of an array; a span with none is one row with the nil key.
fn each_value(rows: LogicalPlan, listed: &[usize]) -> Result<LogicalPlan> {
    let mut b = LogicalPlanBuilder::from(rows);
    for &i in listed {
        let key = out::key(i);
        b = b.unnest_column(key.as_str()).map_err(df_err)?;
        let tag = left(col(key.as_str()), lit(2i64));
        let ty = case_when(
            KeyType::ALL
                .iter()
                .map(|t| (tag.clone().eq(lit(t.tag())), lit(*t as u8)))
                .collect(),
            lit(ScalarValue::UInt8(None)),
        );
        let text = cast(substr(col(key.as_str()), lit(3i64)), DataType::Utf8View);
        let columns: Vec<Expr> = b
            .schema()
            .fields()
            .iter()
            .map(|f| {
                let name = f.name().as_str();
                if name == key {
                    text.clone().alias(name)
                } else if name == out::key_type(i) {
                    ty.clone().alias(name)
                } else {
                    col(name)
                }
            })
            .collect();
        b = b.project(columns).map_err(df_err)?;
    }
    b.build().map_err(df_err)
}

/// `table`'s rows passing `filter` that start inside the grid, projected to `proj`, string
/// columns of blocks read as views. Blocks whose every span starts inside the range skip the
/// time test: as a Parquet row filter it decoded and compared every row's start time (a fifth
/// of a 6h scan); only the edge blocks (a second scan, unioned) and other tables keep it.
pub(crate) fn scan_in_range(
    table: Arc<dyn TableProvider>,
    grid: &Grid,
    filter: Expr,
    proj: Vec<Expr>,
) -> Result<LogicalPlan> {
    let scan = |table: Arc<dyn TableProvider>, filter: Expr| {
        LogicalPlanBuilder::scan("spans", provider_as_source(string_views(table)), None)
            .and_then(|b| b.filter(filter))
            .and_then(|b| b.project(proj.clone()))
            .and_then(|b| b.build())
            .map_err(df_err)
    };
    let in_range = grid.filter(col(c::START_TIME)).and(filter.clone());
    let Some(blocks) = BlocksTable::of(table.as_ref()) else {
        return scan(table, in_range);
    };
    let inside = |b: &BlockMeta| grid.covers(b.start_unix_nano, b.end_unix_nano);
    match (blocks.subset(&inside), blocks.subset(&|b| !inside(b))) {
        (Some(inner), Some(edge)) => LogicalPlanBuilder::from(scan(Arc::new(inner), filter)?)
            .union(scan(Arc::new(edge), in_range)?)
            .and_then(|b| b.build())
            .map_err(df_err),
        (Some(inner), None) => scan(Arc::new(inner), filter),
        _ => scan(table, in_range),
    }
}

/// The query's rows: all of `spans`, or only those whose `(trace_id, span_id)` is in
/// `matched` (pipelines evaluated per trace).
pub(crate) fn matched_rows(
    spans: Arc<dyn TableProvider>,
    matched: Option<Arc<dyn TableProvider>>,
) -> Result<LogicalPlanBuilder> {
    let b = LogicalPlanBuilder::scan("spans", provider_as_source(spans), None).map_err(df_err)?;
    let Some(m) = matched else {
        return Ok(b);
    };
    let right = LogicalPlanBuilder::scan("matched", provider_as_source(m), None)
        .and_then(|r| r.build())
        .map_err(df_err)?;
    b.join(
        right,
        JoinType::LeftSemi,
        (
            vec![c::TRACE_ID, c::SPAN_ID],
            vec![out::M_TRACE, out::M_SPAN],
        ),
        None,
    )
    .map_err(df_err)
}

/// The aggregation over the query's rows (`spans`, optionally joined with `matched`).
pub(crate) fn aggregate(
    spans: Arc<dyn TableProvider>,
    matched: Option<Arc<dyn TableProvider>>,
    st: &FirstStage,
    grid: &Grid,
    needs: Needs,
    exemplars_per_group: Option<i64>,
) -> Result<LogicalPlan> {
    let mut b = matched_rows(spans, matched)?;
    // The interval and the keys' types as one integer (`metrics_group`), then the key texts.
    let types = (0..st.by.len()).map(|i| col(out::key_type(i))).collect();
    let mut group = vec![grid.group(col(out::TS), types).alias(out::I)];
    group.extend((0..st.by.len()).map(|i| col(out::key(i))));
    if st.func.bucketed() {
        b = b.filter(col(out::B).is_not_null()).map_err(df_err)?;
        group.push(col(out::B));
    }
    let weighted = needs.weighted();
    let mut aggs = vec![if weighted {
        sum(col(out::W)).alias(out::N)
    } else {
        count(lit(1)).alias(out::N)
    }];
    if st.func.value().is_some() {
        let v = col(out::V);
        if weighted {
            aggs.push(sum(v.clone() * col(out::W)).alias(out::SUM));
            aggs.push(
                sum(case_when(
                    vec![(v.clone().is_not_null(), col(out::W))],
                    lit(ScalarValue::Float64(None)),
                ))
                .alias(out::NV),
            );
        } else {
            aggs.push(sum(v.clone()).alias(out::SUM));
            aggs.push(count(v.clone()).alias(out::NV));
        }
        aggs.push(min(v.clone()).alias(out::MIN));
        aggs.push(max(v).alias(out::MAX));
    }
    if let Some(k) = exemplars_per_group {
        let v = if st.func.value().is_some() {
            col(out::V)
        } else {
            lit(ScalarValue::Float64(None))
        };
        let udaf = AggregateUDF::from(allegro_udfs::exemplars::TraceqlExemplars::default());
        aggs.push(
            udaf.call(vec![
                col(c::TRACE_ID),
                col(c::SPAN_ID),
                col(out::TS),
                v,
                lit(k),
            ])
            .alias(out::EX),
        );
    }
    b.aggregate(group, aggs)
        .and_then(|b| b.build())
        .map_err(df_err)
}
