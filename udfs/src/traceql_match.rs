//! `traceql_match(source, kind, key, op, literal)`: TraceQL comparisons over values a span holds
//! several of — its events, its links, or an array attribute — with Tempo's rules:
//!
//! - events and links (`event.x`, `link.x`, `event:name`, `event:timeSinceStart`,
//!   `link:traceID`, `link:spanID`): the span matches when **any** event (link) satisfies the
//!   comparison; `exists` when any has the attribute.
//! - arrays (`kind = 'array'`, source = the protobuf `AnyValue` of an `attrs_other` entry):
//!   `=`, `=~` and orderings match when any element does; `!=` and `!~` when no element
//!   matches the positive form (tempo-compat.md §1.11).
//!
//! Values meet the literal under TraceQL's type rules: strings byte-wise, ints/floats/durations
//! numerically, booleans by equality; other pairs are false. Regexes are fully anchored.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, BooleanBuilder, Float64Array, Int64Array,
    ListArray, MapArray, StringArray, StructArray, UInt64Array,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

use crate::spansets::hex;
use crate::spansets::program::Cmp;

/// The UDF's name.
pub const NAME: &str = "traceql_match";

/// The UDF; see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TraceqlMatch {
    signature: Signature,
}

impl Default for TraceqlMatch {
    fn default() -> Self {
        Self {
            signature: Signature::any(5, Volatility::Immutable),
        }
    }
}

/// A value found in an event, link or array.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    /// A string, borrowed.
    Str(&'a str),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A duration in nanoseconds.
    Dur(i64),
    /// A string, owned (decoded from protobuf).
    Owned(String),
}

/// The comparison.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    Cmp(Cmp),
    Regex,
    NotRegex,
    Exists,
}

fn parse_op(s: &str) -> Option<Op> {
    Some(match s {
        "=" => Op::Cmp(Cmp::Eq),
        "!=" => Op::Cmp(Cmp::Neq),
        "<" => Op::Cmp(Cmp::Lt),
        "<=" => Op::Cmp(Cmp::Lte),
        ">" => Op::Cmp(Cmp::Gt),
        ">=" => Op::Cmp(Cmp::Gte),
        "=~" => Op::Regex,
        "!~" => Op::NotRegex,
        "exists" => Op::Exists,
        _ => return None,
    })
}

/// The literal side, prepared once.
enum Lit {
    Str(String, Option<Regex>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Dur(i64),
    None,
}

/// One TraceQL comparison with a literal, prepared once (a regex compiled, fully anchored):
/// what `traceql_match` applies to each value, and what a search answer uses to tell which
/// event matched.
pub struct Comparison {
    op: Op,
    lit: Lit,
}

impl Comparison {
    /// `op` (`=`, `!=`, `<`, `<=`, `>`, `>=`, `=~`, `!~`, `exists`) against `literal`; an int
    /// literal is a duration in nanoseconds when `durations`. Any other literal type never holds.
    pub fn new(op: &str, literal: &ScalarValue, durations: bool) -> Result<Self> {
        let Some(op) = parse_op(op) else {
            return plan_err!("{NAME}: unknown operator {op}");
        };
        let lit = match literal {
            ScalarValue::Utf8(Some(s)) => {
                let re = if matches!(op, Op::Regex | Op::NotRegex) {
                    match Regex::new(&format!("^(?s:{s})$")) {
                        Ok(r) => Some(r),
                        Err(e) => return plan_err!("invalid regex {s:?}: {e}"),
                    }
                } else {
                    None
                };
                Lit::Str(s.clone(), re)
            }
            ScalarValue::Int64(Some(i)) if durations => Lit::Dur(*i),
            ScalarValue::Int64(Some(i)) => Lit::Int(*i),
            ScalarValue::DurationNanosecond(Some(i)) => Lit::Dur(*i),
            ScalarValue::Float64(Some(f)) => Lit::Float(*f),
            ScalarValue::Boolean(Some(b)) => Lit::Bool(*b),
            _ => Lit::None,
        };
        Ok(Self { op, lit })
    }

