//! TraceQL field expressions → DataFusion expressions over one span-table schema.
//!
//! TraceQL is dynamically typed: an attribute holds a string on one span and an int on the next.
//! Every value is therefore translated to a [`Typed`]: one DataFusion expression per TraceQL type
//! (null where the span's value has another type), and operators combine the slots that may
//! meet under Tempo's rules (tempo-compat.md §1.10–1.11): mismatched types are false, never an
//! error; int/float/duration compare numerically; strings compare byte-wise; regexes are fully
//! anchored; nil equals nothing. A boolean result may be NULL where TraceQL says false — filters
//! treat both alike, and `!` coalesces first.
//!
//! Attribute lookup depends on the block: a hot attribute is a column of its own, every other one
//! sits in its scope's typed overflow map. Translation is per schema, so each block group gets
//! the cheapest access path and its Parquet statistics can prune.

use std::collections::HashMap;
use std::ops::{Neg, Not};

use allegro_traceql::ast::{
    Attribute, BinaryOp, FieldExpr, FieldKind, Intrinsic, Kind, ListOp, Scope, Static, Status,
    UnaryOp,
};
use allegro_udfs::spansets::key::KeyType;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::{coalesce, get_field, ltrim, power};
use datafusion::functions_nested::expr_fn::{array_distinct, make_array};
use datafusion::logical_expr::{Expr, Operator, binary_expr, cast, col, lit, try_cast};

use crate::error::{EngineError, Result};
use crate::schema::{AttrScope, HotColumn, HotType, col as c};

/// One value per TraceQL type; `None` where the value can never have that type.
#[derive(Debug, Clone, Default)]
pub struct Typed {
    /// Strings.
    pub str: Option<Expr>,
    /// Integers (Int64).
    pub int: Option<Expr>,
    /// Floats (Float64).
    pub float: Option<Expr>,
    /// Booleans.
    pub bool: Option<Expr>,
    /// Durations in nanoseconds (Int64).
    pub dur: Option<Expr>,
    /// Span status in **OTLP** numbering (Int32), so comparisons hit the stored column.
    pub status: Option<Expr>,
    /// Span kind in **OTLP** numbering (Int32).
    pub kind: Option<Expr>,
    /// Arrays, kvlists, bytes (protobuf `AnyValue`): only existence is answered.
    pub other: Option<Expr>,
    /// Values a span holds several of (events, links, array elements): compared with
    /// `traceql_match`, any-semantics.
    pub multi: Vec<Multi>,
}

/// A multi-valued source of a [`Typed`].
#[derive(Debug, Clone)]
pub struct Multi {
    /// The column (events, links, or an `attrs_other` entry).
    pub source: Expr,
    /// `traceql_match`'s kind: `event_attr`, `link_attr`, `event_name`, `array`, ...
    pub kind: &'static str,
    /// Attribute key (empty for intrinsics and arrays).
    pub key: String,
    /// Only where this holds (unscoped lookup: no earlier scope has the key).
    pub guard: Option<Expr>,
}

impl Multi {
    /// Whether its values can be listed one by one (`traceql_values`): an event's or link's
    /// attribute, an event's name, an array's elements.
    pub fn listed(&self) -> bool {
        matches!(
            self.kind,
            "event_attr" | "link_attr" | "event_name" | "array"
        )
    }

    /// Its values as a list of typed keys (`s:IOError`, `i:7`; NULL when it has none).
    pub fn values(&self) -> Expr {
        let udf = datafusion::logical_expr::ScalarUDF::from(
            allegro_udfs::traceql_values::TraceqlValues::default(),
        );
        udf.call(vec![
            self.source.clone(),
            lit(self.kind),
            lit(self.key.as_str()),
        ])
    }

    fn new(source: Expr, kind: &'static str, key: &str) -> Self {
        Self {
            source,
            kind,
            key: key.to_string(),
            guard: None,
        }
    }

