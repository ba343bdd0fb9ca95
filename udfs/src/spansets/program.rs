//! The per-trace part of a TraceQL search, as the planner hands it to [`super::TraceqlSpansets`].
//!
//! The planner turns every spanset filter `{ ... }` into a boolean column (a *leaf*) computed
//! by DataFusion next to the scan; what is left — how leaves combine per trace — is this small
//! program. It travels as JSON in a literal argument, so plans stay serialisable and the UDAF is
//! found by name.

use serde::{Deserialize, Serialize};

/// A whole search pipeline and the shape of the UDAF's arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Program {
    /// The stages, applied left to right to the trace's spans.
    pub pipeline: Pipeline,
    /// Number of leaf boolean arguments.
    pub leaves: usize,
    /// Number of Float64 value arguments (aggregate inputs).
    pub values: usize,
    /// Number of Utf8 key arguments (`by()` values, typed by [`key`](crate::spansets::key)).
    pub keys: usize,
}

/// Stages separated by `|`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// At least one.
    pub stages: Vec<Stage>,
}

/// One pipeline stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stage {
    /// A spanset expression, applied to each input spanset.
    Spanset(SetExpr),
    /// `count() > 2`: keeps spansets whose aggregate comparison holds.
    Scalar(ScalarFilter),
    /// `by(expr)`: splits spansets by the value of key argument `key`.
    By {
        /// Key argument index.
        key: usize,
        /// Attribute name added to each spanset, `by(<expr>)`.
        label: String,
    },
    /// `coalesce()`: one spanset per trace.
    Coalesce,
}

/// Spanset expressions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SetExpr {
    /// The spans for which leaf argument `i` is true.
    Leaf(usize),
    /// `lhs OP rhs`.
    Op {
        /// The operator.
        op: SetOp,
        /// Left operand.
        lhs: Box<SetExpr>,
        /// Right operand.
        rhs: Box<SetExpr>,
    },
    /// A parenthesised pipeline as an operand.
    Pipeline(Box<Pipeline>),
}

/// The 17 spanset operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum SetOp {
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

/// `lhs OP rhs` over aggregates of a spanset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalarFilter {
    /// Comparison.
    pub op: Cmp,
    /// Left side.
    pub lhs: Scalar,
    /// Right side.
    pub rhs: Scalar,
}

/// Comparison operators of scalar filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Cmp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl Cmp {
    /// Applies the comparison.
    pub fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Neq => a != b,
            Cmp::Lt => a < b,
            Cmp::Lte => a <= b,
            Cmp::Gt => a > b,
            Cmp::Gte => a >= b,
        }
    }
}

/// Arithmetic over aggregates and numbers (durations in nanoseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    /// A number.
    Num(f64),
    /// An aggregate over the spanset; `value` is the value argument (none for `count()`).
    Agg {
        /// Which aggregate.
        op: AggOp,
        /// Value argument index.
        value: Option<usize>,
    },
    /// `lhs OP rhs`.
    Bin {
        /// The operator.
        op: Arith,
        /// Left operand.
        lhs: Box<Scalar>,
        /// Right operand.
        rhs: Box<Scalar>,
    },
}

/// Pipeline aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum AggOp {
    Count,
    Avg,
    Min,
    Max,
    Sum,
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
}

impl Arith {
    /// Applies the operator (float semantics, as Tempo evaluates aggregates).
    pub fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Arith::Add => a + b,
            Arith::Sub => a - b,
            Arith::Mul => a * b,
            Arith::Div => a / b,
            Arith::Mod => a % b,
            Arith::Pow => a.powf(b),
        }
    }
}
