//! OTLP trace data as JSON, in the two dialects Allegro speaks:
//! - **OTLP JSON** (OTLP/HTTP, files): hex IDs, enums as numbers, 64-bit integers as strings;
//! - **Tempo JSON** (gogo jsonpb, Tempo's HTTP API): base64 IDs, enums as names.
//!
//! Both omit zero values, as protobuf JSON does. The decoder accepts either dialect, numbers or
//! strings for integers, enum names or numbers, and camelCase or snake_case keys.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value as J, json};

use crate::error::{EngineError, Result};

/// Which JSON dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OTLP/JSON: hex IDs, numeric enums.
    Otlp,
    /// Tempo's jsonpb: base64 IDs, enum names.
    Tempo,
}

/// OTLP span kinds by number, as enum names (also Tempo's `span_kind` label values).
pub const KIND_NAMES: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
/// OTLP status codes by number, as enum names (also Tempo's `status_code` label values).
pub const STATUS_NAMES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

struct Obj(Map<String, J>);

impl Obj {
    fn new() -> Self {
        Self(Map::new())
    }
    fn str(&mut self, k: &str, v: &str) -> &mut Self {
        if !v.is_empty() {
            self.0.insert(k.into(), J::String(v.into()));
        }
        self
    }
    fn u64s(&mut self, k: &str, v: u64) -> &mut Self {
        if v != 0 {
            self.0.insert(k.into(), J::String(v.to_string()));
        }
        self
    }
    fn u32(&mut self, k: &str, v: u32) -> &mut Self {
        if v != 0 {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn arr(&mut self, k: &str, v: Vec<J>) -> &mut Self {
        if !v.is_empty() {
            self.0.insert(k.into(), J::Array(v));
        }
        self
    }
    fn set(&mut self, k: &str, v: J) -> &mut Self {
        self.0.insert(k.into(), v);
        self
    }
    fn done(&mut self) -> J {
        J::Object(std::mem::take(&mut self.0))
    }
}

/// Encodes spans grouped by resource as a JSON array of `ResourceSpans`.
pub fn encode_resource_spans(rs: &[ResourceSpans], d: Dialect) -> J {
    J::Array(rs.iter().map(|r| encode_rs(r, d)).collect())
}

fn id(b: &[u8], d: Dialect) -> String {
    match d {
        Dialect::Otlp => hex::encode(b),
        Dialect::Tempo => B64.encode(b),
    }
}

fn enum_value(v: i32, names: &[&str], d: Dialect) -> Option<J> {
    if v == 0 {
        return None;
    }
    Some(
        match (d, usize::try_from(v).ok().and_then(|i| names.get(i))) {
            (Dialect::Tempo, Some(n)) => J::String((*n).into()),
            _ => json!(v),
        },
    )
}

fn encode_rs(r: &ResourceSpans, d: Dialect) -> J {
    let res = r.resource.clone().unwrap_or_default();
    let refs = res
        .entity_refs
        .iter()
        .map(|e| {
            let ids = e.id_keys.iter().map(|k| J::String(k.clone())).collect();
            let desc = e
                .description_keys
                .iter()
                .map(|k| J::String(k.clone()))
                .collect();
            Obj::new()
                .str("schemaUrl", &e.schema_url)
                .str("type", &e.r#type)
                .arr("idKeys", ids)
                .arr("descriptionKeys", desc)
                .done()
        })
        .collect();
    let resource = Obj::new()
        .arr("attributes", attrs(&res.attributes, d))
        .u32("droppedAttributesCount", res.dropped_attributes_count)
        .arr("entityRefs", refs)
        .done();
    let scopes = r
        .scope_spans
        .iter()
        .map(|ss| {
            let sc = ss.scope.clone().unwrap_or_default();
            let scope = Obj::new()
                .str("name", &sc.name)
                .str("version", &sc.version)
                .arr("attributes", attrs(&sc.attributes, d))
                .u32("droppedAttributesCount", sc.dropped_attributes_count)
                .done();
            Obj::new()
                .set("scope", scope)
                .arr(
                    "spans",
                    ss.spans.iter().map(|s| encode_span(s, d)).collect(),
                )
                .str("schemaUrl", &ss.schema_url)
                .done()
        })
        .collect();
    Obj::new()
        .set("resource", resource)
        .arr("scopeSpans", scopes)
        .str("schemaUrl", &r.schema_url)
        .done()
}

fn encode_span(s: &Span, d: Dialect) -> J {
    let mut o = Obj::new();
    o.str("traceId", &id(&s.trace_id, d))
        .str("spanId", &id(&s.span_id, d))
        .str("traceState", &s.trace_state);
    o.str("parentSpanId", &id(&s.parent_span_id, d))
        .u32("flags", s.flags)
        .str("name", &s.name);
    if let Some(k) = enum_value(s.kind, &KIND_NAMES, d) {
        o.set("kind", k);
    }
    o.u64s("startTimeUnixNano", s.start_time_unix_nano)
        .u64s("endTimeUnixNano", s.end_time_unix_nano);
    o.arr("attributes", attrs(&s.attributes, d))
        .u32("droppedAttributesCount", s.dropped_attributes_count);
    let events = s
        .events
        .iter()
        .map(|e| {
            Obj::new()
                .u64s("timeUnixNano", e.time_unix_nano)
                .str("name", &e.name)
                .arr("attributes", attrs(&e.attributes, d))
                .u32("droppedAttributesCount", e.dropped_attributes_count)
                .done()
        })
        .collect();
    o.arr("events", events)
        .u32("droppedEventsCount", s.dropped_events_count);
    let links = s
        .links
        .iter()
        .map(|l| {
            Obj::new()
                .str("traceId", &id(&l.trace_id, d))
                .str("spanId", &id(&l.span_id, d))
                .str("traceState", &l.trace_state)
                .arr("attributes", attrs(&l.attributes, d))
                .u32("droppedAttributesCount", l.dropped_attributes_count)
                .u32("flags", l.flags)
                .done()
        })
        .collect();
    o.arr("links", links)
        .u32("droppedLinksCount", s.dropped_links_count);
    let st = s.status.clone().unwrap_or_default();
    let mut status = Obj::new();
    status.str("message", &st.message);
    if let Some(c) = enum_value(st.code, &STATUS_NAMES, d) {
        status.set("code", c);
    }
    o.set("status", status.done());
    o.done()
}

/// Encodes attributes as OTLP/jsonpb `KeyValue` objects.
pub fn attrs(kvs: &[KeyValue], d: Dialect) -> Vec<J> {
    kvs.iter()
        .map(|kv| {
            let mut o = Obj::new();
            o.set("key", J::String(kv.key.clone()));
            if let Some(v) = &kv.value {
                o.set("value", any(v, d));
            }
            o.done()
        })
        .collect()
}

fn any(v: &AnyValue, d: Dialect) -> J {
    let mut o = Obj::new();
    match &v.value {
        None => {}
        Some(Value::StringValue(s)) => {
            o.set("stringValue", J::String(s.clone()));
        }
        Some(Value::BoolValue(b)) => {
            o.set("boolValue", J::Bool(*b));
        }
        Some(Value::IntValue(i)) => {
            o.set("intValue", J::String(i.to_string()));
        }
        Some(Value::DoubleValue(f)) => {
            let v = if f.is_finite() {
                json!(f)
            } else if f.is_nan() {
                json!("NaN")
            } else if *f > 0.0 {
                json!("Infinity")
            } else {
                json!("-Infinity")
            };
            o.set("doubleValue", v);
        }
        Some(Value::ArrayValue(a)) => {
            o.set(
                "arrayValue",
                Obj::new()
                    .arr("values", a.values.iter().map(|x| any(x, d)).collect())
                    .done(),
            );
        }
        Some(Value::KvlistValue(l)) => {
            o.set(
                "kvlistValue",
                Obj::new().arr("values", attrs(&l.values, d)).done(),
            );
        }
        Some(Value::BytesValue(b)) => {
            o.set("bytesValue", J::String(B64.encode(b)));
        }
        Some(Value::StringValueStrindex(i)) => {
            o.set("stringValueStrindex", json!(i));
        }
    }
    o.done()
}

// ---------------------------------------------------------------------------------------------
// Decoding

struct Ctx<'a> {
    path: String,
    v: &'a J,
}

fn err(path: &str, msg: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidInput(format!("{path}: {msg}"))
}

impl<'a> Ctx<'a> {
    fn field(&self, camel: &str, snake: &str) -> Option<Ctx<'a>> {
        let o = self.v.as_object()?;
        let v = o.get(camel).or_else(|| o.get(snake))?;
        if v.is_null() {
            return None;
        }
        Some(Ctx {
            path: format!("{}.{camel}", self.path),
            v,
        })
    }

    fn list(&self, camel: &str, snake: &str) -> Result<Vec<Ctx<'a>>> {
        let Some(f) = self.field(camel, snake) else {
            return Ok(Vec::new());
        };
        let arr =
            f.v.as_array()
                .ok_or_else(|| err(&f.path, "expected an array"))?;
        Ok(arr
            .iter()
            .enumerate()
            .map(|(i, v)| Ctx {
                path: format!("{}[{i}]", f.path),
                v,
            })
            .collect())
    }

