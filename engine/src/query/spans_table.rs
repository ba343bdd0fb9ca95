//! `spans`: the one table a search reads — every block group and the live head, each already
//! translated into the query's per-span columns (ids, nested sets, leaf booleans, aggregate
//! inputs, `by()` keys), unioned.
//!
//! Translation must happen per input (a hot attribute is a column in one block and a map entry
//! in the next), so the table is built per query from the inputs' plans; each input keeps its
//! own pushed-down Parquet predicate. Its physical plan is built once, here, and its schema is
//! taken from it, so the logical and physical views agree exactly.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;

use super::df_err;
use crate::error::Result;

/// The per-span rows of one search; see the module docs.
#[derive(Debug)]
pub struct SpansTable {
    schema: SchemaRef,
    plan: Arc<dyn ExecutionPlan>,
}

impl SpansTable {
    /// Plans every input and unions them. Inputs planned as empty (a filter the optimizer
    /// proved false for a source) are left out, one kept if all are: they add nothing, and a
    /// Ballista cluster handed a union of an empty input beside real ones hung (its tasks
    /// reported operator metrics of different shapes, which its scheduler could not merge).
    pub async fn try_new(state: &SessionState, inputs: &[LogicalPlan]) -> Result<Self> {
        let mut plans = Vec::with_capacity(inputs.len());
        for p in inputs {
            plans.push(state.create_physical_plan(p).await.map_err(df_err)?);
        }
        let empty = |p: &Arc<dyn ExecutionPlan>| p.downcast_ref::<EmptyExec>().is_some();
        if plans.iter().any(|p| !empty(p)) {
            plans.retain(|p| !empty(p));
        } else {
            plans.truncate(1);
        }
        let plan = UnionExec::try_new(plans).map_err(df_err)?;
        Ok(Self::from_plan(plan))
    }

    /// The table whose rows `plan` produces (a table planned elsewhere, decoded).
    pub fn from_plan(plan: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            schema: plan.schema(),
            plan,
        }
    }

    /// The physical plan producing the rows.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }
}

#[async_trait]
impl TableProvider for SpansTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // The inputs already filter by every leaf; nothing else is pushed.
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let Some(cols) = projection else {
            return Ok(self.plan.clone());
        };
        let exprs: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> = cols
            .iter()
            .map(|&i| {
                let name = self.schema.field(i).name().clone();
                (
                    Arc::new(Column::new(&name, i))
                        as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                    name,
                )
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, self.plan.clone())?))
    }
}
