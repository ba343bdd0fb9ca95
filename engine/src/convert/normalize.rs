//! A canonical form of OTLP trace data: equal content, equal bytes.
//!
//! Used to merge a trace's spans from several blocks (dropping exact duplicates) and by tests to
//! compare what went in with what came out.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// By key; duplicate keys (which OTLP forbids but clients send) by their encoded value.
fn sort_attrs(a: &mut [KeyValue]) {
    a.sort_by(|x, y| {
        x.key
            .cmp(&y.key)
            .then_with(|| x.encode_to_vec().cmp(&y.encode_to_vec()))
    });
}

fn normalize_span(s: &mut Span) {
    sort_attrs(&mut s.attributes);
    for e in &mut s.events {
        sort_attrs(&mut e.attributes);
    }
    for l in &mut s.links {
        sort_attrs(&mut l.attributes);
    }
    s.status.get_or_insert_with(Default::default);
}

/// Merges equal resources and scopes, sorts attributes by key and spans by (trace ID, start,
/// span ID), removes exact duplicate spans, and fills absent resource/scope/status with empty
/// messages (Grafana needs them present).
pub fn normalize(input: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
    let mut out: Vec<(Vec<u8>, ResourceSpans)> = Vec::new();
    for mut rs in input {
        let mut resource = rs.resource.take().unwrap_or_default();
        sort_attrs(&mut resource.attributes);
        let mut key = resource.encode_to_vec();
        key.extend_from_slice(rs.schema_url.as_bytes());
        let pos = match out.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                out.push((
                    key,
                    ResourceSpans {
                        resource: Some(resource),
                        scope_spans: vec![],
                        schema_url: rs.schema_url.clone(),
                    },
                ));
                out.len() - 1
            }
        };
        let target = &mut out[pos].1.scope_spans;
        for mut ss in rs.scope_spans {
            let mut scope = ss.scope.take().unwrap_or_default();
            sort_attrs(&mut scope.attributes);
            let found = target
                .iter()
                .position(|t| t.scope.as_ref() == Some(&scope) && t.schema_url == ss.schema_url);
            let idx = match found {
                Some(i) => i,
                None => {
                    target.push(ScopeSpans {
                        scope: Some(scope),
                        spans: vec![],
                        schema_url: ss.schema_url.clone(),
                    });
                    target.len() - 1
                }
            };
            for mut sp in ss.spans.drain(..) {
                normalize_span(&mut sp);
                target[idx].spans.push(sp);
            }
        }
    }
    let mut result: Vec<(Vec<u8>, ResourceSpans)> = out;
    for (_, rs) in &mut result {
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        for ss in &mut rs.scope_spans {
            let mut keyed: Vec<(Vec<u8>, Span)> =
                ss.spans.drain(..).map(|s| (s.encode_to_vec(), s)).collect();
            keyed.sort_by(|a, b| {
                (&a.1.trace_id, a.1.start_time_unix_nano, &a.1.span_id, &a.0).cmp(&(
                    &b.1.trace_id,
                    b.1.start_time_unix_nano,
                    &b.1.span_id,
                    &b.0,
                ))
            });
            keyed.dedup_by(|a, b| a.0 == b.0);
            ss.spans = keyed.into_iter().map(|(_, s)| s).collect();
        }
        rs.scope_spans.sort_by_key(|ss| {
            (
                ss.scope.as_ref().map(Message::encode_to_vec),
                ss.schema_url.clone(),
            )
        });
    }
    result.retain(|(_, rs)| !rs.scope_spans.is_empty());
    result.sort_by(|a, b| a.0.cmp(&b.0));
    result.into_iter().map(|(_, rs)| rs).collect()
}

/// Number of spans in OTLP data.
pub fn span_count(rs: &[ResourceSpans]) -> usize {
    rs.iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}
