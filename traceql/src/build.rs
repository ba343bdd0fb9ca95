//! Parse tree → typed AST, applying Tempo's operator precedence with Pratt parsers.

use std::sync::LazyLock;

use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};

use crate::ast::*;
use crate::error::Error;
use crate::lexical;
use crate::parser::Rule;

type R<T> = Result<T, Error>;

/// Field expressions, loosest first (Tempo `expr.y`): `&& ||`; comparisons; `+ -`; prefix `!`;
/// `* / %`; `^` (right); prefix `-`.
static FIELD: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_and, Assoc::Left) | Op::infix(Rule::op_or, Assoc::Left))
        .op(Op::infix(Rule::op_eq, Assoc::Left)
            | Op::infix(Rule::op_ne, Assoc::Left)
            | Op::infix(Rule::op_lt, Assoc::Left)
            | Op::infix(Rule::op_le, Assoc::Left)
            | Op::infix(Rule::op_gt, Assoc::Left)
            | Op::infix(Rule::op_ge, Assoc::Left)
            | Op::infix(Rule::op_re, Assoc::Left)
            | Op::infix(Rule::op_nre, Assoc::Left))
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::prefix(Rule::op_not))
        .op(Op::infix(Rule::op_mul, Assoc::Left)
            | Op::infix(Rule::op_div, Assoc::Left)
            | Op::infix(Rule::op_mod, Assoc::Left))
        .op(Op::infix(Rule::op_pow, Assoc::Right))
        .op(Op::prefix(Rule::op_neg))
});

/// Arithmetic over aggregates, scalar pipelines and metrics queries.
static ARITH: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::op_add, Assoc::Left) | Op::infix(Rule::op_sub, Assoc::Left))
        .op(Op::infix(Rule::op_mul, Assoc::Left)
            | Op::infix(Rule::op_div, Assoc::Left)
            | Op::infix(Rule::op_mod, Assoc::Left))
        .op(Op::infix(Rule::op_pow, Assoc::Right))
        .op(Op::prefix(Rule::op_neg))
});

/// Spanset operators: `&& ||` bind looser than the structural operators.
static SPANSET: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    let structural = [
        Rule::op_child,
        Rule::op_parent,
        Rule::op_descendant,
        Rule::op_ancestor,
        Rule::op_sibling,
        Rule::op_not_child,
        Rule::op_not_parent,
        Rule::op_not_descendant,
        Rule::op_not_ancestor,
        Rule::op_not_sibling,
        Rule::op_union_child,
        Rule::op_union_parent,
        Rule::op_union_descendant,
        Rule::op_union_ancestor,
        Rule::op_union_sibling,
    ];
    let mut level = Op::infix(Rule::op_child, Assoc::Left);
    for r in &structural[1..] {
        level = level | Op::infix(*r, Assoc::Left);
    }
    PrattParser::new()
        .op(Op::infix(Rule::op_and, Assoc::Left) | Op::infix(Rule::op_or, Assoc::Left))
        .op(level)
});

/// Builds the AST of a parsed query.
pub struct Builder<'s> {
    src: &'s str,
}

fn span(p: &Pair<'_, Rule>) -> Span {
    Span::new(p.as_span().start(), p.as_span().end())
}

/// The literal a keyword names (`true`, `nil`, `ok`, `server`, ...).
pub(crate) fn keyword(text: &str) -> Option<Static> {
    Some(match text {
        "true" => Static::Bool(true),
        "false" => Static::Bool(false),
        "nil" => Static::Nil,
        "ok" => Static::Status(Status::Ok),
        "error" => Static::Status(Status::Error),
        "unset" => Static::Status(Status::Unset),
        "unspecified" => Static::Kind(Kind::Unspecified),
        "internal" => Static::Kind(Kind::Internal),
        "server" => Static::Kind(Kind::Server),
        "client" => Static::Kind(Kind::Client),
        "producer" => Static::Kind(Kind::Producer),
        "consumer" => Static::Kind(Kind::Consumer),
        _ => return None,
    })
}

/// Whether a parse-tree node is an operator token (infix or prefix).
pub(crate) fn is_operator(rule: Rule) -> bool {
    binary_op(rule).is_some()
        || spanset_op(rule).is_some()
        || matches!(rule, Rule::op_neg | Rule::op_not)
}

