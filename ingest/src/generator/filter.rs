//! `filter_policies`: which spans a processor counts (Tempo's `spanfilter`).
//!
//! A span passes when, for every policy, it matches the policy's `include` (every attribute),
//! matches at least one attribute of `include_any`, and does not match its `exclude` (every
//! attribute).

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::generator::attrs::{find, kind_label, status_label, stringify};

/// What a policy attribute's value is compared with.
#[derive(Debug, Clone)]
pub enum Expected {
    /// A string, compared exactly.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A regular expression over the value as text (unanchored, like Go's `MatchString`).
    Regex(regex::Regex),
}

/// Where a policy key looks.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    /// `span.x`.
    Span(String),
    /// `resource.x`.
    Resource(String),
    /// `name`.
    Name,
    /// `kind` (`SPAN_KIND_SERVER`…).
    Kind,
    /// `status` (`STATUS_CODE_ERROR`…).
    Status,
}

impl Key {
    /// Parses a TraceQL-style key.
    pub fn parse(key: &str) -> Result<Self, String> {
        Ok(match key {
            "name" | "span:name" => Key::Name,
            "kind" | "span:kind" => Key::Kind,
            "status" | "span:status" => Key::Status,
            k => {
                if let Some(a) = k.strip_prefix("span.") {
                    Key::Span(a.to_string())
                } else if let Some(a) = k.strip_prefix("resource.") {
                    Key::Resource(a.to_string())
                } else {
                    return Err(format!(
                        "{k:?} is not span.<attribute>, resource.<attribute>, name, kind or status"
                    ));
                }
            }
        })
    }
}

/// One `{key, value}` of a policy.
#[derive(Debug, Clone)]
pub struct AttrMatch {
    /// The key.
    pub key: Key,
    /// The expected value.
    pub value: Expected,
}

/// The attributes of an `include`, `include_any` or `exclude`.
#[derive(Debug, Clone)]
pub struct PolicyMatch {
    /// The attributes.
    pub attributes: Vec<AttrMatch>,
}

/// One entry of `filter_policies`.
#[derive(Debug, Clone, Default)]
pub struct FilterPolicy {
    /// Spans must match all of these.
    pub include: Option<PolicyMatch>,
    /// Spans must match at least one of these.
    pub include_any: Option<PolicyMatch>,
    /// Spans matching all of these are dropped.
    pub exclude: Option<PolicyMatch>,
}

fn matches(m: &AttrMatch, resource: &[KeyValue], span: &Span) -> bool {
    let text = |s: &str| match &m.value {
        Expected::Str(e) => e == s,
        Expected::Regex(r) => r.is_match(s),
        _ => false,
    };
    match &m.key {
        Key::Name => text(&span.name),
        Key::Kind => text(kind_label(span.kind)),
        Key::Status => text(status_label(span.status.as_ref().map_or(0, |s| s.code))),
        Key::Span(a) | Key::Resource(a) => {
            let list: &[KeyValue] = if matches!(m.key, Key::Span(_)) {
                &span.attributes
            } else {
                resource
            };
            let Some(v) = find(a, &[list]) else {
                return false;
            };
            match (&m.value, v.value.as_ref()) {
                (Expected::Str(e), Some(Value::StringValue(s))) => e == s,
                (Expected::Int(e), Some(Value::IntValue(i))) => e == i,
                (Expected::Float(e), Some(Value::DoubleValue(d))) => e == d,
                (Expected::Float(e), Some(Value::IntValue(i))) => *e == *i as f64,
                (Expected::Bool(e), Some(Value::BoolValue(b))) => e == b,
                (Expected::Regex(r), _) => stringify(v).is_some_and(|s| r.is_match(&s)),
                _ => false,
            }
        }
    }
}

/// True when the span passes every policy.
pub fn keep(policies: &[FilterPolicy], resource: &[KeyValue], span: &Span) -> bool {
    policies.iter().all(|p| {
        p.include
            .as_ref()
            .is_none_or(|m| m.attributes.iter().all(|a| matches(a, resource, span)))
            && p.include_any
                .as_ref()
                .is_none_or(|m| m.attributes.iter().any(|a| matches(a, resource, span)))
            && p.exclude
                .as_ref()
                .is_none_or(|m| !m.attributes.iter().all(|a| matches(a, resource, span)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::Status;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn m(key: &str, value: Expected) -> AttrMatch {
        AttrMatch {
            key: Key::parse(key).expect("key"),
            value,
        }
    }

    #[test]
    fn include_any_and_exclude() {
        let resource = vec![kv("service.name", Value::StringValue("cart".into()))];
        let span = Span {
            name: "GET /cart".into(),
            kind: 2,
            status: Some(Status {
                code: 2,
                ..Default::default()
            }),
            attributes: vec![kv("http.status_code", Value::IntValue(500))],
            ..Default::default()
        };
        let only_servers = FilterPolicy {
            include: Some(PolicyMatch {
                attributes: vec![
                    m("kind", Expected::Str("SPAN_KIND_SERVER".into())),
                    m("resource.service.name", Expected::Str("cart".into())),
                ],
            }),
            ..Default::default()
        };
        assert!(keep(std::slice::from_ref(&only_servers), &resource, &span));
        let no_500 = FilterPolicy {
            exclude: Some(PolicyMatch {
                attributes: vec![m("span.http.status_code", Expected::Int(500))],
            }),
            ..Default::default()
        };
        assert!(!keep(&[only_servers.clone(), no_500], &resource, &span));
        let any = FilterPolicy {
            include_any: Some(PolicyMatch {
                attributes: vec![
                    m("name", Expected::Str("nope".into())),
                    m(
                        "status",
                        Expected::Regex(regex::Regex::new("ERR").expect("re")),
                    ),
                ],
            }),
            ..Default::default()
        };
        assert!(keep(&[any], &resource, &span));
        // A type mismatch never matches.
        let typed = FilterPolicy {
            include: Some(PolicyMatch {
                attributes: vec![m("span.http.status_code", Expected::Str("500".into()))],
            }),
            ..Default::default()
        };
        assert!(!keep(&[typed], &resource, &span));
        assert!(Key::parse("http.method").is_err());
    }
}