    /// `traceql_match(source, kind, key, op, value)`, under the guard.
    pub fn call(&self, op: &str, value: Expr) -> Expr {
        let udf = datafusion::logical_expr::ScalarUDF::from(
            allegro_udfs::traceql_match::TraceqlMatch::default(),
        );
        let m = udf.call(vec![
            self.source.clone(),
            lit(self.kind),
            lit(self.key.clone()),
            lit(op),
            value,
        ]);
        match &self.guard {
            Some(g) => g.clone().and(m),
            None => m,
        }
    }
}

impl Typed {
    /// True when the value can never exist (no slot at all).
    pub fn is_empty(&self) -> bool {
        self.slots().next().is_none() && self.multi.is_empty()
    }

    fn slots(&self) -> impl Iterator<Item = &Expr> {
        [
            &self.str,
            &self.int,
            &self.float,
            &self.bool,
            &self.dur,
            &self.status,
            &self.kind,
            &self.other,
        ]
        .into_iter()
        .flatten()
    }

    /// True where the value is not nil.
    pub fn exists(&self) -> Expr {
        let multi = self
            .multi
            .iter()
            .filter(|m| m.kind != "array")
            .map(|m| m.call("exists", lit(ScalarValue::Null)));
        self.slots()
            .map(|e| e.clone().is_not_null())
            .chain(multi)
            .reduce(Expr::or)
            .unwrap_or(lit(false))
    }

    /// The value as Float64 when numeric (nil otherwise): aggregate inputs.
    pub fn as_float(&self) -> Option<Expr> {
        let parts: Vec<Expr> = [
            self.float.clone(),
            self.int.clone().map(|e| cast(e, DataType::Float64)),
            self.dur.clone().map(|e| cast(e, DataType::Float64)),
        ]
        .into_iter()
        .flatten()
        .collect();
        match parts.len() {
            0 => None,
            1 => parts.into_iter().next(),
            _ => Some(coalesce(parts)),
        }
    }

