//! The typed TraceQL syntax tree.
//!
//! The tree is what the user wrote, with Tempo's precedence applied: no constant folding and no
//! rewrites (those are [`crate::rewrite`]). Source positions ride along in [`Span`]s for error
//! messages but are not part of a node's identity, so `parse(print(ast)) == ast`.

use std::fmt;

/// A byte range in the query text. Two spans always compare equal: positions are diagnostics,
/// not meaning.
#[derive(Clone, Copy, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The span from `start` to `end`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

impl PartialEq for Span {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

/// A whole query: spans, a metrics query, or a scalar-pipeline comparison; then hints.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// What the query computes.
    pub body: QueryBody,
    /// `with(name=value, ...)`.
    pub hints: Vec<Hint>,
}

/// The three root forms.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryBody {
    /// A spanset pipeline (search).
    Spans(Pipeline),
    /// Metrics: one metrics pipeline or arithmetic over several.
    Metrics(MetricsExpr),
    /// `({..} | count()) > ({..} | count())`: Tempo parses it and reports it unsupported.
    ScalarPipelines(ScalarFilter),
}

/// Stages separated by `|`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// At least one stage.
    pub stages: Vec<Stage>,
    /// Where it was written.
    pub span: Span,
}

/// One pipeline stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `{...}`, or spanset operators over filters and parenthesised pipelines.
    Spanset(SpansetExpr),
    /// `count() > 2`.
    ScalarFilter(ScalarFilter),
    /// `by(expr)`.
    By(FieldExpr),
    /// `coalesce()`.
    Coalesce,
    /// `select(attr, ...)`.
    Select(Vec<FieldRef>, Span),
}

/// Spanset expressions: filters combined by the 17 spanset operators.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ expr }`; `{}` has no expression.
    Filter(SpansetFilter),
    /// `lhs OP rhs`.
    Op {
        /// The operator.
        op: SpansetOp,
        /// Left operand.
        lhs: Box<SpansetExpr>,
        /// Right operand.
        rhs: Box<SpansetExpr>,
    },
    /// A parenthesised pipeline of more than one stage, as an operand: `({..} | count() > 1)`.
    Pipeline(Box<Pipeline>),
}

/// `{ expr }`.
#[derive(Debug, Clone, PartialEq)]
pub struct SpansetFilter {
    /// `None` for `{}` (matches every span).
    pub expr: Option<FieldExpr>,
    /// Where it was written.
    pub span: Span,
}

/// The spanset operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum SpansetOp {
    And,
    Union,
    Child,
    Parent,
    Descendant,
    Ancestor,
    Sibling,
    NotChild,
    NotParent,
    NotDescendant,
    NotAncestor,
    NotSibling,
    UnionChild,
    UnionParent,
    UnionDescendant,
    UnionAncestor,
    UnionSibling,
}

impl SpansetOp {
    /// Every operator, for generators and tests.
    pub const ALL: [SpansetOp; 17] = [
        SpansetOp::And,
        SpansetOp::Union,
        SpansetOp::Child,
        SpansetOp::Parent,
        SpansetOp::Descendant,
        SpansetOp::Ancestor,
        SpansetOp::Sibling,
        SpansetOp::NotChild,
        SpansetOp::NotParent,
        SpansetOp::NotDescendant,
        SpansetOp::NotAncestor,
        SpansetOp::NotSibling,
        SpansetOp::UnionChild,
        SpansetOp::UnionParent,
        SpansetOp::UnionDescendant,
        SpansetOp::UnionAncestor,
        SpansetOp::UnionSibling,
    ];

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            SpansetOp::And => "&&",
            SpansetOp::Union => "||",
            SpansetOp::Child => ">",
            SpansetOp::Parent => "<",
            SpansetOp::Descendant => ">>",
            SpansetOp::Ancestor => "<<",
            SpansetOp::Sibling => "~",
            SpansetOp::NotChild => "!>",
            SpansetOp::NotParent => "!<",
            SpansetOp::NotDescendant => "!>>",
            SpansetOp::NotAncestor => "!<<",
            SpansetOp::NotSibling => "!~",
            SpansetOp::UnionChild => "&>",
            SpansetOp::UnionParent => "&<",
            SpansetOp::UnionDescendant => "&>>",
            SpansetOp::UnionAncestor => "&<<",
            SpansetOp::UnionSibling => "&~",
        }
    }
}

