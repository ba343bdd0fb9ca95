//! A plain in-memory TraceQL evaluator, written for tests only: it walks OTLP spans and parent
//! pointers in ordinary Rust (no DataFusion, no nested-set numbers, no shared code with the
//! engine) following tempo-compat.md §1.10–1.13, so the engine can be checked against it.
//!
//! Supported: every spanset operator, pipelines (aggregates, by, coalesce, select), intrinsics
//! except `span:childCount`, `parent`, nested-set numbers and event/link intrinsics, attributes
//! of every scope except parent. Unsupported constructs panic: a test must not silently skip.

use std::collections::{BTreeSet, HashMap};

use allegro_traceql::ast::*;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

/// A span with its resource and scope.
#[derive(Debug, Clone)]
pub struct RSpan {
    /// The span.
    pub span: Span,
    /// Its resource.
    pub resource: Resource,
    /// Its scope.
    pub scope: InstrumentationScope,
}

/// One trace's spans.
#[derive(Debug, Clone)]
pub struct RTrace {
    /// The trace ID.
    pub id: Vec<u8>,
    /// Its spans.
    pub spans: Vec<RSpan>,
    parent: Vec<Option<usize>>,
    orphan: Vec<bool>,
    /// (left, right, parent) per span, Tempo's numbering; zeros where unknown.
    nested: Vec<(i64, i64, i64)>,
}

/// Tempo's nested-set numbers by recursion over the parent pointers: roots and children in
/// (start time, span ID) order, one counter from 1 across the trace.
fn number(spans: &[RSpan], parent: &[Option<usize>]) -> Vec<(i64, i64, i64)> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| {
        (
            spans[i].span.start_time_unix_nano,
            spans[i].span.span_id.clone(),
        )
    });
    let mut out = vec![(0, 0, 0); spans.len()];
    fn visit(
        i: usize,
        up: i64,
        order: &[usize],
        parent: &[Option<usize>],
        counter: &mut i64,
        out: &mut [(i64, i64, i64)],
    ) {
        out[i].0 = *counter;
        out[i].2 = up;
        *counter += 1;
        for &c in order.iter().filter(|&&c| parent[c] == Some(i)) {
            visit(c, out[i].0, order, parent, counter, out);
        }
        out[i].1 = *counter;
        *counter += 1;
    }
    let mut counter = 1;
    for &r in order
        .iter()
        .filter(|&&i| spans[i].span.parent_span_id.is_empty())
    {
        visit(r, -1, &order, parent, &mut counter, &mut out);
    }
    out
}

/// Groups OTLP data by trace.
pub fn traces(data: &[ResourceSpans]) -> Vec<RTrace> {
    let mut by: HashMap<Vec<u8>, Vec<RSpan>> = HashMap::new();
    for rs in data {
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                by.entry(s.trace_id.clone()).or_default().push(RSpan {
                    span: s.clone(),
                    resource: rs.resource.clone().unwrap_or_default(),
                    scope: ss.scope.clone().unwrap_or_default(),
                });
            }
        }
    }
    by.into_iter()
        .map(|(id, spans)| {
            let index: HashMap<&[u8], usize> = spans
                .iter()
                .enumerate()
                .map(|(i, s)| (s.span.span_id.as_slice(), i))
                .collect();
            let parent: Vec<Option<usize>> = spans
                .iter()
                .map(|s| index.get(s.span.parent_span_id.as_slice()).copied())
                .collect();
            let orphan = spans
                .iter()
                .zip(&parent)
                .map(|(s, p)| !s.span.parent_span_id.is_empty() && p.is_none())
                .collect();
            let nested = number(&spans, &parent);
            RTrace {
                id,
                spans,
                parent,
                orphan,
                nested,
            }
        })
        .collect()
}

/// A TraceQL value.
#[derive(Debug, Clone, PartialEq)]
enum V {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Dur(i64),
    Status(i64),
    Kind(i64),
    Arr(Vec<V>),
    /// Values of several events or links: a comparison holds when it holds for any.
    Any(Vec<V>),
}

fn any(v: &AnyValue) -> V {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => V::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => V::Int(*i),
        Some(any_value::Value::DoubleValue(f)) => V::Float(*f),
        Some(any_value::Value::BoolValue(b)) => V::Bool(*b),
        Some(any_value::Value::ArrayValue(a)) => V::Arr(a.values.iter().map(any).collect()),
        _ => V::Nil,
    }
}

fn lookup(attrs: &[KeyValue], key: &str) -> Option<V> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_ref().map_or(V::Nil, any))
}

struct Ctx<'a> {
    t: &'a RTrace,
}