    /// Whether `v` satisfies it, under TraceQL's type rules (module docs).
    pub fn holds(&self, v: &Val) -> bool {
        holds(self.op, v, &self.lit)
    }
}

fn ord<T: PartialOrd>(op: Op, a: T, b: T) -> bool {
    match op {
        Op::Cmp(c) => c.holds(a, b),
        _ => false,
    }
}

fn holds(op: Op, v: &Val, lit: &Lit) -> bool {
    let num = |v: &Val| match v {
        Val::Int(i) | Val::Dur(i) => Some(*i as f64),
        Val::Float(f) => Some(*f),
        _ => None,
    };
    match (v, lit) {
        (Val::Str(s), Lit::Str(l, re)) => str_holds(op, s, l, re.as_ref()),
        (Val::Owned(s), Lit::Str(l, re)) => str_holds(op, s, l, re.as_ref()),
        (Val::Int(a) | Val::Dur(a), Lit::Int(b) | Lit::Dur(b)) => ord(op, a, b),
        (Val::Bool(a), Lit::Bool(b)) if matches!(op, Op::Cmp(Cmp::Eq | Cmp::Neq)) => ord(op, a, b),
        (v, Lit::Float(b)) => num(v).is_some_and(|a| ord(op, a, *b)),
        (Val::Float(a), Lit::Int(b) | Lit::Dur(b)) => ord(op, *a, *b as f64),
        _ => false,
    }
}

fn str_holds(op: Op, s: &str, l: &str, re: Option<&Regex>) -> bool {
    match op {
        Op::Regex => re.is_some_and(|r| r.is_match(s)),
        Op::NotRegex => re.is_some_and(|r| !r.is_match(s)),
        _ => ord(op, s.as_bytes(), l.as_bytes()),
    }
}

/// Reads a protobuf varint.
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The values of a protobuf OTLP `AnyValue` into `out`: a scalar, or an array's scalar elements
/// (one level deep).
pub(crate) fn any_value(b: &[u8], out: &mut Vec<Val<'static>>, depth: u8) -> Option<()> {
    let mut at = 0;
    while at < b.len() {
        let tag = varint(b, &mut at)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                let v = varint(b, &mut at)?;
                match field {
                    2 => out.push(Val::Bool(v != 0)),
                    3 => out.push(Val::Int(v as i64)),
                    _ => {}
                }
            }
            1 => {
                let raw = b.get(at..at + 8)?;
                at += 8;
                if field == 4 {
                    out.push(Val::Float(f64::from_le_bytes(raw.try_into().ok()?)));
                }
            }
            2 => {
                let len = varint(b, &mut at)? as usize;
                let body = b.get(at..at + len)?;
                at += len;
                match field {
                    1 => out.push(Val::Owned(String::from_utf8_lossy(body).into_owned())),
                    // ArrayValue { repeated AnyValue values = 1 }
                    5 if depth == 0 => {
                        let mut i = 0;
                        while i < body.len() {
                            let t = varint(body, &mut i)?;
                            let l = varint(body, &mut i)? as usize;
                            let elem = body.get(i..i + l)?;
                            i += l;
                            if t == (1 << 3 | 2) {
                                any_value(elem, out, 1)?;
                            }
                        }
                    }
                    _ => {}
                }
            }
            5 => at += 4,
            _ => return None,
        }
    }
    Some(())
}

/// The elements of `b` into `out` when `b` is a protobuf `AnyValue` holding an array (a scalar,
/// kvlist or bytes value is not one); false when it is not or does not decode.
pub fn array_elements(b: &[u8], out: &mut Vec<Val<'static>>) -> bool {
    b.first() == Some(&(5 << 3 | 2)) && any_value(b, out, 0).is_some()
}

fn map_lookup<'a>(m: &'a MapArray, row: usize, key: &str) -> Option<(usize, &'a ArrayRef)> {
    if m.is_null(row) {
        return None;
    }
    let offsets = m.value_offsets();
    let keys = m.keys().as_string_opt::<i32>()?;
    (offsets[row] as usize..offsets[row + 1] as usize)
        .find(|&i| keys.value(i) == key)
        .map(|i| (i, m.values()))
}

/// The values of `key` in element `e` of a struct of overflow maps (events, links).
pub(crate) fn struct_attr<'a>(s: &'a StructArray, e: usize, key: &str, out: &mut Vec<Val<'a>>) {
    for (name, ty) in [
        ("attrs_str", 0),
        ("attrs_int", 1),
        ("attrs_float", 2),
        ("attrs_bool", 3),
        ("attrs_other", 4),
    ] {
        let Some(m) = s.column_by_name(name).and_then(|c| c.as_map_opt()) else {
            continue;
        };
        let Some((i, values)) = map_lookup(m, e, key) else {
            continue;
        };
        if values.is_null(i) {
            continue;
        }
        match ty {
            0 => {
                if let Some(a) = values.as_string_opt::<i32>() {
                    out.push(Val::Str(a.value(i)));
                }
            }
            1 => {
                if let Some(a) = values.as_any().downcast_ref::<Int64Array>() {
                    out.push(Val::Int(a.value(i)));
                }
            }
            2 => {
                if let Some(a) = values.as_any().downcast_ref::<Float64Array>() {
                    out.push(Val::Float(a.value(i)));
                }
            }
            3 => {
                if let Some(a) = values.as_any().downcast_ref::<BooleanArray>() {
                    out.push(Val::Bool(a.value(i)));
                }
            }
            _ => {
                if let Some(a) = values.as_any().downcast_ref::<BinaryArray>() {
                    let mut owned = Vec::new();
                    if any_value(a.value(i), &mut owned, 0).is_some() {
                        out.extend(owned);
                    }
                }
            }
        }
    }
}