/// `lhs OP rhs` where at least one side aggregates: `count() > 2`, `avg(duration) < 1s`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarFilter {
    /// The comparison.
    pub op: BinaryOp,
    /// Left side.
    pub lhs: ScalarExpr,
    /// Right side.
    pub rhs: ScalarExpr,
    /// Where it was written.
    pub span: Span,
}

/// Arithmetic over aggregates and numbers (and, at the root, over scalar pipelines).
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarExpr {
    /// A number or duration.
    Static(Static, Span),
    /// `count()`, `avg(expr)`, ...
    Aggregate(Aggregate),
    /// `lhs OP rhs` with `+ - * / % ^`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<ScalarExpr>,
        /// Right operand.
        rhs: Box<ScalarExpr>,
    },
    /// `({..} | count())`: only in scalar-pipeline comparisons.
    Pipeline(Box<Pipeline>, Aggregate),
}

/// A pipeline aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Which.
    pub op: AggregateOp,
    /// The aggregated expression; `None` for `count()`.
    pub expr: Option<FieldExpr>,
    /// Where it was written.
    pub span: Span,
}

/// Pipeline aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum AggregateOp {
    Count,
    Avg,
    Max,
    Min,
    Sum,
}

impl AggregateOp {
    /// The function name.
    pub fn name(self) -> &'static str {
        match self {
            AggregateOp::Count => "count",
            AggregateOp::Avg => "avg",
            AggregateOp::Max => "max",
            AggregateOp::Min => "min",
            AggregateOp::Sum => "sum",
        }
    }
}

/// An expression inside `{ }`, `by()` or an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldExpr {
    /// What it is.
    pub kind: FieldKind,
    /// Where it was written.
    pub span: Span,
}

/// The shapes of field expressions.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldKind {
    /// A literal.
    Static(Static),
    /// An intrinsic or attribute.
    Ref(FieldRef),
    /// `lhs OP rhs`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<FieldExpr>,
        /// Right operand.
        rhs: Box<FieldExpr>,
    },
    /// `-x`, `!x`, and (after rewriting) existence tests.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        expr: Box<FieldExpr>,
    },
    /// Produced by the `or_to_in` rewrites only: `.a IN [..]`, `NOT IN`, `MATCH ANY`,
    /// `MATCH NONE`. Not part of the written language.
    List {
        /// Which list test.
        op: ListOp,
        /// The tested expression (an attribute or intrinsic).
        expr: Box<FieldExpr>,
        /// The literals, all of one type.
        values: Vec<Static>,
    },
}