impl Ctx<'_> {
    fn root(&self) -> Option<&RSpan> {
        self.t
            .spans
            .iter()
            .filter(|s| s.span.parent_span_id.is_empty())
            .min_by_key(|s| s.span.start_time_unix_nano)
    }

    fn field(&self, i: usize, f: &FieldRef) -> V {
        let s = &self.t.spans[i];
        match f {
            FieldRef::Attribute(a) => {
                assert!(!a.parent, "reference: parent attributes");
                let span = || lookup(&s.span.attributes, &a.name);
                let res = || lookup(&s.resource.attributes, &a.name);
                let inst = || lookup(&s.scope.attributes, &a.name);
                // Every event's (link's) value: a comparison holds when any does.
                let several = |vs: Vec<V>| (!vs.is_empty()).then_some(V::Any(vs));
                let event = || {
                    several(
                        s.span
                            .events
                            .iter()
                            .filter_map(|e| lookup(&e.attributes, &a.name))
                            .collect(),
                    )
                };
                let link = || {
                    several(
                        s.span
                            .links
                            .iter()
                            .filter_map(|l| lookup(&l.attributes, &a.name))
                            .collect(),
                    )
                };
                match a.scope {
                    Scope::Span => span(),
                    Scope::Resource => res(),
                    Scope::Instrumentation => inst(),
                    Scope::Event => event(),
                    Scope::Link => link(),
                    // Tempo 3.0: span, then resource; never events, links or the scope.
                    Scope::None => span().or_else(res),
                }
                .unwrap_or(V::Nil)
            }
            FieldRef::Intrinsic(which) => {
                let sp = &s.span;
                match which {
                    Intrinsic::Duration => {
                        V::Dur(sp.end_time_unix_nano as i64 - sp.start_time_unix_nano as i64)
                    }
                    Intrinsic::Name => V::Str(sp.name.clone()),
                    Intrinsic::Status => {
                        V::Status(match sp.status.as_ref().map_or(0, |x| x.code) {
                            2 => 0,
                            1 => 1,
                            _ => 2,
                        })
                    }
                    Intrinsic::StatusMessage => V::Str(
                        sp.status
                            .as_ref()
                            .map(|x| x.message.clone())
                            .unwrap_or_default(),
                    ),
                    Intrinsic::Kind => V::Kind(match sp.kind {
                        3 => 2,
                        2 => 3,
                        k => k as i64,
                    }),
                    Intrinsic::TraceDuration => {
                        let start = self
                            .t
                            .spans
                            .iter()
                            .map(|x| x.span.start_time_unix_nano)
                            .min()
                            .unwrap_or(0);
                        let end = self
                            .t
                            .spans
                            .iter()
                            .map(|x| x.span.end_time_unix_nano)
                            .max()
                            .unwrap_or(0);
                        V::Dur(end as i64 - start as i64)
                    }
                    Intrinsic::TraceRootName => {
                        self.root().map_or(V::Nil, |r| V::Str(r.span.name.clone()))
                    }
                    Intrinsic::TraceRootService => self.root().map_or(V::Nil, |r| {
                        lookup(&r.resource.attributes, "service.name").unwrap_or(V::Nil)
                    }),
                    Intrinsic::TraceId => {
                        V::Str(hex::encode(&self.t.id).trim_start_matches('0').to_string())
                    }
                    Intrinsic::SpanId => V::Str(hex::encode(&sp.span_id)),
                    Intrinsic::ParentId => V::Str(hex::encode(&sp.parent_span_id)),
                    Intrinsic::InstrumentationName => V::Str(s.scope.name.clone()),
                    Intrinsic::InstrumentationVersion => V::Str(s.scope.version.clone()),
                    Intrinsic::EventName => {
                        V::Any(sp.events.iter().map(|e| V::Str(e.name.clone())).collect())
                    }
                    Intrinsic::EventTimeSinceStart => V::Any(
                        sp.events
                            .iter()
                            .map(|e| {
                                V::Dur(e.time_unix_nano as i64 - sp.start_time_unix_nano as i64)
                            })
                            .collect(),
                    ),
                    Intrinsic::NestedSetLeft => V::Int(self.t.nested[i].0),
                    Intrinsic::NestedSetRight => V::Int(self.t.nested[i].1),
                    Intrinsic::NestedSetParent => V::Int(self.t.nested[i].2),
                    other => panic!("reference: intrinsic {} not modelled", other.name()),
                }
            }
        }
    }

    fn value(&self, i: usize, e: &FieldExpr) -> V {
        match &e.kind {
            FieldKind::Static(s) => stat(s),
            FieldKind::Ref(f) => self.field(i, f),
            FieldKind::Binary { op, lhs, rhs } if op.is_arithmetic() => {
                arith(*op, self.value(i, lhs), self.value(i, rhs))
            }
            FieldKind::Unary {
                op: UnaryOp::Neg,
                expr,
            } => match self.value(i, expr) {
                V::Int(x) => V::Int(-x),
                V::Float(x) => V::Float(-x),
                V::Dur(x) => V::Dur(-x),
                _ => V::Nil,
            },
            _ => V::Bool(self.cond(i, e)),
        }
    }

    fn cond(&self, i: usize, e: &FieldExpr) -> bool {
        match &e.kind {
            FieldKind::Binary {
                op: BinaryOp::And,
                lhs,
                rhs,
            } => self.cond(i, lhs) && self.cond(i, rhs),
            FieldKind::Binary {
                op: BinaryOp::Or,
                lhs,
                rhs,
            } => self.cond(i, lhs) || self.cond(i, rhs),
            FieldKind::Binary { op, lhs, rhs } if !op.is_arithmetic() => {
                cmp(*op, &self.value(i, lhs), &self.value(i, rhs))
            }
            FieldKind::Unary {
                op: UnaryOp::Not,
                expr,
            } => !self.cond(i, expr),
            FieldKind::Unary {
                op: UnaryOp::Exists,
                expr,
            } => !nil(&self.value(i, expr)),
            FieldKind::Unary {
                op: UnaryOp::NotExists,
                expr,
            } => nil(&self.value(i, expr)),
            FieldKind::List { op, expr, values } => {
                let v = self.value(i, expr);
                let each = |o: BinaryOp| {
                    values
                        .iter()
                        .map(|s| cmp(o, &v, &stat(s)))
                        .collect::<Vec<_>>()
                };
                match op {
                    ListOp::In => each(BinaryOp::Eq).into_iter().any(|x| x),
                    ListOp::NotIn => each(BinaryOp::Neq).into_iter().all(|x| x),
                    ListOp::MatchAny => each(BinaryOp::Regex).into_iter().any(|x| x),
                    ListOp::MatchNone => each(BinaryOp::NotRegex).into_iter().all(|x| x),
                }
            }
            _ => self.value(i, e) == V::Bool(true),
        }
    }
}

