//! Cutting over-long attribute values, as Tempo's distributor does with `max_attribute_bytes`.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// Cuts every string attribute value (also inside arrays and kvlists) of resources, scopes,
/// spans, events and links to at most `max` bytes on a character boundary. Returns how many
/// values were cut. `max == 0` cuts nothing.
pub fn truncate_attributes(batches: &mut [ResourceSpans], max: usize) -> u64 {
    if max == 0 {
        return 0;
    }
    let mut n = 0;
    for rs in batches {
        if let Some(r) = &mut rs.resource {
            n += kvs(&mut r.attributes, max);
        }
        for ss in &mut rs.scope_spans {
            if let Some(s) = &mut ss.scope {
                n += kvs(&mut s.attributes, max);
            }
            for span in &mut ss.spans {
                n += kvs(&mut span.attributes, max);
                for e in &mut span.events {
                    n += kvs(&mut e.attributes, max);
                }
                for l in &mut span.links {
                    n += kvs(&mut l.attributes, max);
                }
            }
        }
    }
    n
}

fn kvs(list: &mut [KeyValue], max: usize) -> u64 {
    list.iter_mut()
        .filter_map(|kv| kv.value.as_mut())
        .map(|v| any(v, max))
        .sum()
}

fn any(v: &mut AnyValue, max: usize) -> u64 {
    match &mut v.value {
        Some(Value::StringValue(s)) if s.len() > max => {
            let mut cut = max;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            1
        }
        Some(Value::BytesValue(b)) if b.len() > max => {
            b.truncate(max);
            1
        }
        Some(Value::ArrayValue(a)) => a.values.iter_mut().map(|v| any(v, max)).sum(),
        Some(Value::KvlistValue(l)) => kvs(&mut l.values, max),
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
        assert_eq!(truncate_attributes(&mut rs, 5), 2);
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
        assert_eq!(truncate_attributes(&mut rs, 0), 0);
    }
}
