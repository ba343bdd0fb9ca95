//! The canonical printer: one spelling per AST, which parses back to the same AST.
//!
//! Conventions follow Tempo's stringer where it round-trips: every operand that is not a
//! literal or a field is parenthesised (`{ (.a * .b) + .c }`) except that chains of one
//! operator stay flat (`{ (.a = 1) || (.a = 2) || (.a = 3) }`, so long chains do not nest), and intrinsics print by their canonical names (`span:name` prints as `name`). Where Tempo's output would not parse back
//! Allegro differs: strings print double-quoted with Go escapes (Tempo's back-ticks cannot hold
//! a back-tick), durations as Go durations (`1h30m`), `{}` stays `{}`.

use std::fmt::{self, Display, Formatter, Write};

use crate::ast::*;
use crate::lexical;

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.body {
            QueryBody::Spans(p) => write!(f, "{p}")?,
            QueryBody::Metrics(m) => write!(f, "{m}")?,
            QueryBody::ScalarPipelines(s) => write!(f, "{s}")?,
        }
        if !self.hints.is_empty() {
            f.write_str(" with(")?;
            for (i, h) in self.hints.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}={}", h.name, h.value)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl Display for Pipeline {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Spanset(e) => spanset(f, e, has_pipeline(e)),
            Stage::ScalarFilter(s) => write!(f, "{s}"),
            Stage::By(e) => write!(f, "by({e})"),
            Stage::Coalesce => f.write_str("coalesce()"),
            Stage::Select(refs, _) => {
                f.write_str("select(")?;
                list(f, refs)?;
                f.write_str(")")
            }
        }
    }
}

fn list<T: Display>(f: &mut Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, r) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{r}")?;
    }
    Ok(())
}

fn has_pipeline(e: &SpansetExpr) -> bool {
    match e {
        SpansetExpr::Filter(_) => false,
        SpansetExpr::Pipeline(_) => true,
        SpansetExpr::Op { lhs, rhs, .. } => has_pipeline(lhs) || has_pipeline(rhs),
    }
}

/// Spanset expressions. Once a pipeline is an operand the whole tree is in the
/// `(pipeline) OP (pipeline)` form, where even lone filters are parenthesised.
fn spanset(f: &mut Formatter<'_>, e: &SpansetExpr, pipelines: bool) -> fmt::Result {
    match e {
        SpansetExpr::Filter(x) if pipelines => write!(f, "({x})"),
        SpansetExpr::Filter(x) => write!(f, "{x}"),
        SpansetExpr::Pipeline(p) => write!(f, "({p})"),
        SpansetExpr::Op { op, lhs, rhs } => {
            for (i, side) in [lhs, rhs].into_iter().enumerate() {
                if i == 1 {
                    write!(f, " {} ", op.symbol())?;
                }
                match **side {
                    // Both levels are left-associative: a left operand of the same level is
                    // the chain going on.
                    SpansetExpr::Op { op: inner, .. } if !(i == 0 && inner == *op) => {
                        f.write_str("(")?;
                        spanset(f, side, pipelines)?;
                        f.write_str(")")?;
                    }
                    _ => spanset(f, side, pipelines)?,
                }
            }
            Ok(())
        }
    }
}

impl Display for SpansetExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        spanset(f, self, has_pipeline(self))
    }
}

impl Display for SpansetFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.expr {
            Some(e) => write!(f, "{{ {e} }}"),
            None => f.write_str("{}"),
        }
    }
}

/// Whether a binary operand needs no parentheses: it continues a chain of its parent's very
/// operator on the side it associates to (`^` to the right, everything else to the left).
/// Mixed operators of one level stay parenthesised: `(a && b) || c` reads right.
fn continues_chain(parent: BinaryOp, child: BinaryOp, left: bool) -> bool {
    parent == child && left == (parent != BinaryOp::Pow)
}

