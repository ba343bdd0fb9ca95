//! The fast path of [`crate::prepare`]: an OTLP export request regrouped by trace straight from
//! its protobuf bytes, without decoding it into structs and encoding it again.
//!
//! Decoding a request allocates every string of every span, and regrouping encodes them all
//! again; at a few hundred thousand spans per second that was half the receive path. Here each
//! span's bytes are validated in place, field by field against the OTLP schema, and copied as
//! they are into its trace's chunk. Validation is complete (wire types, lengths, UTF-8, nested
//! messages), so a chunk accepted here always decodes when its block is written: the WAL never
//! holds bytes the flush cannot read. Anything unusual (a bad ID, a value, key or name to cut,
//! too many attributes, a start time outside the window or an end before the start, a repeated
//! singular field, deep nesting) returns `None` and the request takes the decoding path, which
//! has the exact error messages and [`crate::sanitize`]'s fixes.

use std::collections::HashMap;

use allegro_engine::ids::TraceId;
use bytes::Bytes;

use crate::prepare::{Framing, Prepared, TraceChunk};
use crate::sanitize::SpanRules;

/// Nesting of attribute values (arrays and kvlists) handled here; deeper goes the slow way.
const MAX_DEPTH: u32 = 24;

/// A field's value as it sits on the wire.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint,
    Fixed64(u64),
    Fixed32,
    Len(&'a [u8]),
}

/// Reads one varint at `*pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        // The tenth byte may only carry the 64th bit.
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Calls `f` with every field of a message; `None` when the framing is broken or `f` refuses.
fn fields<'a>(buf: &'a [u8], mut f: impl FnMut(u32, Wire<'a>) -> Option<()>) -> Option<()> {
    let mut pos = 0;
    while pos < buf.len() {
        // As prost: a key is a u32 (field numbers up to 2^29 - 1), and field 0 is no field.
        let key = u32::try_from(varint(buf, &mut pos)?).ok()?;
        let tag = Some(key >> 3).filter(|t| *t > 0)?;
        let wire = match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
                Wire::Varint
            }
            1 => {
                let end = pos.checked_add(8).filter(|p| *p <= buf.len())?;
                let v = u64::from_le_bytes(buf[pos..end].try_into().ok()?);
                pos = end;
                Wire::Fixed64(v)
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let body = &buf[pos..end];
                pos = end;
                Wire::Len(body)
            }
            5 => {
                pos = pos.checked_add(4).filter(|p| *p <= buf.len())?;
                Wire::Fixed32
            }
            // Groups (deprecated) and invalid wire types: let prost decide.
            _ => return None,
        };
        f(tag, wire)?;
    }
    Some(())
}

/// The OTLP messages a span can contain.
#[derive(Clone, Copy, PartialEq)]
enum Msg {
    Resource,
    EntityRef,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
}

/// What a known field holds.
#[derive(Clone, Copy)]
enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    Str,
    Bytes,
    Nested(Msg),
}