    fn int_like(&self) -> Vec<Expr> {
        [self.int.clone(), self.dur.clone()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Per type slot present: (is present, the value as text of type `text`, its type), in
    /// lookup order.
    fn key_arms(&self, text: &DataType) -> Vec<(Expr, Expr, KeyType)> {
        let text = |e: &Expr| cast(e.clone(), text.clone());
        [
            (&self.str, KeyType::Str),
            (&self.int, KeyType::Int),
            (&self.float, KeyType::Float),
            (&self.bool, KeyType::Bool),
            (&self.dur, KeyType::Duration),
            (&self.status, KeyType::Status),
            (&self.kind, KeyType::Kind),
        ]
        .into_iter()
        .filter_map(|(slot, t)| {
            let e = slot.as_ref()?;
            let value = match t {
                KeyType::Status => enum_names(e, &STATUS_NAMES, ""),
                KeyType::Kind => enum_names(e, &KIND_NAMES, ""),
                _ => text(e),
            };
            Some((e.clone().is_not_null(), value, t))
        })
        .collect()
    }

    /// Every value of a field a span can hold several of (an event's or link's attribute,
    /// `event:name`, an attribute that may be an array), as a list of distinct typed keys:
    /// the scalar value alone where the span has one, else each listed value; NULL for none.
    /// `None` for a field with one value per span.
    pub fn key_list(&self) -> Option<Expr> {
        let m = self.multi.iter().find(|m| m.listed())?;
        let keys = DataType::List(std::sync::Arc::new(
            datafusion::arrow::datatypes::Field::new("item", DataType::Utf8, true),
        ));
        let none = || lit(ScalarValue::try_from(&keys).unwrap_or(ScalarValue::Null));
        let many = match &m.guard {
            Some(g) => case_when(vec![(g.clone(), m.values())], none()),
            None => m.values(),
        };
        let one = self.as_key();
        let list = case_when(
            vec![(one.clone().is_not_null(), make_array(vec![one]))],
            many,
        );
        Some(array_distinct(list))
    }

    /// The value as type-tagged text (`by()` keys), nil as NULL.
    pub fn as_key(&self) -> Expr {
        let arms = self
            .key_arms(&DataType::Utf8)
            .into_iter()
            .map(|(present, value, t)| {
                (
                    present,
                    binary_expr(lit(t.tag()), Operator::StringConcat, value),
                )
            })
            .collect();
        case_when(arms, lit(ScalarValue::Utf8(None)))
    }

    /// The value as text (`Utf8View`; nil: NULL) and its type's code (`KeyType as u8`):
    /// `by()` keys of metrics group on both, so the tagged text is not built once per span.
    /// Views, because blocks read string columns as views for metrics (no copy per span).
    pub fn key_parts(&self) -> (Expr, Expr) {
        let mut arms = self.key_arms(&DataType::Utf8View);
        if arms.len() == 1 && !matches!(arms[0].2, KeyType::Status | KeyType::Kind) {
            // A plain column: NULL when absent already, and the type is the same for every row.
            let (_, value, t) = arms.remove(0);
            return (value, lit(t as u8));
        }
        let (values, types) = arms
            .into_iter()
            .map(|(present, value, t)| ((present.clone(), value), (present, lit(t as u8))))
            .unzip();
        (
            case_when(values, lit(ScalarValue::Utf8View(None))),
            case_when(types, lit(ScalarValue::UInt8(None))),
        )
    }
}

/// OTLP status codes and their TraceQL names (the first is the fallback).
pub const STATUS_NAMES: [(i32, &str); 3] = [(0, "unset"), (1, "ok"), (2, "error")];
/// OTLP span kinds and their TraceQL names (the first is the fallback).
pub const KIND_NAMES: [(i32, &str); 6] = [
    (0, "unspecified"),
    (1, "internal"),
    (2, "server"),
    (3, "client"),
    (4, "producer"),
    (5, "consumer"),
];

/// The TraceQL name of an OTLP enum value in `names`.
pub fn enum_name(names: &[(i32, &'static str)], v: i32) -> &'static str {
    names
        .iter()
        .find(|(n, _)| *n == v)
        .map_or(names[0].1, |(_, s)| s)
}

/// `CASE e WHEN otlp THEN '<prefix><name>' ... END` for an OTLP enum column.
pub fn enum_names(e: &Expr, names: &[(i32, &str)], prefix: &str) -> Expr {
    let arms = names[1..]
        .iter()
        .map(|(n, s)| (lit(*n), lit(format!("{prefix}{s}"))))
        .collect();
    case_of(e.clone(), arms, lit(format!("{prefix}{}", names[0].1)))
}

/// TraceQL's status numbering → OTLP's (tempo-compat.md §1.8).
pub fn status_to_otlp(s: Status) -> i32 {
    match s {
        Status::Error => 2,
        Status::Ok => 1,
        Status::Unset => 0,
    }
}

/// TraceQL's kind numbering → OTLP's.
pub fn kind_to_otlp(k: Kind) -> i32 {
    match k {
        Kind::Unspecified => 0,
        Kind::Internal => 1,
        Kind::Client => 3,
        Kind::Server => 2,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    }
}

/// Attribute keys present per scope name (`span`, `resource`, `instrumentation`, `event`,
/// `link`) in a group of blocks.
pub type KnownKeys = HashMap<&'static str, std::collections::HashSet<String>>;

/// The scalar types each attribute key holds in a group of blocks.
pub type KnownTypes = HashMap<(AttrScope, String), std::collections::HashSet<HotType>>;

/// Translates expressions for one schema (one set of hot columns).
pub struct Translator<'a> {
    /// Scalar types per key; `None`: unknown, any key may hold any type.
    types: Option<&'a KnownTypes>,
    /// Keys present per scope; `None`: unknown, any may be.
    keys: Option<&'a KnownKeys>,
    hot: HashMap<(AttrScope, &'a str), HotType>,
    /// Keys that may hold arrays here; `None`: any may.
    others: Option<&'a std::collections::HashSet<(AttrScope, String)>>,
}

fn not_supported(what: impl Into<String>) -> EngineError {
    EngineError::NotSupported(what.into())
}

impl<'a> Translator<'a> {
    /// A translator for a table with `hot` columns.
    pub fn new(hot: &'a [HotColumn]) -> Self {
        Self {
            hot: hot
                .iter()
                .map(|h| ((h.scope, h.key.as_str()), h.ty))
                .collect(),
            others: None,
            keys: None,
            types: None,
        }
    }

    /// Keys hold only these scalar types here: lookups leave out the maps of other types.
    pub fn with_types(mut self, types: Option<&'a KnownTypes>) -> Self {
        self.types = types;
        self
    }

    /// Only `keys` exist here: lookups of any other key read nothing (and unscoped lookups
    /// skip the scopes that never have the key).
    pub fn with_keys(mut self, keys: Option<&'a KnownKeys>) -> Self {
        self.keys = keys;
        self
    }

    fn may_have(&self, scope: &str, key: &str) -> bool {
        self.keys
            .is_none_or(|k| k.get(scope).is_some_and(|s| s.contains(key)))
    }

    fn events_or_links(&self, column: &str, kind: &'static str, scope: &str, key: &str) -> Typed {
        if self.may_have(scope, key) {
            nested(column, kind, key)
        } else {
            Typed::default()
        }
    }

    /// Only `others` may hold arrays (so comparisons on every other key keep a plain,
    /// prunable form).
    pub fn with_others(
        mut self,
        others: Option<&'a std::collections::HashSet<(AttrScope, String)>>,
    ) -> Self {
        self.others = others;
        self
    }

    /// A boolean condition; NULL means false.
    pub fn condition(&self, e: &FieldExpr) -> Result<Expr> {
        match &e.kind {
            FieldKind::Static(Static::Bool(b)) => Ok(lit(*b)),
            FieldKind::Binary { op, lhs, rhs } => match op {
                BinaryOp::And => Ok(self.condition(lhs)?.and(self.condition(rhs)?)),
                BinaryOp::Or => Ok(self.condition(lhs)?.or(self.condition(rhs)?)),
                op if op.is_arithmetic() => self.truthy(e),
                op => Ok(compare(&self.value(lhs)?, *op, &self.value(rhs)?)),
            },
            FieldKind::Unary { op, expr } => match op {
                UnaryOp::Not => {
                    // TRUE where the operand is false *or* NULL (NULL means false here).
                    let x = self.condition(expr)?;
                    Ok(case_when(
                        vec![(x, lit(ScalarValue::Boolean(None)))],
                        lit(true),
                    ))
                }
                UnaryOp::Exists => Ok(self.value(expr)?.exists()),
                UnaryOp::NotExists => Ok(self.value(expr)?.exists().not()),
                UnaryOp::Neg => self.truthy(e),
            },
            FieldKind::List { op, expr, values } => {
                let v = self.value(expr)?;
                let (bop, any) = match op {
                    ListOp::In => (BinaryOp::Eq, true),
                    ListOp::NotIn => (BinaryOp::Neq, false),
                    ListOp::MatchAny => (BinaryOp::Regex, true),
                    ListOp::MatchNone => (BinaryOp::NotRegex, false),
                };
                let parts = values
                    .iter()
                    .map(|s| Ok(compare(&v, bop, &static_value(s)?)));
                let parts: Vec<Expr> = parts.collect::<Result<_>>()?;
                Ok(parts
                    .into_iter()
                    .reduce(|a, b| if any { a.or(b) } else { a.and(b) })
                    .unwrap_or(lit(!any)))
            }
            FieldKind::Ref(_) | FieldKind::Static(_) => self.truthy(e),
        }
    }

    fn truthy(&self, e: &FieldExpr) -> Result<Expr> {
        Ok(match self.value(e)?.bool {
            Some(b) => b.eq(lit(true)),
            None => lit(false),
        })
    }

    /// The value of an expression, one slot per type.
    pub fn value(&self, e: &FieldExpr) -> Result<Typed> {
        match &e.kind {
            FieldKind::Static(s) => static_value(s),
            FieldKind::Ref(allegro_traceql::ast::FieldRef::Intrinsic(i)) => intrinsic(*i),
            FieldKind::Ref(allegro_traceql::ast::FieldRef::Attribute(a)) => self.attribute(a),
            FieldKind::Binary { op, lhs, rhs } if op.is_arithmetic() => {
                Ok(arithmetic(&self.value(lhs)?, *op, &self.value(rhs)?))
            }
            FieldKind::Unary {
                op: UnaryOp::Neg,
                expr,
            } => {
                let v = self.value(expr)?;
                Ok(Typed {
                    int: v.int.map(|e| e.neg()),
                    float: v.float.map(|e| e.neg()),
                    dur: v.dur.map(|e| e.neg()),
                    ..Typed::default()
                })
            }
            _ => Ok(Typed {
                bool: Some(self.condition(e)?),
                ..Typed::default()
            }),
        }
    }

    /// An attribute, looked up as Tempo 3.0 does: scoped in its scope; unscoped in the span,
    /// then the resource (the first that has the key wins). Events, links and the
    /// instrumentation scope are never read for an unscoped name: Tempo 3.0 does not (older
    /// block formats did), and Grafana's query builder and saved queries assume it.
    pub fn attribute(&self, a: &Attribute) -> Result<Typed> {
        if a.parent {
            return Err(not_supported(format!("parent attributes ({a})")));
        }
        match a.scope {
            Scope::Span => Ok(self.scoped(AttrScope::Span, &a.name)),
            Scope::Resource => Ok(self.scoped(AttrScope::Resource, &a.name)),
            Scope::Instrumentation => Ok(self.scoped(AttrScope::Instrumentation, &a.name)),
            Scope::Event => Ok(self.events_or_links(c::EVENTS, "event_attr", "event", &a.name)),
            Scope::Link => Ok(self.events_or_links(c::LINKS, "link_attr", "link", &a.name)),
            Scope::None => {
                let order: Vec<Typed> = [
                    self.scoped(AttrScope::Span, &a.name),
                    self.scoped(AttrScope::Resource, &a.name),
                ]
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect();
                Ok(match order.len() {
                    0 => Typed::default(),
                    1 => order.into_iter().next().unwrap_or_default(),
                    _ => first_present(&order),
                })
            }
        }
    }

    pub(crate) fn scoped(&self, scope: AttrScope, key: &str) -> Typed {
        let service = scope == AttrScope::Resource && key == "service.name";
        if !service && !self.may_have(scope.name(), key) {
            return Typed::default();
        }
        let hot = self.hot.get(&(scope, key)).copied();
        let map = |suffix: &str| {
            get_field(
                col(format!("{}attrs_{suffix}", scope.overflow_prefix())),
                key,
            )
        };
        let holds = |t: HotType| {
            self.types.is_none_or(|k| {
                k.get(&(scope, key.to_string()))
                    .is_some_and(|s| s.contains(&t))
            })
        };
        let slot = |t: HotType, suffix: &str| {
            if hot == Some(t) {
                Some(col(datafusion::common::Column::from_name(format!(
                    "{}.{key}",
                    scope.name()
                ))))
            } else {
                holds(t).then(|| map(suffix))
            }
        };
        // The (first) string service.name has a column of its own, with statistics and a
        // dictionary, so conditions on it prune.
        let str = if service {
            Some(col(c::SERVICE_NAME))
        } else {
            slot(HotType::String, "str")
        };
        // Blocks record which keys ever hold arrays, kvlists or bytes; for the rest the
        // `attrs_other` map (a list column, costly to decode for every span) is not read.
        let in_other = self
            .others
            .is_none_or(|o| o.contains(&(scope, key.to_string())));
        Typed {
            str,
            int: slot(HotType::Int, "int"),
            float: slot(HotType::Float, "float"),
            bool: slot(HotType::Bool, "bool"),
            other: in_other.then(|| map("other")),
            multi: if in_other {
                vec![Multi::new(map("other"), "array", key)]
            } else {
                Vec::new()
            },
            ..Typed::default()
        }
    }
}

/// `CASE WHEN arm THEN value ... ELSE otherwise END`.
pub fn case_when(arms: Vec<(Expr, Expr)>, otherwise: Expr) -> Expr {
    if arms.is_empty() {
        return otherwise;
    }
    Expr::Case(datafusion::logical_expr::expr::Case {
        expr: None,
        when_then_expr: arms
            .into_iter()
            .map(|(w, t)| (Box::new(w), Box::new(t)))
            .collect(),
        else_expr: Some(Box::new(otherwise)),
    })
}

/// `CASE base WHEN value THEN result ... ELSE otherwise END`.
fn case_of(base: Expr, arms: Vec<(Expr, Expr)>, otherwise: Expr) -> Expr {
    case_when(
        arms.into_iter()
            .map(|(v, t)| (base.clone().eq(v), t))
            .collect(),
        otherwise,
    )
}

/// An attribute of events or links (or an intrinsic of theirs): multi-valued only.
fn nested(column: &str, kind: &'static str, key: &str) -> Typed {
    Typed {
        multi: vec![Multi::new(col(column), kind, key)],
        ..Typed::default()
    }
}

/// Per slot: the first scope that has the key (any type) supplies the value.
fn first_present(order: &[Typed]) -> Typed {
    let mut multi = Vec::new();
    let mut earlier: Vec<Expr> = Vec::new();
    for t in order {
        let none_before = earlier.iter().cloned().map(Expr::not).reduce(Expr::and);
        for m in &t.multi {
            let guard = match (none_before.clone(), m.guard.clone()) {
                (Some(a), Some(b)) => Some(a.and(b)),
                (a, b) => a.or(b),
            };
            multi.push(Multi { guard, ..m.clone() });
        }
        earlier.push(t.exists());
    }
    let pick = |f: &dyn Fn(&Typed) -> Option<Expr>| -> Option<Expr> {
        let (last, init) = order.split_last()?;
        let arms = init
            .iter()
            .map(|t| (t.exists(), f(t).unwrap_or(lit(ScalarValue::Null))))
            .collect();
        Some(case_when(arms, f(last).unwrap_or(lit(ScalarValue::Null))))
    };
    Typed {
        str: pick(&|t| t.str.clone()),
        int: pick(&|t| t.int.clone()),
        float: pick(&|t| t.float.clone()),
        bool: pick(&|t| t.bool.clone()),
        other: pick(&|t| t.other.clone()),
        multi,
        ..Typed::default()
    }
}

/// A literal's slot.
pub fn static_value(s: &Static) -> Result<Typed> {
    let mut t = Typed::default();
    match s {
        Static::Nil => {}
        Static::Bool(b) => t.bool = Some(lit(*b)),
        Static::Int(i) => t.int = Some(lit(*i)),
        Static::Float(f) => t.float = Some(lit(*f)),
        Static::Str(s) => t.str = Some(lit(s.clone())),
        Static::Duration(d) => t.dur = Some(lit(*d)),
        Static::Status(s) => t.status = Some(lit(status_to_otlp(*s))),
        Static::Kind(k) => t.kind = Some(lit(kind_to_otlp(*k))),
    }
    Ok(t)
}

/// A binary ID column as lowercase hex text.
pub(crate) fn hex(column: &str) -> Expr {
    datafusion::logical_expr::ScalarUDF::from(allegro_udfs::hex_id::HexId::default())
        .call(vec![col(column)])
}

/// A stored duration (UInt64) as TraceQL's Int64. Blocks written before ingest fixed spans
/// ending before they start hold such a span's duration wrapped past `i64::MAX`; it reads as 0,
/// the duration ingest now stores for it, where a plain cast failed the whole query.
pub fn duration(column: &str) -> Expr {
    coalesce(vec![try_cast(col(column), DataType::Int64), lit(0i64)])
}

/// An intrinsic's slot.
pub fn intrinsic(i: Intrinsic) -> Result<Typed> {
    let as_i64 = duration;
    let mut t = Typed::default();
    match i {
        Intrinsic::Duration => t.dur = Some(as_i64(c::DURATION)),
        Intrinsic::Name => t.str = Some(col(c::NAME)),
        Intrinsic::Status => t.status = Some(col(c::STATUS_CODE)),
        Intrinsic::StatusMessage => t.str = Some(col(c::STATUS_MESSAGE)),
        Intrinsic::Kind => t.kind = Some(col(c::KIND)),
        Intrinsic::TraceDuration => t.dur = Some(as_i64(c::TRACE_DURATION)),
        Intrinsic::TraceRootName => t.str = Some(col(c::TRACE_ROOT_NAME)),
        Intrinsic::TraceRootService => t.str = Some(col(c::TRACE_ROOT_SERVICE)),
        // Tempo trims leading zeros of the written ID; compare trimmed with trimmed.
        Intrinsic::TraceId => t.str = Some(ltrim(vec![hex(c::TRACE_ID), lit("0")])),
        Intrinsic::SpanId => t.str = Some(hex(c::SPAN_ID)),
        Intrinsic::ParentId => t.str = Some(hex(c::PARENT_SPAN_ID)),
        Intrinsic::InstrumentationName => t.str = Some(col(c::SCOPE_NAME)),
        Intrinsic::InstrumentationVersion => t.str = Some(col(c::SCOPE_VERSION)),
        Intrinsic::NestedSetLeft => t.int = Some(as_i64(c::NESTED_SET_LEFT)),
        Intrinsic::NestedSetRight => t.int = Some(as_i64(c::NESTED_SET_RIGHT)),
        Intrinsic::NestedSetParent => t.int = Some(as_i64(c::NESTED_SET_PARENT)),
        Intrinsic::EventName => return Ok(nested(c::EVENTS, "event_name", "")),
        Intrinsic::EventTimeSinceStart => return Ok(nested(c::EVENTS, "event_time", "")),
        Intrinsic::LinkTraceId => return Ok(nested(c::LINKS, "link_trace_id", "")),
        Intrinsic::LinkSpanId => return Ok(nested(c::LINKS, "link_span_id", "")),
        Intrinsic::ChildCount | Intrinsic::Parent => {
            return Err(not_supported(format!(
                "the intrinsic {} in conditions",
                i.name()
            )));
        }
    }
    Ok(t)
}

fn sql_op(op: BinaryOp) -> Option<Operator> {
    Some(match op {
        BinaryOp::Eq => Operator::Eq,
        BinaryOp::Neq => Operator::NotEq,
        BinaryOp::Lt => Operator::Lt,
        BinaryOp::Lte => Operator::LtEq,
        BinaryOp::Gt => Operator::Gt,
        BinaryOp::Gte => Operator::GtEq,
        BinaryOp::Add => Operator::Plus,
        BinaryOp::Sub => Operator::Minus,
        BinaryOp::Mul => Operator::Multiply,
        BinaryOp::Div => Operator::Divide,
        BinaryOp::Mod => Operator::Modulo,
        _ => return None,
    })
}

/// The value of a literal operand (one populated slot holding a literal), for `traceql_match`.
fn literal_of(t: &Typed) -> Option<Expr> {
    if !t.multi.is_empty() || t.status.is_some() || t.kind.is_some() {
        return None;
    }
    let mut slots = [&t.str, &t.int, &t.float, &t.bool, &t.dur]
        .into_iter()
        .flatten();
    let one = slots.next()?;
    if slots.next().is_some() || !matches!(one, Expr::Literal(..)) {
        return None;
    }
    Some(one.clone())
}

fn literal_i64(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v),
        _ => None,
    }
}

fn literal_str(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(v)), _) => Some(v),
        _ => None,
    }
}