/// `lhs OP rhs`, parenthesising an operand when `parens(operand, is_left)` says so.
fn infix<T: Display>(
    f: &mut Formatter<'_>,
    op: BinaryOp,
    lhs: &T,
    rhs: &T,
    parens: impl Fn(&T, bool) -> bool,
) -> fmt::Result {
    for (side, left) in [(lhs, true), (rhs, false)] {
        if !left {
            write!(f, " {} ", op.symbol())?;
        }
        if parens(side, left) {
            write!(f, "({side})")?;
        } else {
            write!(f, "{side}")?;
        }
    }
    Ok(())
}

impl Display for FieldExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let wrap = |f: &mut Formatter<'_>, e: &FieldExpr| match &e.kind {
            FieldKind::Static(_) | FieldKind::Ref(_) => write!(f, "{e}"),
            _ => write!(f, "({e})"),
        };
        match &self.kind {
            FieldKind::Static(s) => write!(f, "{s}"),
            FieldKind::Ref(r) => write!(f, "{r}"),
            FieldKind::Binary { op, lhs, rhs } => {
                infix(f, *op, &**lhs, &**rhs, |side, left| match &side.kind {
                    FieldKind::Static(_) | FieldKind::Ref(_) => false,
                    FieldKind::Binary { op: inner, .. } => !continues_chain(*op, *inner, left),
                    _ => true,
                })
            }
            FieldKind::Unary { op, expr } => match op {
                UnaryOp::Neg => {
                    f.write_str("-")?;
                    wrap(f, expr)
                }
                UnaryOp::Not => {
                    f.write_str("!")?;
                    wrap(f, expr)
                }
                UnaryOp::Exists => {
                    wrap(f, expr)?;
                    f.write_str(" != nil")
                }
                UnaryOp::NotExists => {
                    wrap(f, expr)?;
                    f.write_str(" = nil")
                }
            },
            FieldKind::List { op, expr, values } => {
                wrap(f, expr)?;
                let op = match op {
                    ListOp::In => "IN",
                    ListOp::NotIn => "NOT IN",
                    ListOp::MatchAny => "MATCH ANY",
                    ListOp::MatchNone => "MATCH NONE",
                };
                write!(f, " {op} [")?;
                list(f, values)?;
                f.write_str("]")
            }
        }
    }
}

impl Display for FieldRef {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            FieldRef::Intrinsic(i) => f.write_str(i.name()),
            FieldRef::Attribute(a) => write!(f, "{a}"),
        }
    }
}

impl Display for Attribute {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.parent {
            f.write_str("parent.")?;
        }
        match self.scope {
            Scope::None if self.parent => {}
            Scope::None => f.write_str(".")?,
            s => write!(f, "{}.", s.name())?,
        }
        let n = &self.name;
        let quote = n.is_empty()
            || n.chars().any(lexical::is_attribute_terminator)
            // `.3` would read as a number.
            || (self.scope == Scope::None && !self.parent && n.starts_with(|c: char| c.is_ascii_digit()))
            // `parent.span.x` would read as the span-scoped `x`.
            || (self.scope == Scope::None
                && self.parent
                && (n.starts_with("span.") || n.starts_with("resource.")));
        if !quote {
            return f.write_str(n);
        }
        f.write_char('"')?;
        for c in n.chars() {
            if matches!(c, '"' | '\\') {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('"')
    }
}

impl Display for Static {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Static::Nil => f.write_str("nil"),
            Static::Bool(b) => write!(f, "{b}"),
            Static::Int(i64::MIN) => f.write_str("minInt"),
            Static::Int(i) => write!(f, "{i}"),
            Static::Float(x) => float(f, *x),
            Static::Str(s) => quote_string(f, s),
            Static::Duration(d) => f.write_str(&lexical::format_duration(*d)),
            Static::Status(s) => f.write_str(match s {
                Status::Error => "error",
                Status::Ok => "ok",
                Status::Unset => "unset",
            }),
            Static::Kind(k) => f.write_str(match k {
                Kind::Unspecified => "unspecified",
                Kind::Internal => "internal",
                Kind::Client => "client",
                Kind::Server => "server",
                Kind::Producer => "producer",
                Kind::Consumer => "consumer",
            }),
        }
    }
}

