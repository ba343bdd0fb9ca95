//! What ingest changes in a span before storing it, so that no stored value can hurt a query:
//! over-long attribute values (Tempo's `max_attribute_bytes`), keys and span names are cut on a
//! character boundary, attributes past the per-list limit are dropped (and counted in the
//! list's `dropped_attributes_count`, as an SDK would), and a span that ends before it starts
//! (clock skew between two clocks) is stored with duration 0. Each change is counted per tenant
//! in `/metrics`. Spans starting outside the accepted time range are refused, not changed:
//! [`crate::prepare`] does that with the other per-span refusals.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::limits::Limits;

/// What a stored span may hold; each limit 0 means none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpanRules {
    /// Bytes of a string or bytes attribute value.
    pub max_value_bytes: usize,
    /// Bytes of an attribute key.
    pub max_key_bytes: usize,
    /// Bytes of a span name.
    pub max_name_bytes: usize,
    /// Attributes of one list (a span's, a resource's, a scope's, an event's, a link's).
    pub max_attributes: usize,
    /// Accepted span start times, `[earliest, latest]` in unix nanoseconds.
    pub window: (u64, u64),
}

impl SpanRules {
    /// A tenant's rules at `now` (unix nanoseconds).
    pub fn new(l: &Limits, now: u64) -> Self {
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Self {
            max_value_bytes: l.max_attribute_bytes,
            max_key_bytes: l.max_attribute_key_bytes,
            max_name_bytes: l.max_span_name_bytes,
            max_attributes: l.max_attributes_per_span,
            window: (
                match nanos(l.max_span_age) {
                    0 => 0,
                    age => now.saturating_sub(age),
                },
                match nanos(l.max_span_future) {
                    0 => u64::MAX,
                    ahead => now.saturating_add(ahead),
                },
            ),
        }
    }

    /// Rules that change and refuse nothing.
    pub fn none() -> Self {
        Self {
            max_value_bytes: 0,
            max_key_bytes: 0,
            max_name_bytes: 0,
            max_attributes: 0,
            window: (0, u64::MAX),
        }
    }

    /// Whether a span starting at `start` is accepted.
    pub fn in_window(&self, start: u64) -> bool {
        self.window.0 <= start && start <= self.window.1
    }
}

/// What [`sanitize`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fixes {
    /// Attribute values cut to `max_value_bytes`.
    pub values_cut: u64,
    /// Attribute keys cut to `max_key_bytes`.
    pub keys_cut: u64,
    /// Span names cut to `max_name_bytes`.
    pub names_cut: u64,
    /// Attributes dropped past `max_attributes`.
    pub attributes_dropped: u64,
    /// Spans ending before they start, stored with duration 0.
    pub end_before_start: u64,
}

