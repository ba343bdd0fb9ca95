//! Static types and validation with Tempo's rules (`ast_validate.go`, `enum_operators.go`).
//!
//! Errors come in two kinds, as in Tempo: ordinary validation errors (the query means nothing)
//! and "not yet supported" (the query means something Tempo does not execute). Operands are
//! checked left to right and the first error wins, so the kind matches Tempo's.

use crate::ast::*;
use crate::error::Error;

/// Most `by()` labels a metrics query may have (Tempo's `maxGroupBys`).
pub const MAX_GROUP_BYS: usize = 5;
/// Largest `topN` of `compare()`.
pub const MAX_COMPARE_TOP_N: i64 = 1000;
/// Most stages of one pipeline: every stage holds each trace's spansets once more, so a
/// 1,000-stage pipeline held 2.8 GiB for a query that real users write in five.
pub const MAX_PIPELINE_STAGES: usize = 32;
/// Most fields of one `select(...)`.
pub const MAX_SELECT_FIELDS: usize = 64;
/// Largest compiled form of a regex, in bytes (the `regex` crate's `size_limit`). Matching
/// costs grow with it: `.*` repeated 3,000 times (6 KB of text, over this limit) took 1.4 ms a
/// span name, hours over a day of spans; a 100-way alternation of service names needs 0.2 MiB.
pub const MAX_REGEX_BYTES: usize = 1 << 20;

/// Static types (Tempo `StaticType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Type {
    Nil,
    /// Known only at run time: any attribute.
    Attribute,
    Boolean,
    Int,
    Float,
    String,
    Duration,
    Status,
    Kind,
}

impl Type {
    /// Int, float or duration: mutually comparable.
    pub fn is_numeric(self) -> bool {
        matches!(self, Type::Int | Type::Float | Type::Duration)
    }

    /// Whether values of the two types may meet in a binary operation.
    pub fn matches(self, other: Type) -> bool {
        self == Type::Attribute
            || other == Type::Attribute
            || self == other
            || (self.is_numeric() && other.is_numeric())
            || self == Type::Nil
            || other == Type::Nil
    }

    /// Whether `op` applies to this type.
    pub fn allows(self, op: BinaryOp) -> bool {
        use BinaryOp::*;
        match self {
            Type::Attribute => true,
            Type::Boolean => matches!(op, And | Or | Eq | Neq),
            Type::Int | Type::Float | Type::Duration => matches!(
                op,
                Add | Sub | Mul | Div | Mod | Pow | Eq | Neq | Gt | Gte | Lt | Lte
            ),
            Type::String => matches!(op, Eq | Neq | Regex | NotRegex | Gt | Gte | Lt | Lte),
            Type::Nil | Type::Status | Type::Kind => matches!(op, Eq | Neq),
        }
    }
}

impl Static {
    /// The literal's type.
    pub fn type_of(&self) -> Type {
        match self {
            Static::Nil => Type::Nil,
            Static::Bool(_) => Type::Boolean,
            Static::Int(_) => Type::Int,
            Static::Float(_) => Type::Float,
            Static::Str(_) => Type::String,
            Static::Duration(_) => Type::Duration,
            Static::Status(_) => Type::Status,
            Static::Kind(_) => Type::Kind,
        }
    }
}

impl Intrinsic {
    /// The intrinsic's type.
    pub fn type_of(self) -> Type {
        use Intrinsic::*;
        match self {
            Duration | TraceDuration | EventTimeSinceStart => Type::Duration,
            Status => Type::Status,
            Kind => Type::Kind,
            ChildCount | NestedSetLeft | NestedSetRight | NestedSetParent => Type::Int,
            Parent => Type::Nil,
            Name
            | StatusMessage
            | TraceRootName
            | TraceRootService
            | TraceId
            | SpanId
            | ParentId
            | EventName
            | LinkTraceId
            | LinkSpanId
            | InstrumentationName
            | InstrumentationVersion => Type::String,
        }
    }
}

impl FieldRef {
    /// Intrinsics have a fixed type; attributes are typed at run time.
    pub fn type_of(&self) -> Type {
        match self {
            FieldRef::Intrinsic(i) => i.type_of(),
            FieldRef::Attribute(_) => Type::Attribute,
        }
    }
}