/// Nil, or no event/link has the attribute.
fn nil(v: &V) -> bool {
    matches!(v, V::Nil) || matches!(v, V::Any(xs) if xs.is_empty())
}

fn stat(s: &Static) -> V {
    match s {
        Static::Nil => V::Nil,
        Static::Bool(b) => V::Bool(*b),
        Static::Int(i) => V::Int(*i),
        Static::Float(f) => V::Float(*f),
        Static::Str(s) => V::Str(s.clone()),
        Static::Duration(d) => V::Dur(*d),
        Static::Status(s) => V::Status(*s as i64),
        Static::Kind(k) => V::Kind(*k as i64),
    }
}

fn num(v: &V) -> Option<f64> {
    match v {
        V::Int(i) | V::Dur(i) => Some(*i as f64),
        V::Float(f) => Some(*f),
        _ => None,
    }
}

fn arith(op: BinaryOp, a: V, b: V) -> V {
    if let (V::Int(x), V::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        return match op {
            BinaryOp::Add => V::Int(x.wrapping_add(y)),
            BinaryOp::Sub => V::Int(x.wrapping_sub(y)),
            BinaryOp::Mul => V::Int(x.wrapping_mul(y)),
            BinaryOp::Div if y != 0 => V::Int(x / y),
            BinaryOp::Mod if y != 0 => V::Int(x % y),
            BinaryOp::Pow => V::Int((y as f64).powf(x as f64) as i64),
            _ => V::Nil,
        };
    }
    match (num(&a), num(&b)) {
        (Some(x), Some(y)) => V::Float(match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Mod => x % y,
            _ => x.powf(y),
        }),
        _ => V::Nil,
    }
}

fn ordering<T: PartialOrd>(op: BinaryOp, a: T, b: T) -> bool {
    match op {
        BinaryOp::Eq => a == b,
        BinaryOp::Neq => a != b,
        BinaryOp::Lt => a < b,
        BinaryOp::Lte => a <= b,
        BinaryOp::Gt => a > b,
        BinaryOp::Gte => a >= b,
        _ => false,
    }
}

fn cmp(op: BinaryOp, a: &V, b: &V) -> bool {
    match (a, b) {
        (V::Nil, _) | (_, V::Nil) => false,
        (V::Any(xs), y) => xs.iter().any(|x| cmp(op, x, y)),
        (x, V::Any(ys)) => ys.iter().any(|y| cmp(op, x, y)),
        (V::Arr(xs), s) | (s, V::Arr(xs)) if !matches!(s, V::Arr(_)) => {
            let flip = matches!(a, V::Arr(_));
            let one = |x: &V| if flip { cmp(op, x, s) } else { cmp(op, s, x) };
            match op {
                BinaryOp::Neq => {
                    xs.iter().all(|x| cmp(op, x, s) || matches!(x, V::Nil)) && !xs.is_empty()
                }
                BinaryOp::NotRegex => xs.iter().all(|x| cmp(op, x, s)) && !xs.is_empty(),
                _ => xs.iter().any(one),
            }
        }
        (V::Str(x), V::Str(y)) => match op {
            BinaryOp::Regex | BinaryOp::NotRegex => {
                let re = regex::Regex::new(&format!("^(?s:{y})$")).expect("validated regex");
                re.is_match(x) == (op == BinaryOp::Regex)
            }
            _ => ordering(op, x.as_bytes(), y.as_bytes()),
        },
        (V::Int(x) | V::Dur(x), V::Int(y) | V::Dur(y)) => ordering(op, x, y),
        (V::Bool(x), V::Bool(y)) if matches!(op, BinaryOp::Eq | BinaryOp::Neq) => {
            ordering(op, x, y)
        }
        (V::Status(x), V::Status(y))
        | (V::Kind(x), V::Kind(y))
        | (V::Status(x), V::Int(y))
        | (V::Int(x), V::Status(y))
            if matches!(op, BinaryOp::Eq | BinaryOp::Neq) =>
        {
            ordering(op, x, y)
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => ordering(op, x, y),
            _ => false,
        },
    }
}

