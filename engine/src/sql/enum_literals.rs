//! Span kind and status as text in the tables, as their stored codes in filters.
//!
//! `spans.kind` and `spans.status` show TraceQL's names (`'server'`, `'error'`), stored as OTLP
//! codes. The view computes each name as `CASE code WHEN 1 THEN 'ok' … ELSE 'unset' END` with
//! string-view outputs: DataFusion evaluates that form through a lookup table and a `take` of
//! 16-byte views, about 5 ns a row, where the searched form (`CASE WHEN code = 1 …`) built a
//! fresh string array per branch (a sixth of an error-ratio-by-minute over 10M spans, perf).
//! The simple form is one DataFusion's simplifier does not see through, so a filter such as
//! `kind = 'server'`, pushed into each block group's projection, would compare text on every
//! row and prune nothing. This rule turns such comparisons into comparisons of the code
//! (`kind = 'server'` → `kind IN (2)`), which reach the Parquet scan and its statistics.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Case, Expr, Operator, lit};
use datafusion::optimizer::OptimizerRule;

use super::predicate_rule::predicate_rule;

/// `column`'s code as its name in `names` (the first is the fallback), a string view.
pub(crate) fn enum_text(column: Expr, names: &[(i32, &str)]) -> Expr {
    let text = |s: &str| Box::new(lit(ScalarValue::Utf8View(Some(s.to_string()))));
    let (fallback, arms) = match names.split_first() {
        Some(((_, s), rest)) => (text(s), rest),
        None => (text(""), names),
    };
    Expr::Case(Case::new(
        Some(Box::new(column)),
        arms.iter()
            .map(|(n, s)| (Box::new(lit(*n)), text(s)))
            .collect(),
        Some(fallback),
    ))
}

/// Text of `e` if it is a string literal.
fn text(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(v, _) => v.try_as_str().flatten(),
        _ => None,
    }
}

/// `CASE x WHEN a THEN 'p' … ELSE 'q' END = 'lit'` (or `<>`, either side; every WHEN and THEN
/// a literal) → a test of `x` with the same answer for every `x`, NULL included.
fn on_codes(e: Expr, _schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &e else {
        return Ok(Transformed::no(e));
    };
    if !matches!(op, Operator::Eq | Operator::NotEq) {
        return Ok(Transformed::no(e));
    }
    let (case, wanted) = match (left.as_ref(), right.as_ref()) {
        (Expr::Case(c), other) | (other, Expr::Case(c)) => match text(other) {
            Some(t) => (c, t),
            None => return Ok(Transformed::no(e)),
        },
        _ => return Ok(Transformed::no(e)),
    };
    let (Some(x), Some(fallback)) = (&case.expr, case.else_expr.as_deref().and_then(text)) else {
        return Ok(Transformed::no(e));
    };
    let mut equal = Vec::new();
    let mut other = Vec::new();
    let mut seen: Vec<&ScalarValue> = Vec::new();
    for (when, then) in &case.when_then_expr {
        let (Expr::Literal(v, _), Some(t)) = (when.as_ref(), text(then)) else {
            return Ok(Transformed::no(e));
        };
        // The first arm of equal values wins; later ones never apply.
        if v.is_null() || seen.contains(&v) {
            continue;
        }
        seen.push(v);
        let arm = lit(v.clone());
        if t == wanted {
            equal.push(arm);
        } else {
            other.push(arm);
        }
    }
    // A NULL code and every code no arm names take the fallback.
    let x = x.as_ref().clone();
    let is = if fallback == wanted {
        x.clone().is_null().or(x.in_list(other, true))
    } else {
        x.clone().is_not_null().and(x.in_list(equal, false))
    };
    Ok(Transformed::yes(match op {
        Operator::Eq => is,
        _ => !is,
    }))
}

/// The rule, for a session.
pub(crate) fn rule() -> Arc<dyn OptimizerRule + Send + Sync> {
    predicate_rule("allegro_enum_literals", on_codes)
}
