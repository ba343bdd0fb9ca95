//! A request's spans checked and regrouped by trace: each trace's share of the request becomes
//! one chunk, the bytes of an OTLP `TracesData` message, which the WAL stores and the live head
//! appends as they are (a trace's chunks concatenated are again a valid `TracesData`).

use std::collections::HashMap;

use allegro_engine::ids::TraceId;
use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use crate::sanitize::SpanRules;

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

/// Why a span cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// A malformed trace, span or parent ID.
    Ids,
    /// A start time outside the accepted range.
    Time,
}

/// A span the request carried that cannot be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct BadSpan {
    /// Its position: resource, scope, span.
    pub position: (usize, usize, usize),
    /// Which check it failed.
    pub kind: BadKind,
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

/// Checks the IDs and start time (against `rules.window`) of every span and regroups the good
/// ones by trace.
pub fn prepare(batches: &[ResourceSpans], rules: &SpanRules) -> Prepared {
    // (resource, scope, span with its encoded size) per trace, in order of first appearance.
    type Placed<'a> = Vec<(usize, usize, (&'a Span, usize))>;
    let mut order: Vec<TraceId> = Vec::new();
    let mut traces: HashMap<TraceId, Placed, foldhash::fast::RandomState> = HashMap::default();
    let mut bad = Vec::new();
    let mut sizes = Vec::new();
    for (ri, rs) in batches.iter().enumerate() {
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for (pi, span) in ss.spans.iter().enumerate() {
                let size = span.encoded_len();
                sizes.push(u32::try_from(size).unwrap_or(u32::MAX));
                let checked = check_ids(span)
                    .map_err(|r| (BadKind::Ids, r))
                    .and_then(|id| {
                        check_time(span.start_time_unix_nano, rules)
                            .map(|()| id)
                            .map_err(|r| (BadKind::Time, r))
                    });
                let id = match checked {
                    Ok(id) => id,
                    Err((kind, reason)) => {
                        bad.push(BadSpan {
                            position: (ri, si, pi),
                            kind,
                            reason,
                        });
                        continue;
                    }
                };
                traces
                    .entry(id)
                    .or_insert_with(|| {
                        order.push(id);
                        Vec::new()
                    })
                    .push((ri, si, (span, size)));
            }
        }
    }
    // Encoded resources and scopes are shared by every trace they contain.
    let resources: Vec<Option<Vec<u8>>> = batches
        .iter()
        .map(|rs| rs.resource.as_ref().map(|r| r.encode_to_vec()))
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
    let framing = Framing {
        resources: batches
            .iter()
            .zip(&resources)
            .map(|(rs, r)| (r.as_deref(), rs.schema_url.as_bytes()))
            .collect(),
        scopes: batches
            .iter()
            .zip(&scopes)
            .map(|(rs, sc)| {
                rs.scope_spans
                    .iter()
                    .zip(sc)
                    .map(|(ss, s)| (s.as_slice(), ss.schema_url.as_bytes()))
                    .collect()
            })
            .collect(),
    };
    let chunks = order
        .into_iter()
        .filter_map(|id| {
            let spans = traces.remove(&id)?;
            Some(TraceChunk {
                id,
                spans: spans.len() as u32,
                data: Bytes::from(framing.chunk(&spans)),
            })
        })
        .collect();
    Prepared { chunks, bad, sizes }
}

/// A span's encoding, written into its chunk.
pub(crate) trait SpanBytes {
    /// Encoded length.
    fn encoded_len(&self) -> usize;
    /// Appends the encoding.
    fn write(&self, out: &mut Vec<u8>);
}

/// A decoded span with its encoded size.
impl SpanBytes for (&Span, usize) {
    fn encoded_len(&self) -> usize {
        self.1
    }
    fn write(&self, out: &mut Vec<u8>) {
        self.0.encode_raw(out);
    }
}

/// A span's bytes as they came in.
impl SpanBytes for &[u8] {
    fn encoded_len(&self) -> usize {
        self.len()
    }
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// What each chunk repeats from its request: per resource its encoded `Resource` (when
/// present) and schema URL, per scope of a resource its encoded `InstrumentationScope` and
/// schema URL. One framing for the decoding path and the byte path, so both write the same
/// bytes.
pub(crate) struct Framing<'a> {
    /// By resource index.
    pub resources: Vec<(Option<&'a [u8]>, &'a [u8])>,
    /// By resource, then scope index.
    pub scopes: Vec<Vec<(&'a [u8], &'a [u8])>>,
}