/// A spanset: span indexes and `by()` attributes.
#[derive(Debug, Clone, Default)]
struct Set {
    spans: BTreeSet<usize>,
    attrs: Vec<(String, String)>,
}

struct Run<'a> {
    c: Ctx<'a>,
}

impl Run<'_> {
    fn ancestors(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut cur = self.c.t.parent[i];
        while let Some(p) = cur {
            out.push(p);
            cur = self.c.t.parent[p];
        }
        out
    }

    fn known(&self, i: usize) -> bool {
        // A span whose parent never arrived has no place in the tree (nested sets 0).
        !self.c.t.orphan[i] && !self.ancestors(i).iter().any(|&a| self.c.t.orphan[a])
    }

    /// Whether `t` stands in `op`'s relation to `s` (t is the RHS candidate).
    fn related(&self, op: SpansetOp, t: usize, s: usize) -> bool {
        use SpansetOp::*;
        if !self.known(t) || !self.known(s) {
            return false;
        }
        let p = &self.c.t.parent;
        match op {
            Child | NotChild | UnionChild => p[t] == Some(s),
            Parent | NotParent | UnionParent => p[s] == Some(t),
            Descendant | NotDescendant | UnionDescendant => self.ancestors(t).contains(&s),
            Ancestor | NotAncestor | UnionAncestor => self.ancestors(s).contains(&t),
            Sibling | NotSibling | UnionSibling => t != s && p[t] == p[s],
            And | Union => false,
        }
    }

    fn pipeline(&self, p: &Pipeline, mut sets: Vec<Set>) -> Result<Vec<Set>, String> {
        for st in &p.stages {
            sets = match st {
                Stage::Spanset(e) => {
                    let mut out = Vec::new();
                    for s in &sets {
                        out.extend(self.expr(e, s)?);
                    }
                    out
                }
                Stage::ScalarFilter(f) => sets
                    .into_iter()
                    .filter(|s| match (self.scalar(&f.lhs, s), self.scalar(&f.rhs, s)) {
                        (Some(a), Some(b)) => ordering(f.op, a, b),
                        _ => false,
                    })
                    .collect(),
                Stage::By(e) => {
                    let mut out = Vec::new();
                    for s in sets {
                        let mut groups: Vec<(String, BTreeSet<usize>)> = Vec::new();
                        for &i in &s.spans {
                            let k = format!("{:?}", self.c.value(i, e));
                            match groups.iter_mut().find(|g| g.0 == k) {
                                Some(g) => {
                                    g.1.insert(i);
                                }
                                None => groups.push((k, [i].into())),
                            }
                        }
                        for (k, spans) in groups {
                            let mut attrs = s.attrs.clone();
                            attrs.push((format!("by({e})"), k));
                            out.push(Set { spans, attrs });
                        }
                    }
                    out
                }
                Stage::Coalesce => {
                    if sets.is_empty() {
                        sets
                    } else {
                        vec![Set {
                            spans: sets.iter().flat_map(|s| s.spans.iter().copied()).collect(),
                            attrs: vec![],
                        }]
                    }
                }
                Stage::Select(..) => sets,
            };
            if sets.is_empty() {
                break;
            }
        }
        Ok(sets)
    }

    fn scalar(&self, e: &ScalarExpr, s: &Set) -> Option<f64> {
        match e {
            ScalarExpr::Static(v, _) => num(&stat(v)),
            ScalarExpr::Binary { op, lhs, rhs } => num(&arith(
                *op,
                V::Float(self.scalar(lhs, s)?),
                V::Float(self.scalar(rhs, s)?),
            )),
            ScalarExpr::Pipeline(..) => panic!("reference: scalar pipelines"),
            ScalarExpr::Aggregate(a) => {
                if a.op == AggregateOp::Count {
                    return Some(s.spans.len() as f64);
                }
                let e = a.expr.as_ref()?;
                let vals: Vec<f64> = s
                    .spans
                    .iter()
                    .filter_map(|&i| num(&self.c.value(i, e)))
                    .collect();
                if vals.is_empty() {
                    return None;
                }
                Some(match a.op {
                    AggregateOp::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                    AggregateOp::Sum => vals.iter().sum(),
                    AggregateOp::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                    AggregateOp::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    AggregateOp::Count => vals.len() as f64,
                })
            }
        }
    }

    fn expr(&self, e: &SpansetExpr, input: &Set) -> Result<Vec<Set>, String> {
        match e {
            SpansetExpr::Filter(f) => {
                let spans: BTreeSet<usize> = input
                    .spans
                    .iter()
                    .copied()
                    .filter(|&i| f.expr.as_ref().is_none_or(|x| self.c.cond(i, x)))
                    .collect();
                Ok(if spans.is_empty() {
                    vec![]
                } else {
                    vec![Set {
                        spans,
                        attrs: input.attrs.clone(),
                    }]
                })
            }
            SpansetExpr::Pipeline(p) => self.pipeline(p, vec![input.clone()]),
            SpansetExpr::Op { op, lhs, rhs } => {
                let l = self.expr(lhs, input)?;
                let r = self.expr(rhs, input)?;
                use SpansetOp::*;
                if matches!(op, And | Union) {
                    if l.is_empty() || r.is_empty() {
                        return Ok(if *op == Union {
                            if l.is_empty() { r } else { l }
                        } else {
                            vec![]
                        });
                    }
                    let mut out = Vec::new();
                    for a in &l {
                        for b in &r {
                            let mut attrs = a.attrs.clone();
                            for kv in &b.attrs {
                                if !attrs.iter().any(|x| x.0 == kv.0) {
                                    attrs.push(kv.clone());
                                }
                            }
                            out.push(Set {
                                spans: a.spans.union(&b.spans).copied().collect(),
                                attrs,
                            });
                        }
                    }
                    return Ok(out);
                }
                if l.len() > 1 || r.len() > 1 {
                    return Err(
                        "spanset operators are not supported for multiple spansets per trace"
                            .into(),
                    );
                }
                let Some(r) = r.into_iter().next() else {
                    return Ok(vec![]);
                };
                let l = l.into_iter().next().unwrap_or_default();
                let hit = |t: usize| l.spans.iter().any(|&s| self.related(*op, t, s));
                let spans: BTreeSet<usize> = match op {
                    NotChild | NotParent | NotDescendant | NotAncestor | NotSibling => {
                        r.spans.iter().copied().filter(|&t| !hit(t)).collect()
                    }
                    UnionChild | UnionParent | UnionDescendant | UnionAncestor | UnionSibling => {
                        let rs: BTreeSet<usize> =
                            r.spans.iter().copied().filter(|&t| hit(t)).collect();
                        if rs.is_empty() {
                            rs
                        } else {
                            let ls = l
                                .spans
                                .iter()
                                .copied()
                                .filter(|&s| r.spans.iter().any(|&t| self.related(*op, t, s)));
                            rs.iter().copied().chain(ls).collect()
                        }
                    }
                    _ => r.spans.iter().copied().filter(|&t| hit(t)).collect(),
                };
                Ok(if spans.is_empty() {
                    vec![]
                } else {
                    vec![Set {
                        spans,
                        attrs: r.attrs,
                    }]
                })
            }
        }
    }
}