impl FieldExpr {
    /// The type the expression evaluates to (Tempo `impliedType`).
    pub fn type_of(&self) -> Type {
        match &self.kind {
            FieldKind::Static(s) => s.type_of(),
            FieldKind::Ref(r) => r.type_of(),
            FieldKind::Binary { op, lhs, rhs } => {
                if op.is_boolean() {
                    Type::Boolean
                } else {
                    match lhs.type_of() {
                        Type::Attribute => rhs.type_of(),
                        t => t,
                    }
                }
            }
            FieldKind::Unary {
                op: UnaryOp::Neg,
                expr,
            } => expr.type_of(),
            FieldKind::Unary { .. } | FieldKind::List { .. } => Type::Boolean,
        }
    }

    /// Whether the expression reads anything from the span (else it is a constant).
    pub fn references_span(&self) -> bool {
        match &self.kind {
            FieldKind::Static(_) => false,
            FieldKind::Ref(_) | FieldKind::List { .. } => true,
            FieldKind::Binary { lhs, rhs, .. } => lhs.references_span() || rhs.references_span(),
            FieldKind::Unary { expr, .. } => expr.references_span(),
        }
    }
}

impl Aggregate {
    /// `count()` is an int; the others take their argument's type.
    pub fn type_of(&self) -> Type {
        match &self.expr {
            None => Type::Int,
            Some(e) => e.type_of(),
        }
    }
}

impl ScalarExpr {
    /// The type of the scalar.
    pub fn type_of(&self) -> Type {
        match self {
            ScalarExpr::Static(s, _) => s.type_of(),
            ScalarExpr::Aggregate(a) | ScalarExpr::Pipeline(_, a) => a.type_of(),
            ScalarExpr::Binary { lhs, .. } => lhs.type_of(),
        }
    }

    /// Numbers and arithmetic on numbers only (Tempo folds these into one static).
    pub fn is_constant(&self) -> bool {
        match self {
            ScalarExpr::Static(..) => true,
            ScalarExpr::Aggregate(_) | ScalarExpr::Pipeline(..) => false,
            ScalarExpr::Binary { lhs, rhs, .. } => lhs.is_constant() && rhs.is_constant(),
        }
    }

    fn span(&self) -> Span {
        match self {
            ScalarExpr::Static(_, s) => *s,
            ScalarExpr::Aggregate(a) => a.span,
            ScalarExpr::Pipeline(p, a) => p.span.to(a.span),
            ScalarExpr::Binary { lhs, rhs, .. } => lhs.span().to(rhs.span()),
        }
    }
}

type R = Result<(), Error>;

/// Checks a parsed query against Tempo's validation rules.
pub fn validate(src: &str, q: &Query) -> R {
    let v = Validator { src };
    match &q.body {
        QueryBody::Spans(p) => v.pipeline(p),
        QueryBody::Metrics(m) => v.metrics(m),
        QueryBody::ScalarPipelines(f) => {
            v.scalar(&f.lhs)?;
            v.scalar(&f.rhs)?;
            v.scalar_types(f.op, &f.lhs, &f.rhs, f.span)?;
            Err(Error::unsupported(
                src,
                f.span,
                "comparing scalar pipelines (`({..} | count()) > ({..} | count())`)",
            ))
        }
    }
}

struct Validator<'s> {
    src: &'s str,
}

