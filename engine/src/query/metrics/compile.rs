//! A TraceQL metrics query → a tree of first stages (each a search pipeline plus a function)
//! joined by arithmetic and second stages.

use allegro_traceql::ast::{
    BinaryOp, FieldExpr, FieldKind, FieldRef, Intrinsic, MetricsExpr, MetricsFn, MetricsQuery,
    Query, QueryBody, SecondStage, Static,
};
use allegro_udfs::spansets::program::{SetExpr, Stage as ProgStage};

use crate::error::{EngineError, Result};
use crate::query::plan::{self, Compiled};

/// The first-stage function with its inputs as expressions.
#[derive(Debug, Clone)]
pub enum Func {
    /// `rate()`.
    Rate,
    /// `count_over_time()`.
    Count,
    /// `min_over_time(x)`.
    Min(FieldExpr),
    /// `max_over_time(x)`.
    Max(FieldExpr),
    /// `sum_over_time(x)`.
    Sum(FieldExpr),
    /// `avg_over_time(x)`.
    Avg(FieldExpr),
    /// `quantile_over_time(x, q...)`.
    Quantile(FieldExpr, Vec<f64>),
    /// `histogram_over_time(x)`.
    Histogram(FieldExpr),
    /// `compare({filter}, topN, start, end)`.
    Compare {
        /// The selection (`None` = `{}`).
        filter: Option<FieldExpr>,
        /// Values kept per attribute.
        top_n: usize,
        /// Selection window, unix ns.
        window: Option<(u64, u64)>,
    },
}

impl Func {
    /// The attribute the function reads, if any.
    pub fn value(&self) -> Option<&FieldExpr> {
        match self {
            Func::Min(e)
            | Func::Max(e)
            | Func::Sum(e)
            | Func::Avg(e)
            | Func::Quantile(e, _)
            | Func::Histogram(e) => Some(e),
            _ => None,
        }
    }

    /// True when spans are grouped by their log2 bucket.
    pub fn bucketed(&self) -> bool {
        matches!(self, Func::Quantile(..) | Func::Histogram(_))
    }
}

/// `pipeline | fn by(...) | second stages`.
#[derive(Debug, Clone)]
pub struct FirstStage {
    /// The spanset pipeline, compiled as for search.
    pub pipeline: Compiled,
    /// `Some(condition)` when the pipeline is one spanset filter, so spans can be selected
    /// without per-trace evaluation (`Some(None)` = `{}`).
    pub simple: Option<Option<FieldExpr>>,
    /// The function.
    pub func: Func,
    /// The function name (`rate`, ...).
    pub name: &'static str,
    /// `by()` fields.
    pub by: Vec<FieldRef>,
    /// Second stages.
    pub stages: Vec<SecondStage>,
}

impl FirstStage {
    /// Whether the aggregation reads what only the whole trace knows: a `by()` field or a
    /// function value such as `rootName` or `traceDuration`, or compare's attributes (which
    /// include the trace-level ones). Such an aggregation reads split traces joined whole.
    pub fn reads_whole_trace(&self) -> bool {
        matches!(self.func, Func::Compare { .. })
            || self.func.value().is_some_and(whole_trace)
            || self
                .by
                .iter()
                .any(|r| whole_trace(&field(r, Default::default())))
    }
}

/// A compiled metrics query.
#[derive(Debug, Clone)]
pub enum Node {
    /// One first stage.
    Query(Box<FirstStage>),
    /// A number.
    Number(f64),
    /// Arithmetic.
    Binary {
        /// `+ - * /`.
        op: BinaryOp,
        /// Left.
        lhs: Box<Node>,
        /// Right.
        rhs: Box<Node>,
    },
    /// Second stages over arithmetic.
    Staged {
        /// The arithmetic.
        node: Box<Node>,
        /// Stages.
        stages: Vec<SecondStage>,
    },
}

impl Node {
    /// Every first stage, left to right.
    pub fn stages(&self) -> Vec<&FirstStage> {
        match self {
            Node::Query(q) => vec![q],
            Node::Number(_) => vec![],
            Node::Binary { lhs, rhs, .. } => {
                let mut v = lhs.stages();
                v.extend(rhs.stages());
                v
            }
            Node::Staged { node, .. } => node.stages(),
        }
    }
}

/// Parses, validates and compiles a metrics query (hints stay on the returned `Query`).
pub fn compile_metrics(src: &str) -> Result<(Query, Node)> {
    let q = allegro_traceql::compile(src).map_err(EngineError::Query)?;
    let node = match &q.body {
        QueryBody::Metrics(m) => node(src, m)?,
        _ => {
            return Err(EngineError::InvalidInput(
                "not a metrics query: a metrics query ends in a function such as `| rate()`; \
                 send searches to /api/search"
                    .into(),
            ));
        }
    };
    Ok((q, node))
}

fn number(s: &Static) -> Option<Num> {
    match s {
        Static::Int(i) => Some(Num::Int(*i)),
        Static::Float(f) => Some(Num::Float(*f)),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Folds number-only arithmetic with Tempo's int semantics (`1/2` = 0).
fn fold(m: &MetricsExpr) -> Option<Num> {
    match m {
        MetricsExpr::Number(s) => number(s),
        MetricsExpr::Binary { op, lhs, rhs } => {
            let (l, r) = (fold(lhs)?, fold(rhs)?);
            Some(match (l, r) {
                (Num::Int(a), Num::Int(b)) => match op {
                    BinaryOp::Add => Num::Int(a.wrapping_add(b)),
                    BinaryOp::Sub => Num::Int(a.wrapping_sub(b)),
                    BinaryOp::Mul => Num::Int(a.wrapping_mul(b)),
                    BinaryOp::Div if b != 0 => Num::Int(a / b),
                    BinaryOp::Div => Num::Float(f64::NAN),
                    _ => return None,
                },
                (a, b) => Num::Float(arith(*op, a.f(), b.f())?),
            })
        }
        _ => None,
    }
}

/// `a OP b` for metrics arithmetic (`None` for other operators).
pub fn arith(op: BinaryOp, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        _ => return None,
    })
}