/// Evaluates a search query over one trace: each matching spanset as a sorted list of hex span
/// IDs, the spansets sorted. `Err` when TraceQL raises an error for this trace.
pub fn search(q: &Query, t: &RTrace) -> Result<Vec<Vec<String>>, String> {
    let QueryBody::Spans(p) = &q.body else {
        panic!("reference: only search queries");
    };
    let run = Run { c: Ctx { t } };
    let all = Set {
        spans: (0..t.spans.len()).collect(),
        attrs: vec![],
    };
    let mut out: Vec<Vec<String>> = run
        .pipeline(p, vec![all])?
        .into_iter()
        .map(|s| {
            let mut v: Vec<String> = s
                .spans
                .iter()
                .map(|&i| hex::encode(&t.spans[i].span.span_id))
                .collect();
            v.sort();
            v
        })
        .collect();
    out.sort();
    Ok(out)
}

/// A metrics series as the reference computes it: labels as Grafana names them
/// (`{k="v", n=1}`, keys sorted) → value per sample timestamp (ms); NaN samples absent.
pub type RefSeries = std::collections::BTreeMap<String, std::collections::BTreeMap<i64, f64>>;

fn label_text(v: &V) -> String {
    match v {
        V::Str(s) => format!("{s:?}"),
        V::Int(i) => i.to_string(),
        V::Float(f) => format!("{f:?}"),
        V::Bool(b) => b.to_string(),
        V::Arr(xs) => {
            let xs: Vec<String> = xs.iter().map(label_text).collect();
            format!("[{}]", xs.join(", "))
        }
        V::Status(s) => format!("{:?}", ["error", "ok", "unset"][*s as usize]),
        V::Kind(k) => format!(
            "{:?}",
            [
                "unspecified",
                "internal",
                "client",
                "server",
                "producer",
                "consumer"
            ][*k as usize]
        ),
        other => panic!("reference: no label text for {other:?}"),
    }
}