/// The schema: the kind of field `tag` of `msg`, `None` for fields prost does not know (it
/// skips them, and so does the check).
fn kind(msg: Msg, tag: u32) -> Option<Kind> {
    use Kind::*;
    Some(match (msg, tag) {
        (Msg::Resource, 1) => Nested(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => Nested(Msg::EntityRef),
        (Msg::EntityRef, 1..=4) => Str,
        (Msg::Scope, 1 | 2) => Str,
        (Msg::Scope, 3) => Nested(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,
        (Msg::Span, 1 | 2 | 4) => Bytes,
        (Msg::Span, 3 | 5) => Str,
        (Msg::Span, 6 | 10 | 12 | 14) => Varint,
        (Msg::Span, 7 | 8) => Fixed64,
        (Msg::Span, 9) => Nested(Msg::KeyValue),
        (Msg::Span, 11) => Nested(Msg::Event),
        (Msg::Span, 13) => Nested(Msg::Link),
        (Msg::Span, 15) => Nested(Msg::Status),
        (Msg::Span, 16) => Fixed32,
        (Msg::Event, 1) => Fixed64,
        (Msg::Event, 2) => Str,
        (Msg::Event, 3) => Nested(Msg::KeyValue),
        (Msg::Event, 4) => Varint,
        (Msg::Link, 1 | 2) => Bytes,
        (Msg::Link, 3) => Str,
        (Msg::Link, 4) => Nested(Msg::KeyValue),
        (Msg::Link, 5) => Varint,
        (Msg::Link, 6) => Fixed32,
        (Msg::Status, 2) => Str,
        (Msg::Status, 3) => Varint,
        (Msg::KeyValue, 1) => Str,
        (Msg::KeyValue, 2) => Nested(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,
        (Msg::AnyValue, 1) => Str,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => Fixed64,
        (Msg::AnyValue, 5) => Nested(Msg::ArrayValue),
        (Msg::AnyValue, 6) => Nested(Msg::KvList),
        (Msg::AnyValue, 7) => Bytes,
        (Msg::ArrayValue, 1) => Nested(Msg::AnyValue),
        (Msg::KvList, 1) => Nested(Msg::KeyValue),
        _ => return None,
    })
}

/// The field of `msg` that holds its attribute list, if it has one.
fn attribute_tag(msg: Msg) -> Option<u32> {
    match msg {
        Msg::Resource => Some(1),
        Msg::Span => Some(9),
        Msg::Scope | Msg::Event => Some(3),
        Msg::Link => Some(4),
        _ => None,
    }
}

/// Checks that `buf` decodes as `msg`: every known field has its wire type, strings are UTF-8,
/// nested messages check too. `None` also when something would need a fix (`rules`).
fn check(msg: Msg, buf: &[u8], depth: u32, rules: &SpanRules) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut attrs = Attributes::new(msg, rules);
    fields(buf, |tag, wire| {
        attrs.count(tag)?;
        check_field(msg, tag, wire, depth, rules)
    })
}

/// Counts a message's attributes against `max_attributes`.
struct Attributes {
    tag: Option<u32>,
    left: usize,
}

impl Attributes {
    fn new(msg: Msg, rules: &SpanRules) -> Self {
        Self {
            tag: attribute_tag(msg).filter(|_| rules.max_attributes > 0),
            left: rules.max_attributes,
        }
    }

    /// `None` once field `tag` is one attribute too many.
    fn count(&mut self, tag: u32) -> Option<()> {
        if self.tag == Some(tag) {
            self.left = self.left.checked_sub(1)?;
        }
        Some(())
    }
}

fn check_field(msg: Msg, tag: u32, wire: Wire<'_>, depth: u32, rules: &SpanRules) -> Option<()> {
    let Some(kind) = kind(msg, tag) else {
        return Some(());
    };
    match (kind, wire) {
        (Kind::Varint, Wire::Varint)
        | (Kind::Fixed64, Wire::Fixed64(_))
        | (Kind::Fixed32, Wire::Fixed32) => Some(()),
        (Kind::Str, Wire::Len(b)) => {
            std::str::from_utf8(b).ok()?;
            too_long(msg, tag, b, rules)
        }
        (Kind::Bytes, Wire::Len(b)) => too_long(msg, tag, b, rules),
        (Kind::Nested(m), Wire::Len(b)) => check(m, b, depth + 1, rules),
        _ => None,
    }
}

/// Attribute values, keys and span names over their limits go the slow way, which cuts them.
fn too_long(msg: Msg, tag: u32, b: &[u8], rules: &SpanRules) -> Option<()> {
    let max = match (msg, tag) {
        (Msg::AnyValue, _) => rules.max_value_bytes,
        (Msg::KeyValue, 1) => rules.max_key_bytes,
        (Msg::Span, 5) => rules.max_name_bytes,
        _ => 0,
    };
    (max == 0 || b.len() <= max).then_some(())
}

/// A span's trace ID, when the span needs nothing but regrouping: its IDs check as
/// [`crate::prepare`] checks them, its start lies in the window and it does not end before it
/// starts.
fn span_trace_id(span: &[u8], rules: &SpanRules) -> Option<TraceId> {
    let (mut trace, mut span_id, mut parent): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
    let (mut start, mut end) = (0u64, 0u64);
    let mut attrs = Attributes::new(Msg::Span, rules);
    fields(span, |tag, wire| {
        match (tag, wire) {
            (1, Wire::Len(b)) => trace = b,
            (2, Wire::Len(b)) => span_id = b,
            (4, Wire::Len(b)) => parent = b,
            (7, Wire::Fixed64(v)) => start = v,
            (8, Wire::Fixed64(v)) => end = v,
            _ => {}
        }
        attrs.count(tag)?;
        check_field(Msg::Span, tag, wire, 0, rules)
    })?;
    let ok = span_id.len() == 8
        && (parent.is_empty() || parent.len() == 8)
        && end >= start
        && rules.in_window(start);
    ok.then(|| TraceId::from_bytes(trace).ok()).flatten()
}

/// Sets a singular field once; a second occurrence (which prost would merge) goes the slow way.
fn once<'a>(slot: &mut Option<&'a [u8]>, b: &'a [u8]) -> Option<()> {
    slot.replace(b).is_none().then_some(())
}

/// Regroups an encoded `ExportTraceServiceRequest` (or `TracesData`: same wire shape) by trace,
/// as [`crate::prepare::prepare`] does for a decoded one. `None` when the request needs the
/// decoding path: malformed, a span with bad IDs or times, or anything `rules` would change.
pub fn prepare_encoded(request: &[u8], rules: &SpanRules) -> Option<Prepared> {
    // (resource, scope, span bytes) per trace, in order of first appearance.
    type Spans<'a> = Vec<(usize, usize, &'a [u8])>;
    let mut order: Vec<TraceId> = Vec::new();
    let mut traces: HashMap<TraceId, Spans, foldhash::fast::RandomState> = HashMap::default();
    let mut framing = Framing {
        resources: Vec::new(),
        scopes: Vec::new(),
    };
    let mut sizes = Vec::new();
    fields(request, |tag, wire| {
        let (1, Wire::Len(rs)) = (tag, wire) else {
            // Unknown request fields are skipped, as prost does; a known one of the wrong
            // type is an error for prost.
            return (tag != 1).then_some(());
        };
        let ri = framing.resources.len();
        let (mut resource, mut url) = (None, None);
        let mut scopes = Vec::new();
        fields(rs, |tag, wire| match (tag, wire) {
            (1, Wire::Len(b)) => {
                check(Msg::Resource, b, 1, rules)?;
                once(&mut resource, b)
            }
            (2, Wire::Len(ss)) => {
                let si = scopes.len();
                let (mut scope, mut surl) = (None, None);
                fields(ss, |tag, wire| match (tag, wire) {
                    (1, Wire::Len(b)) => {
                        check(Msg::Scope, b, 1, rules)?;
                        once(&mut scope, b)
                    }
                    (2, Wire::Len(span)) => {
                        let id = span_trace_id(span, rules)?;
                        sizes.push(u32::try_from(span.len()).unwrap_or(u32::MAX));
                        traces
                            .entry(id)
                            .or_insert_with(|| {
                                order.push(id);
                                Vec::new()
                            })
                            .push((ri, si, span));
                        Some(())
                    }
                    (3, Wire::Len(b)) => {
                        std::str::from_utf8(b).ok()?;
                        once(&mut surl, b)
                    }
                    (1..=3, _) => None,
                    _ => Some(()),
                })?;
                scopes.push((scope.unwrap_or_default(), surl.unwrap_or_default()));
                Some(())
            }
            (3, Wire::Len(b)) => {
                std::str::from_utf8(b).ok()?;
                once(&mut url, b)
            }
            (1..=3, _) => None,
            _ => Some(()),
        })?;
        framing.resources.push((resource, url.unwrap_or_default()));
        framing.scopes.push(scopes);
        Some(())
    })?;
    let mut chunks = Vec::with_capacity(order.len());
    for id in order {
        let spans = traces.remove(&id)?;
        chunks.push(TraceChunk {
            id,
            spans: spans.len() as u32,
            data: Bytes::from(framing.chunk(&spans)),
        });
    }
    Some(Prepared {
        chunks,
        bad: Vec::new(),
        sizes,
    })
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::TracesData;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

    use super::*;
    use crate::prepare::prepare;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: if id > 1 { vec![1; 8] } else { Vec::new() },
            name: format!("op-{trace}-{id}"),
            kind: 2,
            start_time_unix_nano: 1_000 + u64::from(id),
            end_time_unix_nano: 2_000,
            flags: 0x100,
            attributes: vec![
                kv("http.route", Value::StringValue("/cart/é".into())),
                kv("n", Value::IntValue(-5)),
                kv("f", Value::DoubleValue(0.5)),
                kv(
                    "nested",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Value::KvlistValue(KeyValueList {
                                values: vec![kv("deep", Value::BytesValue(vec![0, 255]))],
                            })),
                        }],
                    }),
                ),
            ],
            events: vec![Event {
                time_unix_nano: 1_500,
                name: "exception".into(),
                attributes: vec![kv("exception.message", Value::StringValue("boom".into()))],
                dropped_attributes_count: 1,
            }],
            links: vec![Link {
                trace_id: vec![9; 16],
                span_id: vec![9; 8],
                trace_state: "a=b".into(),
                attributes: vec![kv("l", Value::BoolValue(true))],
                flags: 1,
                ..Default::default()
            }],
            status: Some(Status {
                message: "bad".into(),
                code: 2,
            }),
            ..Default::default()
        }
    }

    /// Two resources, three scopes, three traces interleaved across all of them.
    fn request() -> ExportTraceServiceRequest {
        let scope = |name: &str, spans: Vec<Span>| ScopeSpans {
            scope: Some(InstrumentationScope {
                name: name.into(),
                version: "1".into(),
                attributes: vec![kv("lib", Value::StringValue(name.into()))],
                ..Default::default()
            }),
            spans,
            schema_url: format!("https://s/{name}"),
        };
        let resource = |svc: &str, scopes| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(svc.into()))],
                ..Default::default()
            }),
            scope_spans: scopes,
            schema_url: "https://r".into(),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource(
                    "cart",
                    vec![
                        scope("a", vec![span(1, 1), span(2, 1), span(1, 2)]),
                        scope("b", vec![span(3, 1), span(1, 3)]),
                    ],
                ),
                resource("shop", vec![scope("c", vec![span(2, 2), span(1, 4)])]),
                ResourceSpans::default(),
            ],
        }
    }

    #[test]
    fn chunks_are_byte_for_byte_those_of_the_decoding_path() {
        let req = request();
        let slow = prepare(&req.resource_spans, &SpanRules::none());
        let fast = prepare_encoded(&req.encode_to_vec(), &SpanRules::none()).unwrap();
        assert_eq!(fast.sizes, slow.sizes);
        assert_eq!(fast.chunks.len(), 3);
        for (f, s) in fast.chunks.iter().zip(&slow.chunks) {
            assert_eq!((f.id, f.spans), (s.id, s.spans));
            assert_eq!(f.data, s.data, "trace {}", f.id.to_hex());
        }
        // Trace 1 spans both resources and two scopes of the first.
        let t1 = TracesData::decode(&*fast.chunks[0].data).unwrap();
        assert_eq!(t1.resource_spans.len(), 2);
        assert_eq!(t1.resource_spans[0].scope_spans.len(), 2);
        assert_eq!(t1.resource_spans[0].scope_spans[0].spans.len(), 2);
    }

    #[test]
    fn requests_needing_more_than_regrouping_take_the_decoding_path() {
        let mut bad_id = request();
        bad_id.resource_spans[1].scope_spans[0].spans[0].span_id = vec![1; 4];
        assert!(prepare_encoded(&bad_id.encode_to_vec(), &SpanRules::none()).is_none());
        let mut zero = request();
        zero.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![0; 16];
        assert!(prepare_encoded(&zero.encode_to_vec(), &SpanRules::none()).is_none());
        // "boom" and "/cart/é" fit in 7 bytes; the nested bytes value too; "cart" resource ok.
        let bytes = request().encode_to_vec();
        let values = |max_value_bytes| SpanRules {
            max_value_bytes,
            ..SpanRules::none()
        };
        assert!(prepare_encoded(&bytes, &values(8)).is_some());
        assert!(prepare_encoded(&bytes, &values(3)).is_none());
        // Each fix the slow path would make sends the request there.
        for rules in [
            SpanRules {
                max_key_bytes: 5, // "http.route"
                ..SpanRules::none()
            },
            SpanRules {
                max_name_bytes: 5, // "op-1-1"
                ..SpanRules::none()
            },
            SpanRules {
                max_attributes: 3, // spans carry 4
                ..SpanRules::none()
            },
            SpanRules {
                window: (1_003, u64::MAX), // spans start at 1_001..=1_004
                ..SpanRules::none()
            },
        ] {
            assert!(prepare_encoded(&bytes, &rules).is_none(), "{rules:?}");
        }
        let roomy = SpanRules {
            max_key_bytes: 17, // "exception.message"
            max_name_bytes: 6,
            max_attributes: 4,
            window: (1_001, 1_004),
            ..SpanRules::none()
        };
        assert!(prepare_encoded(&bytes, &roomy).is_some());
        let mut backwards = request();
        backwards.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = 1;
        assert!(prepare_encoded(&backwards.encode_to_vec(), &SpanRules::none()).is_none());
        assert!(prepare_encoded(&bytes[..bytes.len() - 1], &SpanRules::none()).is_none());
        assert!(
            prepare_encoded(&[], &SpanRules::none())
                .unwrap()
                .chunks
                .is_empty()
        );
    }

    /// Tiny deterministic generator: the test needs variety, not randomness.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as usize
        }
    }

    #[test]
    fn corrupted_requests_are_never_accepted_when_prost_refuses_them() {
        let good = request().encode_to_vec();
        let mut rng = Lcg(7);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut b = good.clone();
            for _ in 0..1 + rng.next() % 3 {
                let at = rng.next() % b.len();
                match rng.next() % 3 {
                    0 => b[at] = rng.next() as u8,
                    1 => b[at] ^= 0x80,
                    _ => b.truncate(at.max(1)),
                }
            }
            let decoded = ExportTraceServiceRequest::decode(&*b);
            match prepare_encoded(&b, &SpanRules::none()) {
                Some(p) => {
                    accepted += 1;
                    assert!(decoded.is_ok(), "accepted what prost refuses: {b:?}");
                    // Every chunk decodes, as the flush will decode it.
                    for c in &p.chunks {
                        TracesData::decode(&*c.data).unwrap();
                    }
                }
                None => refused += 1,
            }
        }
        assert!(
            accepted > 500 && refused > 500,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn a_key_past_u32_is_refused_as_prost_refuses_it() {
        // Found by `cargo fuzz run otlp_wire`: a fixed32 field whose key varint is above
        // u32::MAX (field number past 2^29 - 1). The walk skipped it as an unknown field and
        // accepted the request; prost refuses the key.
        let input = [0xf5, 0xfe, 0xd7, 0xdb, 0x35, 0x61, 0x1a, 0x8f, 0x9c];
        assert!(ExportTraceServiceRequest::decode(&input[..]).is_err());
        assert!(prepare_encoded(&input, &SpanRules::none()).is_none());
        // The largest field number prost takes is skipped as unknown by both.
        let max = [0xfd, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3, 4];
        assert!(ExportTraceServiceRequest::decode(&max[..]).is_ok());
        assert!(prepare_encoded(&max, &SpanRules::none()).is_some());
    }
}