/// Shortest text that reads back as the same float, always with a `.` or an exponent.
fn float(f: &mut Formatter<'_>, x: f64) -> fmt::Result {
    if x.is_nan() {
        f.write_str("NaN")
    } else if x.is_infinite() {
        f.write_str(if x > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        write!(f, "{x:?}")
    }
}

fn quote_string(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl Display for Aggregate {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.expr {
            None => write!(f, "{}()", self.op.name()),
            Some(e) => write!(f, "{}({e})", self.op.name()),
        }
    }
}

impl Display for ScalarExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ScalarExpr::Static(s, _) => write!(f, "{s}"),
            ScalarExpr::Aggregate(a) => write!(f, "{a}"),
            ScalarExpr::Pipeline(p, a) => write!(f, "({p} | {a})"),
            ScalarExpr::Binary { op, lhs, rhs } => infix(f, *op, &**lhs, &**rhs, |side, left| {
                matches!(side, ScalarExpr::Binary { op: inner, .. }
                    if !continues_chain(*op, *inner, left))
            }),
        }
    }
}

impl Display for ScalarFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.lhs, self.op.symbol(), self.rhs)
    }
}

impl Display for MetricsExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            MetricsExpr::Query(q) => write!(f, "{q}"),
            MetricsExpr::Number(n) => write!(f, "{n}"),
            MetricsExpr::Binary { op, lhs, rhs } => {
                infix(f, *op, &**lhs, &**rhs, |side, left| match side {
                    MetricsExpr::Number(_) => false,
                    MetricsExpr::Binary { op: inner, .. } => !continues_chain(*op, *inner, left),
                    _ => true,
                })
            }
            MetricsExpr::Staged { expr, stages } => {
                match **expr {
                    MetricsExpr::Binary { .. } => write!(f, "{expr}")?,
                    _ => write!(f, "({expr})")?,
                }
                stages.iter().try_for_each(|s| write!(f, "{s}"))
            }
        }
    }
}

impl Display for MetricsQuery {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} | {}", self.pipeline, self.function)?;
        if !self.by.is_empty() {
            f.write_str(" by (")?;
            list(f, &self.by)?;
            f.write_str(")")?;
        }
        self.stages.iter().try_for_each(|s| write!(f, "{s}"))
    }
}

impl Display for MetricsFn {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            MetricsFn::Rate | MetricsFn::CountOverTime => write!(f, "{name}()"),
            MetricsFn::MinOverTime(r)
            | MetricsFn::MaxOverTime(r)
            | MetricsFn::SumOverTime(r)
            | MetricsFn::AvgOverTime(r)
            | MetricsFn::HistogramOverTime(r) => write!(f, "{name}({r})"),
            MetricsFn::QuantileOverTime(r, qs) => {
                write!(f, "{name}({r}")?;
                for q in qs {
                    f.write_str(", ")?;
                    number(f, *q)?;
                }
                f.write_str(")")
            }
            MetricsFn::Compare {
                filter,
                top_n,
                window,
            } => match window {
                Some((s, e)) => write!(f, "{name}({filter}, {top_n}, {s}, {e})"),
                None if *top_n == 10 => write!(f, "{name}({filter})"),
                None => write!(f, "{name}({filter}, {top_n})"),
            },
        }
    }
}

/// Integral values without a fraction (`10`), others as floats (`0.9`).
fn number(f: &mut Formatter<'_>, x: f64) -> fmt::Result {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        write!(f, "{}", x as i64)
    } else {
        float(f, x)
    }
}

impl Display for SecondStage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SecondStage::TopK(k, _) => write!(f, " | topk({k})"),
            SecondStage::BottomK(k, _) => write!(f, " | bottomk({k})"),
            SecondStage::Filter(op, v) => {
                write!(f, " {} ", op.symbol())?;
                number(f, *v)
            }
        }
    }
}