/// Tempo's `Log2Quantile`, written out step by step over `(bound, count)` ascending.
fn quantile(p: f64, buckets: &[(f64, f64)]) -> f64 {
    let total: f64 = buckets.iter().map(|b| b.1).sum();
    if buckets.is_empty() || !(0.0..=1.0).contains(&p) {
        return 0.0;
    }
    let want = (p * total).ceil().max(1.0);
    let mut seen = 0.0;
    let mut prev: Option<f64> = None;
    for &(bound, n) in buckets {
        if seen + n == want {
            return bound;
        }
        if seen + n > want {
            let frac = (want - seen) / n;
            let hi = bound.log2();
            let lo = prev.map_or(hi - 1.0, f64::log2);
            return 2f64.powf(lo + (hi - lo) * frac);
        }
        seen += n;
        prev = Some(bound);
    }
    buckets.last().map_or(0.0, |b| b.0)
}

/// The grid of `[start, end]` at `step`, as Tempo aligns it: (first bound, last bound,
/// intervals), one extra leading interval.
fn grid(start: u64, end: u64, step: u64) -> (u64, u64, usize) {
    let mut lo = start - start % step;
    if lo > step {
        lo -= step;
    }
    let hi = end.div_ceil(step) * step;
    (lo, hi, ((hi - lo) / step) as usize)
}

/// The spans of the trace that the pipeline selects and that start inside the grid
/// `(lo, hi]` (right-closed intervals): (span, start, interval).
fn selected(
    run: &Run,
    pipeline: &Pipeline,
    (lo, hi, step): (u64, u64, u64),
) -> Result<Vec<(usize, u64, usize)>, String> {
    let all = Set {
        spans: (0..run.c.t.spans.len()).collect(),
        attrs: vec![],
    };
    let mut spans = BTreeSet::new();
    for s in run.pipeline(pipeline, vec![all])? {
        spans.extend(s.spans);
    }
    Ok(spans
        .into_iter()
        .filter_map(|i| {
            let ts = run.c.t.spans[i].span.start_time_unix_nano;
            (ts > lo && ts <= hi).then(|| (i, ts, ((ts - lo - 1) / step) as usize))
        })
        .collect())
}

