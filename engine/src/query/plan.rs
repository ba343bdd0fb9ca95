//! TraceQL search pipeline → a per-trace [`Program`] plus the expressions DataFusion computes
//! next to the scan (leaf conditions, aggregate inputs, `by()` keys):
//!
//! ```text
//! Projection(ids, nested sets, trace_start, leaf0.., v0.., k0..)   -- span_rows, per source
//!   Filter(leaf0 OR leaf1 OR ... AND time range)                   -- pushed into the scan
//!     TableScan(blocks with one schema | live head)
//! ```
//!
//! Search runs the program itself over these rows, newest block first ([`super::search`]);
//! TraceQL metrics with structure or pipelines aggregate them per trace with
//! `traceql_spansets` ([`spansets`]).

use std::sync::Arc;

use allegro_traceql::ast::{
    Aggregate, AggregateOp, BinaryOp, FieldExpr, FieldKind, FieldRef, Intrinsic, Pipeline, Query,
    QueryBody, ScalarExpr, ScalarFilter, SpansetExpr, SpansetOp, Stage, Static,
};
use allegro_traceql::{Error as QlError, ErrorKind, Type};
use allegro_udfs::spansets::program::{self as prog, Program};
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::{
    AggregateUDF, Expr, LogicalPlan, LogicalPlanBuilder, cast, col, lit,
};

use super::df_err;
use super::translate::Translator;
use crate::error::{EngineError, Result};
use crate::schema::col as c;

/// A search query split into what DataFusion computes per span and what runs per trace.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The per-trace program.
    pub program: Program,
    /// Leaf conditions (`None` = `{}`, every span).
    pub leaves: Vec<Option<FieldExpr>>,
    /// Aggregate inputs.
    pub values: Vec<FieldExpr>,
    /// `by()` expressions.
    pub keys: Vec<FieldExpr>,
    /// `select(...)` fields, in order.
    pub select: Vec<FieldRef>,
    /// Every field the conditions look at (returned as span attributes, as Tempo does).
    pub referenced: Vec<FieldRef>,
}

/// Parses, validates and rewrites `src` as Tempo would, then compiles it for search.
pub fn compile_search(src: &str) -> Result<Compiled> {
    let q = allegro_traceql::compile(src).map_err(EngineError::Query)?;
    compile(src, &q)
}

/// Compiles a parsed search query.
pub fn compile(src: &str, q: &Query) -> Result<Compiled> {
    let pipeline = match &q.body {
        QueryBody::Spans(p) => p,
        QueryBody::Metrics(_) => {
            return Err(EngineError::InvalidInput(
                "this is a TraceQL metrics query: send it to /api/metrics/query_range \
                 (or `allegro metrics`), not to search"
                    .into(),
            ));
        }
        QueryBody::ScalarPipelines(f) => {
            return Err(EngineError::Query(QlError::new(
                ErrorKind::Unsupported,
                src,
                f.span,
                "comparing scalar pipelines is not supported",
            )));
        }
    };
    let mut c = Compiler {
        src,
        out: Compiled {
            program: Program {
                pipeline: prog::Pipeline { stages: vec![] },
                leaves: 0,
                values: 0,
                keys: 0,
            },
            leaves: vec![],
            values: vec![],
            keys: vec![],
            select: vec![],
            referenced: vec![],
        },
    };
    let p = c.pipeline(pipeline)?;
    let mut out = c.out;
    out.program = Program {
        pipeline: p,
        leaves: out.leaves.len(),
        values: out.values.len(),
        keys: out.keys.len(),
    };
    if out.leaves.len() > allegro_udfs::spansets::MAX_LEAVES {
        return Err(EngineError::Query(QlError::new(
            ErrorKind::Unsupported,
            src,
            pipeline.span,
            format!(
                "a query may have at most {} spanset filters",
                allegro_udfs::spansets::MAX_LEAVES
            ),
        )));
    }
    Ok(out)
}

struct Compiler<'a> {
    src: &'a str,
    out: Compiled,
}