impl Framing<'_> {
    /// One trace's spans, as (resource, scope, span) in request order, as `TracesData` bytes:
    /// consecutive spans of one resource share a `ResourceSpans`, of one scope a `ScopeSpans`.
    pub(crate) fn chunk<S: SpanBytes>(&self, spans: &[(usize, usize, S)]) -> Vec<u8> {
        let size: usize = spans.iter().map(|s| s.2.encoded_len() + 4).sum();
        let mut out = Vec::with_capacity(size + 512);
        let mut i = 0;
        while i < spans.len() {
            let ri = spans[i].0;
            let j = i + spans[i..].iter().take_while(|s| s.0 == ri).count();
            let (resource, url) = self.resources[ri];
            let mut body = Vec::new();
            if let Some(r) = resource {
                field(&mut body, 1, r);
            }
            let mut k = i;
            while k < j {
                let si = spans[k].1;
                let l = k + spans[k..j].iter().take_while(|s| s.1 == si).count();
                let (scope, scope_url) = self.scopes[ri][si];
                let len: usize = spans[k..l]
                    .iter()
                    .map(|s| 1 + encoded_len_varint(s.2.encoded_len() as u64) + s.2.encoded_len())
                    .sum();
                let mut sb = Vec::with_capacity(len + scope.len() + scope_url.len() + 8);
                field(&mut sb, 1, scope);
                for (_, _, span) in &spans[k..l] {
                    encode_key(2, WireType::LengthDelimited, &mut sb);
                    encode_varint(span.encoded_len() as u64, &mut sb);
                    span.write(&mut sb);
                }
                nonempty_field(&mut sb, 3, scope_url);
                field(&mut body, 2, &sb);
                k = l;
            }
            nonempty_field(&mut body, 3, url);
            field(&mut out, 1, &body);
            i = j;
        }
        out
    }
}

/// Writes a string field unless empty, as prost encodes proto3 strings.
fn nonempty_field(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    if !b.is_empty() {
        field(out, tag, b);
    }
}

/// Writes a length-delimited field.
fn field(out: &mut Vec<u8>, tag: u32, body: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A start time in `rules.window`, or why not.
fn check_time(start: u64, rules: &SpanRules) -> Result<(), String> {
    if rules.in_window(start) {
        return Ok(());
    }
    let at = |t: u64| match i64::try_from(t) {
        Ok(t) => chrono::DateTime::from_timestamp_nanos(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        Err(_) => format!("{t} ns after 1970"),
    };
    Err(if start < rules.window.0 {
        format!(
            "start time {} is before {} (overrides.ingestion.max_span_age)",
            at(start),
            at(rules.window.0)
        )
    } else {
        format!(
            "start time {} is after {} (overrides.ingestion.max_span_future)",
            at(start),
            at(rules.window.1)
        )
    })
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
        let p = prepare(&input, &SpanRules::none());
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
    fn spans_outside_the_window_are_refused_one_by_one_with_their_time() {
        let at = |start: u64| Span {
            start_time_unix_nano: start,
            end_time_unix_nano: start,
            ..span(1, start as u8 | 1, "")
        };
        let input = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![at(0), at(1_000), at(u64::MAX)],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let rules = SpanRules {
            window: (500, 2_000),
            ..SpanRules::none()
        };
        let p = prepare(&input, &rules);
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.chunks[0].spans, 1);
        let bad: Vec<_> = p.bad.iter().map(|b| (b.position.2, b.kind)).collect();
        assert_eq!(bad, [(0, BadKind::Time), (2, BadKind::Time)]);
        assert!(
            p.bad[0].reason.contains("1970-01-01T00:00:00Z is before")
                && p.bad[0].reason.contains("max_span_age"),
            "{}",
            p.bad[0].reason
        );
        assert!(
            p.bad[1].reason.contains("max_span_future"),
            "{}",
            p.bad[1].reason
        );
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