/// Evaluates a single-stage metrics query (`rate`, `count_over_time`, `min/max/sum/avg_over_time`,
/// `quantile_over_time`, `histogram_over_time`, with `by()`) over `traces` for the range
/// `[start, end]` at `step` (ns), as Tempo's documentation describes it: the grid aligned to the
/// step with one extra leading interval, right-closed intervals stamped at their end, spans by
/// start time. `keep` chooses which traces count (sampling checks) and `weight` gives each
/// span's weight (1 exact; the inverse of its inclusion when sampling) in counts, sums and
/// averages.
pub fn metrics(
    q: &Query,
    traces: &[RTrace],
    (start, end, step): (u64, u64, u64),
    keep: &dyn Fn(&RTrace) -> bool,
    weight: &dyn Fn(&RTrace, usize) -> f64,
) -> Result<RefSeries, String> {
    let QueryBody::Metrics(MetricsExpr::Query(mq)) = &q.body else {
        panic!("reference: one metrics query without arithmetic");
    };
    if let MetricsFn::Compare {
        filter,
        top_n,
        window,
    } = &mq.function
    {
        return compare(
            mq,
            filter,
            *top_n,
            *window,
            traces,
            (start, end, step),
            keep,
            weight,
        );
    }
    let (lo, hi, n) = grid(start, end, step);
    let stamp = |i: usize| ((lo + (i as u64 + 1) * step) / 1_000_000) as i64;
    let attr = match &mq.function {
        MetricsFn::MinOverTime(f)
        | MetricsFn::MaxOverTime(f)
        | MetricsFn::SumOverTime(f)
        | MetricsFn::AvgOverTime(f)
        | MetricsFn::HistogramOverTime(f)
        | MetricsFn::QuantileOverTime(f, _) => Some(f.clone()),
        _ => None,
    };
    // (labels, bucket label) → per interval: one entry per span (its value, or NaN).
    type Key = (Vec<(String, String)>, Option<String>);
    // (value, weight) per span.
    let mut cells: HashMap<Key, Vec<Vec<(f64, f64)>>> = HashMap::new();
    type Labels = Vec<(String, String)>;
    let mut buckets: HashMap<Labels, Vec<Vec<(f64, f64)>>> = HashMap::new();
    for t in traces.iter().filter(|t| keep(t)) {
        let run = Run { c: Ctx { t } };
        for (i, _, at) in selected(&run, &mq.pipeline, (lo, hi, step))? {
            let w = weight(t, i);
            // One label set per combination of values: a field a span holds several of
            // (events, links, array elements) puts the span in each distinct value's series.
            let mut sets: Vec<Vec<(String, String)>> = vec![Vec::new()];
            for f in &mq.by {
                let mut values: Vec<String> = match run.c.field(i, f) {
                    V::Any(xs) | V::Arr(xs) => {
                        xs.iter().filter(|x| !nil(x)).map(label_text).collect()
                    }
                    v if nil(&v) => Vec::new(),
                    v => vec![label_text(&v)],
                };
                values.sort();
                values.dedup();
                if values.is_empty() {
                    continue;
                }
                sets = sets
                    .into_iter()
                    .flat_map(|set| {
                        values.iter().map(move |v| {
                            let mut s = set.clone();
                            s.push((f.to_string(), v.clone()));
                            s
                        })
                    })
                    .collect();
            }
            for labels in sets {
                let mut labels = labels;
                if labels.is_empty() {
                    labels.push(match mq.by.first() {
                        Some(f) => (f.to_string(), "\"nil\"".into()),
                        None => ("__name__".into(), format!("{:?}", mq.function.name())),
                    });
                }
                let v = attr.as_ref().map(|f| run.c.field(i, f));
                match &mq.function {
                    MetricsFn::HistogramOverTime(_) | MetricsFn::QuantileOverTime(..) => {
                        let (raw, secs) = match &v {
                            Some(V::Dur(d)) => (*d, true),
                            Some(V::Int(x)) => (*x, false),
                            _ => continue,
                        };
                        if raw < 2 {
                            continue;
                        }
                        let mut b: i64 = 2;
                        while b < raw {
                            b *= 2;
                        }
                        let bound = if secs { b as f64 / 1e9 } else { b as f64 };
                        let mut l = labels.clone();
                        if mq.by.is_empty() {
                            l.clear();
                        }
                        if matches!(mq.function, MetricsFn::HistogramOverTime(_)) {
                            // A double either way (seconds, or the int bound), as Tempo labels it.
                            let label = format!("{bound:?}");
                            cells
                                .entry((l, Some(label)))
                                .or_insert_with(|| vec![Vec::new(); n])[at]
                                .push((f64::NAN, w));
                        } else {
                            let slot = buckets.entry(l).or_insert_with(|| vec![Vec::new(); n]);
                            match slot[at].iter_mut().find(|x| x.0 == bound) {
                                Some(x) => x.1 += w,
                                None => slot[at].push((bound, w)),
                            }
                        }
                    }
                    _ => {
                        let x = match &v {
                            Some(V::Dur(d)) => *d as f64 / 1e9,
                            Some(V::Int(x)) => *x as f64,
                            Some(V::Float(x)) => *x,
                            Some(_) => f64::NAN,
                            None => 0.0,
                        };
                        cells
                            .entry((labels, None))
                            .or_insert_with(|| vec![Vec::new(); n])[at]
                            .push((x, w));
                    }
                }
            }
        }
    }
    let text = |mut l: Vec<(String, String)>| {
        l.sort();
        let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{{{}}}", parts.join(", "))
    };
    let mut out = RefSeries::new();
    let step_s = step as f64 / 1e9;
    for ((labels, bucket), per) in cells {
        let mut l = labels;
        if let Some(b) = bucket {
            l.push(("__bucket".into(), b));
        }
        let mut samples = std::collections::BTreeMap::new();
        for (i, xs) in per.iter().enumerate() {
            let nums: Vec<(f64, f64)> = xs.iter().copied().filter(|x| !x.0.is_nan()).collect();
            let weights = |v: &[(f64, f64)]| v.iter().map(|x| x.1).sum::<f64>();
            let weighted = nums.iter().map(|(x, w)| x * w).sum::<f64>();
            let value = match &mq.function {
                MetricsFn::Rate => weights(xs) / step_s,
                MetricsFn::CountOverTime | MetricsFn::HistogramOverTime(_) => weights(xs),
                _ if nums.is_empty() => continue,
                MetricsFn::MinOverTime(_) => nums.iter().map(|x| x.0).fold(f64::INFINITY, f64::min),
                MetricsFn::MaxOverTime(_) => {
                    nums.iter().map(|x| x.0).fold(f64::NEG_INFINITY, f64::max)
                }
                MetricsFn::SumOverTime(_) => weighted,
                MetricsFn::AvgOverTime(_) => weighted / weights(&nums),
                _ => continue,
            };
            samples.insert(stamp(i), value);
        }
        if !samples.is_empty() {
            out.insert(text(l), samples);
        }
    }
    if let MetricsFn::QuantileOverTime(_, ps) = &mq.function {
        for (labels, per) in buckets {
            for p in ps {
                let mut l = labels.clone();
                l.push(("p".into(), p.to_string()));
                let samples = per
                    .iter()
                    .enumerate()
                    .map(|(i, b)| {
                        let mut b = b.clone();
                        b.sort_by(|x, y| x.0.total_cmp(&y.0));
                        (stamp(i), quantile(*p, &b))
                    })
                    .collect();
                out.insert(text(l), samples);
            }
        }
    }
    Ok(out)
}