impl Compiler<'_> {
    fn unsupported(
        &self,
        span: allegro_traceql::ast::Span,
        what: impl Into<String>,
    ) -> EngineError {
        EngineError::Query(QlError::new(ErrorKind::Unsupported, self.src, span, what))
    }

    /// Translates once against an empty schema, so unsupported constructs fail at compile
    /// time with their position rather than per block.
    fn check(&self, e: &FieldExpr) -> Result<()> {
        self.positioned(e, Translator::new(&[]).condition(e).map(drop))
    }

    /// A translation failure as the user sees it: "not supported" gets `e`'s position.
    fn positioned(&self, e: &FieldExpr, r: Result<()>) -> Result<()> {
        match r {
            Err(EngineError::NotSupported(m)) => Err(self.unsupported(e.span, m)),
            other => other,
        }
    }

    fn pipeline(&mut self, p: &Pipeline) -> Result<prog::Pipeline> {
        let mut stages = Vec::new();
        for s in &p.stages {
            match s {
                Stage::Spanset(e) => stages.push(prog::Stage::Spanset(self.set_expr(e)?)),
                Stage::ScalarFilter(f) => stages.push(prog::Stage::Scalar(self.scalar_filter(f)?)),
                Stage::By(e) => {
                    self.check_value(e)?;
                    self.out.keys.push(e.clone());
                    stages.push(prog::Stage::By {
                        key: self.out.keys.len() - 1,
                        label: format!("by({e})"),
                    });
                }
                Stage::Coalesce => stages.push(prog::Stage::Coalesce),
                Stage::Select(fields, _) => {
                    for f in fields {
                        if !self.out.select.contains(f) {
                            self.out.select.push(f.clone());
                        }
                    }
                }
            }
        }
        Ok(prog::Pipeline { stages })
    }

    fn check_value(&self, e: &FieldExpr) -> Result<()> {
        self.positioned(e, Translator::new(&[]).value(e).map(drop))
    }

    fn set_expr(&mut self, e: &SpansetExpr) -> Result<prog::SetExpr> {
        Ok(match e {
            SpansetExpr::Filter(f) => {
                if let Some(x) = &f.expr {
                    self.check(x)?;
                    collect_refs(x, &mut self.out.referenced);
                }
                self.out.leaves.push(f.expr.clone());
                prog::SetExpr::Leaf(self.out.leaves.len() - 1)
            }
            SpansetExpr::Op { op, lhs, rhs } => prog::SetExpr::Op {
                op: set_op(*op),
                lhs: Box::new(self.set_expr(lhs)?),
                rhs: Box::new(self.set_expr(rhs)?),
            },
            SpansetExpr::Pipeline(p) => prog::SetExpr::Pipeline(Box::new(self.pipeline(p)?)),
        })
    }

    fn scalar_filter(&mut self, f: &ScalarFilter) -> Result<prog::ScalarFilter> {
        let op = match f.op {
            BinaryOp::Eq => prog::Cmp::Eq,
            BinaryOp::Neq => prog::Cmp::Neq,
            BinaryOp::Lt => prog::Cmp::Lt,
            BinaryOp::Lte => prog::Cmp::Lte,
            BinaryOp::Gt => prog::Cmp::Gt,
            BinaryOp::Gte => prog::Cmp::Gte,
            other => {
                return Err(
                    self.unsupported(f.span, format!("`{}` in a scalar filter", other.symbol()))
                );
            }
        };
        Ok(prog::ScalarFilter {
            op,
            lhs: self.scalar(&f.lhs, f)?,
            rhs: self.scalar(&f.rhs, f)?,
        })
    }

    fn scalar(&mut self, s: &ScalarExpr, f: &ScalarFilter) -> Result<prog::Scalar> {
        Ok(match s {
            ScalarExpr::Static(st, span) => prog::Scalar::Num(match st {
                Static::Int(i) => *i as f64,
                Static::Float(x) => *x,
                Static::Duration(d) => *d as f64,
                other => {
                    return Err(self.unsupported(*span, format!("`{other}` in a scalar filter")));
                }
            }),
            ScalarExpr::Aggregate(a) => self.aggregate(a)?,
            ScalarExpr::Binary { op, lhs, rhs } => prog::Scalar::Bin {
                op: match op {
                    BinaryOp::Add => prog::Arith::Add,
                    BinaryOp::Sub => prog::Arith::Sub,
                    BinaryOp::Mul => prog::Arith::Mul,
                    BinaryOp::Div => prog::Arith::Div,
                    BinaryOp::Mod => prog::Arith::Mod,
                    BinaryOp::Pow => prog::Arith::Pow,
                    other => {
                        return Err(self.unsupported(
                            f.span,
                            format!("`{}` in scalar arithmetic", other.symbol()),
                        ));
                    }
                },
                lhs: Box::new(self.scalar(lhs, f)?),
                rhs: Box::new(self.scalar(rhs, f)?),
            },
            ScalarExpr::Pipeline(..) => {
                return Err(self.unsupported(f.span, "scalar pipelines inside a pipeline"));
            }
        })
    }

    fn aggregate(&mut self, a: &Aggregate) -> Result<prog::Scalar> {
        let op = match a.op {
            AggregateOp::Count => prog::AggOp::Count,
            AggregateOp::Avg => prog::AggOp::Avg,
            AggregateOp::Min => prog::AggOp::Min,
            AggregateOp::Max => prog::AggOp::Max,
            AggregateOp::Sum => prog::AggOp::Sum,
        };
        let value = match &a.expr {
            None => None,
            Some(e) => {
                self.check_value(e)?;
                self.out.values.push(e.clone());
                Some(self.out.values.len() - 1)
            }
        };
        let ty = match a.type_of() {
            Type::Duration => prog::AggType::Duration,
            Type::Int => prog::AggType::Int,
            Type::Float => prog::AggType::Float,
            _ => prog::AggType::Attribute,
        };
        // An attribute's type is known per span only: its typed key goes along, to show the
        // aggregate as an int or a float as the spans' values are.
        let typed = match (&a.expr, ty, op) {
            (
                Some(e),
                prog::AggType::Attribute,
                prog::AggOp::Min | prog::AggOp::Max | prog::AggOp::Sum,
            ) => {
                self.out.keys.push(e.clone());
                Some(self.out.keys.len() - 1)
            }
            _ => None,
        };
        Ok(prog::Scalar::Agg {
            op,
            value,
            shown: prog::AggShown {
                label: a.to_string(),
                ty,
                typed,
            },
        })
    }
}