/// `l OP r` for a comparison operator: the OR of every pair of slots that may meet.
pub fn compare(l: &Typed, op: BinaryOp, r: &Typed) -> Expr {
    let mut parts: Vec<Expr> = Vec::new();
    if let Some(v) = literal_of(r) {
        parts.extend(l.multi.iter().map(|m| m.call(op.symbol(), v.clone())));
    }
    let flipped = match op {
        BinaryOp::Lt => Some(BinaryOp::Gt),
        BinaryOp::Lte => Some(BinaryOp::Gte),
        BinaryOp::Gt => Some(BinaryOp::Lt),
        BinaryOp::Gte => Some(BinaryOp::Lte),
        BinaryOp::Eq | BinaryOp::Neq => Some(op),
        _ => None,
    };
    if let (Some(v), Some(f)) = (literal_of(l), flipped) {
        parts.extend(r.multi.iter().map(|m| m.call(f.symbol(), v.clone())));
    }
    if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) {
        if let (Some(a), Some(b)) = (&l.str, &r.str) {
            // Fully anchored, as Prometheus' FastRegexMatcher (tempo-compat.md §1.11).
            let pattern = match literal_str(b) {
                Some(p) => lit(format!("^(?s:{p})$")),
                None => binary_expr(
                    binary_expr(lit("^(?s:"), Operator::StringConcat, b.clone()),
                    Operator::StringConcat,
                    lit(")$"),
                ),
            };
            let o = if op == BinaryOp::Regex {
                Operator::RegexMatch
            } else {
                Operator::RegexNotMatch
            };
            parts.push(binary_expr(a.clone(), o, pattern));
        }
        return parts.into_iter().reduce(Expr::or).unwrap_or(lit(false));
    }
    let Some(o) = sql_op(op) else {
        return lit(false);
    };
    let mut pair = |a: &Option<Expr>, b: &Option<Expr>| {
        if let (Some(a), Some(b)) = (a, b) {
            parts.push(binary_expr(a.clone(), o, b.clone()));
        }
    };
    pair(&l.str, &r.str);
    let ordering = !matches!(op, BinaryOp::Eq | BinaryOp::Neq);
    if !ordering {
        pair(&l.bool, &r.bool);
        pair(&l.status, &r.status);
        pair(&l.kind, &r.kind);
    }
    // Integers and durations compare as i64; anything with a float compares as f64.
    for a in l.int_like() {
        for b in r.int_like() {
            parts.push(binary_expr(a.clone(), o, b));
        }
    }
    let fl = |t: &Typed| t.as_float();
    if let (Some(lf), Some(b)) = (fl(l), &r.float) {
        parts.push(binary_expr(lf, o, b.clone()));
    }
    if let (Some(a), Some(rf)) = (&l.float, fl(r))
        && r.float.is_none()
    {
        parts.push(binary_expr(a.clone(), o, rf));
    }
    if !ordering {
        // An int literal against a status: Tempo compares the raw TraceQL number.
        for (s, i) in [(&l.status, &r.int), (&r.status, &l.int)] {
            if let (Some(s), Some(n)) = (s, i.as_ref().and_then(literal_i64)) {
                let otlp = match n {
                    0 => Some(2),
                    1 => Some(1),
                    2 => Some(0),
                    _ => None,
                };
                parts.push(match otlp {
                    Some(v) => binary_expr(s.clone(), o, lit(v)),
                    None => lit(op == BinaryOp::Neq),
                });
            }
        }
    }
    parts.into_iter().reduce(Expr::or).unwrap_or(lit(false))
}

