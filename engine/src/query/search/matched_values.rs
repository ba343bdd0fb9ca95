//! Which of a span's events (links) supplies the value a search answer shows for an event
//! (link) field: the first one that satisfies one of the query's comparisons on that field,
//! as Tempo shows the value of the event that matched. Only when none does (the field was
//! tested under `||` with something else, or only for existence) the first that has it.

use std::collections::HashMap;

use allegro_traceql::ast::{BinaryOp, FieldExpr, FieldKind, FieldRef, ListOp, Static};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// The query's comparisons of a field with a literal, per field.
#[derive(Debug, Default)]
pub(super) struct FieldTests(HashMap<FieldRef, Vec<(BinaryOp, Static)>>);

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

    fn add(&mut self, f: &FieldRef, op: BinaryOp, s: &Static) {
        self.0.entry(f.clone()).or_default().push((op, s.clone()));
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
            .find(|v| tests.iter().any(|(op, s)| holds(*op, v, s)))
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

/// `v OP s` under TraceQL's rules: strings with strings (regexes anchored), numbers with
/// numbers, booleans with booleans; anything else is false.
fn holds(op: BinaryOp, v: &AnyValue, s: &Static) -> bool {
    use std::cmp::Ordering;
    let ord = match (&v.value, s) {
        (Some(Value::StringValue(a)), Static::Str(b)) => match op {
            BinaryOp::Regex | BinaryOp::NotRegex => {
                let hit = regex::Regex::new(&format!("^(?s:{b})$")).is_ok_and(|r| r.is_match(a));
                return hit == (op == BinaryOp::Regex);
            }
            _ => Some(a.as_str().cmp(b.as_str())),
        },
        (Some(Value::IntValue(a)), Static::Int(b)) => Some(a.cmp(b)),
        (Some(Value::IntValue(a)), Static::Float(b)) => (*a as f64).partial_cmp(b),
        (Some(Value::DoubleValue(a)), Static::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Some(Value::DoubleValue(a)), Static::Float(b)) => a.partial_cmp(b),
        (Some(Value::BoolValue(a)), Static::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    };
    let Some(o) = ord else { return false };
    match op {
        BinaryOp::Eq => o == Ordering::Equal,
        BinaryOp::Neq => o != Ordering::Equal,
        BinaryOp::Lt => o == Ordering::Less,
        BinaryOp::Lte => o != Ordering::Greater,
        BinaryOp::Gt => o == Ordering::Greater,
        BinaryOp::Gte => o != Ordering::Less,
        _ => false,
    }
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