fn binary_op(rule: Rule) -> Option<BinaryOp> {
    Some(match rule {
        Rule::op_and => BinaryOp::And,
        Rule::op_or => BinaryOp::Or,
        Rule::op_eq => BinaryOp::Eq,
        Rule::op_ne => BinaryOp::Neq,
        Rule::op_lt => BinaryOp::Lt,
        Rule::op_le => BinaryOp::Lte,
        Rule::op_gt => BinaryOp::Gt,
        Rule::op_ge => BinaryOp::Gte,
        Rule::op_re => BinaryOp::Regex,
        Rule::op_nre => BinaryOp::NotRegex,
        Rule::op_add => BinaryOp::Add,
        Rule::op_sub => BinaryOp::Sub,
        Rule::op_mul => BinaryOp::Mul,
        Rule::op_div => BinaryOp::Div,
        Rule::op_mod => BinaryOp::Mod,
        Rule::op_pow => BinaryOp::Pow,
        _ => return None,
    })
}

fn spanset_op(rule: Rule) -> Option<SpansetOp> {
    Some(match rule {
        Rule::op_and => SpansetOp::And,
        Rule::op_or => SpansetOp::Union,
        Rule::op_child => SpansetOp::Child,
        Rule::op_parent => SpansetOp::Parent,
        Rule::op_descendant => SpansetOp::Descendant,
        Rule::op_ancestor => SpansetOp::Ancestor,
        Rule::op_sibling => SpansetOp::Sibling,
        Rule::op_not_child => SpansetOp::NotChild,
        Rule::op_not_parent => SpansetOp::NotParent,
        Rule::op_not_descendant => SpansetOp::NotDescendant,
        Rule::op_not_ancestor => SpansetOp::NotAncestor,
        Rule::op_not_sibling => SpansetOp::NotSibling,
        Rule::op_union_child => SpansetOp::UnionChild,
        Rule::op_union_parent => SpansetOp::UnionParent,
        Rule::op_union_descendant => SpansetOp::UnionDescendant,
        Rule::op_union_ancestor => SpansetOp::UnionAncestor,
        Rule::op_union_sibling => SpansetOp::UnionSibling,
        _ => return None,
    })
}

impl<'s> Builder<'s> {
    /// A builder over the query text `src`.
    pub fn new(src: &'s str) -> Self {
        Self { src }
    }

    fn err(&self, at: Span, msg: impl Into<String>) -> Error {
        Error::parse(self.src, at, msg)
    }

    fn internal(&self, p: &Pair<'_, Rule>) -> Error {
        // The grammar and this builder disagree: a bug, reported rather than panicking.
        self.err(
            span(p),
            format!(
                "internal error: unexpected {:?} in the parse tree",
                p.as_rule()
            ),
        )
    }

    /// The query from the `root` pairs.
    pub fn query(&self, pairs: Pairs<'_, Rule>) -> R<Query> {
        let mut body = None;
        let mut hints = Vec::new();
        for p in pairs.flat_map(|root| root.into_inner()) {
            match p.as_rule() {
                Rule::pipeline => body = Some(QueryBody::Spans(self.pipeline(p)?)),
                Rule::structural_pipelines => {
                    let sp = span(&p);
                    let expr = self.structural(p)?;
                    body = Some(QueryBody::Spans(Pipeline {
                        stages: vec![Stage::Spanset(expr)],
                        span: sp,
                    }));
                }
                Rule::metrics_query | Rule::metrics_math => {
                    body = Some(QueryBody::Metrics(self.metrics(p)?))
                }
                Rule::scalar_pipelines => {
                    body = Some(QueryBody::ScalarPipelines(self.scalar_pipelines(p)?))
                }
                Rule::hints => hints = self.hints(p)?,
                Rule::EOI => {}
                _ => return Err(self.internal(&p)),
            }
        }
        let body = body.ok_or_else(|| self.err(Span::new(0, self.src.len()), "empty query"))?;
        Ok(Query { body, hints })
    }

    fn pipeline(&self, p: Pair<'_, Rule>) -> R<Pipeline> {
        let sp = span(&p);
        let stages = p
            .into_inner()
            .map(|s| self.stage(s))
            .collect::<R<Vec<_>>>()?;
        Ok(Pipeline { stages, span: sp })
    }

