//! Attribute lookup and the label spellings of span fields, as Tempo's processors use them.

use allegro_engine::otlp_json::{KIND_NAMES as SPAN_KINDS, STATUS_NAMES as STATUS_CODES};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

/// An attribute value as a label value: strings as they are, numbers and booleans as Go
/// prints them; arrays and maps as JSON-like text.
pub fn stringify(v: &AnyValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::BytesValue(b) => hex::encode(b),
        Value::ArrayValue(a) => {
            let items: Vec<String> = a.values.iter().filter_map(stringify).collect();
            format!("[{}]", items.join(","))
        }
        Value::KvlistValue(kv) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .filter_map(|e| Some(format!("{}:{}", e.key, stringify(e.value.as_ref()?)?)))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        // Dictionary references only occur in profiles, never in spans.
        _ => return None,
    })
}

/// The value of attribute `key` in the first of `lists` that has it.
pub fn find<'a>(key: &str, lists: &[&'a [KeyValue]]) -> Option<&'a AnyValue> {
    lists
        .iter()
        .find_map(|l| l.iter().find(|kv| kv.key == key))
        .and_then(|kv| kv.value.as_ref())
}

/// `find` as a label value.
pub fn find_string(key: &str, lists: &[&[KeyValue]]) -> Option<String> {
    find(key, lists).and_then(stringify)
}

/// A string attribute.
pub fn find_str<'a>(key: &str, attrs: &'a [KeyValue]) -> Option<&'a str> {
    match find(key, &[attrs])?.value.as_ref()? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// A numeric attribute as a float (span multipliers).
pub fn find_number(key: &str, lists: &[&[KeyValue]]) -> Option<f64> {
    match find(key, lists)?.value.as_ref()? {
        Value::DoubleValue(d) => Some(*d),
        Value::IntValue(i) => Some(*i as f64),
        _ => None,
    }
}

/// The `span_kind` label of an OTLP kind number.
pub fn kind_label(kind: i32) -> &'static str {
    SPAN_KINDS
        .get(usize::try_from(kind).unwrap_or(0))
        .copied()
        .unwrap_or(SPAN_KINDS[0])
}

/// The `status_code` label of an OTLP status code number.
pub fn status_label(code: i32) -> &'static str {
    STATUS_CODES
        .get(usize::try_from(code).unwrap_or(0))
        .copied()
        .unwrap_or(STATUS_CODES[0])
}
