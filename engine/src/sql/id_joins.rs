//! Joins on ID text run on the stored bytes.
//!
//! The tables show IDs as hex text, so `traceql(...) t JOIN spans s USING (trace_id, span_id)`
//! hashed the hex of every span's two IDs: over 10M spans the join cost twice what `traceql()`
//! did, and DuckDB, joining the 16-byte binaries, took half the time (`docs/benchmarks.md`, SQL
//! analytics). This rule finds join keys that are `hex_id(<stored column>)` under the view —
//! through aliases, filters, projections and the union of block groups — exposes the stored
//! column next to it, and joins on that instead. The other side joins as `id_bytes(key, width)`,
//! the strict inverse of `hex_id` (NULL for text `hex_id` never writes), or on its own stored
//! column when it has one, so every pair joins exactly when the texts are equal. A projection
//! above the join restores its columns.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Filter, Join, JoinConstraint, LogicalPlan, Projection, ScalarUDF,
    SubqueryAlias, Union, lit,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// The optimizer rule; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct IdJoins;

/// A side's plan with the stored bytes behind a key exposed as `column`.
struct Exposed {
    plan: LogicalPlan,
    column: Column,
    ty: DataType,
}

/// The stored column `hex_id` reads in `e` (under aliases), if `e` is such a call.
fn hex_of(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::Alias(a) => hex_of(&a.expr),
        Expr::ScalarFunction(f) if f.name() == "hex_id" => match f.args.as_slice() {
            [arg @ Expr::Column(_)] => Some(arg),
            _ => None,
        },
        _ => None,
    }
}

/// `plan` with one more output column, `name`, holding the bytes behind its output `col` when
/// that is `hex_id` of a stored column somewhere below; `None` otherwise.
fn expose(plan: &LogicalPlan, col: &Column, name: &str) -> Result<Option<Exposed>> {
    let Ok(idx) = plan.schema().index_of_column(col) else {
        return Ok(None);
    };
    let below = |input: &LogicalPlan| Column::from(input.schema().qualified_field(idx));
    let appended = |plan: LogicalPlan, ty: DataType| {
        let n = plan.schema().fields().len() - 1;
        let column = Column::from(plan.schema().qualified_field(n));
        Exposed { plan, column, ty }
    };
    Ok(match plan {
        LogicalPlan::Projection(p) => {
            let e = &p.expr[idx];
            let (source, inner) = match hex_of(e) {
                Some(arg) => (arg.clone(), None),
                None => match e.clone().unalias() {
                    Expr::Column(c) => match expose(&p.input, &c, name)? {
                        Some(x) => (Expr::Column(x.column.clone()), Some(x)),
                        None => return Ok(None),
                    },
                    _ => return Ok(None),
                },
            };
            let (input, ty) = match inner {
                Some(x) => (Arc::new(x.plan), x.ty),
                None => (p.input.clone(), source.get_type(p.input.schema())?),
            };
            let mut exprs = p.expr.clone();
            exprs.push(source.alias(name));
            let plan = LogicalPlan::Projection(Projection::try_new(exprs, input)?);
            Some(appended(plan, ty))
        }
        LogicalPlan::SubqueryAlias(a) => match expose(&a.input, &below(&a.input), name)? {
            Some(x) => {
                let plan = LogicalPlan::SubqueryAlias(SubqueryAlias::try_new(
                    Arc::new(x.plan),
                    a.alias.clone(),
                )?);
                Some(appended(plan, x.ty))
            }
            None => None,
        },
        LogicalPlan::Filter(f) => match expose(&f.input, &below(&f.input), name)? {
            Some(x) => {
                let plan =
                    LogicalPlan::Filter(Filter::try_new(f.predicate.clone(), Arc::new(x.plan))?);
                Some(appended(plan, x.ty))
            }
            None => None,
        },
        LogicalPlan::Union(u) => {
            let mut inputs = Vec::with_capacity(u.inputs.len());
            let mut ty = None;
            for input in &u.inputs {
                let Some(x) = expose(input, &below(input), name)? else {
                    return Ok(None);
                };
                if ty.as_ref().is_some_and(|t| *t != x.ty) {
                    return Ok(None);
                }
                ty = Some(x.ty);
                inputs.push(Arc::new(x.plan));
            }
            let Some(ty) = ty else { return Ok(None) };
            let plan = LogicalPlan::Union(Union::try_new_with_loose_types(inputs)?);
            Some(appended(plan, ty))
        }
        _ => None,
    })
}

/// `id_bytes(text, width)` typed like `ty`, or `None` for a type it cannot make.
fn id_bytes(text: Expr, ty: &DataType) -> Option<Expr> {
    let width = match ty {
        DataType::FixedSizeBinary(w) => i64::from(*w),
        DataType::Binary => 0,
        _ => return None,
    };
    Some(ScalarUDF::from(allegro_udfs::id_bytes::IdBytes::default()).call(vec![text, lit(width)]))
}

impl OptimizerRule for IdJoins {
    fn name(&self) -> &str {
        "allegro_id_joins"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let (mut left, mut right) = ((*join.left).clone(), (*join.right).clone());
        let mut on = Vec::with_capacity(join.on.len());
        let mut changed = false;
        for (i, (l, r)) in join.on.iter().enumerate() {
            let exposed = |side: &LogicalPlan, key: &Expr, tag: &str| match key {
                Expr::Column(c) => expose(side, c, &format!("__allegro_id_bytes_{tag}{i}")),
                _ => Ok(None),
            };
            let (lx, rx) = (exposed(&left, l, "l")?, exposed(&right, r, "r")?);
            let keys = match (lx, rx) {
                (Some(a), Some(b)) if a.ty == b.ty => {
                    let keys = (Expr::Column(a.column), Expr::Column(b.column));
                    (left, right) = (a.plan, b.plan);
                    Some(keys)
                }
                (Some(a), None) => id_bytes(r.clone(), &a.ty).map(|k| {
                    let keys = (Expr::Column(a.column), k);
                    left = a.plan;
                    keys
                }),
                (None, Some(b)) => id_bytes(l.clone(), &b.ty).map(|k| {
                    let keys = (k, Expr::Column(b.column));
                    right = b.plan;
                    keys
                }),
                _ => None,
            };
            changed |= keys.is_some();
            on.push(keys.unwrap_or_else(|| (l.clone(), r.clone())));
        }
        if !changed {
            return Ok(Transformed::no(plan));
        }
        let rewritten = LogicalPlan::Join(Join::try_new(
            Arc::new(left),
            Arc::new(right),
            on,
            join.filter.clone(),
            join.join_type,
            JoinConstraint::On,
            join.null_equality,
            join.null_aware,
        )?);
        // The columns the join had, in order: the exposed bytes stay inside.
        let restore = plan
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        Ok(Transformed::yes(LogicalPlan::Projection(
            Projection::try_new(restore, Arc::new(rewritten))?,
        )))
    }
}

/// The rule, for a session.
pub(crate) fn rule() -> Arc<dyn OptimizerRule + Send + Sync> {
    Arc::new(IdJoins)
}
