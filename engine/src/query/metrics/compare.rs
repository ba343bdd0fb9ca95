//! `compare({selection}, topN, start, end)`: for every attribute of the query's spans, counts
//! per value and interval, split into selection (spans matching the filter inside the
//! window) and baseline (the rest), plus per-attribute totals (Tempo
//! `engine_metrics_compare.go`).
//!
//! One DataFusion aggregation with a grouping set per attribute counts every attribute in a
//! single pass; the top-N cut runs on the result.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use allegro_traceql::ast::{Attribute, FieldExpr, FieldKind, FieldRef, Intrinsic, Scope};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, UInt64Type};
use datafusion::datasource::provider_as_source;
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{
    Expr, GroupingSet, LogicalPlan, LogicalPlanBuilder, cast, col, lit,
};

use super::compile::{FirstStage, Func};
use super::grid::Grid;
use super::plan::{Sampling, matched_rows, out, span_condition};
use super::series::{LabelValue, Series, SeriesSet, insert};
use crate::error::{EngineError, Result};
use crate::query::search::{Source, Sources};
use crate::query::spans_table::SpansTable;
use crate::query::{QueryEngine, collect_counted, df_err};
use crate::schema::col as c;

/// Intrinsics compared besides every span and resource attribute (Tempo leaves out only
/// start time and duration; IDs and nested sets are not attributes of interest).
const INTRINSICS: [Intrinsic; 5] = [
    Intrinsic::Name,
    Intrinsic::Status,
    Intrinsic::Kind,
    Intrinsic::TraceRootName,
    Intrinsic::TraceRootService,
];

const SEL: &str = "sel";

fn attr_name(i: usize) -> String {
    format!("a{i}")
}

fn expr(r: FieldRef) -> FieldExpr {
    FieldExpr {
        kind: FieldKind::Ref(r),
        span: Default::default(),
    }
}

fn rows(
    src: &Source,
    st: &FirstStage,
    grid: &Grid,
    fields: &[FieldRef],
    sampling: Option<Sampling>,
    ids: bool,
) -> Result<LogicalPlan> {
    let Func::Compare { filter, window, .. } = &st.func else {
        return Err(EngineError::Internal(
            "compare rows for another function".into(),
        ));
    };
    let t = src.translator();
    let base = span_condition(&t, st)?;
    let mut f = grid.filter(col(c::START_TIME)).and(base);
    if let Some(s) = sampling {
        f = s.filter().and(f);
    }
    let mut sel = match filter {
        None => lit(true),
        Some(e) => t.condition(e)?,
    };
    if let Some((s, e)) = window {
        sel = sel.and(
            col(c::START_TIME)
                .gt_eq(lit(*s))
                .and(col(c::START_TIME).lt(lit(*e))),
        );
    }
    let mut proj = vec![col(c::START_TIME).alias(out::TS)];
    if ids {
        proj.extend([col(c::TRACE_ID), col(c::SPAN_ID)]);
    }
    proj.extend([
        // NULL (unknown) selection conditions are baseline.
        Expr::IsTrue(Box::new(sel)).alias(SEL),
        lit(sampling.map_or(1.0, |s| s.weight)).alias(out::W),
    ]);
    for (i, r) in fields.iter().enumerate() {
        // Tagged text, one column per attribute: DataFusion's grouping sets take at most 64
        // columns, so a separate type column would halve the attributes compared.
        proj.push(cast(t.value(&expr(r.clone()))?.as_key(), DataType::Utf8).alias(attr_name(i)));
    }
    LogicalPlanBuilder::scan("spans", provider_as_source(src.table.clone()), None)
        .and_then(|b| b.filter(f))
        .and_then(|b| b.project(proj))
        .and_then(|b| b.build())
        .map_err(df_err)
}

