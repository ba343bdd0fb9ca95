//! Which of a span's events (links) supplies the value a search answer shows for an event
//! (link) field: the first one that satisfies one of the query's comparisons on that field,
//! as Tempo shows the value of the event that matched. Only when none does (the field was
//! tested under `||` with something else, or only for existence) the first that has it.

use std::collections::HashMap;

use allegro_traceql::ast::{BinaryOp, FieldExpr, FieldKind, FieldRef, ListOp, Static};
use allegro_udfs::traceql_match::{Comparison, Val};
use datafusion::common::ScalarValue;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// The query's comparisons of a field with a literal, per field, under `traceql_match`'s rules.
#[derive(Default)]
pub(super) struct FieldTests(HashMap<FieldRef, Vec<Comparison>>);

impl FieldTests {
    /// The comparisons in the query's span conditions.
    pub(super) fn of(leaves: &[Option<FieldExpr>]) -> Self {
        let mut tests = FieldTests::default();
        for leaf in leaves.iter().flatten() {
            tests.collect(leaf);
        }
        tests
    }

    fn collect(&mut self, e: &FieldExpr) {
        match &e.kind {
            FieldKind::Binary { op, lhs, rhs } => match (&lhs.kind, &rhs.kind) {
                (FieldKind::Ref(f), FieldKind::Static(s)) => self.add(f, *op, s),
                (FieldKind::Static(s), FieldKind::Ref(f)) => self.add(f, flipped(*op), s),
                _ => {
                    self.collect(lhs);
                    self.collect(rhs);
                }
            },
            FieldKind::Unary { expr, .. } => self.collect(expr),
            FieldKind::List { op, expr, values } => {
                let op = match op {
                    ListOp::In => BinaryOp::Eq,
                    ListOp::MatchAny => BinaryOp::Regex,
                    ListOp::NotIn | ListOp::MatchNone => return,
                };
                if let FieldKind::Ref(f) = &expr.kind {
                    for v in values {
                        self.add(f, op, v);
                    }
                }
            }
            FieldKind::Static(_) | FieldKind::Ref(_) => {}
        }
    }

    /// Keeps `f OP s` when `s` is a value events and links can hold (a bad regex: never).
    fn add(&mut self, f: &FieldRef, op: BinaryOp, s: &Static) {
        let literal = match s {
            Static::Str(v) => ScalarValue::Utf8(Some(v.clone())),
            Static::Int(v) => ScalarValue::Int64(Some(*v)),
            Static::Float(v) => ScalarValue::Float64(Some(*v)),
            Static::Bool(v) => ScalarValue::Boolean(Some(*v)),
            _ => return,
        };
        if let Ok(c) = Comparison::new(op.symbol(), &literal, false) {
            self.0.entry(f.clone()).or_default().push(c);
        }
    }

    /// The first of `values` that satisfies one of the tests of `f`, else the first.
    pub(super) fn pick<'a>(
        &self,
        f: &FieldRef,
        values: impl Iterator<Item = &'a AnyValue> + Clone,
    ) -> Option<&'a AnyValue> {
        let tests = self.0.get(f).map(Vec::as_slice).unwrap_or_default();
        values
            .clone()
            .find(|v| as_val(v).is_some_and(|v| tests.iter().any(|c| c.holds(&v))))
            .or_else(|| values.into_iter().next())
    }
}

/// `a OP b` as `b OP' a`.
fn flipped(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::Lte => BinaryOp::Gte,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::Gte => BinaryOp::Lte,
        other => other,
    }
}

/// A scalar OTLP value as `traceql_match` compares it.
fn as_val(v: &AnyValue) -> Option<Val<'_>> {
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => Val::Str(s),
        Value::IntValue(i) => Val::Int(*i),
        Value::DoubleValue(f) => Val::Float(*f),
        Value::BoolValue(b) => Val::Bool(*b),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(s.into())),
        }
    }

    #[test]
    fn the_value_that_matched_is_picked() {
        let q = allegro_traceql::compile(r#"{ event.exception.type = "Timeout" }"#).unwrap();
        let c = crate::query::plan::compile("", &q).unwrap();
        let tests = FieldTests::of(&c.leaves);
        let f = c.referenced[0].clone();
        let values = [text("IOError"), text("Timeout")];
        assert_eq!(tests.pick(&f, values.iter()), Some(&values[1]));
        // Nothing matches: the first.
        let other = [text("a"), text("b")];
        assert_eq!(tests.pick(&f, other.iter()), Some(&other[0]));
        let numbers = [
            AnyValue {
                value: Some(Value::IntValue(2)),
            },
            AnyValue {
                value: Some(Value::DoubleValue(7.5)),
            },
        ];
        let q = allegro_traceql::compile("{ 7 < event.attempt }").unwrap();
        let c = crate::query::plan::compile("", &q).unwrap();
        let tests = FieldTests::of(&c.leaves);
        assert_eq!(
            tests.pick(&c.referenced[0], numbers.iter()),
            Some(&numbers[1])
        );
    }
}