    fn stage(&self, p: Pair<'_, Rule>) -> R<Stage> {
        Ok(match p.as_rule() {
            Rule::spanset_expr => Stage::Spanset(self.spanset_expr(p)?),
            Rule::scalar_filter => Stage::ScalarFilter(self.scalar_filter(p)?),
            Rule::by_op => {
                let inner = self.only_child(p)?;
                Stage::By(self.field_expr(inner)?)
            }
            Rule::coalesce_op => Stage::Coalesce,
            Rule::select_op => {
                let sp = span(&p);
                Stage::Select(
                    p.into_inner()
                        .map(|a| self.field_ref(a))
                        .collect::<R<_>>()?,
                    sp,
                )
            }
            _ => return Err(self.internal(&p)),
        })
    }

    fn only_child<'a>(&self, p: Pair<'a, Rule>) -> R<Pair<'a, Rule>> {
        p.clone()
            .into_inner()
            .next()
            .ok_or_else(|| self.internal(&p))
    }

    fn spanset_expr(&self, p: Pair<'_, Rule>) -> R<SpansetExpr> {
        SPANSET
            .map_primary(|q| match q.as_rule() {
                Rule::spanset_filter => Ok(SpansetExpr::Filter(self.spanset_filter(q)?)),
                Rule::spanset_expr => self.spanset_expr(q),
                _ => Err(self.internal(&q)),
            })
            .map_infix(|lhs, op, rhs| self.spanset_infix(lhs?, &op, rhs?))
            .parse(p.into_inner())
    }

    fn spanset_infix(
        &self,
        lhs: SpansetExpr,
        op: &Pair<'_, Rule>,
        rhs: SpansetExpr,
    ) -> R<SpansetExpr> {
        let op = spanset_op(op.as_rule()).ok_or_else(|| self.internal(op))?;
        Ok(SpansetExpr::Op {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        })
    }

    /// `(pipeline) OP (pipeline)`; a parenthesised single spanset expression is that expression.
    fn structural(&self, p: Pair<'_, Rule>) -> R<SpansetExpr> {
        SPANSET
            .map_primary(|q| match q.as_rule() {
                Rule::wrapped_pipeline => {
                    let mut pipe = self.pipeline(self.only_child(q)?)?;
                    if pipe.stages.len() == 1
                        && matches!(pipe.stages[0], Stage::Spanset(_))
                        && let Some(Stage::Spanset(e)) = pipe.stages.pop()
                    {
                        return Ok(e);
                    }
                    Ok(SpansetExpr::Pipeline(Box::new(pipe)))
                }
                Rule::structural_pipelines => self.structural(q),
                _ => Err(self.internal(&q)),
            })
            .map_infix(|lhs, op, rhs| self.spanset_infix(lhs?, &op, rhs?))
            .parse(p.into_inner())
    }

    fn spanset_filter(&self, p: Pair<'_, Rule>) -> R<SpansetFilter> {
        let sp = span(&p);
        let expr = match p.into_inner().next() {
            Some(e) => Some(self.field_expr(e)?),
            None => None,
        };
        Ok(SpansetFilter { expr, span: sp })
    }

    fn field_expr(&self, p: Pair<'_, Rule>) -> R<FieldExpr> {
        FIELD
            .map_primary(|q| {
                let sp = span(&q);
                let kind = match q.as_rule() {
                    Rule::field_expr => return self.field_expr(q),
                    Rule::intrinsic | Rule::attribute => FieldKind::Ref(self.field_ref(q)?),
                    _ => FieldKind::Static(self.static_value(q)?),
                };
                Ok(FieldExpr { kind, span: sp })
            })
            .map_prefix(|op, e| {
                let e = e?;
                let op_span = span(&op);
                let op = match op.as_rule() {
                    Rule::op_neg => UnaryOp::Neg,
                    Rule::op_not => UnaryOp::Not,
                    _ => return Err(self.internal(&op)),
                };
                Ok(FieldExpr {
                    span: op_span.to(e.span),
                    kind: FieldKind::Unary {
                        op,
                        expr: Box::new(e),
                    },
                })
            })
            .map_infix(|lhs, op, rhs| {
                let (lhs, rhs) = (lhs?, rhs?);
                let op = binary_op(op.as_rule()).ok_or_else(|| self.internal(&op))?;
                Ok(FieldExpr {
                    span: lhs.span.to(rhs.span),
                    kind: FieldKind::Binary {
                        op,
                        lhs: Box::new(lhs),
                        rhs: Box::new(rhs),
                    },
                })
            })
            .parse(p.into_inner())
    }

    fn field_ref(&self, p: Pair<'_, Rule>) -> R<FieldRef> {
        match p.as_rule() {
            Rule::intrinsic => Intrinsic::from_name(p.as_str())
                .map(FieldRef::Intrinsic)
                .ok_or_else(|| self.internal(&p)),
            Rule::attribute => {
                let mut inner = p.clone().into_inner();
                let (Some(scope), Some(name)) = (inner.next(), inner.next()) else {
                    return Err(self.internal(&p));
                };
                let scope_text = scope.as_str();
                let parent = scope_text.starts_with("parent.");
                let scope = match scope_text.trim_start_matches("parent.") {
                    "span." => Scope::Span,
                    "resource." => Scope::Resource,
                    "event." => Scope::Event,
                    "link." => Scope::Link,
                    "instrumentation." => Scope::Instrumentation,
                    _ => Scope::None,
                };
                Ok(FieldRef::Attribute(Attribute {
                    scope,
                    parent,
                    name: lexical::attribute_name(name.as_str()),
                }))
            }
            _ => Err(self.internal(&p)),
        }
    }

    fn static_value(&self, p: Pair<'_, Rule>) -> R<Static> {
        let text = p.as_str();
        let sp = span(&p);
        Ok(match p.as_rule() {
            Rule::integer => Static::Int(
                text.parse()
                    .map_err(|_| self.err(sp, "integer does not fit in 64 bits"))?,
            ),
            Rule::float => Static::Float(
                text.parse::<f64>()
                    .ok()
                    // As Go's ParseFloat: a literal past f64's range is an error, not +Inf
                    // (which no query could write back).
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| self.err(sp, format!("number {text} is out of range")))?,
            ),
            Rule::duration => {
                Static::Duration(lexical::duration(text).map_err(|m| self.err(sp, m))?)
            }
            Rule::string => {
                let body = &text[1..text.len() - 1];
                Static::Str(lexical::unquote_go(body).map_err(|m| self.err(sp, m))?)
            }
            Rule::raw_string => Static::Str(text[1..text.len() - 1].to_string()),
            Rule::named_int => Static::Int(if text == "minInt" { i64::MIN } else { i64::MAX }),
            Rule::keyword => keyword(text).ok_or_else(|| self.internal(&p))?,
            _ => return Err(self.internal(&p)),
        })
    }

    /// A static after an optional `-` (hints, scalar-pipeline right sides).
    fn signed_static(&self, mut pairs: Pairs<'_, Rule>, whole: Span) -> R<Static> {
        let mut negate = false;
        let mut value = None;
        for q in pairs.by_ref() {
            if q.as_rule() == Rule::op_neg {
                negate = true;
            } else {
                value = Some(self.static_value(q)?);
            }
        }
        let value = value.ok_or_else(|| self.err(whole, "expected a value"))?;
        if !negate {
            return Ok(value);
        }
        negate_static(value)
            .ok_or_else(|| self.err(whole, "only numbers and durations can be negative"))
    }

    fn scalar_filter(&self, p: Pair<'_, Rule>) -> R<ScalarFilter> {
        let sp = span(&p);
        let mut inner = p.clone().into_inner();
        let (Some(lhs), Some(op), Some(rhs)) = (inner.next(), inner.next(), inner.next()) else {
            return Err(self.internal(&p));
        };
        Ok(ScalarFilter {
            op: binary_op(op.as_rule()).ok_or_else(|| self.internal(&op))?,
            lhs: self.scalar_expr(lhs)?,
            rhs: self.scalar_expr(rhs)?,
            span: sp,
        })
    }

    fn scalar_expr(&self, p: Pair<'_, Rule>) -> R<ScalarExpr> {
        ARITH
            .map_primary(|q| match q.as_rule() {
                Rule::scalar_expr | Rule::scalar_pipe_expr => self.scalar_expr(q),
                Rule::aggregate => Ok(ScalarExpr::Aggregate(self.aggregate(q)?)),
                Rule::scalar_pipeline => {
                    let sp = span(&q);
                    let mut stages = Vec::new();
                    let mut agg = None;
                    for s in q.into_inner() {
                        if s.as_rule() == Rule::aggregate {
                            agg = Some(self.aggregate(s)?);
                        } else {
                            stages.push(self.stage(s)?);
                        }
                    }
                    let agg = agg.ok_or_else(|| self.err(sp, "expected an aggregate"))?;
                    Ok(ScalarExpr::Pipeline(
                        Box::new(Pipeline { stages, span: sp }),
                        agg,
                    ))
                }
                _ => {
                    let sp = span(&q);
                    Ok(ScalarExpr::Static(self.static_value(q)?, sp))
                }
            })
            .map_prefix(|op, e| match e? {
                // The grammar puts `-` only before a number: a negative literal, as in Tempo.
                ScalarExpr::Static(v, sp) => {
                    let sp = span(&op).to(sp);
                    negate_static(v)
                        .map(|v| ScalarExpr::Static(v, sp))
                        .ok_or_else(|| self.err(sp, "only numbers can be negative"))
                }
                _ => Err(self.internal(&op)),
            })
            .map_infix(|lhs, op, rhs| {
                Ok(ScalarExpr::Binary {
                    op: binary_op(op.as_rule()).ok_or_else(|| self.internal(&op))?,
                    lhs: Box::new(lhs?),
                    rhs: Box::new(rhs?),
                })
            })
            .parse(p.into_inner())
    }

    fn aggregate(&self, p: Pair<'_, Rule>) -> R<Aggregate> {
        let sp = span(&p);
        let mut inner = p.clone().into_inner();
        let first = inner.next().ok_or_else(|| self.internal(&p))?;
        if first.as_rule() == Rule::agg_count {
            return Ok(Aggregate {
                op: AggregateOp::Count,
                expr: None,
                span: sp,
            });
        }
        let op = match first.as_str() {
            "max" => AggregateOp::Max,
            "min" => AggregateOp::Min,
            "avg" => AggregateOp::Avg,
            "sum" => AggregateOp::Sum,
            _ => return Err(self.internal(&first)),
        };
        let e = inner.next().ok_or_else(|| self.internal(&p))?;
        Ok(Aggregate {
            op,
            expr: Some(self.field_expr(e)?),
            span: sp,
        })
    }

    fn scalar_pipelines(&self, p: Pair<'_, Rule>) -> R<ScalarFilter> {
        let sp = span(&p);
        let mut inner = p.clone().into_inner();
        let (Some(lhs), Some(op), Some(rhs)) = (inner.next(), inner.next(), inner.next()) else {
            return Err(self.internal(&p));
        };
        let rhs = if rhs.as_rule() == Rule::signed_static {
            let rs = span(&rhs);
            ScalarExpr::Static(self.signed_static(rhs.into_inner(), rs)?, rs)
        } else {
            self.scalar_expr(rhs)?
        };
        Ok(ScalarFilter {
            op: binary_op(op.as_rule()).ok_or_else(|| self.internal(&op))?,
            lhs: self.scalar_expr(lhs)?,
            rhs,
            span: sp,
        })
    }

    fn metrics(&self, p: Pair<'_, Rule>) -> R<MetricsExpr> {
        match p.as_rule() {
            Rule::metrics_query => Ok(MetricsExpr::Query(Box::new(self.metrics_query(p)?))),
            Rule::metrics_math | Rule::math_scalar => {
                let mut operands = Vec::new();
                let mut stages = Vec::new();
                for q in p.into_inner() {
                    if q.as_rule() == Rule::second_stage {
                        stages.push(self.second_stage(q)?);
                    } else {
                        operands.push(q);
                    }
                }
                let expr = ARITH
                    .map_primary(|q| match q.as_rule() {
                        Rule::metrics_query | Rule::metrics_math | Rule::math_scalar => {
                            self.metrics(q)
                        }
                        _ => Ok(MetricsExpr::Number(self.static_value(q)?)),
                    })
                    .map_prefix(|op, e| match e? {
                        MetricsExpr::Number(v) => negate_static(v)
                            .map(MetricsExpr::Number)
                            .ok_or_else(|| self.internal(&op)),
                        _ => Err(self.internal(&op)),
                    })
                    .map_infix(|lhs, op, rhs| {
                        Ok(MetricsExpr::Binary {
                            op: binary_op(op.as_rule()).ok_or_else(|| self.internal(&op))?,
                            lhs: Box::new(lhs?),
                            rhs: Box::new(rhs?),
                        })
                    })
                    .parse(operands.into_iter())?;
                Ok(attach_stages(expr, stages))
            }
            _ => Err(self.internal(&p)),
        }
    }

    fn metrics_query(&self, p: Pair<'_, Rule>) -> R<MetricsQuery> {
        let mut pipeline = None;
        let mut function = None;
        let mut fn_span = Span::default();
        let mut by = Vec::new();
        let mut stages = Vec::new();
        for q in p.into_inner() {
            match q.as_rule() {
                Rule::pipeline => pipeline = Some(self.pipeline(q)?),
                Rule::by_clause => {
                    by = q
                        .into_inner()
                        .map(|a| self.field_ref(a))
                        .collect::<R<_>>()?
                }
                Rule::second_stage => stages.push(self.second_stage(q)?),
                _ => {
                    fn_span = span(&q);
                    function = Some(self.metrics_fn(q)?);
                }
            }
        }
        match (pipeline, function) {
            (Some(pipeline), Some(function)) => Ok(MetricsQuery {
                pipeline,
                function,
                by,
                stages,
                span: fn_span,
            }),
            _ => Err(self.err(fn_span, "internal error: incomplete metrics query")),
        }
    }

    fn metrics_fn(&self, p: Pair<'_, Rule>) -> R<MetricsFn> {
        let rule = p.as_rule();
        let sp = span(&p);
        Ok(match rule {
            Rule::fn_rate => MetricsFn::Rate,
            Rule::fn_count_over_time => MetricsFn::CountOverTime,
            Rule::fn_histogram => {
                MetricsFn::HistogramOverTime(self.field_ref(self.only_child(p.clone())?)?)
            }
            Rule::fn_over_time => {
                let mut inner = p.clone().into_inner();
                let (Some(name), Some(attr)) = (inner.next(), inner.next()) else {
                    return Err(self.internal(&p));
                };
                let attr = self.field_ref(attr)?;
                match name.as_str() {
                    "min_over_time" => MetricsFn::MinOverTime(attr),
                    "max_over_time" => MetricsFn::MaxOverTime(attr),
                    "sum_over_time" => MetricsFn::SumOverTime(attr),
                    _ => MetricsFn::AvgOverTime(attr),
                }
            }
            Rule::fn_quantile => {
                let mut inner = p.clone().into_inner();
                let attr = self.field_ref(inner.next().ok_or_else(|| self.internal(&p))?)?;
                let qs = inner
                    .map(|q| match self.static_value(q)? {
                        Static::Int(i) => Ok(i as f64),
                        Static::Float(f) => Ok(f),
                        _ => Err(self.err(sp, "quantiles are numbers")),
                    })
                    .collect::<R<Vec<f64>>>()?;
                MetricsFn::QuantileOverTime(attr, qs)
            }
            Rule::fn_compare => {
                let mut inner = p.clone().into_inner();
                let filter = self.spanset_filter(inner.next().ok_or_else(|| self.internal(&p))?)?;
                let ints = inner
                    .map(|q| match self.static_value(q)? {
                        Static::Int(i) => Ok(i),
                        _ => Err(self.err(sp, "compare() takes integers")),
                    })
                    .collect::<R<Vec<i64>>>()?;
                MetricsFn::Compare {
                    filter,
                    top_n: ints.first().copied().unwrap_or(10),
                    window: (ints.len() == 3).then(|| (ints[1], ints[2])),
                }
            }
            _ => return Err(self.internal(&p)),
        })
    }

    fn second_stage(&self, p: Pair<'_, Rule>) -> R<SecondStage> {
        let mut inner = p.clone().into_inner();
        let first = inner.next().ok_or_else(|| self.internal(&p))?;
        match first.as_rule() {
            Rule::topk | Rule::bottomk => {
                let sp = span(&first);
                let n = self.only_child(first.clone())?;
                let Static::Int(n) = self.static_value(n)? else {
                    return Err(self.internal(&first));
                };
                Ok(if first.as_rule() == Rule::topk {
                    SecondStage::TopK(n, sp)
                } else {
                    SecondStage::BottomK(n, sp)
                })
            }
            op => {
                let op = binary_op(op).ok_or_else(|| self.internal(&first))?;
                let value = inner.next().ok_or_else(|| self.internal(&p))?;
                Ok(SecondStage::Filter(op, self.const_expr(value)?))
            }
        }
    }

    /// A second-stage threshold, folded: integer arithmetic while both sides are integers (as
    /// Tempo), durations in seconds.
    fn const_expr(&self, p: Pair<'_, Rule>) -> R<f64> {
        let sp = span(&p);
        Ok(match self.const_value(p)? {
            Static::Int(i) => i as f64,
            Static::Float(f) => f,
            Static::Duration(ns) => ns as f64 / 1e9,
            _ => return Err(self.err(sp, "expected a number")),
        })
    }

    fn const_value(&self, p: Pair<'_, Rule>) -> R<Static> {
        let sp = span(&p);
        ARITH
            .map_primary(|q| match q.as_rule() {
                Rule::const_expr => self.const_value(q),
                _ => self.static_value(q),
            })
            .map_prefix(|op, e| negate_static(e?).ok_or_else(|| self.internal(&op)))
            .map_infix(|lhs, op, rhs| {
                let op = binary_op(op.as_rule()).ok_or_else(|| self.internal(&op))?;
                fold_numbers(op, &lhs?, &rhs?).map_err(|m| self.err(sp, m))
            })
            .parse(p.into_inner())
    }

    fn hints(&self, p: Pair<'_, Rule>) -> R<Vec<Hint>> {
        p.into_inner()
            .map(|h| {
                let sp = span(&h);
                let mut inner = h.into_inner();
                let name = inner
                    .next()
                    .map(|n| n.as_str().to_string())
                    .ok_or_else(|| self.err(sp, "expected a hint name"))?;
                let value = self.signed_static(inner, sp)?;
                Ok(Hint { name, value })
            })
            .collect()
    }
}