    fn string(&self, camel: &str, snake: &str) -> Result<String> {
        match self.field(camel, snake) {
            None => Ok(String::new()),
            Some(f) => {
                f.v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err(&f.path, "expected a string"))
            }
        }
    }

    fn uint(&self, camel: &str, snake: &str) -> Result<u64> {
        let Some(f) = self.field(camel, snake) else {
            return Ok(0);
        };
        match f.v {
            J::Number(n) => n
                .as_u64()
                .ok_or_else(|| err(&f.path, "expected a non-negative integer")),
            J::String(s) => s
                .parse()
                .map_err(|_| err(&f.path, format!("{s:?} is not a non-negative integer"))),
            _ => Err(err(&f.path, "expected an integer")),
        }
    }

    fn u32(&self, camel: &str, snake: &str) -> Result<u32> {
        let v = self.uint(camel, snake)?;
        u32::try_from(v)
            .map_err(|_| err(&format!("{}.{camel}", self.path), "value exceeds 32 bits"))
    }

    fn enumeration(&self, camel: &str, names: &[&str]) -> Result<i32> {
        let Some(f) = self.field(camel, camel) else {
            return Ok(0);
        };
        match f.v {
            J::Number(n) => n
                .as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(|| err(&f.path, "expected an enum number")),
            J::String(s) => names
                .iter()
                .position(|n| n == s)
                .map(|i| i as i32)
                .ok_or_else(|| {
                    err(
                        &f.path,
                        format!("unknown value {s:?}; expected one of {}", names.join(", ")),
                    )
                }),
            _ => Err(err(&f.path, "expected an enum name or number")),
        }
    }

    fn bytes_id(&self, camel: &str, snake: &str) -> Result<Vec<u8>> {
        let s = self.string(camel, snake)?;
        if s.is_empty() {
            return Ok(Vec::new());
        }
        if s.len() % 2 == 0
            && s.bytes().all(|b| b.is_ascii_hexdigit())
            && let Ok(b) = hex::decode(&s)
        {
            return Ok(b);
        }
        B64.decode(&s).map_err(|_| {
            err(
                &format!("{}.{camel}", self.path),
                format!("{s:?} is neither hex nor base64"),
            )
        })
    }
}

