//! `compare({selection}, topN, start, end)`: for every attribute of the query's spans, counts
//! per value and interval, split into selection (spans matching the filter inside the
//! window) and baseline (the rest), plus per-attribute totals (Tempo
//! `engine_metrics_compare.go`).
//!
//! The rows (filter, selection flag, the columns that hold attributes) are a DataFusion plan;
//! the counting is [`super::tally`], one task per partition.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{Expr, LogicalPlan, cast, col, lit};
use datafusion::physical_plan::execute_stream_partitioned;
use futures::StreamExt;

use super::compile::{FirstStage, Func};
use super::grid::Grid;
use super::plan::{Sampling, matched_rows, out, scan_in_range, span_condition};
use super::series::{LabelValue, Series, SeriesSet, insert};
use super::tally::{Ranked, Tally, columns, hot_name, map_columns, plain_columns};
use crate::error::{EngineError, Result};
use crate::query::sources::{Source, Sources};
use crate::query::spans_table::SpansTable;
use crate::query::table::string_view;
use crate::query::{QueryEngine, bytes_scanned, df_err};
use crate::schema::{HotColumn, col as c};

const SEL: &str = "sel";

/// The hot columns of any of `srcs` in the compared scopes, with their Arrow types: every
/// source's rows carry all of them (NULL where it has no such column) so the rows union.
fn hot_columns(srcs: &[Source]) -> Vec<(HotColumn, DataType)> {
    let mut all: Vec<(HotColumn, DataType)> = Vec::new();
    for s in srcs {
        let schema = s.table.schema();
        for h in &s.hot {
            if !super::tally::SCOPES.contains(&h.scope) || all.iter().any(|(a, _)| a == h) {
                continue;
            }
            if let Ok(f) = schema.field_with_name(&h.column_name()) {
                all.push((h.clone(), string_view(f.data_type())));
            }
        }
    }
    all
}

#[allow(clippy::too_many_arguments)]
fn rows(
    src: &Source,
    table: Arc<dyn TableProvider>,
    except: Option<&Expr>,
    st: &FirstStage,
    grid: &Grid,
    hot: &[(HotColumn, DataType)],
    sampling: Option<Sampling>,
    ids: bool,
) -> Result<LogicalPlan> {
    let Func::Compare { filter, window, .. } = &st.func else {
        return Err(EngineError::Internal(
            "compare rows for another function".into(),
        ));
    };
    let t = src.translator();
    let mut f = span_condition(&t, st)?;
    if let Some(s) = sampling {
        f = s.filter().and(f);
    }
    if let Some(e) = except {
        f = f.and(e.clone());
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
        lit(sampling.map_or(1.0, |s| s.weight())).alias(out::W),
    ]);
    // Blocks read their string columns as views; the live head's are cast to match so the
    // sources' rows union.
    let schema = src.table.schema();
    let as_read = |name: &str| -> Result<Expr> {
        let t = schema.field_with_name(name).map_err(|e| df_err(e.into()))?;
        Ok(cast(col(Column::from_name(name)), string_view(t.data_type())).alias(name))
    };
    for name in plain_columns() {
        proj.push(as_read(name)?);
    }
    for (n, (h, ty)) in hot.iter().enumerate() {
        let e = if src.hot.contains(h) {
            as_read(&h.column_name())?
        } else {
            lit(ScalarValue::try_from(ty).map_err(df_err)?)
        };
        proj.push(e.alias(hot_name(n)));
    }
    proj.extend(map_columns().map(col));
    scan_in_range(table, grid, f, proj)
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
        let mut all = Tally::new(intervals, &[]);
        for src in per_tenant {
            src.account(cost);
            if src.tables.is_empty() {
                continue;
            }
            let hot = hot_columns(&src.tables);
            let ctx = self.session();
            let matched = self
                .matched_spans(
                    (&ctx, None),
                    src,
                    st,
                    (grid.start, grid.end),
                    sampling,
                    cost,
                )
                .await?;
            // Compare counts trace-level attributes too: split traces are read whole.
            let whole = self.whole(&ctx, src, cost).await?;
            let mut inputs = Vec::with_capacity(src.tables.len());
            for (i, s) in src.tables.iter().enumerate() {
                inputs.extend(super::whole::plans(
                    whole.as_ref(),
                    i,
                    s,
                    s.table.clone(),
                    |s, t, except| rows(s, t, except, st, grid, &hot, sampling, matched.is_some()),
                )?);
            }
            let table = Arc::new(SpansTable::try_new(&ctx.state(), &inputs).await?);
            let b = matched_rows(table, matched)?;
            let keep = columns(hot.len()).map(|n| col(Column::from_name(n)));
            let p = b
                .project(
                    [
                        grid.interval(col(out::TS)).alias(out::I),
                        col(SEL),
                        col(out::W),
                    ]
                    .into_iter()
                    .chain(keep),
                )
                .and_then(|b| b.build())
                .map_err(df_err)?;
            let df = ctx.execute_logical_plan(p).await.map_err(df_err)?;
            let plan = df.create_physical_plan().await.map_err(df_err)?;
            let streams =
                execute_stream_partitioned(plan.clone(), ctx.task_ctx()).map_err(df_err)?;
            // One tally per partition, each on its own task, so the counting runs on every
            // core as the scan does.
            let hot: Arc<[HotColumn]> = hot.into_iter().map(|(h, _)| h).collect();
            let tasks = streams.into_iter().map(|mut stream| {
                let hot = hot.clone();
                tokio::spawn(async move {
                    let mut tally = Tally::new(intervals, &hot);
                    while let Some(b) = stream.next().await {
                        tally.add(&b.map_err(df_err)?, out::I, SEL, out::W)?;
                    }
                    Ok::<_, EngineError>(tally)
                })
            });
            for t in futures::future::join_all(tasks).await {
                all.merge(t.map_err(|e| EngineError::Internal(format!("compare task: {e}")))??);
            }
            cost.inspected_bytes += bytes_scanned(&plan);
        }
        Ok(series(all.ranked(*top_n)))
    }
}

/// Top-N values per attribute, both sides, plus totals, as Tempo labels them.
fn series(ranked: Vec<Ranked>) -> SeriesSet {
    let mut set = SeriesSet::new();
    for r in ranked {
        let (kind, total_kind) = if r.sel {
            ("selection", "selection_total")
        } else {
            ("baseline", "baseline_total")
        };
        for (v, c) in r.top {
            insert(
                &mut set,
                Series {
                    labels: vec![
                        ("__meta_type".into(), LabelValue::Str(kind.into())),
                        (r.attr.clone(), v),
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
                    (r.attr, LabelValue::Nil),
                ],
                values: r.totals,
                exemplars: vec![],
            },
        );
    }
    set
}
