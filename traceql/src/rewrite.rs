//! Meaning-preserving rewrites that planning relies on, as a pass separate from parsing.
//!
//! - `nil` comparisons become existence tests (`x != nil` → `EXISTS x`, `x = nil` → `NOT EXISTS
//!   x`, `nil = nil` → `false`). Always applied: Tempo does it in its grammar, and the planner
//!   has no other way to read `!= nil` (a plain `!=` with nil is false at run time).
//! - `fold_constants`: `1 + 2` → `3`, `duration > 1s * 2` → `duration > 2s`, `{ 1 = 1 }` →
//!   `{ true }`, `count() > 1 - 3` → `count() > -2`.
//! - `or_to_in` (Tempo's name): `.a = x || .a = y` → `.a IN [x, y]`, `.a != x && .a != y` →
//!   `.a NOT IN [x, y]`, `=~ ||` → `MATCH ANY`, `!~ &&` → `MATCH NONE` (strings only; the
//!   attribute must be the left operand of a regex, unlike Tempo, which also rewrote `"x" =~ .a`
//!   and so changed its meaning).
//!
//! The hint `skip_ast_transformations` (a comma-separated string, or `true` for all) turns off
//! `fold_constants`, `or_to_in` or `all` of them.

use std::cmp::Ordering;

use crate::ast::*;
use crate::build::{fold_numbers, negate_static};
use crate::validate::Type;

/// Which optional rewrites to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteOptions {
    /// Fold constant sub-expressions.
    pub fold_constants: bool,
    /// Turn `||`/`&&` chains over one field into list tests.
    pub or_to_in: bool,
}

impl Default for RewriteOptions {
    fn default() -> Self {
        Self {
            fold_constants: true,
            or_to_in: true,
        }
    }
}

