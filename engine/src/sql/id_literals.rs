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
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, Operator};
use datafusion::optimizer::OptimizerRule;

use super::predicate_rule::predicate_rule;

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
    predicate_rule("allegro_id_literals", on_bytes)
}
