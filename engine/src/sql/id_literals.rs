//! `trace_id = '<hex>'` on the stored bytes, so the blocks' trace-ID statistics and bloom
//! filters prune it.
//!
//! The tables show IDs as hex text (`hex_id(trace_id)`), so a lookup by ID reached the scan as
//! `hex_id(trace_id) = '…'`: a predicate no statistic answers, evaluated on every row of every
//! block. This rule turns `hex_id(x) = '<lowercase hex>'` (either side) into `x = <bytes>` in
//! filters and scan filters; DataFusion pushes the result into the Parquet scan on its next pass,
//! where row-group statistics, page indexes and the blooms skip all but the trace's blocks. Only
//! text that `hex_id` can produce is rewritten (lowercase hex of the column's width); anything
//! else keeps its hex comparison and so its meaning (an uppercase ID matches nothing, as before).

use std::sync::Arc;

use allegro_udfs::id_bytes::decode_strict;
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// The optimizer rule; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct IdLiterals;

impl OptimizerRule for IdLiterals {
    fn name(&self) -> &str {
        "allegro_id_literals"
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
        match plan {
            LogicalPlan::Filter(mut f) => {
                let schema = f.input.schema().clone();
                let t = f.predicate.transform(|e| on_bytes(e, &schema))?;
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
                    let t = e.transform(|e| on_bytes(e, &schema))?;
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

/// `hex_id(x) = '<hex>'` → `x = <bytes>` when the text is what `hex_id` makes of some `x`.
fn on_bytes(e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = &e
    else {
        return Ok(Transformed::no(e));
    };
    let (call, text) = match (left.as_ref(), right.as_ref()) {
        (Expr::ScalarFunction(f), Expr::Literal(v, _))
        | (Expr::Literal(v, _), Expr::ScalarFunction(f)) => (f, v),
        _ => return Ok(Transformed::no(e)),
    };
    let (true, [arg]) = (call.name() == "hex_id", call.args.as_slice()) else {
        return Ok(Transformed::no(e));
    };
    let (ScalarValue::Utf8(Some(text))
    | ScalarValue::Utf8View(Some(text))
    | ScalarValue::LargeUtf8(Some(text))) = text
    else {
        return Ok(Transformed::no(e));
    };
    // What `hex_id` can write: lowercase hex (the width is checked against the column below).
    let Some(bytes) = decode_strict(text, 0) else {
        return Ok(Transformed::no(e));
    };
    let literal = match arg.get_type(schema)? {
        DataType::FixedSizeBinary(w) if usize::try_from(w).ok() == Some(bytes.len()) => {
            ScalarValue::FixedSizeBinary(w, Some(bytes))
        }
        DataType::Binary => ScalarValue::Binary(Some(bytes)),
        _ => return Ok(Transformed::no(e)),
    };
    Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
        left: Box::new(arg.clone()),
        op: Operator::Eq,
        right: Box::new(Expr::Literal(literal, None)),
    })))
}

/// The rule, for a session.
pub(crate) fn rule() -> Arc<dyn OptimizerRule + Send + Sync> {
    Arc::new(IdLiterals)
}
