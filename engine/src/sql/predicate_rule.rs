//! An optimizer rule that rewrites predicates only, one expression at a time, bottom up: the
//! conditions of filters and the filters pushed into table scans. Projections are left alone,
//! as their expressions name the answer's columns. `id_literals` and `enum_literals` are two
//! such rewrites.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// One rewrite of one expression, given the schema its columns come from.
pub(crate) type Rewrite = fn(Expr, &DFSchema) -> Result<Transformed<Expr>>;

/// The rule: `rewrite` applied to every predicate.
#[derive(Debug)]
pub(crate) struct PredicateRule {
    name: &'static str,
    rewrite: Rewrite,
}

/// The rule named `name` that applies `rewrite` to every predicate, for a session.
pub(crate) fn predicate_rule(
    name: &'static str,
    rewrite: Rewrite,
) -> Arc<dyn OptimizerRule + Send + Sync> {
    Arc::new(PredicateRule { name, rewrite })
}

impl OptimizerRule for PredicateRule {
    fn name(&self) -> &str {
        self.name
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
        let rewrite = self.rewrite;
        match plan {
            LogicalPlan::Filter(mut f) => {
                let schema = f.input.schema().clone();
                let t = f.predicate.transform(|e| rewrite(e, &schema))?;
                f.predicate = t.data;
                Ok(Transformed::new(
                    LogicalPlan::Filter(f),
                    t.transformed,
                    t.tnr,
                ))
            }
            LogicalPlan::TableScan(mut scan) => {
                let schema = DFSchema::try_from_qualified_schema(
                    scan.table_name.clone(),
                    &scan.source.schema(),
                )?;
                let mut changed = false;
                let mut filters = Vec::with_capacity(scan.filters.len());
                for e in std::mem::take(&mut scan.filters) {
                    let t = e.transform(|e| rewrite(e, &schema))?;
                    changed |= t.transformed;
                    filters.push(t.data);
                }
                scan.filters = filters;
                Ok(Transformed::new_transformed(
                    LogicalPlan::TableScan(scan),
                    changed,
                ))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}