/// Decodes an OTLP `ExportTraceServiceRequest` / `TracesData` JSON document
/// (`{"resourceSpans":[...]}`), or Tempo's v1 trace JSON (`{"batches":[...]}`).
pub fn decode_traces_json(bytes: &[u8]) -> Result<Vec<ResourceSpans>> {
    let v: J = serde_json::from_slice(bytes).map_err(|e| {
        EngineError::InvalidInput(format!(
            "malformed JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let root = Ctx {
        path: "$".into(),
        v: &v,
    };
    if !v.is_object() {
        return Err(err("$", "expected a JSON object with resourceSpans"));
    }
    let list = if root.field("batches", "batches").is_some() {
        root.list("batches", "batches")?
    } else {
        root.list("resourceSpans", "resource_spans")?
    };
    list.iter().map(decode_rs).collect()
}

fn decode_rs(c: &Ctx) -> Result<ResourceSpans> {
    let resource = match c.field("resource", "resource") {
        None => None,
        Some(r) => Some(Resource {
            attributes: decode_attrs(&r)?,
            dropped_attributes_count: r
                .u32("droppedAttributesCount", "dropped_attributes_count")?,
            entity_refs: r
                .list("entityRefs", "entity_refs")?
                .iter()
                .map(|e| {
                    let strs = |k: &str, s: &str| -> Result<Vec<String>> {
                        e.list(k, s)?
                            .iter()
                            .map(|x| {
                                x.v.as_str()
                                    .map(str::to_string)
                                    .ok_or_else(|| err(&x.path, "expected a string"))
                            })
                            .collect()
                    };
                    Ok(EntityRef {
                        schema_url: e.string("schemaUrl", "schema_url")?,
                        r#type: e.string("type", "type")?,
                        id_keys: strs("idKeys", "id_keys")?,
                        description_keys: strs("descriptionKeys", "description_keys")?,
                    })
                })
                .collect::<Result<_>>()?,
        }),
    };
    let scope_spans = c
        .list("scopeSpans", "scope_spans")?
        .iter()
        .map(|ss| {
            let scope = match ss.field("scope", "scope") {
                None => None,
                Some(s) => Some(InstrumentationScope {
                    name: s.string("name", "name")?,
                    version: s.string("version", "version")?,
                    attributes: decode_attrs(&s)?,
                    dropped_attributes_count: s
                        .u32("droppedAttributesCount", "dropped_attributes_count")?,
                }),
            };
            Ok(ScopeSpans {
                scope,
                spans: ss
                    .list("spans", "spans")?
                    .iter()
                    .map(decode_span)
                    .collect::<Result<_>>()?,
                schema_url: ss.string("schemaUrl", "schema_url")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(ResourceSpans {
        resource,
        scope_spans,
        schema_url: c.string("schemaUrl", "schema_url")?,
    })
}

fn decode_span(c: &Ctx) -> Result<Span> {
    let status = match c.field("status", "status") {
        None => None,
        Some(s) => Some(Status {
            message: s.string("message", "message")?,
            code: s.enumeration("code", &STATUS_NAMES)?,
        }),
    };
    Ok(Span {
        trace_id: c.bytes_id("traceId", "trace_id")?,
        span_id: c.bytes_id("spanId", "span_id")?,
        trace_state: c.string("traceState", "trace_state")?,
        parent_span_id: c.bytes_id("parentSpanId", "parent_span_id")?,
        flags: c.u32("flags", "flags")?,
        name: c.string("name", "name")?,
        kind: c.enumeration("kind", &KIND_NAMES)?,
        start_time_unix_nano: c.uint("startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: c.uint("endTimeUnixNano", "end_time_unix_nano")?,
        attributes: decode_attrs(c)?,
        dropped_attributes_count: c.u32("droppedAttributesCount", "dropped_attributes_count")?,
        events: c
            .list("events", "events")?
            .iter()
            .map(|e| {
                Ok(Event {
                    time_unix_nano: e.uint("timeUnixNano", "time_unix_nano")?,
                    name: e.string("name", "name")?,
                    attributes: decode_attrs(e)?,
                    dropped_attributes_count: e
                        .u32("droppedAttributesCount", "dropped_attributes_count")?,
                })
            })
            .collect::<Result<_>>()?,
        dropped_events_count: c.u32("droppedEventsCount", "dropped_events_count")?,
        links: c
            .list("links", "links")?
            .iter()
            .map(|l| {
                Ok(Link {
                    trace_id: l.bytes_id("traceId", "trace_id")?,
                    span_id: l.bytes_id("spanId", "span_id")?,
                    trace_state: l.string("traceState", "trace_state")?,
                    attributes: decode_attrs(l)?,
                    dropped_attributes_count: l
                        .u32("droppedAttributesCount", "dropped_attributes_count")?,
                    flags: l.u32("flags", "flags")?,
                })
            })
            .collect::<Result<_>>()?,
        dropped_links_count: c.u32("droppedLinksCount", "dropped_links_count")?,
        status,
    })
}

fn decode_attrs(c: &Ctx) -> Result<Vec<KeyValue>> {
    c.list("attributes", "attributes")?
        .iter()
        .map(decode_kv)
        .collect()
}

fn decode_kv(c: &Ctx) -> Result<KeyValue> {
    Ok(KeyValue {
        key: c.string("key", "key")?,
        value: c
            .field("value", "value")
            .map(|v| decode_any(&v))
            .transpose()?,
        ..Default::default()
    })
}

fn decode_any(c: &Ctx) -> Result<AnyValue> {
    let o =
        c.v.as_object()
            .ok_or_else(|| err(&c.path, "expected an AnyValue object"))?;
    let Some((k, v)) = o.iter().find(|(_, v)| !v.is_null()) else {
        return Ok(AnyValue { value: None });
    };
    let path = format!("{}.{k}", c.path);
    let inner = Ctx {
        path: path.clone(),
        v,
    };
    let value = match k.as_str() {
        "stringValue" | "string_value" => Value::StringValue(
            v.as_str()
                .ok_or_else(|| err(&path, "expected a string"))?
                .into(),
        ),
        "boolValue" | "bool_value" => Value::BoolValue(
            v.as_bool()
                .ok_or_else(|| err(&path, "expected a boolean"))?,
        ),
        "intValue" | "int_value" => Value::IntValue(match v {
            J::Number(n) => n
                .as_i64()
                .ok_or_else(|| err(&path, "expected a 64-bit integer"))?,
            J::String(s) => s
                .parse()
                .map_err(|_| err(&path, format!("{s:?} is not a 64-bit integer")))?,
            _ => return Err(err(&path, "expected an integer")),
        }),
        "doubleValue" | "double_value" => Value::DoubleValue(match v {
            J::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            J::String(s) => match s.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                other => other
                    .parse()
                    .map_err(|_| err(&path, format!("{other:?} is not a number")))?,
            },
            _ => return Err(err(&path, "expected a number")),
        }),
        "arrayValue" | "array_value" => Value::ArrayValue(ArrayValue {
            values: inner
                .list("values", "values")?
                .iter()
                .map(decode_any)
                .collect::<Result<_>>()?,
        }),
        "kvlistValue" | "kvlist_value" => Value::KvlistValue(KeyValueList {
            values: inner
                .list("values", "values")?
                .iter()
                .map(decode_kv)
                .collect::<Result<_>>()?,
        }),
        "bytesValue" | "bytes_value" => Value::BytesValue(
            B64.decode(v.as_str().ok_or_else(|| err(&path, "expected base64"))?)
                .map_err(|e| err(&path, e))?,
        ),
        "stringValueStrindex" => Value::StringValueStrindex(
            v.as_i64()
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(|| err(&path, "expected an int32"))?,
        ),
        other => return Err(err(&c.path, format!("unknown AnyValue field {other:?}"))),
    };
    Ok(AnyValue { value: Some(value) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<ResourceSpans> {
        let kv = |k: &str, v: Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        };
        vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("api".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1".into(),
                    ..Default::default()
                }),
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "GET /".into(),
                    kind: 2,
                    start_time_unix_nano: 1_700_000_000_000_000_001,
                    end_time_unix_nano: 1_700_000_000_100_000_000,
                    attributes: vec![
                        kv("i", Value::IntValue(-9_007_199_254_740_993)),
                        kv("f", Value::DoubleValue(f64::INFINITY)),
                        kv(
                            "a",
                            Value::ArrayValue(ArrayValue {
                                values: vec![AnyValue {
                                    value: Some(Value::BoolValue(true)),
                                }],
                            }),
                        ),
                        kv("b", Value::BytesValue(vec![0, 255])),
                        KeyValue {
                            key: "empty".into(),
                            value: Some(AnyValue { value: None }),
                            ..Default::default()
                        },
                    ],
                    status: Some(Status {
                        code: 2,
                        message: "boom".into(),
                    }),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }]
    }

    #[test]
    fn both_dialects_round_trip() {
        for d in [Dialect::Otlp, Dialect::Tempo] {
            let key = if d == Dialect::Otlp {
                "resourceSpans"
            } else {
                "batches"
            };
            let doc = json!({ key: encode_resource_spans(&sample(), d) });
            assert_eq!(
                decode_traces_json(doc.to_string().as_bytes()).unwrap(),
                sample(),
                "{d:?}"
            );
        }
    }

    #[test]
    fn dialects_spell_ids_enums_and_big_ints_as_specified() {
        let otlp = encode_resource_spans(&sample(), Dialect::Otlp).to_string();
        assert!(
            otlp.contains(r#""traceId":"01010101010101010101010101010101""#),
            "{otlp}"
        );
        assert!(otlp.contains(r#""kind":2"#) && otlp.contains(r#""code":2"#));
        assert!(otlp.contains(r#""startTimeUnixNano":"1700000000000000001""#));
        assert!(otlp.contains(r#""intValue":"-9007199254740993""#));
        let tempo = encode_resource_spans(&sample(), Dialect::Tempo).to_string();
        assert!(
            tempo.contains(r#""traceId":"AQEBAQEBAQEBAQEBAQEBAQ==""#),
            "{tempo}"
        );
        assert!(
            tempo.contains(r#""kind":"SPAN_KIND_SERVER""#)
                && tempo.contains(r#""code":"STATUS_CODE_ERROR""#)
        );
    }

    #[test]
    fn bad_json_names_the_place() {
        let e = decode_traces_json(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("$.resourceSpans[0].scopeSpans[0].spans[0].traceId"),
            "{e}"
        );
        let e = decode_traces_json(b"{\n  oops").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = decode_traces_json(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_NOPE"}]}]}]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown value"), "{e}");
    }
}
