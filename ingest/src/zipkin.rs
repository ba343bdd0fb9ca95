//! Zipkin v2 JSON (`POST /api/v2/spans`) → OTLP, following the OpenTelemetry Collector's Zipkin
//! receiver: `localEndpoint.serviceName` becomes the resource's `service.name`, the remote
//! endpoint becomes `peer.service` / `net.peer.*`, tags become string attributes, annotations
//! become events, and the `error` / `otel.status_code` tags set the status.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZSpan {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(default)]
    local_endpoint: Option<Endpoint>,
    #[serde(default)]
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    annotations: Vec<Annotation>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    shared: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    debug: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Debug, Deserialize)]
struct Annotation {
    timestamp: u64,
    value: String,
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, Value::StringValue(v.to_string()))
}

fn hex_id(
    field: &str,
    i: usize,
    v: &str,
    lens: &[usize],
    out_len: usize,
) -> Result<Vec<u8>, String> {
    if !lens.contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "span {i}: {field} {v:?} must be {} hex digits",
            lens.iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    let padded = format!("{v:0>width$}", width = out_len * 2);
    hex::decode(padded).map_err(|e| format!("span {i}: {field}: {e}"))
}

/// Decodes a Zipkin v2 JSON list of spans; one resource per local service name.
pub fn decode_zipkin_v2(body: &[u8]) -> Result<Vec<ResourceSpans>, String> {
    let spans: Vec<ZSpan> = serde_json::from_slice(body)
        .map_err(|e| format!("malformed Zipkin v2 JSON (expected a list of spans): {e}"))?;
    let mut by_service: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for (i, z) in spans.into_iter().enumerate() {
        let trace_id = hex_id("traceId", i, &z.trace_id, &[16, 32], 16)?;
        let span_id = hex_id("id", i, &z.id, &[16], 8)?;
        let parent_span_id = match z.parent_id.as_deref() {
            None | Some("") => Vec::new(),
            Some(p) => hex_id("parentId", i, p, &[16], 8)?,
        };
        let kind = match z.kind.as_deref() {
            None => SpanKind::Unspecified,
            Some("CLIENT") => SpanKind::Client,
            Some("SERVER") => SpanKind::Server,
            Some("PRODUCER") => SpanKind::Producer,
            Some("CONSUMER") => SpanKind::Consumer,
            Some(k) => {
                return Err(format!(
                    "span {i}: kind {k:?} is not one of CLIENT, SERVER, PRODUCER, CONSUMER"
                ));
            }
        };
        let start = z.timestamp.unwrap_or(0).saturating_mul(1000);
        let end = start.saturating_add(z.duration.unwrap_or(0).saturating_mul(1000));
        let mut attributes = Vec::new();
        let mut status = Status::default();
        for (k, v) in &z.tags {
            match k.as_str() {
                "otel.status_code" => {
                    status.code = match v.as_str() {
                        "ERROR" => StatusCode::Error as i32,
                        "OK" => StatusCode::Ok as i32,
                        _ => StatusCode::Unset as i32,
                    }
                }
                "otel.status_description" => status.message = v.clone(),
                "error" => {
                    status.code = StatusCode::Error as i32;
                    if !v.is_empty() && v != "true" {
                        status.message = v.clone();
                    }
                }
                _ => attributes.push(s(k, v)),
            }
        }
        let local = z.local_endpoint.unwrap_or_default();
        if let Some(ip) = local.ipv4.as_deref().or(local.ipv6.as_deref()) {
            attributes.push(s("net.host.ip", ip));
        }
        if let Some(p) = local.port {
            attributes.push(kv("net.host.port", Value::IntValue(i64::from(p))));
        }
        if let Some(r) = &z.remote_endpoint {
            if let Some(n) = r.service_name.as_deref().filter(|n| !n.is_empty()) {
                attributes.push(s("peer.service", n));
            }
            if let Some(ip) = r.ipv4.as_deref().or(r.ipv6.as_deref()) {
                attributes.push(s("net.peer.ip", ip));
            }
            if let Some(p) = r.port {
                attributes.push(kv("net.peer.port", Value::IntValue(i64::from(p))));
            }
        }
        if z.shared == Some(true) {
            attributes.push(kv("zipkin.shared", Value::BoolValue(true)));
        }
        let events = z
            .annotations
            .into_iter()
            .map(|a| Event {
                time_unix_nano: a.timestamp.saturating_mul(1000),
                name: a.value,
                ..Default::default()
            })
            .collect();
        let service = local
            .service_name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "unknown_service".into());
        by_service.entry(service).or_default().push(Span {
            trace_id,
            span_id,
            parent_span_id,
            name: z.name.unwrap_or_default(),
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            events,
            status: Some(status),
            ..Default::default()
        });
    }
    Ok(by_service
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![s("service.name", &service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_the_zipkin_example() {
        // The example span of Zipkin's API documentation.
        let body = br#"[{
          "id": "352bff9a74ca9ad2",
          "traceId": "5af7183fb1d4cf5f",
          "parentId": "6b221d5bc9e6496c",
          "name": "get /api",
          "timestamp": 1556604172355737,
          "duration": 1431,
          "kind": "SERVER",
          "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
          "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
          "tags": {"http.method": "GET", "http.path": "/api", "error": "boom"},
          "annotations": [{"timestamp": 1556604172355800, "value": "wr"}]
        }]"#;
        let rs = decode_zipkin_v2(body).unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(
            rs[0].resource.as_ref().unwrap().attributes[0],
            s("service.name", "backend")
        );
        let sp = &rs[0].scope_spans[0].spans[0];
        assert_eq!(
            hex::encode(&sp.trace_id),
            "00000000000000005af7183fb1d4cf5f"
        );
        assert_eq!(hex::encode(&sp.span_id), "352bff9a74ca9ad2");
        assert_eq!(hex::encode(&sp.parent_span_id), "6b221d5bc9e6496c");
        assert_eq!(sp.kind, SpanKind::Server as i32);
        assert_eq!(sp.start_time_unix_nano, 1_556_604_172_355_737_000);
        assert_eq!(sp.end_time_unix_nano - sp.start_time_unix_nano, 1_431_000);
        let st = sp.status.as_ref().unwrap();
        assert_eq!(
            (st.code, st.message.as_str()),
            (StatusCode::Error as i32, "boom")
        );
        assert!(sp.attributes.contains(&s("http.method", "GET")));
        assert!(sp.attributes.contains(&s("net.peer.ip", "172.19.0.2")));
        assert!(
            sp.attributes
                .contains(&kv("net.peer.port", Value::IntValue(58648)))
        );
        assert_eq!(sp.events[0].name, "wr");
        assert_eq!(sp.events[0].time_unix_nano, 1_556_604_172_355_800_000);
    }

    #[test]
    fn bad_input_says_what_and_where() {
        assert!(
            decode_zipkin_v2(b"{")
                .unwrap_err()
                .contains("malformed Zipkin v2 JSON")
        );
        let e = decode_zipkin_v2(br#"[{"traceId":"xyz","id":"352bff9a74ca9ad2"}]"#).unwrap_err();
        assert!(
            e.contains("span 0: traceId \"xyz\" must be 16 or 32 hex digits"),
            "{e}"
        );
        let e = decode_zipkin_v2(
            br#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","kind":"WEIRD"}]"#,
        )
        .unwrap_err();
        assert!(e.contains("WEIRD"), "{e}");
    }
}