fn set_op(op: SpansetOp) -> prog::SetOp {
    use prog::SetOp as P;
    match op {
        SpansetOp::And => P::And,
        SpansetOp::Union => P::Union,
        SpansetOp::Child => P::Child,
        SpansetOp::Parent => P::Parent,
        SpansetOp::Descendant => P::Descendant,
        SpansetOp::Ancestor => P::Ancestor,
        SpansetOp::Sibling => P::Sibling,
        SpansetOp::NotChild => P::NotChild,
        SpansetOp::NotParent => P::NotParent,
        SpansetOp::NotDescendant => P::NotDescendant,
        SpansetOp::NotAncestor => P::NotAncestor,
        SpansetOp::NotSibling => P::NotSibling,
        SpansetOp::UnionChild => P::UnionChild,
        SpansetOp::UnionParent => P::UnionParent,
        SpansetOp::UnionDescendant => P::UnionDescendant,
        SpansetOp::UnionAncestor => P::UnionAncestor,
        SpansetOp::UnionSibling => P::UnionSibling,
    }
}

fn collect_refs(e: &FieldExpr, out: &mut Vec<FieldRef>) {
    match &e.kind {
        FieldKind::Ref(r) => {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        FieldKind::Binary { lhs, rhs, .. } => {
            collect_refs(lhs, out);
            collect_refs(rhs, out);
        }
        FieldKind::Unary { expr, .. } | FieldKind::List { expr, .. } => collect_refs(expr, out),
        FieldKind::Static(_) => {}
    }
}

/// Output column names of the per-span projection.
pub mod out {
    /// Earliest start of the span's trace.
    pub const TRACE_START: &str = "trace_start";
    /// The UDAF's result.
    pub const SPANSETS: &str = "spansets";
}

/// The time window of a search, unix nanoseconds, inclusive.
pub type Range = Option<(u64, u64)>;

/// Rows of traces overlapping the window (none for no window).
pub(crate) fn time_filter(range: Range) -> Option<Expr> {
    let (start, end) = range?;
    // A trace qualifies when it overlaps the window.
    let trace_end = col(c::TRACE_START) + col(c::TRACE_DURATION);
    Some(
        col(c::TRACE_START)
            .lt_eq(lit(end))
            .and(trace_end.gt_eq(lit(start))),
    )
}

/// The per-span part over one source (a block group or the head).
pub(crate) fn span_rows(
    src: &super::sources::Source,
    c: &Compiled,
    range: Range,
) -> Result<LogicalPlan> {
    let table = src.table.clone();
    let t = src.translator();
    let leaves: Vec<Expr> = c
        .leaves
        .iter()
        .map(|l| match l {
            None => Ok(lit(true)),
            Some(e) => t.condition(e),
        })
        .collect::<Result<_>>()?;
    let any = leaves
        .iter()
        .cloned()
        .reduce(Expr::or)
        .unwrap_or(lit(false));
    let filter = match time_filter(range) {
        Some(tf) => tf.and(any),
        None => any,
    };
    let mut proj = vec![
        col(c::TRACE_ID),
        col(c::NESTED_SET_LEFT),
        col(c::NESTED_SET_RIGHT),
        col(c::NESTED_SET_PARENT),
        col(c::SPAN_ID),
        col(c::TRACE_START).alias(out::TRACE_START),
    ];
    for (i, l) in leaves.into_iter().enumerate() {
        proj.push(l.alias(format!("leaf{i}")));
    }
    for (i, v) in c.values.iter().enumerate() {
        let e = t
            .value(v)?
            .as_float()
            .unwrap_or(lit(ScalarValue::Float64(None)));
        proj.push(cast(e, DataType::Float64).alias(format!("v{i}")));
    }
    for (i, k) in c.keys.iter().enumerate() {
        proj.push(cast(t.value(k)?.as_key(), DataType::Utf8).alias(format!("k{i}")));
    }
    LogicalPlanBuilder::scan("spans", provider_as_source(table), None)
        .and_then(|b| b.filter(filter))
        .and_then(|b| b.project(proj))
        .and_then(|b| b.build())
        .map_err(df_err)
}

/// Every trace with spansets: `(trace_id, spansets, trace_start)`.
pub fn spansets(spans: Arc<dyn TableProvider>, c: &Compiled) -> Result<LogicalPlanBuilder> {
    let b = LogicalPlanBuilder::scan("spans", provider_as_source(spans), None).map_err(df_err)?;
    let program = serde_json::to_string(&c.program)
        .map_err(|e| EngineError::Internal(format!("program: {e}")))?;
    let mut args = vec![
        lit(program),
        col(c::NESTED_SET_LEFT),
        col(c::NESTED_SET_RIGHT),
        col(c::NESTED_SET_PARENT),
        col(c::SPAN_ID),
    ];
    args.extend((0..c.leaves.len()).map(|i| col(format!("leaf{i}"))));
    args.extend((0..c.values.len()).map(|i| col(format!("v{i}"))));
    args.extend((0..c.keys.len()).map(|i| col(format!("k{i}"))));
    let udaf = AggregateUDF::from(allegro_udfs::spansets::TraceqlSpansets::default());
    b.aggregate(
        vec![col(c::TRACE_ID)],
        vec![
            udaf.call(args).alias(out::SPANSETS),
            min(col(out::TRACE_START)).alias(out::TRACE_START),
        ],
    )
    .and_then(|b| b.filter(col(out::SPANSETS).is_not_null()))
    .map_err(df_err)
}

/// `nestedSetParent < 0` and its equivalents.
pub(crate) fn is_root_test(cond: &FieldExpr) -> bool {
    let FieldKind::Binary { op, lhs, rhs } = &cond.kind else {
        return false;
    };
    let parent = matches!(
        lhs.kind,
        FieldKind::Ref(FieldRef::Intrinsic(Intrinsic::NestedSetParent))
    );
    match (parent, op, &rhs.kind) {
        (true, BinaryOp::Lt, FieldKind::Static(Static::Int(n))) => *n <= 0,
        (true, BinaryOp::Lte | BinaryOp::Eq, FieldKind::Static(Static::Int(n))) => *n < 0,
        _ => false,
    }
}