impl Fixes {
    /// Whether anything changed.
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// Applies `rules` to every span, resource and scope of `batches`.
pub fn sanitize(batches: &mut [ResourceSpans], rules: &SpanRules) -> Fixes {
    let mut f = Fixes::default();
    for rs in batches {
        if let Some(r) = &mut rs.resource {
            r.dropped_attributes_count += list(&mut r.attributes, rules, &mut f);
        }
        for ss in &mut rs.scope_spans {
            if let Some(s) = &mut ss.scope {
                s.dropped_attributes_count += list(&mut s.attributes, rules, &mut f);
            }
            for span in &mut ss.spans {
                span.dropped_attributes_count += list(&mut span.attributes, rules, &mut f);
                for e in &mut span.events {
                    e.dropped_attributes_count += list(&mut e.attributes, rules, &mut f);
                }
                for l in &mut span.links {
                    l.dropped_attributes_count += list(&mut l.attributes, rules, &mut f);
                }
                if cut(&mut span.name, rules.max_name_bytes) {
                    f.names_cut += 1;
                }
                if span.end_time_unix_nano < span.start_time_unix_nano {
                    span.end_time_unix_nano = span.start_time_unix_nano;
                    f.end_before_start += 1;
                }
            }
        }
    }
    f
}

/// Cuts `s` to at most `max` bytes on a character boundary; true when it did.
fn cut(s: &mut String, max: usize) -> bool {
    if max == 0 || s.len() <= max {
        return false;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    true
}

/// Applies the rules to one attribute list; returns how many attributes it dropped.
fn list(attrs: &mut Vec<KeyValue>, rules: &SpanRules, f: &mut Fixes) -> u32 {
    let mut dropped = 0;
    if rules.max_attributes > 0 && attrs.len() > rules.max_attributes {
        dropped = attrs.len() - rules.max_attributes;
        attrs.truncate(rules.max_attributes);
        f.attributes_dropped += dropped as u64;
    }
    for kv in attrs.iter_mut() {
        if cut(&mut kv.key, rules.max_key_bytes) {
            f.keys_cut += 1;
        }
        if let Some(v) = kv.value.as_mut() {
            f.values_cut += any(v, rules);
        }
    }
    u32::try_from(dropped).unwrap_or(u32::MAX)
}

fn any(v: &mut AnyValue, rules: &SpanRules) -> u64 {
    let max = rules.max_value_bytes;
    match &mut v.value {
        Some(Value::StringValue(s)) => u64::from(cut(s, max)),
        Some(Value::BytesValue(b)) if max > 0 && b.len() > max => {
            b.truncate(max);
            1
        }
        Some(Value::ArrayValue(a)) => a.values.iter_mut().map(|v| any(v, rules)).sum(),
        Some(Value::KvlistValue(l)) => l
            .values
            .iter_mut()
            .filter_map(|kv| kv.value.as_mut())
            .map(|v| any(v, rules))
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    use super::*;

    fn s(v: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        })
    }

    #[test]
    fn cuts_on_char_boundaries_and_counts() {
        let span = Span {
            attributes: vec![
                KeyValue {
                    key: "short".into(),
                    value: s("abc"),
                    ..Default::default()
                },
                KeyValue {
                    key: "long".into(),
                    value: s("aé€xyz"), // 1 + 2 + 3 bytes before "xyz"
                    ..Default::default()
                },
                KeyValue {
                    key: "arr".into(),
                    value: Some(AnyValue {
                        value: Some(Value::ArrayValue(ArrayValue {
                            values: vec![s("0123456789").unwrap(), s("ok").unwrap()],
                        })),
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut rs = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let rules = |max_value_bytes| SpanRules {
            max_value_bytes,
            ..SpanRules::none()
        };
        assert_eq!(sanitize(&mut rs, &rules(5)).values_cut, 2);
        let a = &rs[0].scope_spans[0].spans[0].attributes;
        assert_eq!(a[0].value, s("abc"));
        // 5 bytes would split "€": the cut backs off to 3 bytes.
        assert_eq!(a[1].value, s("aé"));
        match &a[2].value.as_ref().unwrap().value {
            Some(Value::ArrayValue(arr)) => {
                assert_eq!(arr.values[0], s("01234").unwrap());
                assert_eq!(arr.values[1], s("ok").unwrap());
            }
            other => panic!("{other:?}"),
        }
        assert!(!sanitize(&mut rs, &rules(0)).any());
    }

    #[test]
    fn keys_names_long_lists_and_backwards_clocks_are_fixed_and_counted() {
        let kv = |k: &str| KeyValue {
            key: k.into(),
            value: s("v"),
            ..Default::default()
        };
        let span = Span {
            name: "€€€€".into(), // 12 bytes
            start_time_unix_nano: 2_000,
            end_time_unix_nano: 1_000,
            attributes: vec![kv("a"), kv("key-€-long"), kv("c"), kv("d")],
            dropped_attributes_count: 1,
            ..Default::default()
        };
        let mut rs = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let rules = SpanRules {
            max_key_bytes: 5,
            max_name_bytes: 7,
            max_attributes: 3,
            ..SpanRules::none()
        };
        let f = sanitize(&mut rs, &rules);
        assert_eq!(
            f,
            Fixes {
                keys_cut: 1,
                names_cut: 1,
                attributes_dropped: 1,
                end_before_start: 1,
                ..Default::default()
            }
        );
        let sp = &rs[0].scope_spans[0].spans[0];
        assert_eq!(sp.name, "€€"); // 7 bytes would split the third "€"
        let keys: Vec<&str> = sp.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["a", "key-", "c"]); // "key-€" is 7 bytes: back to 4
        assert_eq!(sp.dropped_attributes_count, 2);
        assert_eq!(
            (sp.start_time_unix_nano, sp.end_time_unix_nano),
            (2_000, 2_000)
        );
    }

    #[test]
    fn the_window_follows_the_limits_and_zero_means_none() {
        let mut l = Limits::default();
        let now = 1_000_000_000_000_000_000;
        let r = SpanRules::new(&l, now);
        assert!(r.in_window(now) && r.in_window(now - 1));
        assert!(!r.in_window(0), "1970 is outside the default 14 days");
        assert!(!r.in_window(u64::MAX), "so is 2554");
        assert!(!r.in_window(now + 3_600_000_000_001));
        assert!(r.in_window(now + 3_600_000_000_000));
        l.max_span_age = std::time::Duration::ZERO;
        l.max_span_future = std::time::Duration::ZERO;
        let r = SpanRules::new(&l, now);
        assert!(r.in_window(0) && r.in_window(u64::MAX));
    }
}