fn node(src: &str, m: &MetricsExpr) -> Result<Node> {
    if let Some(n) = fold(m) {
        return Ok(Node::Number(n.f()));
    }
    Ok(match m {
        MetricsExpr::Query(q) => Node::Query(Box::new(first_stage(src, q)?)),
        MetricsExpr::Number(s) => {
            return Err(EngineError::InvalidInput(format!(
                "`{s}` cannot be used in metrics arithmetic (only numbers)"
            )));
        }
        MetricsExpr::Binary { op, lhs, rhs } => {
            if arith(*op, 1.0, 1.0).is_none() {
                return Err(EngineError::InvalidInput(format!(
                    "`{}` is not a metrics arithmetic operator (use + - * /)",
                    op.symbol()
                )));
            }
            Node::Binary {
                op: *op,
                lhs: Box::new(node(src, lhs)?),
                rhs: Box::new(node(src, rhs)?),
            }
        }
        MetricsExpr::Staged { expr, stages } => Node::Staged {
            node: Box::new(node(src, expr)?),
            stages: stages.clone(),
        },
    })
}

fn field(r: &FieldRef, span: allegro_traceql::ast::Span) -> FieldExpr {
    FieldExpr {
        kind: FieldKind::Ref(r.clone()),
        span,
    }
}

/// Whether `e` reads what only the whole trace knows: trace-level intrinsics and nested-set
/// positions. Such a filter runs per trace, where traces split across blocks are joined first
/// (`split_traces`); per part, in the scan, it would read the part's own values. The root test
/// `nestedSetParent < 0` (Drilldown's default) holds per part and stays in the scan.
fn whole_trace(e: &FieldExpr) -> bool {
    match &e.kind {
        FieldKind::Ref(FieldRef::Intrinsic(i)) => matches!(
            i,
            Intrinsic::TraceDuration
                | Intrinsic::TraceRootName
                | Intrinsic::TraceRootService
                | Intrinsic::NestedSetLeft
                | Intrinsic::NestedSetRight
        ),
        FieldKind::Ref(_) | FieldKind::Static(_) => false,
        FieldKind::Binary { lhs, rhs, .. } => whole_trace(lhs) || whole_trace(rhs),
        FieldKind::Unary { expr, .. } | FieldKind::List { expr, .. } => whole_trace(expr),
    }
}

fn first_stage(src: &str, q: &MetricsQuery) -> Result<FirstStage> {
    let search = Query {
        body: QueryBody::Spans(q.pipeline.clone()),
        hints: vec![],
    };
    let pipeline = plan::compile(src, &search)?;
    let simple = match pipeline.program.pipeline.stages.as_slice() {
        [ProgStage::Spanset(SetExpr::Leaf(0))]
            if pipeline.leaves.len() == 1
                && !pipeline.leaves[0].as_ref().is_some_and(whole_trace) =>
        {
            Some(pipeline.leaves[0].clone())
        }
        _ => None,
    };
    let f = |r: &FieldRef| field(r, q.span);
    let func = match &q.function {
        MetricsFn::Rate => Func::Rate,
        MetricsFn::CountOverTime => Func::Count,
        MetricsFn::MinOverTime(r) => Func::Min(f(r)),
        MetricsFn::MaxOverTime(r) => Func::Max(f(r)),
        MetricsFn::SumOverTime(r) => Func::Sum(f(r)),
        MetricsFn::AvgOverTime(r) => Func::Avg(f(r)),
        MetricsFn::QuantileOverTime(r, qs) => Func::Quantile(f(r), qs.clone()),
        MetricsFn::HistogramOverTime(r) => Func::Histogram(f(r)),
        MetricsFn::Compare {
            filter,
            top_n,
            window,
        } => Func::Compare {
            filter: filter.expr.clone(),
            top_n: (*top_n).clamp(1, 1000) as usize,
            window: window.map(|(s, e)| (s.max(0) as u64, e.max(0) as u64)),
        },
    };
    Ok(FirstStage {
        pipeline,
        simple,
        name: q.function.name(),
        func,
        by: q.by.clone(),
        stages: q.stages.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_filters_skip_per_trace_evaluation() {
        let (_, n) =
            compile_metrics("{status = error} | rate() by (resource.service.name)").unwrap();
        let s = n.stages();
        assert!(matches!(s[0].simple, Some(Some(_))));
        assert_eq!(s[0].by[0].to_string(), "resource.service.name");
        let (_, n) = compile_metrics("{} | count_over_time()").unwrap();
        assert!(matches!(n.stages()[0].simple, Some(None)));
        let (_, n) = compile_metrics("{ kind = server } >> { status = error } | rate()").unwrap();
        assert!(n.stages()[0].simple.is_none());
    }

    #[test]
    fn number_arithmetic_folds_with_int_semantics() {
        let (_, n) = compile_metrics("({} | rate()) * (1 / 2)").unwrap();
        let Node::Binary { rhs, .. } = n else {
            panic!("{n:?}")
        };
        assert!(matches!(*rhs, Node::Number(x) if x == 0.0));
    }

    #[test]
    fn searches_are_refused() {
        assert!(compile_metrics("{ }").is_err());
    }
}