/// `compare()`: per attribute (the eight intrinsics Tempo compares, every resource, span and scope
/// attribute with a scalar value or an array of one type, counted whole), spans per value and interval on each side, the top `top_n`
/// values per side and attribute, and the per-attribute totals.
#[allow(clippy::too_many_arguments)]
fn compare(
    mq: &MetricsQuery,
    filter: &SpansetFilter,
    top_n: i64,
    window: Option<(i64, i64)>,
    traces: &[RTrace],
    (start, end, step): (u64, u64, u64),
    keep: &dyn Fn(&RTrace) -> bool,
    weight: &dyn Fn(&RTrace, usize) -> f64,
) -> Result<RefSeries, String> {
    let (lo, hi, n) = grid(start, end, step);
    let stamp = |i: usize| ((lo + (i as u64 + 1) * step) / 1_000_000) as i64;
    // (side, attribute label) → value label → count per interval.
    type Side = (&'static str, String);
    let mut counts: HashMap<Side, HashMap<String, Vec<f64>>> = HashMap::new();
    for t in traces.iter().filter(|t| keep(t)) {
        let run = Run { c: Ctx { t } };
        for (i, ts, at) in selected(&run, &mq.pipeline, (lo, hi, step))? {
            let inside = window.is_none_or(|(s, e)| (ts as i64) >= s && (ts as i64) < e);
            let side = if inside && filter.expr.as_ref().is_none_or(|e| run.c.cond(i, e)) {
                "selection"
            } else {
                "baseline"
            };
            let s = &t.spans[i];
            let mut fields: Vec<FieldRef> = [
                Intrinsic::Name,
                Intrinsic::Status,
                Intrinsic::Kind,
                Intrinsic::TraceRootName,
                Intrinsic::TraceRootService,
                Intrinsic::StatusMessage,
                Intrinsic::InstrumentationName,
                Intrinsic::InstrumentationVersion,
            ]
            .into_iter()
            .map(FieldRef::Intrinsic)
            .collect();
            for (scope, attrs) in [
                (Scope::Resource, &s.resource.attributes),
                (Scope::Span, &s.span.attributes),
                (Scope::Instrumentation, &s.scope.attributes),
            ] {
                let keys: BTreeSet<&str> = attrs.iter().map(|kv| kv.key.as_str()).collect();
                fields.extend(keys.into_iter().map(|k| {
                    FieldRef::Attribute(Attribute {
                        scope,
                        parent: false,
                        name: k.to_string(),
                    })
                }));
            }
            for f in fields {
                let v = run.c.field(i, &f);
                // An array counts as one value, the whole array, when its elements share one
                // scalar type (Tempo has no value for an empty or mixed one).
                let uniform = |xs: &[V]| {
                    xs.first().is_some_and(|x| {
                        !matches!(x, V::Nil | V::Arr(_))
                            && xs
                                .iter()
                                .all(|y| std::mem::discriminant(x) == std::mem::discriminant(y))
                    })
                };
                if nil(&v) || matches!(&v, V::Arr(xs) if !uniform(xs)) {
                    continue;
                }
                counts
                    .entry((side, f.to_string()))
                    .or_default()
                    .entry(label_text(&v))
                    .or_insert_with(|| vec![0.0; n])[at] += weight(t, i);
            }
        }
    }
    let mut out = RefSeries::new();
    let mut put = |kind: &str, attr: &str, value: &str, per: &[f64]| {
        let samples: std::collections::BTreeMap<i64, f64> = per
            .iter()
            .enumerate()
            .map(|(i, x)| (stamp(i), *x))
            .collect();
        {
            out.insert(
                format!("{{__meta_type=\"{kind}\", {attr}={value}}}"),
                samples,
            );
        }
    };
    for ((side, attr), values) in counts {
        let mut ranked: Vec<(String, Vec<f64>)> = values.into_iter().collect();
        let total = |c: &[f64]| c.iter().sum::<f64>();
        // Ties by value, as the engine breaks them (its order is by type tag, then text: the
        // same as the label text's for values of one type).
        ranked.sort_by(|a, b| {
            total(&b.1)
                .total_cmp(&total(&a.1))
                .then_with(|| a.0.cmp(&b.0))
        });
        let mut totals = vec![0.0; n];
        for (_, per) in &ranked {
            for (t, x) in totals.iter_mut().zip(per) {
                *t += x;
            }
        }
        for (value, per) in ranked.iter().take(top_n as usize) {
            put(side, &attr, value, per);
        }
        put(&format!("{side}_total"), &attr, "\"nil\"", &totals);
    }
    Ok(out)
}

/// Up to three keys of `want` that `got` lacks, and up to three of `got` that `want` lacks.
pub fn missing_and_extra<'a, K: Ord, V, W>(
    want: &'a std::collections::BTreeMap<K, V>,
    got: &'a std::collections::BTreeMap<K, W>,
) -> (Vec<&'a K>, Vec<&'a K>) {
    let missing = want.keys().filter(|k| !got.contains_key(*k)).take(3);
    let extra = got.keys().filter(|k| !want.contains_key(*k)).take(3);
    (missing.collect(), extra.collect())
}