impl RewriteOptions {
    /// The defaults minus whatever the query's `skip_ast_transformations` hint names.
    pub fn from_hints(q: &Query) -> Self {
        let mut o = Self::default();
        match q.hint("skip_ast_transformations") {
            Some(Static::Bool(true)) => o = Self::none(),
            Some(Static::Str(names)) => {
                for name in names.split(',').map(str::trim) {
                    match name {
                        "all" => o = Self::none(),
                        "or_to_in" => o.or_to_in = false,
                        "fold_constants" => o.fold_constants = false,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        o
    }

    /// Only the mandatory nil rewrite.
    pub fn none() -> Self {
        Self {
            fold_constants: false,
            or_to_in: false,
        }
    }
}

/// Applies the rewrites to a validated query.
pub fn rewrite(q: &Query, o: RewriteOptions) -> Query {
    let mut q = q.clone();
    match &mut q.body {
        QueryBody::Spans(p) => pipeline(p, o),
        QueryBody::Metrics(m) => metrics(m, o),
        QueryBody::ScalarPipelines(f) => scalar_filter(f, o),
    }
    q
}

fn metrics(m: &mut MetricsExpr, o: RewriteOptions) {
    match m {
        MetricsExpr::Query(q) => {
            pipeline(&mut q.pipeline, o);
            if let MetricsFn::Compare { filter, .. } = &mut q.function {
                spanset_filter(filter, o);
            }
        }
        MetricsExpr::Number(_) => {}
        MetricsExpr::Binary { lhs, rhs, .. } => {
            metrics(lhs, o);
            metrics(rhs, o);
        }
        MetricsExpr::Staged { expr, .. } => metrics(expr, o),
    }
}

fn pipeline(p: &mut Pipeline, o: RewriteOptions) {
    for s in &mut p.stages {
        match s {
            Stage::Spanset(e) => spanset(e, o),
            Stage::ScalarFilter(f) => scalar_filter(f, o),
            Stage::By(e) => field(e, o),
            Stage::Coalesce | Stage::Select(..) => {}
        }
    }
}

fn spanset(e: &mut SpansetExpr, o: RewriteOptions) {
    match e {
        SpansetExpr::Filter(f) => spanset_filter(f, o),
        SpansetExpr::Op { lhs, rhs, .. } => {
            spanset(lhs, o);
            spanset(rhs, o);
        }
        SpansetExpr::Pipeline(p) => pipeline(p, o),
    }
}

fn spanset_filter(f: &mut SpansetFilter, o: RewriteOptions) {
    if let Some(e) = &mut f.expr {
        field(e, o);
    }
}

fn scalar_filter(f: &mut ScalarFilter, o: RewriteOptions) {
    scalar(&mut f.lhs, o);
    scalar(&mut f.rhs, o);
}

fn scalar(s: &mut ScalarExpr, o: RewriteOptions) {
    match s {
        ScalarExpr::Static(..) => {}
        ScalarExpr::Aggregate(a) => aggregate(a, o),
        ScalarExpr::Pipeline(p, a) => {
            pipeline(p, o);
            aggregate(a, o);
        }
        ScalarExpr::Binary { op, lhs, rhs } => {
            scalar(lhs, o);
            scalar(rhs, o);
            if let (true, ScalarExpr::Static(l, ls), ScalarExpr::Static(r, rs)) =
                (o.fold_constants, &**lhs, &**rhs)
                && let Ok(v) = fold_arith(*op, l, r)
            {
                *s = ScalarExpr::Static(v, ls.to(*rs));
            }
        }
    }
}

fn aggregate(a: &mut Aggregate, o: RewriteOptions) {
    if let Some(e) = &mut a.expr {
        field(e, o);
    }
}

/// Rewrites bottom-up.
fn field(e: &mut FieldExpr, o: RewriteOptions) {
    match &mut e.kind {
        FieldKind::Binary { lhs, rhs, .. } => {
            field(lhs, o);
            field(rhs, o);
        }
        FieldKind::Unary { expr, .. } | FieldKind::List { expr, .. } => field(expr, o),
        FieldKind::Static(_) | FieldKind::Ref(_) => {}
    }
    if let Some(k) = nil_test(e) {
        e.kind = k;
        return;
    }
    if o.fold_constants
        && let Some(v) = fold(e)
    {
        e.kind = FieldKind::Static(v);
        return;
    }
    if o.or_to_in
        && let Some(k) = to_list(e)
    {
        e.kind = k;
    }
}

fn nil_test(e: &FieldExpr) -> Option<FieldKind> {
    let FieldKind::Binary { op, lhs, rhs } = &e.kind else {
        return None;
    };
    let is_nil = |x: &FieldExpr| matches!(x.kind, FieldKind::Static(Static::Nil));
    let op = match op {
        BinaryOp::Neq => UnaryOp::Exists,
        BinaryOp::Eq => UnaryOp::NotExists,
        _ => return None,
    };
    let operand = match (is_nil(lhs), is_nil(rhs)) {
        (true, true) => return Some(FieldKind::Static(Static::Bool(false))),
        (false, true) => lhs,
        (true, false) => rhs,
        (false, false) => return None,
    };
    Some(FieldKind::Unary {
        op,
        expr: operand.clone(),
    })
}

fn fold(e: &FieldExpr) -> Option<Static> {
    match &e.kind {
        FieldKind::Unary { op, expr } => match (op, &expr.kind) {
            (UnaryOp::Neg, FieldKind::Static(v)) => negate_static(v.clone()),
            (UnaryOp::Not, FieldKind::Static(Static::Bool(b))) => Some(Static::Bool(!b)),
            _ => None,
        },
        FieldKind::Binary { op, lhs, rhs } => {
            let (FieldKind::Static(l), FieldKind::Static(r)) = (&lhs.kind, &rhs.kind) else {
                return None;
            };
            if op.is_arithmetic() {
                return fold_arith(*op, l, r).ok();
            }
            match op {
                BinaryOp::And | BinaryOp::Or => match (l, r) {
                    (Static::Bool(a), Static::Bool(b)) => {
                        Some(Static::Bool(if *op == BinaryOp::And {
                            *a && *b
                        } else {
                            *a || *b
                        }))
                    }
                    _ => None,
                },
                // Regexes are left to the engine, which compiles them once.
                BinaryOp::Regex | BinaryOp::NotRegex => None,
                _ => Some(Static::Bool(compare(*op, l, r))),
            }
        }
        _ => None,
    }
}

/// Arithmetic on literals keeping durations durations where Tempo's result is one.
fn fold_arith(op: BinaryOp, l: &Static, r: &Static) -> Result<Static, String> {
    let v = fold_numbers(op, l, r)?;
    let duration = match (l, r) {
        (Static::Duration(_), Static::Duration(_)) => matches!(op, BinaryOp::Add | BinaryOp::Sub),
        (Static::Duration(_), Static::Int(_) | Static::Float(_)) => {
            matches!(op, BinaryOp::Mul | BinaryOp::Div)
        }
        (Static::Int(_) | Static::Float(_), Static::Duration(_)) => op == BinaryOp::Mul,
        _ => false,
    };
    match (duration, &v) {
        (true, Static::Float(x)) if x.is_finite() && x.abs() < i64::MAX as f64 => {
            Ok(Static::Duration(*x as i64))
        }
        _ => Ok(v),
    }
}

/// Comparison of two literals with Tempo's run-time rules: numbers compare numerically across
/// int, float and duration; strings byte-wise; other types only with their own type; nil never
/// equals anything; mismatched types are false.
fn compare(op: BinaryOp, l: &Static, r: &Static) -> bool {
    let num = |s: &Static| match s {
        Static::Int(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        Static::Duration(d) => Some(*d as f64),
        _ => None,
    };
    let ord = match (l, r) {
        (Static::Int(a), Static::Int(b)) => Some(a.cmp(b)),
        (Static::Int(a), Static::Duration(b)) | (Static::Duration(a), Static::Int(b)) => {
            Some(a.cmp(b))
        }
        (Static::Duration(a), Static::Duration(b)) => Some(a.cmp(b)),
        (Static::Str(a), Static::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        _ => match (num(l), num(r)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
    };
    if let Some(ord) = ord {
        return match op {
            BinaryOp::Eq => ord == Ordering::Equal,
            BinaryOp::Neq => ord != Ordering::Equal,
            BinaryOp::Lt => ord == Ordering::Less,
            BinaryOp::Lte => ord != Ordering::Greater,
            BinaryOp::Gt => ord == Ordering::Greater,
            BinaryOp::Gte => ord != Ordering::Less,
            _ => false,
        };
    }
    let same = match (l, r) {
        (Static::Bool(a), Static::Bool(b)) => Some(a == b),
        (Static::Status(a), Static::Status(b)) => Some(a == b),
        (Static::Kind(a), Static::Kind(b)) => Some(a == b),
        // Tempo compares an int with a status by their raw values.
        (Static::Int(i), Static::Status(s)) | (Static::Status(s), Static::Int(i)) => {
            Some(*i == *s as i64)
        }
        _ => None,
    };
    match (op, same) {
        (BinaryOp::Eq, Some(s)) => s,
        (BinaryOp::Neq, Some(s)) => !s,
        _ => false,
    }
}

/// One `field OP literal` term of a chain (or an already merged list).
fn term(e: &FieldExpr, want: BinaryOp, list: ListOp) -> Option<(&FieldExpr, Vec<Static>)> {
    match &e.kind {
        FieldKind::Binary { op, lhs, rhs } if *op == want => {
            let regex = matches!(want, BinaryOp::Regex | BinaryOp::NotRegex);
            match (&lhs.kind, &rhs.kind) {
                (FieldKind::Ref(_), FieldKind::Static(v)) => Some((&**lhs, vec![v.clone()])),
                (FieldKind::Static(v), FieldKind::Ref(_)) if !regex => {
                    Some((&**rhs, vec![v.clone()]))
                }
                _ => None,
            }
        }
        FieldKind::List { op, expr, values } if *op == list => Some((&**expr, values.clone())),
        _ => None,
    }
}

fn to_list(e: &FieldExpr) -> Option<FieldKind> {
    let FieldKind::Binary { op, lhs, rhs } = &e.kind else {
        return None;
    };
    let (inner, list, strings_only) = match op {
        BinaryOp::Or => {
            // `||` chains of `=` or of `=~`.
            if let Some(k) = merge(lhs, rhs, BinaryOp::Eq, ListOp::In, false) {
                return Some(k);
            }
            (BinaryOp::Regex, ListOp::MatchAny, true)
        }
        BinaryOp::And => {
            if let Some(k) = merge(lhs, rhs, BinaryOp::Neq, ListOp::NotIn, false) {
                return Some(k);
            }
            (BinaryOp::NotRegex, ListOp::MatchNone, true)
        }
        _ => return None,
    };
    merge(lhs, rhs, inner, list, strings_only)
}

fn merge(
    lhs: &FieldExpr,
    rhs: &FieldExpr,
    inner: BinaryOp,
    list: ListOp,
    strings_only: bool,
) -> Option<FieldKind> {
    let (la, mut values) = term(lhs, inner, list)?;
    let (ra, more) = term(rhs, inner, list)?;
    if la.kind != ra.kind {
        return None;
    }
    values.extend(more);
    let first = values.first()?.type_of();
    let listable = matches!(
        first,
        Type::Int | Type::Float | Type::String | Type::Boolean
    );
    if !listable
        || (strings_only && first != Type::String)
        || values.iter().any(|v| v.type_of() != first)
    {
        return None;
    }
    Some(FieldKind::List {
        op: list,
        expr: Box::new(la.clone()),
        values,
    })
}