/// `l OP r` for `+ - * / % ^`: integer arithmetic when both are ints, float otherwise.
pub fn arithmetic(l: &Typed, op: BinaryOp, r: &Typed) -> Typed {
    let mut t = Typed::default();
    if op == BinaryOp::Pow {
        if let (Some(a), Some(b)) = (&l.int, &r.int) {
            // Tempo's quirk: int ^ int evaluates rhs ^ lhs.
            let f = |e: &Expr| cast(e.clone(), DataType::Float64);
            t.int = Some(cast(power(f(b), f(a)), DataType::Int64));
        }
        if let (Some(a), Some(b)) = (l.as_float(), r.as_float()) {
            t.float = Some(power(a, b));
        }
    } else if let Some(o) = sql_op(op) {
        if let (Some(a), Some(b)) = (&l.int, &r.int) {
            t.int = Some(binary_expr(a.clone(), o, b.clone()));
        }
        if let (Some(a), Some(b)) = (l.as_float(), r.as_float()) {
            t.float = Some(binary_expr(a, o, b));
        }
    }
    // When both sides are ints the int slot holds the result; the float slot must then be
    // empty, or the two would disagree (1 / 10 is 0, not 0.1).
    if let Some(i) = &t.int
        && let Some(f) = t.float.take()
    {
        t.float = Some(case_when(
            vec![(i.clone().is_null(), f)],
            lit(ScalarValue::Float64(None)),
        ));
    }
    t
}
