//! The per-trace part of a TraceQL search, as the planner hands it to [`super::TraceqlSpansets`].
//!
//! The planner turns every spanset filter `{ ... }` into a boolean column (a *leaf*) computed
//! by DataFusion next to the scan; what is left — how leaves combine per trace — is this small
//! program. It travels as JSON in a literal argument, so plans stay serialisable and the UDAF is
//! found by name.

use serde::{Deserialize, Serialize};

use super::key::{KeyType, encode};

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

impl Program {
    /// Leaf masks every trace the program can find something in meets: for each mask, some
    /// span of the trace matches one of its leaves. A search skips a trace failing one without
    /// evaluating it (in `{ a } ~ { b }` over traces holding only `a` spans, most traces).
    pub fn required_leaves(&self) -> Vec<u64> {
        self.pipeline.required()
    }
}

impl Pipeline {
    fn required(&self) -> Vec<u64> {
        // Every stage after the first only narrows what it is given.
        self.stages
            .iter()
            .flat_map(|s| match s {
                Stage::Spanset(e) => e.required(),
                _ => Vec::new(),
            })
            .collect()
    }
}

impl SetExpr {
    fn required(&self) -> Vec<u64> {
        match self {
            SetExpr::Leaf(i) => (*i < 64).then(|| 1u64 << i).into_iter().collect(),
            SetExpr::Pipeline(p) => p.required(),
            SetExpr::Op { op, lhs, rhs } => match op {
                // Either side may be what is found: one of their first needs is met.
                SetOp::Union => match (lhs.required().first(), rhs.required().first()) {
                    (Some(l), Some(r)) => vec![l | r],
                    _ => Vec::new(),
                },
                // The right side's spans that lack a relation: the left may be empty.
                SetOp::NotChild
                | SetOp::NotParent
                | SetOp::NotDescendant
                | SetOp::NotAncestor
                | SetOp::NotSibling => rhs.required(),
                // Both sides must have found spans.
                _ => {
                    let mut v = lhs.required();
                    v.extend(rhs.required());
                    v
                }
            },
        }
    }
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
    /// A number (infinities and NaN too: constant folding can make them).
    Num(#[serde(with = "any_f64")] f64),
    /// An aggregate over the spanset; `value` is the value argument (none for `count()`).
    Agg {
        /// Which aggregate.
        op: AggOp,
        /// Value argument index.
        value: Option<usize>,
        /// How the spanset's attributes show it (Tempo names it as written: `avg(duration)`).
        shown: AggShown,
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

/// An aggregate as a spanset attribute: its name and the type Tempo gives its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggShown {
    /// The aggregate as written canonically (`count()`, `max(span.http.status_code)`).
    pub label: String,
    /// The value's type.
    pub ty: AggType,
    /// For `min`, `max` and `sum` of an attribute: the key index holding the argument typed
    /// (`i:…`, `f:…`), so the aggregate shows the spans' own type, as Tempo's does (a float
    /// attribute's whole maximum is still a float).
    #[serde(default)]
    pub typed: Option<usize>,
}

impl AggShown {
    /// The value of aggregate `op` as a spanset attribute key (`i:3`, `f:2.5`, `d:<ns>`):
    /// Tempo averages durations with integer division and numbers into a float. `float` is
    /// whether an attribute's aggregate is a float (see [`AggShown::typed`]); unknown, it is
    /// a float only when not whole.
    pub fn key(&self, op: AggOp, value: f64, float: Option<bool>) -> String {
        let whole = value.fract() == 0.0 && value.abs() < 9.0e15;
        match (self.ty, op) {
            (AggType::Duration, _) => encode(KeyType::Duration, value.trunc() as i64),
            (_, AggOp::Avg) | (AggType::Float, _) => encode(KeyType::Float, value),
            (AggType::Attribute, _) if float.unwrap_or(!whole) => encode(KeyType::Float, value),
            _ => encode(KeyType::Int, value as i64),
        }
    }
}

/// The type of an aggregate's value (Tempo's: `count()` an int, a duration's aggregates
/// durations, `avg` of numbers a float, `min`/`max`/`sum` their argument's type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AggType {
    /// An integer (`count()`, an int intrinsic).
    Int,
    /// A float.
    Float,
    /// A duration in nanoseconds.
    Duration,
    /// An attribute, typed at run time: an int when every value is whole, else a float.
    Attribute,
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

/// An `f64` in JSON, which has no infinities or NaN: those as the strings `inf`, `-inf` and
/// `NaN` (serde_json would write `null` and fail to read it back).
mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `v`: a number when finite, else its name.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&v.to_string())
        }
    }

    /// Reads a number, or the name of a non-finite one.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Num {
            Finite(f64),
            Named(String),
        }
        match Num::deserialize(d)? {
            Num::Finite(v) => Ok(v),
            Num::Named(n) => n
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("not a number: {n}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: SetOp, l: SetExpr, r: SetExpr) -> SetExpr {
        SetExpr::Op {
            op,
            lhs: Box::new(l),
            rhs: Box::new(r),
        }
    }

    fn program(e: SetExpr) -> Program {
        Program {
            pipeline: Pipeline {
                stages: vec![Stage::Spanset(e)],
            },
            leaves: 4,
            values: 0,
            keys: 0,
        }
    }

    #[test]
    fn numbers_folded_to_infinity_or_nan_survive_the_json_the_program_travels_in() {
        // `-810032659331381601 ^ 51` folds to -inf; serde_json alone writes it as `null`.
        for n in [f64::NEG_INFINITY, f64::INFINITY, f64::NAN, -0.5, 1e300] {
            let json = serde_json::to_string(&Scalar::Num(n)).unwrap();
            let back: Scalar = serde_json::from_str(&json).unwrap();
            let Scalar::Num(m) = back else {
                panic!("{json} read back as {back:?}")
            };
            assert!(m == n || (m.is_nan() && n.is_nan()), "{json}: {m}");
        }
    }

    #[test]
    fn required_leaves_follow_what_each_operator_needs_to_find_anything() {
        use SetExpr::Leaf;
        // { a } ~ { b }: both; { a } !~ { b }: b alone; { a } || { b }: either.
        let both = program(op(SetOp::Sibling, Leaf(0), Leaf(1)));
        assert_eq!(both.required_leaves(), vec![0b01, 0b10]);
        let negated = program(op(SetOp::NotSibling, Leaf(0), Leaf(1)));
        assert_eq!(negated.required_leaves(), vec![0b10]);
        let either = program(op(SetOp::Union, Leaf(0), Leaf(1)));
        assert_eq!(either.required_leaves(), vec![0b11]);
        // ({ a } >> { b }) || { c }: a span of a or c; (({ a } || { b }) && { c }): (a or b), c.
        let mixed = program(op(
            SetOp::Union,
            op(SetOp::Descendant, Leaf(0), Leaf(1)),
            Leaf(2),
        ));
        assert_eq!(mixed.required_leaves(), vec![0b101]);
        let and = program(op(SetOp::And, op(SetOp::Union, Leaf(0), Leaf(1)), Leaf(2)));
        assert_eq!(and.required_leaves(), vec![0b011, 0b100]);
        // A side with no need makes a union need nothing.
        let open = program(op(
            SetOp::Union,
            Leaf(0),
            SetExpr::Pipeline(Box::new(Pipeline {
                stages: vec![Stage::Coalesce],
            })),
        ));
        assert!(open.required_leaves().is_empty());
    }
}
