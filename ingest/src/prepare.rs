//! A request's spans checked and regrouped by trace: each trace's share of the request becomes
//! one chunk, the bytes of an OTLP `TracesData` message, which the WAL stores and the live head
//! appends as they are (a trace's chunks concatenated are again a valid `TracesData`).

use std::collections::HashMap;

use allegro_engine::ids::TraceId;
use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// One trace's spans from one request.
#[derive(Debug, Clone)]
pub struct TraceChunk {
    /// The trace.
    pub id: TraceId,
    /// Spans in the chunk.
    pub spans: u32,
    /// `TracesData` bytes.
    pub data: Bytes,
}

/// A span the request carried that cannot be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BadSpan {
    /// Its position: resource, scope, span.
    pub position: (usize, usize, usize),
    /// Why.
    pub reason: String,
}

/// A request after checking and regrouping.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Chunks, one per trace, in order of first appearance.
    pub chunks: Vec<TraceChunk>,
    /// Spans that were refused, with reasons.
    pub bad: Vec<BadSpan>,
    /// Encoded size of every span of the request, in request order (bad ones included), so
    /// later stages (span metrics' `size_total`) need not walk the spans again.
    pub sizes: Vec<u32>,
}

/// Checks the IDs of every span and regroups the good ones by trace.
pub fn prepare(batches: &[ResourceSpans]) -> Prepared {
    // Encoded resources and scopes are shared by every trace they contain.
    struct Group<'a> {
        rs: usize,
        ss: usize,
        spans: Vec<(&'a Span, usize)>,
    }
    let mut order: Vec<TraceId> = Vec::new();
    let mut traces: HashMap<TraceId, Vec<Group>, foldhash::fast::RandomState> = HashMap::default();
    let mut bad = Vec::new();
    let mut sizes = Vec::new();
    for (ri, rs) in batches.iter().enumerate() {
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for (pi, span) in ss.spans.iter().enumerate() {
                let size = span.encoded_len();
                sizes.push(u32::try_from(size).unwrap_or(u32::MAX));
                let id = match check_ids(span) {
                    Ok(id) => id,
                    Err(reason) => {
                        bad.push(BadSpan {
                            position: (ri, si, pi),
                            reason,
                        });
                        continue;
                    }
                };
                let groups = traces.entry(id).or_insert_with(|| {
                    order.push(id);
                    Vec::new()
                });
                match groups.last_mut() {
                    Some(g) if g.rs == ri && g.ss == si => g.spans.push((span, size)),
                    _ => groups.push(Group {
                        rs: ri,
                        ss: si,
                        spans: vec![(span, size)],
                    }),
                }
            }
        }
    }
    let resources: Vec<Vec<u8>> = batches
        .iter()
        .map(|rs| {
            rs.resource
                .as_ref()
                .map(|r| r.encode_to_vec())
                .unwrap_or_default()
        })
        .collect();
    let scopes: Vec<Vec<Vec<u8>>> = batches
        .iter()
        .map(|rs| {
            rs.scope_spans
                .iter()
                .map(|ss| {
                    ss.scope
                        .as_ref()
                        .map(|s| s.encode_to_vec())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    let mut chunks = Vec::with_capacity(order.len());
    for id in order {
        let Some(groups) = traces.remove(&id) else {
            continue;
        };
        let mut out = Vec::new();
        let mut spans = 0u32;
        let mut i = 0;
        // Consecutive groups of one resource share one ResourceSpans.
        while i < groups.len() {
            let ri = groups[i].rs;
            let j = i + groups[i..].iter().take_while(|g| g.rs == ri).count();
            let rs = &batches[ri];
            let scope_bodies: Vec<Vec<u8>> = groups[i..j]
                .iter()
                .map(|g| {
                    spans += g.spans.len() as u32;
                    scope_spans_body(
                        &scopes[g.rs][g.ss],
                        &g.spans,
                        &rs.scope_spans[g.ss].schema_url,
                    )
                })
                .collect();
            let mut body = Vec::new();
            if rs.resource.is_some() {
                field(&mut body, 1, &resources[ri]);
            }
            for b in &scope_bodies {
                field(&mut body, 2, b);
            }
            string_field(&mut body, 3, &rs.schema_url);
            field(&mut out, 1, &body);
            i = j;
        }
        chunks.push(TraceChunk {
            id,
            spans,
            data: Bytes::from(out),
        });
    }
    Prepared { chunks, bad, sizes }
}

/// `spans` with their encoded sizes.
fn scope_spans_body(scope: &[u8], spans: &[(&Span, usize)], schema_url: &str) -> Vec<u8> {
    let len: usize = spans
        .iter()
        .map(|(_, l)| 1 + encoded_len_varint(*l as u64) + l)
        .sum();
    let mut b = Vec::with_capacity(len + scope.len() + 8 + schema_url.len());
    field(&mut b, 1, scope);
    for (s, l) in spans {
        encode_key(2, WireType::LengthDelimited, &mut b);
        encode_varint(*l as u64, &mut b);
        s.encode_raw(&mut b);
    }
    string_field(&mut b, 3, schema_url);
    b
}

/// Writes a length-delimited field.
pub(crate) fn field(out: &mut Vec<u8>, tag: u32, body: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

fn string_field(out: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        field(out, tag, s.as_bytes());
    }
}

fn check_ids(span: &Span) -> Result<TraceId, String> {
    let id = TraceId::from_bytes(&span.trace_id).map_err(|_| {
        if span.trace_id.len() == 16 {
            "trace ID is all zeros".to_string()
        } else {
            format!("trace ID must be 16 bytes, got {}", span.trace_id.len())
        }
    })?;
    if span.span_id.len() != 8 {
        return Err(format!(
            "span ID must be 8 bytes, got {}",
            span.span_id.len()
        ));
    }
    if !(span.parent_span_id.is_empty() || span.parent_span_id.len() == 8) {
        return Err(format!(
            "parent span ID must be empty or 8 bytes, got {}",
            span.parent_span_id.len()
        ));
    }
    Ok(id)
}

/// Decodes a trace's concatenated chunks.
pub fn decode_chunks(data: &[u8]) -> Result<Vec<ResourceSpans>, prost::DecodeError> {
    opentelemetry_proto::tonic::trace::v1::TracesData::decode(data).map(|t| t.resource_spans)
}

#[cfg(test)]
mod tests {
    use allegro_engine::convert::normalize::normalize;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

    use super::*;

    fn span(trace: u8, id: u8, name: &str) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: name.into(),
            ..Default::default()
        }
    }

    fn res(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            service.into(),
                        ),
                    ),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    #[test]
    fn regroups_by_trace_and_keeps_everything() {
        let scope = Some(InstrumentationScope {
            name: "lib".into(),
            ..Default::default()
        });
        let input = vec![
            ResourceSpans {
                resource: res("a"),
                scope_spans: vec![ScopeSpans {
                    scope: scope.clone(),
                    spans: vec![span(1, 1, "a1"), span(2, 2, "a2"), span(1, 3, "a3")],
                    schema_url: "s".into(),
                }],
                schema_url: "r".into(),
            },
            ResourceSpans {
                resource: res("b"),
                scope_spans: vec![ScopeSpans {
                    scope,
                    spans: vec![
                        span(2, 4, "b1"),
                        Span {
                            span_id: vec![1, 2],
                            ..span(3, 5, "bad")
                        },
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            },
        ];
        let p = prepare(&input);
        assert_eq!(p.bad.len(), 1);
        assert_eq!(p.bad[0].position, (1, 0, 1));
        assert!(p.bad[0].reason.contains("span ID must be 8 bytes"));
        let ids: Vec<u8> = p.chunks.iter().map(|c| c.id.0[0]).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(p.chunks[0].spans, 2);
        assert_eq!(p.chunks[1].spans, 2);
        // Trace 1 decodes to exactly its spans under the original resource and scope.
        let t1 = decode_chunks(&p.chunks[0].data).unwrap();
        let mut want = input[0].clone();
        want.scope_spans[0].spans.remove(1);
        assert_eq!(t1, vec![want]);
        // Chunks of the same trace concatenate into one valid message.
        let mut both = p.chunks[1].data.to_vec();
        both.extend_from_slice(&p.chunks[1].data);
        let t2 = decode_chunks(&both).unwrap();
        assert_eq!(t2.len(), 4);
        let merged = normalize(t2);
        let names: Vec<&str> = merged
            .iter()
            .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, vec!["a2", "b1"], "exact duplicates merge away");
    }

    #[test]
    fn rejects_bad_ids_with_reasons() {
        let bad = |s: Span| check_ids(&s).unwrap_err();
        assert!(
            bad(Span {
                trace_id: vec![0; 16],
                ..span(1, 1, "")
            })
            .contains("all zeros")
        );
        assert!(
            bad(Span {
                trace_id: vec![1; 3],
                ..span(1, 1, "")
            })
            .contains("16 bytes, got 3")
        );
        assert!(
            bad(Span {
                parent_span_id: vec![1; 4],
                ..span(1, 1, "")
            })
            .contains("parent")
        );
        assert!(
            check_ids(&Span {
                parent_span_id: vec![9; 8],
                ..span(1, 1, "")
            })
            .is_ok()
        );
    }
}