impl QueryEngine {
    /// Runs `compare()` over every tenant's sources.
    pub(super) async fn compare(
        &self,
        per_tenant: &[Sources],
        st: &FirstStage,
        grid: &Grid,
        sampling: Option<Sampling>,
        cost: &mut crate::tempopb::SearchMetrics,
    ) -> Result<SeriesSet> {
        let Func::Compare { top_n, .. } = &st.func else {
            return Err(EngineError::Internal("compare() expected".into()));
        };
        let intervals = grid.intervals();
        // (selection?, attribute) → value → counts per interval.
        let mut counts: HashMap<(bool, String), HashMap<String, Vec<f64>>> = HashMap::new();
        for src in per_tenant {
            src.account(cost);
            if src.tables.is_empty() {
                continue;
            }
            let fields = self.compare_fields(src).await?;
            let ctx = self.session();
            let matched = self
                .matched_spans(&ctx, src, st, grid, sampling, cost)
                .await?;
            let inputs = src
                .tables
                .iter()
                .map(|s| rows(s, st, grid, &fields, sampling, matched.is_some()))
                .collect::<Result<Vec<_>>>()?;
            let table = Arc::new(SpansTable::try_new(&ctx.state(), &inputs).await?);
            let b = matched_rows(table, matched)?;
            let i = grid.interval(col(out::TS)).alias(out::I);
            let b = b
                .project(
                    [i, col(SEL), col(out::W)]
                        .into_iter()
                        .chain((0..fields.len()).map(|j| col(attr_name(j))))
                        .collect::<Vec<_>>(),
                )
                .map_err(df_err)?;
            let sets: Vec<Vec<Expr>> = (0..fields.len())
                .map(|j| vec![col(out::I), col(SEL), col(attr_name(j))])
                .collect();
            let n = if sampling.is_some() {
                sum(col(out::W))
            } else {
                cast(count(lit(1)), DataType::Float64)
            };
            let p = b
                .aggregate(
                    vec![Expr::GroupingSet(GroupingSet::GroupingSets(sets))],
                    vec![n.alias(out::N)],
                )
                .and_then(|b| b.build())
                .map_err(df_err)?;
            let df = ctx.execute_logical_plan(p).await.map_err(df_err)?;
            let (batches, bytes) = collect_counted(&ctx, df).await?;
            cost.inspected_bytes += bytes;
            let names: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            for bt in &batches {
                let lost = || EngineError::Internal("compare plan lost a column".into());
                let iv = bt
                    .column_by_name(out::I)
                    .and_then(|a| a.as_primitive_opt::<UInt64Type>())
                    .ok_or_else(lost)?;
                let selv = bt
                    .column_by_name(SEL)
                    .and_then(|a| a.as_boolean_opt())
                    .ok_or_else(lost)?;
                let nv = bt
                    .column_by_name(out::N)
                    .and_then(|a| a.as_primitive_opt::<arrow::datatypes::Float64Type>())
                    .ok_or_else(lost)?;
                let attrs = (0..fields.len())
                    .map(|j| {
                        bt.column_by_name(&attr_name(j))
                            .and_then(|a| a.as_string_opt::<i32>())
                            .ok_or_else(lost)
                    })
                    .collect::<Result<Vec<_>>>()?;
                for r in 0..bt.num_rows() {
                    let Some(j) = attrs.iter().position(|a| !a.is_null(r)) else {
                        continue;
                    };
                    let at = iv.value(r) as usize;
                    if at >= intervals || iv.is_null(r) {
                        continue;
                    }
                    let sel = !selv.is_null(r) && selv.value(r);
                    let cells = counts
                        .entry((sel, names[j].clone()))
                        .or_default()
                        .entry(attrs[j].value(r).to_string())
                        .or_insert_with(|| vec![0.0; intervals]);
                    cells[at] += nv.value(r);
                }
            }
        }
        Ok(series(counts, *top_n, intervals))
    }

    /// Every intrinsic, resource and span attribute of the tenant's data in range.
    async fn compare_fields(&self, src: &Sources) -> Result<Vec<FieldRef>> {
        let mut fields: Vec<FieldRef> = INTRINSICS.into_iter().map(FieldRef::Intrinsic).collect();
        let mut keys: BTreeMap<&'static str, std::collections::BTreeSet<String>> = BTreeMap::new();
        for s in &src.tables {
            match &s.keys {
                Some(k) => {
                    for scope in ["resource", "span"] {
                        keys.entry(scope)
                            .or_default()
                            .extend(k.get(scope).into_iter().flatten().cloned());
                    }
                }
                None => {
                    let (pairs, _) = self.scanned_keys(&self.session(), 0, s).await?;
                    for (scope, name) in pairs {
                        if scope == "resource" || scope == "span" {
                            keys.entry(scope).or_default().insert(name);
                        }
                    }
                }
            }
            for h in &s.hot {
                let scope = h.scope.name();
                if scope == "resource" || scope == "span" {
                    keys.entry(scope).or_default().insert(h.key.clone());
                }
            }
        }
        keys.entry("resource")
            .or_default()
            .insert("service.name".into());
        for (scope, names) in keys {
            let scope = if scope == "resource" {
                Scope::Resource
            } else {
                Scope::Span
            };
            for name in names {
                fields.push(FieldRef::Attribute(Attribute {
                    scope,
                    parent: false,
                    name,
                }));
            }
        }
        Ok(fields)
    }
}

/// Top-N values per attribute, both sides, plus totals, as Tempo labels them.
fn series(
    counts: HashMap<(bool, String), HashMap<String, Vec<f64>>>,
    top_n: usize,
    intervals: usize,
) -> SeriesSet {
    let mut set = SeriesSet::new();
    for ((sel, attr), values) in counts {
        let (kind, total_kind) = if sel {
            ("selection", "selection_total")
        } else {
            ("baseline", "baseline_total")
        };
        let mut totals = vec![0.0; intervals];
        let mut ranked: Vec<(String, Vec<f64>, f64)> = values
            .into_iter()
            .map(|(v, c)| {
                for (t, x) in totals.iter_mut().zip(&c) {
                    *t += x;
                }
                let s = c.iter().sum();
                (v, c, s)
            })
            .collect();
        // Highest totals first; ties by value so results are stable.
        ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        for (v, c, _) in ranked.into_iter().take(top_n) {
            insert(
                &mut set,
                Series {
                    labels: vec![
                        ("__meta_type".into(), LabelValue::Str(kind.into())),
                        (attr.clone(), LabelValue::from_key(&v)),
                    ],
                    values: c,
                    exemplars: vec![],
                },
            );
        }
        insert(
            &mut set,
            Series {
                labels: vec![
                    ("__meta_type".into(), LabelValue::Str(total_kind.into())),
                    (attr.clone(), LabelValue::Nil),
                ],
                values: totals,
                exemplars: vec![],
            },
        );
    }
    set
}
