//! Jaeger spans → OTLP, as the OpenTelemetry Collector's Jaeger translator maps them (the
//! receiver Tempo uses), so a Jaeger client's span is stored as the Collector would forward it:
//!
//! - the process becomes the resource: `serviceName` → `service.name`, tags → attributes,
//!   `hostname` → `host.name`, `jaeger.version` → `opencensus.exporterversion` = `Jaeger-<v>`;
//!   spans with their own process (protobuf) are grouped under it;
//! - `span.kind` → kind; `error` = true → status error, else `otel.status_code`, else an
//!   `http.status_code` that means failure (5xx, or 4xx on a client span); the description from
//!   `otel.status_description` or `http.status_message`; `w3c.tracestate` → trace state;
//!   `otel.scope.name` / `otel.scope.version` → the instrumentation scope;
//! - logs → events, named by their `event` field;
//! - the parent is `parentSpanId`, or else the first `CHILD_OF` reference within the same
//!   trace (Jaeger's own rule; the Collector reads only one of the two per encoding); every other
//!   reference is a link with `opentracing.ref_type`.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::{Batch, Process, RefType, Tag, TagValue};

/// The Collector's marker for "no service name": such a process yields an empty resource.
const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

/// Converts batches to OTLP: one `ResourceSpans` per distinct process, one `ScopeSpans` per
/// instrumentation scope within it.
pub fn to_otlp(batches: Vec<Batch>) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    // Processes are compared by their translated resource, so equal processes share one.
    let mut by_resource: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut scopes: HashMap<(usize, String, String), usize> = HashMap::new();
    for batch in batches {
        // The batch's process is translated once, when a span first needs it.
        let mut batch_slot = None;
        for mut span in batch.spans {
            let r = match span.process.take() {
                Some(p) => slot(&mut out, &mut by_resource, resource(&p)),
                None => *batch_slot.get_or_insert_with(|| {
                    let res = batch.process.as_ref().map(resource).unwrap_or_default();
                    slot(&mut out, &mut by_resource, res)
                }),
            };
            let scope_name = take_str_tag(&mut span.tags, "otel.scope.name");
            let scope_version = scope_name
                .as_ref()
                .and_then(|_| take_str_tag(&mut span.tags, "otel.scope.version"));
            let key = (
                r,
                scope_name.unwrap_or_default(),
                scope_version.unwrap_or_default(),
            );
            let scope_spans = &mut out[r].scope_spans;
            let s = match scopes.get(&key) {
                Some(&s) => s,
                None => {
                    scope_spans.push(ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: key.1.clone(),
                            version: key.2.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    });
                    scopes.insert(key, scope_spans.len() - 1);
                    scope_spans.len() - 1
                }
            };
            scope_spans[s].spans.push(span_to_otlp(span));
        }
    }
    out
}

/// The index in `out` of the `ResourceSpans` for `res`, added when new.
fn slot(
    out: &mut Vec<ResourceSpans>,
    by_resource: &mut HashMap<Vec<u8>, usize>,
    res: Resource,
) -> usize {
    let key = prost::Message::encode_to_vec(&res);
    *by_resource.entry(key).or_insert_with(|| {
        out.push(ResourceSpans {
            resource: Some(res),
            ..Default::default()
        });
        out.len() - 1
    })
}

fn resource(p: &Process) -> Resource {
    let mut attrs = Attributes::default();
    if p.service_name != NO_SERVICE_NAME {
        if !p.service_name.is_empty() {
            attrs.put(
                "service.name".into(),
                Value::StringValue(p.service_name.clone()),
            );
        }
        for t in &p.tags {
            attrs.put(t.key.clone(), value(&t.value));
        }
        if !attrs.has("host.name")
            && let Some(h) = attrs.remove("hostname")
        {
            attrs.put("host.name".into(), h);
        }
        if !attrs.has("opencensus.exporterversion")
            && let Some(v) = attrs.remove("jaeger.version")
        {
            let v = match v {
                Value::StringValue(s) => s,
                _ => String::new(),
            };
            attrs.put(
                "opencensus.exporterversion".into(),
                Value::StringValue(format!("Jaeger-{v}")),
            );
        }
    }
    Resource {
        attributes: attrs.finish(),
        ..Default::default()
    }
}