/// Binary operators of field and scalar expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum BinaryOp {
    And,
    Or,
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Regex,
    NotRegex,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl BinaryOp {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
            BinaryOp::Eq => "=",
            BinaryOp::Neq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Lte => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Gte => ">=",
            BinaryOp::Regex => "=~",
            BinaryOp::NotRegex => "!~",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
        }
    }

    /// Comparisons and logical operators produce booleans.
    pub fn is_boolean(self) -> bool {
        !self.is_arithmetic()
    }

    /// `+ - * / % ^`.
    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Mod
                | BinaryOp::Pow
        )
    }
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`.
    Neg,
    /// `!x`.
    Not,
    /// `x != nil`, after rewriting.
    Exists,
    /// `x = nil`, after rewriting.
    NotExists,
}

/// List tests produced by the `or_to_in` rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListOp {
    /// `a = x || a = y`.
    In,
    /// `a != x && a != y`.
    NotIn,
    /// `a =~ x || a =~ y`.
    MatchAny,
    /// `a !~ x && a !~ y`.
    MatchNone,
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    /// `nil`.
    Nil,
    /// `true`, `false`.
    Bool(bool),
    /// An integer, `minInt`, `maxInt`.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (quoted or back-ticked).
    Str(String),
    /// A duration, in nanoseconds.
    Duration(i64),
    /// `ok`, `error`, `unset`.
    Status(Status),
    /// `server`, `client`, ...
    Kind(Kind),
}

/// Span status with TraceQL's numbering (not OTLP's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Status {
    Error = 0,
    Ok = 1,
    Unset = 2,
}

/// Span kind with TraceQL's numbering (not OTLP's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Kind {
    Unspecified = 0,
    Internal = 1,
    Client = 2,
    Server = 3,
    Producer = 4,
    Consumer = 5,
}

/// An intrinsic or an attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldRef {
    /// `duration`, `span:id`, ...
    Intrinsic(Intrinsic),
    /// `.a`, `span.a`, `parent.resource.a`, ...
    Attribute(Attribute),
}

/// A named attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribute {
    /// `span.`, `resource.`, ... or none for `.a`.
    pub scope: Scope,
    /// Written under `parent.`.
    pub parent: bool,
    /// The name, unquoted.
    pub name: String,
}

/// Attribute scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Scope {
    /// Unscoped `.a`: span, then resource, then the others.
    None,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
}

impl Scope {
    /// The prefix without its dot (`""` for none).
    pub fn name(self) -> &'static str {
        match self {
            Scope::None => "",
            Scope::Span => "span",
            Scope::Resource => "resource",
            Scope::Event => "event",
            Scope::Link => "link",
            Scope::Instrumentation => "instrumentation",
        }
    }
}

/// Intrinsics. Scoped spellings (`span:name`) are the same intrinsic as the bare ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Intrinsic {
    Duration,
    Name,
    Status,
    StatusMessage,
    Kind,
    ChildCount,
    Parent,
    TraceDuration,
    TraceRootName,
    TraceRootService,
    TraceId,
    SpanId,
    ParentId,
    EventName,
    EventTimeSinceStart,
    LinkTraceId,
    LinkSpanId,
    InstrumentationName,
    InstrumentationVersion,
    NestedSetLeft,
    NestedSetRight,
    NestedSetParent,
}

impl Intrinsic {
    /// Every intrinsic, for the tags API and generators.
    pub const ALL: [Intrinsic; 22] = [
        Intrinsic::Duration,
        Intrinsic::Name,
        Intrinsic::Status,
        Intrinsic::StatusMessage,
        Intrinsic::Kind,
        Intrinsic::ChildCount,
        Intrinsic::Parent,
        Intrinsic::TraceDuration,
        Intrinsic::TraceRootName,
        Intrinsic::TraceRootService,
        Intrinsic::TraceId,
        Intrinsic::SpanId,
        Intrinsic::ParentId,
        Intrinsic::EventName,
        Intrinsic::EventTimeSinceStart,
        Intrinsic::LinkTraceId,
        Intrinsic::LinkSpanId,
        Intrinsic::InstrumentationName,
        Intrinsic::InstrumentationVersion,
        Intrinsic::NestedSetLeft,
        Intrinsic::NestedSetRight,
        Intrinsic::NestedSetParent,
    ];

    /// Tempo's canonical name (used for printing, labels and tag names).
    pub fn name(self) -> &'static str {
        match self {
            Intrinsic::Duration => "duration",
            Intrinsic::Name => "name",
            Intrinsic::Status => "status",
            Intrinsic::StatusMessage => "statusMessage",
            Intrinsic::Kind => "kind",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::Parent => "parent",
            Intrinsic::TraceDuration => "traceDuration",
            Intrinsic::TraceRootName => "rootName",
            Intrinsic::TraceRootService => "rootServiceName",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
            Intrinsic::NestedSetLeft => "nestedSetLeft",
            Intrinsic::NestedSetRight => "nestedSetRight",
            Intrinsic::NestedSetParent => "nestedSetParent",
        }
    }

    /// Every spelling the grammar accepts, bare and scoped, with the intrinsic it names.
    pub const SPELLINGS: [(&'static str, Intrinsic); 30] = [
        ("duration", Intrinsic::Duration),
        ("span:duration", Intrinsic::Duration),
        ("name", Intrinsic::Name),
        ("span:name", Intrinsic::Name),
        ("status", Intrinsic::Status),
        ("span:status", Intrinsic::Status),
        ("statusMessage", Intrinsic::StatusMessage),
        ("span:statusMessage", Intrinsic::StatusMessage),
        ("kind", Intrinsic::Kind),
        ("span:kind", Intrinsic::Kind),
        ("span:childCount", Intrinsic::ChildCount),
        ("parent", Intrinsic::Parent),
        ("traceDuration", Intrinsic::TraceDuration),
        ("trace:duration", Intrinsic::TraceDuration),
        ("rootName", Intrinsic::TraceRootName),
        ("trace:rootName", Intrinsic::TraceRootName),
        ("rootServiceName", Intrinsic::TraceRootService),
        ("trace:rootService", Intrinsic::TraceRootService),
        ("trace:id", Intrinsic::TraceId),
        ("span:id", Intrinsic::SpanId),
        ("span:parentID", Intrinsic::ParentId),
        ("event:name", Intrinsic::EventName),
        ("event:timeSinceStart", Intrinsic::EventTimeSinceStart),
        ("link:traceID", Intrinsic::LinkTraceId),
        ("link:spanID", Intrinsic::LinkSpanId),
        ("instrumentation:name", Intrinsic::InstrumentationName),
        ("instrumentation:version", Intrinsic::InstrumentationVersion),
        ("nestedSetLeft", Intrinsic::NestedSetLeft),
        ("nestedSetRight", Intrinsic::NestedSetRight),
        ("nestedSetParent", Intrinsic::NestedSetParent),
    ];

    /// The intrinsic spelled `text` (bare or scoped), if any.
    pub fn from_name(text: &str) -> Option<Intrinsic> {
        Self::SPELLINGS
            .iter()
            .find(|(s, _)| *s == text)
            .map(|(_, i)| *i)
    }
}

/// A metrics query, or arithmetic over metrics queries and numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsExpr {
    /// `pipeline | fn() by (...) second-stage...`.
    Query(Box<MetricsQuery>),
    /// A number in metrics arithmetic (an integer or a float: `1 / 2` is integer division).
    Number(Static),
    /// `lhs OP rhs` with `+ - * /`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<MetricsExpr>,
        /// Right operand.
        rhs: Box<MetricsExpr>,
    },
    /// A second stage applied to arithmetic: `(q) + (q) | topk(5)`.
    Staged {
        /// The arithmetic.
        expr: Box<MetricsExpr>,
        /// Stages, applied left to right.
        stages: Vec<SecondStage>,
    },
}

/// `pipeline | function by (...) | second stage...`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsQuery {
    /// The spans to aggregate.
    pub pipeline: Pipeline,
    /// The first-stage function.
    pub function: MetricsFn,
    /// `by (a, b)`.
    pub by: Vec<FieldRef>,
    /// Second stages, applied left to right.
    pub stages: Vec<SecondStage>,
    /// Where the function was written.
    pub span: Span,
}

/// First-stage metrics functions.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFn {
    /// `rate()`.
    Rate,
    /// `count_over_time()`.
    CountOverTime,
    /// `min_over_time(attr)`.
    MinOverTime(FieldRef),
    /// `max_over_time(attr)`.
    MaxOverTime(FieldRef),
    /// `sum_over_time(attr)`.
    SumOverTime(FieldRef),
    /// `avg_over_time(attr)`.
    AvgOverTime(FieldRef),
    /// `quantile_over_time(attr, q...)`.
    QuantileOverTime(FieldRef, Vec<f64>),
    /// `histogram_over_time(attr)`.
    HistogramOverTime(FieldRef),
    /// `compare({filter}, topN, start, end)`.
    Compare {
        /// The selection compared with the baseline.
        filter: SpansetFilter,
        /// Values per attribute (default 10).
        top_n: i64,
        /// Optional selection window `(start, end)` in Unix nanoseconds.
        window: Option<(i64, i64)>,
    },
}

impl MetricsFn {
    /// The function name.
    pub fn name(&self) -> &'static str {
        match self {
            MetricsFn::Rate => "rate",
            MetricsFn::CountOverTime => "count_over_time",
            MetricsFn::MinOverTime(_) => "min_over_time",
            MetricsFn::MaxOverTime(_) => "max_over_time",
            MetricsFn::SumOverTime(_) => "sum_over_time",
            MetricsFn::AvgOverTime(_) => "avg_over_time",
            MetricsFn::QuantileOverTime(..) => "quantile_over_time",
            MetricsFn::HistogramOverTime(_) => "histogram_over_time",
            MetricsFn::Compare { .. } => "compare",
        }
    }
}

/// Second-stage metrics operations.
#[derive(Debug, Clone, PartialEq)]
pub enum SecondStage {
    /// `topk(n)`.
    TopK(i64, Span),
    /// `bottomk(n)`.
    BottomK(i64, Span),
    /// `> 10`: keeps series with a sample satisfying the comparison (durations in seconds).
    Filter(BinaryOp, f64),
}

/// `name = value` inside `with(...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    /// The hint name; unknown names are kept and ignored.
    pub name: String,
    /// Its value.
    pub value: Static,
}

impl Query {
    /// The hint called `name`, if given.
    pub fn hint(&self, name: &str) -> Option<&Static> {
        self.hints.iter().find(|h| h.name == name).map(|h| &h.value)
    }
}