impl Validator<'_> {
    fn invalid(&self, at: Span, msg: impl Into<String>) -> Error {
        Error::validate(self.src, at, msg)
    }

    fn pipeline(&self, p: &Pipeline) -> R {
        if p.stages.len() > MAX_PIPELINE_STAGES {
            return Err(self.invalid(
                p.span,
                format!(
                    "pipeline too long: {} stages, at most {MAX_PIPELINE_STAGES}",
                    p.stages.len()
                ),
            ));
        }
        p.stages.iter().try_for_each(|s| self.stage(s))
    }

    fn stage(&self, s: &Stage) -> R {
        match s {
            Stage::Spanset(e) => self.spanset(e),
            Stage::ScalarFilter(f) => self.scalar_filter(f),
            Stage::By(e) => {
                if !e.references_span() {
                    return Err(self.invalid(
                        e.span,
                        format!("grouping field expressions must reference the span: by({e})"),
                    ));
                }
                self.field(e)
            }
            Stage::Coalesce => Ok(()),
            Stage::Select(refs, at) => {
                if refs.len() > MAX_SELECT_FIELDS {
                    return Err(self.invalid(
                        *at,
                        format!(
                            "select() has {} fields, at most {MAX_SELECT_FIELDS}",
                            refs.len()
                        ),
                    ));
                }
                refs.iter().try_for_each(|r| self.field_ref(r, *at))
            }
        }
    }

    fn spanset(&self, e: &SpansetExpr) -> R {
        match e {
            SpansetExpr::Filter(f) => self.filter(f),
            SpansetExpr::Op { lhs, rhs, .. } => {
                self.spanset(lhs)?;
                self.spanset(rhs)
            }
            SpansetExpr::Pipeline(p) => self.pipeline(p),
        }
    }

    fn filter(&self, f: &SpansetFilter) -> R {
        let Some(e) = &f.expr else { return Ok(()) };
        self.field(e)?;
        match e.type_of() {
            Type::Boolean | Type::Attribute => Ok(()),
            t => Err(self.invalid(
                e.span,
                format!(
                    "span filter field expressions must resolve to a boolean: {f} is {}",
                    type_name(t)
                ),
            )),
        }
    }

    fn field_ref(&self, r: &FieldRef, at: Span) -> R {
        match r {
            FieldRef::Attribute(a) if a.parent => {
                Err(Error::unsupported(self.src, at, format!("parent ({r})")))
            }
            FieldRef::Intrinsic(Intrinsic::Parent) => {
                Err(Error::unsupported(self.src, at, "intrinsic (parent)"))
            }
            _ => Ok(()),
        }
    }

    fn field(&self, e: &FieldExpr) -> R {
        match &e.kind {
            FieldKind::Static(_) => Ok(()),
            FieldKind::Ref(r) => self.field_ref(r, e.span),
            FieldKind::Unary { op, expr } => {
                self.field(expr)?;
                let t = expr.type_of();
                let ok = match op {
                    _ if t == Type::Attribute => true,
                    UnaryOp::Neg => t.is_numeric(),
                    UnaryOp::Not => t == Type::Boolean,
                    UnaryOp::Exists => true,
                    UnaryOp::NotExists => return self.nil_test(expr, e),
                };
                if ok {
                    Ok(())
                } else {
                    Err(self.invalid(
                        e.span,
                        format!(
                            "illegal operation for the given type: {e} ({} of {})",
                            match op {
                                UnaryOp::Neg => "negation",
                                _ => "logical not",
                            },
                            type_name(t)
                        ),
                    ))
                }
            }
            FieldKind::Binary { op, lhs, rhs } => {
                self.field(lhs)?;
                self.field(rhs)?;
                let (lt, rt) = (lhs.type_of(), rhs.type_of());
                if !lt.matches(rt) {
                    return Err(self.invalid(
                        e.span,
                        format!(
                            "binary operations must operate on the same type: {e} ({} {} {})",
                            type_name(lt),
                            op.symbol(),
                            type_name(rt)
                        ),
                    ));
                }
                if *op == BinaryOp::Eq {
                    // `x = nil` tests that x is missing.
                    match (lt, rt) {
                        (Type::Nil, Type::Nil) => {}
                        (_, Type::Nil) => return self.nil_test(lhs, e),
                        (Type::Nil, _) => return self.nil_test(rhs, e),
                        _ => {}
                    }
                }
                if !(lt.allows(*op) && rt.allows(*op)) {
                    let bad = if lt.allows(*op) { rt } else { lt };
                    return Err(self.invalid(
                        e.span,
                        format!(
                            "illegal operation for the given types: {e} ({} does not apply to {})",
                            op.symbol(),
                            type_name(bad)
                        ),
                    ));
                }
                if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex)
                    && let FieldKind::Static(Static::Str(re)) = &rhs.kind
                    && let Err(err) = regex_syntax::Parser::new().parse(re)
                {
                    let detail = err.to_string();
                    let last = detail.lines().last().unwrap_or("").trim();
                    return Err(self.invalid(rhs.span, format!("invalid regex: {re:?}: {last}")));
                }
                if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex)
                    && let FieldKind::Static(Static::Str(re)) = &rhs.kind
                    && let Err(regex::Error::CompiledTooBig(_)) =
                        regex::RegexBuilder::new(&format!("^(?s:{re})$"))
                            .size_limit(MAX_REGEX_BYTES)
                            .build()
                {
                    return Err(self.invalid(
                        rhs.span,
                        format!(
                            "regex too complex: compiled, it exceeds the limit of {} KiB; \
                             simplify it (fewer repetitions or wildcards)",
                            MAX_REGEX_BYTES >> 10
                        ),
                    ));
                }
                Ok(())
            }
            FieldKind::List { expr, .. } => self.field(expr),
        }
    }

    /// `x = nil`: intrinsics always exist, and so does `resource.service.name`.
    fn nil_test(&self, operand: &FieldExpr, whole: &FieldExpr) -> R {
        match &operand.kind {
            FieldKind::Ref(FieldRef::Intrinsic(i)) => Err(self.invalid(
                whole.span,
                format!(
                    "intrinsics cannot be nil: {whole} (every span has {}); use `!= nil` to test \
                     attributes",
                    i.name()
                ),
            )),
            FieldKind::Ref(FieldRef::Attribute(a))
                if a.scope == Scope::Resource && !a.parent && a.name == "service.name" =>
            {
                Err(self.invalid(
                    whole.span,
                    format!(
                        "resource.service.name cannot be nil: {whole} (every resource has one)"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn aggregate(&self, a: &Aggregate) -> R {
        let Some(e) = &a.expr else { return Ok(()) };
        self.field(e)?;
        let t = e.type_of();
        if t != Type::Attribute && !t.is_numeric() {
            return Err(self.invalid(
                a.span,
                format!(
                    "aggregate field expressions must resolve to a number type: {a} is {}",
                    type_name(t)
                ),
            ));
        }
        if !e.references_span() {
            return Err(self.invalid(
                a.span,
                format!("aggregate field expressions must reference the span: {a}"),
            ));
        }
        Ok(())
    }

    fn scalar(&self, s: &ScalarExpr) -> R {
        match s {
            ScalarExpr::Static(..) => Ok(()),
            ScalarExpr::Aggregate(a) => self.aggregate(a),
            ScalarExpr::Pipeline(p, a) => {
                self.pipeline(p)?;
                self.aggregate(a)
            }
            ScalarExpr::Binary { op, lhs, rhs } => {
                self.scalar(lhs)?;
                self.scalar(rhs)?;
                self.scalar_types(*op, lhs, rhs, s.span())
            }
        }
    }

    fn scalar_types(&self, op: BinaryOp, lhs: &ScalarExpr, rhs: &ScalarExpr, at: Span) -> R {
        let (lt, rt) = (lhs.type_of(), rhs.type_of());
        if !lt.matches(rt) {
            return Err(self.invalid(
                at,
                format!(
                    "binary operations must operate on the same type: {} {} {}",
                    type_name(lt),
                    op.symbol(),
                    type_name(rt)
                ),
            ));
        }
        if !(lt.allows(op) && rt.allows(op)) {
            return Err(self.invalid(
                at,
                format!("illegal operation for the given types: {}", op.symbol()),
            ));
        }
        Ok(())
    }

    fn scalar_filter(&self, f: &ScalarFilter) -> R {
        self.scalar(&f.lhs)?;
        self.scalar(&f.rhs)?;
        self.scalar_types(f.op, &f.lhs, &f.rhs, f.span)?;
        if !matches!(f.lhs, ScalarExpr::Aggregate(_)) {
            return Err(Error::unsupported(
                self.src,
                f.lhs.span(),
                format!(
                    "scalar filter with `{}` on the left (only a single aggregate compared with \
                     a number is)",
                    f.lhs
                ),
            ));
        }
        if !f.rhs.is_constant() {
            return Err(Error::unsupported(
                self.src,
                f.rhs.span(),
                format!(
                    "scalar filter with `{}` on the right (only a number or duration is)",
                    f.rhs
                ),
            ));
        }
        Ok(())
    }

    fn metrics(&self, m: &MetricsExpr) -> R {
        match m {
            MetricsExpr::Query(q) => self.metrics_query(q),
            MetricsExpr::Number(_) => Ok(()),
            MetricsExpr::Binary { lhs, rhs, .. } => {
                for side in [lhs, rhs] {
                    if let Some(span) = compare_in(side) {
                        return Err(self.invalid(span, "compare() cannot be used in arithmetic"));
                    }
                    self.metrics(side)?;
                }
                Ok(())
            }
            MetricsExpr::Staged { expr, stages } => {
                self.metrics(expr)?;
                stages.iter().try_for_each(|s| self.second_stage(s))
            }
        }
    }

    fn metrics_query(&self, q: &MetricsQuery) -> R {
        self.pipeline(&q.pipeline)?;
        let name = q.function.name();
        let by = q.by.len();
        let reserve_bucket = matches!(
            q.function,
            MetricsFn::QuantileOverTime(..) | MetricsFn::HistogramOverTime(_)
        );
        if by > MAX_GROUP_BYS || (reserve_bucket && by >= MAX_GROUP_BYS) {
            return Err(Error::unsupported(
                self.src,
                q.span,
                format!(
                    "metrics group by {by} values (at most {} for {name})",
                    if reserve_bucket {
                        MAX_GROUP_BYS - 1
                    } else {
                        MAX_GROUP_BYS
                    }
                ),
            ));
        }
        for r in &q.by {
            self.field_ref(r, q.span)?;
        }
        match &q.function {
            MetricsFn::Rate | MetricsFn::CountOverTime => {}
            MetricsFn::MinOverTime(r)
            | MetricsFn::MaxOverTime(r)
            | MetricsFn::SumOverTime(r)
            | MetricsFn::AvgOverTime(r)
            | MetricsFn::HistogramOverTime(r)
            | MetricsFn::QuantileOverTime(r, _) => {
                self.field_ref(r, q.span)?;
                let t = r.type_of();
                if t != Type::Attribute && !t.is_numeric() {
                    return Err(self.invalid(
                        q.span,
                        format!("{name}() needs a number, but {r} is {}", type_name(t)),
                    ));
                }
                if let MetricsFn::QuantileOverTime(_, qs) = &q.function
                    && let Some(bad) = qs.iter().find(|q| !(0.0..=1.0).contains(*q))
                {
                    return Err(
                        self.invalid(q.span, format!("quantile must be between 0 and 1: {bad}"))
                    );
                }
            }
            MetricsFn::Compare {
                filter,
                top_n,
                window,
            } => {
                self.filter(filter)?;
                if !(1..=MAX_COMPARE_TOP_N).contains(top_n) {
                    return Err(self.invalid(
                        q.span,
                        format!(
                            "compare() topN must be between 1 and {MAX_COMPARE_TOP_N}: {top_n}"
                        ),
                    ));
                }
                if let Some((start, end)) = window
                    && start > end
                {
                    return Err(self.invalid(
                        q.span,
                        format!("compare() window starts after it ends: {start} > {end}"),
                    ));
                }
                if !q.stages.is_empty() {
                    return Err(self.invalid(
                        q.span,
                        "compare() cannot be followed by topk(), bottomk() or a filter",
                    ));
                }
            }
        }
        q.stages.iter().try_for_each(|s| self.second_stage(s))
    }

    fn second_stage(&self, s: &SecondStage) -> R {
        match s {
            SecondStage::TopK(k, at) | SecondStage::BottomK(k, at) if *k <= 0 => {
                let f = if matches!(s, SecondStage::TopK(..)) {
                    "topk"
                } else {
                    "bottomk"
                };
                Err(self.invalid(*at, format!("{f}({k}): k must be greater than 0")))
            }
            _ => Ok(()),
        }
    }
}

/// Where a `compare()` sits inside metrics arithmetic, if anywhere.
fn compare_in(m: &MetricsExpr) -> Option<Span> {
    match m {
        MetricsExpr::Query(q) => matches!(q.function, MetricsFn::Compare { .. }).then_some(q.span),
        MetricsExpr::Number(_) => None,
        MetricsExpr::Binary { lhs, rhs, .. } => compare_in(lhs).or_else(|| compare_in(rhs)),
        MetricsExpr::Staged { expr, .. } => compare_in(expr),
    }
}

/// A type as users read it.
pub fn type_name(t: Type) -> &'static str {
    match t {
        Type::Nil => "nil",
        Type::Attribute => "an attribute",
        Type::Boolean => "a boolean",
        Type::Int => "an integer",
        Type::Float => "a float",
        Type::String => "a string",
        Type::Duration => "a duration",
        Type::Status => "a status",
        Type::Kind => "a kind",
    }
}