fn span_to_otlp(span: super::Span) -> Span {
    let parent = if span.parent_span_id != [0; 8] {
        Some(span.parent_span_id)
    } else {
        span.references
            .iter()
            .find(|r| r.ref_type == RefType::ChildOf && r.trace_id == span.trace_id)
            .map(|r| r.span_id)
    };
    let mut attrs = Attributes::default();
    for t in span.tags {
        attrs.put(t.key, value_owned(t.value));
    }
    let kind = match attrs.remove("span.kind") {
        Some(Value::StringValue(k)) => match k.as_str() {
            "client" => SpanKind::Client,
            "server" => SpanKind::Server,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            "internal" => SpanKind::Internal,
            _ => SpanKind::Unspecified,
        },
        // Not a string: the Collector reads it as "" (unspecified) and drops it too.
        Some(_) | None => SpanKind::Unspecified,
    };
    let status = status(&mut attrs, kind);
    let trace_state = match attrs.remove("w3c.tracestate") {
        Some(Value::StringValue(s)) => s,
        _ => String::new(),
    };
    let events = span
        .logs
        .into_iter()
        .map(|log| {
            let mut a = Attributes::default();
            for f in log.fields {
                a.put(f.key, value_owned(f.value));
            }
            let name = match a.remove("event") {
                Some(Value::StringValue(s)) => s,
                Some(_) | None => String::new(),
            };
            Event {
                time_unix_nano: log.time_ns,
                name,
                attributes: a.finish(),
                ..Default::default()
            }
        })
        .collect();
    let links = span
        .references
        .iter()
        .filter(|r| !(r.ref_type == RefType::ChildOf && Some(r.span_id) == parent))
        .map(|r| Link {
            trace_id: r.trace_id.to_vec(),
            span_id: r.span_id.to_vec(),
            attributes: vec![KeyValue {
                key: "opentracing.ref_type".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(
                        match r.ref_type {
                            RefType::ChildOf => "child_of",
                            RefType::FollowsFrom => "follows_from",
                        }
                        .into(),
                    )),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    Span {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        trace_state,
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: span.operation_name,
        kind: kind as i32,
        start_time_unix_nano: span.start_ns,
        end_time_unix_nano: span.start_ns.saturating_add(span.duration_ns),
        attributes: attrs.finish(),
        events,
        links,
        status,
        ..Default::default()
    }
}

/// The span status from its tags, removing the tags that carried it (the Collector's order:
/// `error` wins, then `otel.status_code`, then a failing `http.status_code`).
fn status(attrs: &mut Attributes, kind: SpanKind) -> Option<Status> {
    let message_from = |attrs: &mut Attributes, keys: &[&str]| {
        for k in keys {
            if let Some(v) = attrs.get(k) {
                let m = as_text(v);
                if *k == "otel.status_description" {
                    attrs.remove(k);
                }
                return Some(m);
            }
        }
        None
    };
    let mut status: Option<Status> = None;
    if matches!(attrs.get("error"), Some(Value::BoolValue(true))) {
        attrs.remove("error");
        let message = message_from(attrs, &["otel.status_description", "http.status_message"]);
        status = Some(Status {
            code: StatusCode::Error as i32,
            message: message.unwrap_or_default(),
        });
    }
    if let Some(code) = attrs.remove("otel.status_code") {
        if status.is_none() {
            let code = match as_text(&code).to_ascii_uppercase().as_str() {
                "OK" => StatusCode::Ok,
                "ERROR" => StatusCode::Error,
                _ => StatusCode::Unset,
            };
            let message = message_from(attrs, &["otel.status_description"]);
            status = Some(Status {
                code: code as i32,
                message: message.unwrap_or_default(),
            });
        }
    } else if status.is_none()
        && let Some(http) = attrs.get("http.status_code").and_then(http_code)
    {
        // 4xx is the caller's fault: an error for a client, not for the server that said so.
        let failed = match http {
            400..=499 => kind != SpanKind::Server,
            100..=399 => false,
            _ => true,
        };
        let message = message_from(attrs, &["http.status_message"]);
        if failed {
            status = Some(Status {
                code: StatusCode::Error as i32,
                message: message.unwrap_or_default(),
            });
        }
    }
    status
}

fn http_code(v: &Value) -> Option<i64> {
    match v {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        _ => String::new(),
    }
}

fn take_str_tag(tags: &mut Vec<Tag>, key: &str) -> Option<String> {
    let i = tags.iter().position(|t| t.key == key)?;
    match tags.remove(i).value {
        TagValue::Str(s) => Some(s),
        _ => Some(String::new()),
    }
}

fn value(v: &TagValue) -> Value {
    value_owned(v.clone())
}

fn value_owned(v: TagValue) -> Value {
    match v {
        TagValue::Str(s) => Value::StringValue(s),
        TagValue::Double(d) => Value::DoubleValue(d),
        TagValue::Bool(b) => Value::BoolValue(b),
        TagValue::Long(l) => Value::IntValue(l),
        TagValue::Binary(b) => Value::BytesValue(b),
    }
}

/// An attribute map in first-insertion order where a repeated key takes the later value (the
/// Collector's map semantics), in time linear in the number of tags.
#[derive(Default)]
struct Attributes {
    entries: Vec<Option<(String, Value)>>,
    index: HashMap<String, usize>,
}

impl Attributes {
    fn put(&mut self, key: String, v: Value) {
        match self.index.get(&key) {
            Some(&i) => self.entries[i] = Some((key, v)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push(Some((key, v)));
            }
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.index.get(key)?;
        self.entries[i].as_ref().map(|(_, v)| v)
    }

    fn has(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        self.entries[i].take().map(|(_, v)| v)
    }

    fn finish(self) -> Vec<KeyValue> {
        self.entries
            .into_iter()
            .flatten()
            .map(|(key, v)| KeyValue {
                key,
                value: Some(AnyValue { value: Some(v) }),
                ..Default::default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Log, Span as JSpan, SpanRef};
    use super::*;

    fn tag(key: &str, value: TagValue) -> Tag {
        Tag {
            key: key.into(),
            value,
        }
    }

    fn s(v: &str) -> TagValue {
        TagValue::Str(v.into())
    }

    fn jspan(id: u8, tags: Vec<Tag>) -> JSpan {
        JSpan {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_span_id: [0; 8],
            operation_name: format!("op{id}"),
            references: Vec::new(),
            start_ns: 1_000,
            duration_ns: 500,
            tags,
            logs: Vec::new(),
            process: None,
        }
    }

    fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        kvs.iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn status_of(tags: Vec<Tag>) -> (Option<(i32, String)>, Vec<String>) {
        let rs = to_otlp(vec![Batch {
            process: None,
            spans: vec![jspan(1, tags)],
        }]);
        let sp = &rs[0].scope_spans[0].spans[0];
        (
            sp.status.as_ref().map(|s| (s.code, s.message.clone())),
            sp.attributes.iter().map(|kv| kv.key.clone()).collect(),
        )
    }

    #[test]
    fn process_becomes_the_resource() {
        let rs = to_otlp(vec![Batch {
            process: Some(Process {
                service_name: "cart".into(),
                tags: vec![
                    tag("hostname", s("box-1")),
                    tag("jaeger.version", s("Node-3.19.0")),
                    tag("ip", s("10.0.0.1")),
                ],
            }),
            spans: vec![jspan(1, vec![])],
        }]);
        let attrs = &rs[0].resource.as_ref().unwrap().attributes;
        let keys: Vec<&str> = attrs.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "service.name",
                "ip",
                "host.name",
                "opencensus.exporterversion"
            ]
        );
        assert_eq!(
            attr(attrs, "opencensus.exporterversion"),
            Some(&Value::StringValue("Jaeger-Node-3.19.0".into()))
        );
        assert_eq!(
            attr(attrs, "host.name"),
            Some(&Value::StringValue("box-1".into()))
        );
    }

    #[test]
    fn spans_with_their_own_process_group_under_it() {
        let mut a = jspan(1, vec![]);
        a.process = Some(Process {
            service_name: "other".into(),
            tags: vec![],
        });
        let b = jspan(
            2,
            vec![
                tag("otel.scope.name", s("lib")),
                tag("otel.scope.version", s("1.2")),
            ],
        );
        let c = jspan(3, vec![]);
        let rs = to_otlp(vec![Batch {
            process: Some(Process {
                service_name: "main".into(),
                tags: vec![],
            }),
            spans: vec![a, b, c],
        }]);
        assert_eq!(rs.len(), 2);
        let names = |r: &ResourceSpans| -> Vec<(String, String, Vec<String>)> {
            r.scope_spans
                .iter()
                .map(|ss| {
                    let sc = ss.scope.clone().unwrap_or_default();
                    (
                        sc.name,
                        sc.version,
                        ss.spans.iter().map(|s| s.name.clone()).collect(),
                    )
                })
                .collect()
        };
        assert_eq!(
            names(&rs[0]),
            [(String::new(), String::new(), vec!["op1".to_string()])]
        );
        assert_eq!(
            names(&rs[1]),
            [
                ("lib".into(), "1.2".into(), vec!["op2".to_string()]),
                (String::new(), String::new(), vec!["op3".to_string()])
            ]
        );
        // The scope tags are gone from the span.
        assert!(rs[1].scope_spans[0].spans[0].attributes.is_empty());
    }

    #[test]
    fn kind_status_and_trace_state_come_from_tags() {
        let err = StatusCode::Error as i32;
        // `error` = true wins; the description comes along.
        assert_eq!(
            status_of(vec![
                tag("error", TagValue::Bool(true)),
                tag("otel.status_code", s("OK")),
                tag("otel.status_description", s("boom")),
            ]),
            (Some((err, "boom".into())), vec![])
        );
        // A string "error" is just an attribute (the Collector's rule).
        assert_eq!(
            status_of(vec![tag("error", s("true"))]),
            (None, vec!["error".into()])
        );
        assert_eq!(
            status_of(vec![tag("otel.status_code", s("ok"))]),
            (Some((StatusCode::Ok as i32, String::new())), vec![])
        );
        // HTTP: 404 fails a client, not a server; 503 fails both; 200 sets nothing.
        let http = |kind: &str, code: i64| {
            status_of(vec![
                tag("span.kind", s(kind)),
                tag("http.status_code", TagValue::Long(code)),
                tag("http.status_message", s("msg")),
            ])
            .0
        };
        assert_eq!(http("client", 404), Some((err, "msg".into())));
        assert_eq!(http("server", 404), None);
        assert_eq!(http("server", 503), Some((err, "msg".into())));
        assert_eq!(http("client", 200), None);

        let rs = to_otlp(vec![Batch {
            process: None,
            spans: vec![jspan(
                1,
                vec![
                    tag("span.kind", s("producer")),
                    tag("w3c.tracestate", s("a=b")),
                    tag("k", TagValue::Long(1)),
                    tag("k", TagValue::Double(2.5)),
                ],
            )],
        }]);
        let sp = &rs[0].scope_spans[0].spans[0];
        assert_eq!(sp.kind, SpanKind::Producer as i32);
        assert_eq!(sp.trace_state, "a=b");
        assert_eq!(sp.attributes.len(), 1);
        assert_eq!(attr(&sp.attributes, "k"), Some(&Value::DoubleValue(2.5)));
        assert_eq!(
            (sp.start_time_unix_nano, sp.end_time_unix_nano),
            (1_000, 1_500)
        );
    }

    #[test]
    fn references_and_logs() {
        let mut sp = jspan(5, vec![]);
        sp.references = vec![
            SpanRef {
                ref_type: RefType::FollowsFrom,
                trace_id: [9; 16],
                span_id: [9; 8],
            },
            SpanRef {
                ref_type: RefType::ChildOf,
                trace_id: [1; 16],
                span_id: [4; 8],
            },
        ];
        sp.logs = vec![Log {
            time_ns: 1_200,
            fields: vec![tag("event", s("retry")), tag("attempt", TagValue::Long(2))],
        }];
        let rs = to_otlp(vec![Batch {
            process: None,
            spans: vec![sp],
        }]);
        let out = &rs[0].scope_spans[0].spans[0];
        // No explicit parent: the CHILD_OF reference in the same trace is the parent.
        assert_eq!(out.parent_span_id, vec![4; 8]);
        assert_eq!(out.links.len(), 1);
        assert_eq!(out.links[0].span_id, vec![9; 8]);
        assert_eq!(
            attr(&out.links[0].attributes, "opentracing.ref_type"),
            Some(&Value::StringValue("follows_from".into()))
        );
        assert_eq!(out.events[0].name, "retry");
        assert_eq!(out.events[0].time_unix_nano, 1_200);
        assert_eq!(out.events[0].attributes.len(), 1);

        // An explicit parent (Thrift's parentSpanId) wins; a CHILD_OF elsewhere is a link.
        let mut sp = jspan(6, vec![]);
        sp.parent_span_id = [3; 8];
        sp.references = vec![SpanRef {
            ref_type: RefType::ChildOf,
            trace_id: [1; 16],
            span_id: [4; 8],
        }];
        let rs = to_otlp(vec![Batch {
            process: None,
            spans: vec![sp],
        }]);
        let out = &rs[0].scope_spans[0].spans[0];
        assert_eq!(out.parent_span_id, vec![3; 8]);
        assert_eq!(
            attr(&out.links[0].attributes, "opentracing.ref_type"),
            Some(&Value::StringValue("child_of".into()))
        );
    }
}