/// Pushes second stages into a lone metrics query (`(q) > 1` is `q > 1`) and drops redundant
/// parentheses around one query.
fn attach_stages(expr: MetricsExpr, stages: Vec<SecondStage>) -> MetricsExpr {
    if stages.is_empty() {
        return expr;
    }
    match expr {
        MetricsExpr::Query(mut q) => {
            q.stages.extend(stages);
            MetricsExpr::Query(q)
        }
        MetricsExpr::Staged {
            expr,
            stages: mut first,
        } => {
            first.extend(stages);
            MetricsExpr::Staged {
                expr,
                stages: first,
            }
        }
        other => MetricsExpr::Staged {
            expr: Box::new(other),
            stages,
        },
    }
}

/// `-v` for numbers and durations.
pub fn negate_static(v: Static) -> Option<Static> {
    Some(match v {
        Static::Int(i) => Static::Int(i.checked_neg()?),
        Static::Float(f) => Static::Float(-f),
        Static::Duration(d) => Static::Duration(d.checked_neg()?),
        _ => return None,
    })
}

/// Arithmetic on two number literals with Tempo's rules: integer arithmetic when both are
/// integers (`/` truncates), float otherwise.
pub fn fold_numbers(op: BinaryOp, lhs: &Static, rhs: &Static) -> Result<Static, String> {
    fn as_f64(s: &Static) -> Option<f64> {
        match s {
            Static::Int(i) => Some(*i as f64),
            Static::Float(f) => Some(*f),
            Static::Duration(d) => Some(*d as f64),
            _ => None,
        }
    }
    if let (Static::Int(a), Static::Int(b)) = (lhs, rhs) {
        let (a, b) = (*a, *b);
        let v = match op {
            BinaryOp::Add => a.checked_add(b),
            BinaryOp::Sub => a.checked_sub(b),
            BinaryOp::Mul => a.checked_mul(b),
            BinaryOp::Div if b == 0 => return Err("division by zero".into()),
            BinaryOp::Mod if b == 0 => return Err("modulo by zero".into()),
            BinaryOp::Div => a.checked_div(b),
            BinaryOp::Mod => a.checked_rem(b),
            BinaryOp::Pow => {
                // lhs^rhs. (Tempo evaluates int ^ int as rhs^lhs, a bug: `2 ^ 3` is 9 there;
                // see docs/traceql.md.) Overflow saturates like Go's conversion of +Inf.
                let v = (a as f64).powf(b as f64);
                return Ok(Static::Int(if v.is_nan() { i64::MIN } else { v as i64 }));
            }
            _ => return Err(format!("{} is not arithmetic", op.symbol())),
        };
        return v
            .map(Static::Int)
            .ok_or_else(|| "integer overflow".to_string());
    }
    let (Some(a), Some(b)) = (as_f64(lhs), as_f64(rhs)) else {
        return Err("arithmetic needs numbers".into());
    };
    let v = match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Mod => a % b,
        BinaryOp::Pow => a.powf(b),
        _ => return Err(format!("{} is not arithmetic", op.symbol())),
    };
    Ok(Static::Float(v))
}