/// A string literal argument of a call.
pub(crate) fn literal_text(v: &ColumnarValue, what: &str) -> Result<String> {
    match v {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(s))) => Ok(s.clone()),
        _ => plan_err!("{NAME}: {what} must be a string literal"),
    }
}

impl ScalarUDFImpl for TraceqlMatch {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let kind = literal_text(&args.args[1], "kind")?;
        let key = literal_text(&args.args[2], "key")?;
        let op_text = literal_text(&args.args[3], "op")?;
        // A value that is not a literal never holds.
        let literal = match &args.args[4] {
            ColumnarValue::Scalar(v) => v.clone(),
            ColumnarValue::Array(_) => ScalarValue::Null,
        };
        let Comparison { op, lit } = Comparison::new(&op_text, &literal, kind == "event_time")?;
        let source = args.args[0].to_array(args.number_rows)?;
        let n = args.number_rows;
        let mut out = BooleanBuilder::with_capacity(n);
        let any_of = |vals: &[Val]| -> bool {
            if op == Op::Exists {
                !vals.is_empty()
            } else {
                vals.iter().any(|v| holds(op, v, &lit))
            }
        };
        if kind == "array" {
            let Some(bin) = source.as_any().downcast_ref::<BinaryArray>() else {
                return exec_err!("{NAME}: arrays come as Binary, got {}", source.data_type());
            };
            for row in 0..n {
                let mut vals = Vec::new();
                let is_array = bin.is_valid(row)
                    && any_value(bin.value(row), &mut vals, 0).is_some()
                    && bin.value(row).first() == Some(&(5 << 3 | 2));
                let hit = if !is_array {
                    false
                } else {
                    match op {
                        // Negations hold when no element matches the positive form.
                        Op::Cmp(Cmp::Neq) => {
                            !vals.is_empty()
                                && !vals.iter().any(|v| holds(Op::Cmp(Cmp::Eq), v, &lit))
                        }
                        Op::NotRegex => {
                            !vals.is_empty() && !vals.iter().any(|v| holds(Op::Regex, v, &lit))
                        }
                        _ => any_of(&vals),
                    }
                };
                out.append_value(hit);
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        let Some(list) = source.as_any().downcast_ref::<ListArray>() else {
            return exec_err!(
                "{NAME}: {kind} needs a list of structs, got {}",
                source.data_type()
            );
        };
        let Some(elems) = list.values().as_struct_opt() else {
            return exec_err!("{NAME}: {kind} needs a list of structs");
        };
        let offsets = list.value_offsets();
        let mut vals: Vec<Val> = Vec::new();
        let mut owned: Vec<String> = Vec::new();
        for row in 0..n {
            vals.clear();
            owned.clear();
            if list.is_valid(row) {
                for e in offsets[row] as usize..offsets[row + 1] as usize {
                    match kind.as_str() {
                        "event_attr" | "link_attr" => struct_attr(elems, e, &key, &mut vals),
                        "event_name" => {
                            if let Some(a) = elems
                                .column_by_name("name")
                                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                            {
                                vals.push(Val::Str(a.value(e)));
                            }
                        }
                        "event_time" => {
                            if let Some(a) = elems
                                .column_by_name("time_since_start_nano")
                                .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
                            {
                                vals.push(Val::Dur(a.value(e) as i64));
                            }
                        }
                        "link_trace_id" | "link_span_id" => {
                            let field = if kind == "link_trace_id" {
                                "trace_id"
                            } else {
                                "span_id"
                            };
                            if let Some(a) = elems
                                .column_by_name(field)
                                .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
                            {
                                owned.push(hex(a.value(e)));
                            }
                        }
                        other => return plan_err!("{NAME}: unknown kind {other}"),
                    }
                }
            }
            let hit = any_of(&vals) || owned.iter().any(|s| holds(op, &Val::Str(s), &lit));
            out.append_value(hit);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_decode_from_protobuf() {
        // AnyValue{array_value: [ "a", 7 ]}
        let elem_a = [0x0a, 0x01, b'a'];
        let elem_7 = [0x18, 0x07];
        let mut arr = vec![0x0a, elem_a.len() as u8];
        arr.extend(elem_a);
        arr.extend([0x0a, elem_7.len() as u8]);
        arr.extend(elem_7);
        let mut any = vec![0x2a, arr.len() as u8];
        any.extend(arr);
        let mut out = Vec::new();
        any_value(&any, &mut out, 0).unwrap();
        assert_eq!(out, vec![Val::Owned("a".into()), Val::Int(7)]);
        assert!(holds(
            Op::Cmp(Cmp::Eq),
            &out[0],
            &Lit::Str("a".into(), None)
        ));
        assert!(holds(Op::Cmp(Cmp::Gt), &out[1], &Lit::Float(6.5)));
        assert!(!holds(
            Op::Cmp(Cmp::Eq),
            &out[1],
            &Lit::Str("7".into(), None)
        ));
    }
}
