//! Jaeger ingest with real clients: npm's `jaeger-client` sends through its HTTP sender (Thrift
//! binary over `POST /api/traces`) and its UDP agent sender (`emitBatch` datagrams), grpcio
//! calls `jaeger.api_v2.CollectorService/PostSpans`. The spans are found by trace ID and by
//! TraceQL with the attributes the OpenTelemetry Collector's Jaeger translator gives them; bad
//! payloads get clear errors and lose nothing else. Needs `npm install` in `tests/node` and
//! `pip install grpcio grpcio-tools` (`.ci/run` does both); fails under `CI=true` without them.

use std::time::{Duration, Instant};

use allegro_engine::otlp::common::v1::KeyValue;
use allegro_engine::otlp::common::v1::any_value::Value;
use allegro_engine::otlp::trace::v1::span::SpanKind;
use allegro_engine::otlp::trace::v1::status::StatusCode;
use allegro_engine::otlp::trace::v1::{ResourceSpans, Span};
use allegro_engine::tempopb::TraceByIdResponse;
use allegro_server::config::{
    GrpcReceiver, HttpReceiver, JaegerProtocols, JaegerReceiver, UdpReceiver,
};
use allegro_tests::{
    TestServer, config_for, node_packages, python_with, run_node, run_python, url_encode,
};
use prost::Message;

fn jaeger_server(dir: &std::path::Path) -> TestServer {
    let mut cfg = config_for(dir);
    let local = "127.0.0.1:0".to_string();
    if let Some(r) = cfg.distributor.receivers.as_mut() {
        r.jaeger = Some(JaegerReceiver {
            protocols: JaegerProtocols {
                grpc: Some(GrpcReceiver {
                    endpoint: local.clone(),
                    ..Default::default()
                }),
                thrift_http: Some(HttpReceiver {
                    endpoint: local.clone(),
                    ..Default::default()
                }),
                thrift_compact: Some(UdpReceiver {
                    endpoint: local.clone(),
                    ..Default::default()
                }),
                thrift_binary: Some(UdpReceiver {
                    endpoint: local,
                    ..Default::default()
                }),
            },
        });
    }
    TestServer::start(cfg)
}

/// The trace's resources, or `None` while it is not found.
fn trace(srv: &TestServer, id: &str) -> Option<Vec<ResourceSpans>> {
    let a = srv.get(
        &format!("/api/v2/traces/{id}"),
        &[("Accept", "application/protobuf")],
    );
    if a.status == 404 {
        return None;
    }
    assert_eq!(a.status, 200, "{}", a.text());
    let t = TraceByIdResponse::decode(&*a.body).unwrap().trace?;
    Some(t.resource_spans)
}

/// Polls for a trace sent over UDP (no acknowledgement says when it is stored).
fn trace_eventually(srv: &TestServer, id: &str) -> Vec<ResourceSpans> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = trace(srv, id) {
            return t;
        }
        assert!(Instant::now() < deadline, "trace {id} never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn str_attr<'a>(kvs: &'a [KeyValue], key: &str) -> &'a str {
    match attr(kvs, key) {
        Some(Value::StringValue(s)) => s,
        other => panic!("{key}: {other:?}"),
    }
}

/// The span named `name` and its resource's attributes.
fn span<'a>(t: &'a [ResourceSpans], name: &str) -> (&'a Span, &'a [KeyValue]) {
    t.iter()
        .flat_map(|r| {
            let res = r.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            r.scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .map(move |s| (s, res))
        })
        .find(|(s, _)| s.name == name)
        .unwrap_or_else(|| panic!("no span {name}"))
}

/// Trace IDs of the spans `q` finds, as 32 hex digits.
fn search(srv: &TestServer, q: &str) -> Vec<String> {
    let a = srv.get(&format!("/api/search?q={}", url_encode(q)), &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{:0>32}", t["traceID"].as_str().unwrap()))
        .collect()
}

fn hex_id(id: &str, width: usize) -> Vec<u8> {
    hex::decode(format!("{id:0>width$}")).unwrap()
}

#[test]
fn jaeger_client_spans_are_found_by_id_and_by_traceql() {
    let Some(node) = node_packages("jaeger-client") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = jaeger_server(dir.path());
    let http = srv.addrs.jaeger_thrift_http.unwrap();
    let udp = srv.addrs.jaeger_thrift_binary.unwrap();

    // Bad payloads first: each gets a clear answer (or, over UDP, is dropped and counted).
    let endpoint = format!("http://{http}");
    let thrift = ("Content-Type", "application/x-thrift");
    let a = srv.post(&endpoint, "/api/traces", &[thrift], b"\x0c\x00\x01garbage");
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(
        a.text()
            .contains("malformed Jaeger Thrift binary payload at byte"),
        "{}",
        a.text()
    );
    let a = srv.post(
        &endpoint,
        "/api/traces",
        &[("Content-Type", "application/json")],
        b"[]",
    );
    assert_eq!(a.status, 415, "{}", a.text());
    assert!(a.text().contains("application/x-thrift"), "{}", a.text());
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"not thrift at all", udp).unwrap();

    // Then the real client, through both of its senders.
    let out = run_node(
        &node,
        "jaeger_client.js",
        &[
            format!("{endpoint}/api/traces"),
            udp.ip().to_string(),
            udp.port().to_string(),
        ],
    );
    let ids: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = |k: &str| ids[k].as_str().unwrap().to_string();

    // Over HTTP: acknowledged, so stored by the time the client is done.
    let http_trace = format!("{:0>32}", id("http_trace"));
    let t = trace(&srv, &http_trace).expect("the HTTP sender's trace");
    let (checkout, res) = span(&t, "checkout");
    assert_eq!(str_attr(res, "service.name"), "shop");
    assert_eq!(str_attr(res, "region"), "eu-1");
    assert!(str_attr(res, "opencensus.exporterversion").starts_with("Jaeger-Node-"));
    assert!(attr(res, "host.name").is_some() && attr(res, "hostname").is_none());
    assert_eq!(checkout.kind, SpanKind::Server as i32);
    assert_eq!(checkout.span_id, hex_id(&id("checkout"), 16));
    assert!(checkout.parent_span_id.is_empty());
    // jaeger-client sends every JavaScript number as a DOUBLE tag; the Collector keeps it so.
    assert_eq!(
        attr(&checkout.attributes, "http.status_code"),
        Some(&Value::DoubleValue(200.0))
    );
    let (charge, _) = span(&t, "charge");
    assert_eq!(charge.parent_span_id, checkout.span_id);
    assert_eq!(charge.kind, SpanKind::Client as i32);
    assert_eq!(
        charge.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert!(attr(&charge.attributes, "error").is_none());
    assert!(attr(&charge.attributes, "span.kind").is_none());
    assert_eq!(
        attr(&charge.attributes, "amount"),
        Some(&Value::DoubleValue(12.5))
    );
    assert_eq!(charge.events.len(), 1);
    assert_eq!(charge.events[0].name, "retry");
    assert_eq!(
        attr(&charge.events[0].attributes, "attempt"),
        Some(&Value::DoubleValue(2.0))
    );
    assert_eq!(
        search(
            &srv,
            r#"{ resource.service.name = "shop" && status = error && kind = client }"#
        ),
        [http_trace.as_str()]
    );
    assert_eq!(
        search(&srv, r#"{ name = "checkout" } > { span.amount > 10 }"#),
        [http_trace.as_str()]
    );

    // Over UDP: 64-bit trace ID. jaeger-client also makes a lone follows-from reference the
    // span's parentSpanId; the reference itself stays a link, as the Collector keeps it.
    let udp_trace = format!("{:0>32}", id("udp_trace"));
    let t = trace_eventually(&srv, &udp_trace);
    let (reserve, res) = span(&t, "reserve");
    assert_eq!(str_attr(res, "service.name"), "inventory");
    assert_eq!(str_attr(&reserve.attributes, "warehouse"), "north");
    let (lookup, _) = span(&t, "lookup");
    assert_eq!(lookup.parent_span_id, hex_id(&id("reserve"), 16));
    assert_eq!(lookup.links.len(), 1);
    assert_eq!(lookup.links[0].span_id, reserve.span_id);
    assert_eq!(
        str_attr(&lookup.links[0].attributes, "opentracing.ref_type"),
        "follows_from"
    );
    assert_eq!(
        search(&srv, r#"{ span.warehouse = "north" && kind = server }"#),
        [udp_trace]
    );

    // The bad datagram was counted, not silently lost.
    let metrics = srv.get("/metrics", &[]).text();
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with("allegro_ingest_bytes_refused_total")
                && l.contains("reason=\"malformed_request\"")
        })
        .unwrap_or_else(|| panic!("no refused bytes in\n{metrics}"));
    assert!(refused.ends_with(" 17"), "{refused}");
}

#[test]
fn jaeger_grpc_post_spans() {
    let Some(python) = python_with(&["grpc", "grpc_tools"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = jaeger_server(dir.path());
    let trace_id = "5b8aa5a2d2c872e8321cf37308d69df2";
    let start = allegro_engine::now_unix_nanos() / 1_000_000_000 - 60;
    let proto = allegro_tests::workspace_dir().join("proto");
    let out = run_python(
        &python,
        "jaeger_grpc_client.py",
        &[
            proto.into_os_string(),
            srv.addrs.jaeger_grpc.unwrap().to_string().into(),
            trace_id.into(),
            start.to_string().into(),
        ],
    );
    let calls: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls[0]["code"], serde_json::Value::Null, "{out}");
    assert_eq!(calls[1]["code"], "INVALID_ARGUMENT", "{out}");
    assert!(
        calls[1]["details"]
            .as_str()
            .unwrap()
            .contains("trace_id has 3 bytes, must have 16"),
        "{out}"
    );

    let t = trace(&srv, trace_id).expect("the PostSpans trace");
    let (invoice, res) = span(&t, "invoice");
    assert_eq!(str_attr(res, "service.name"), "billing");
    assert_eq!(str_attr(res, "host.name"), "bill-1");
    assert_eq!(invoice.kind, SpanKind::Server as i32);
    assert_eq!(invoice.start_time_unix_nano, start * 1_000_000_000);
    assert_eq!(
        invoice.end_time_unix_nano - invoice.start_time_unix_nano,
        5_000_000
    );
    let (render, _) = span(&t, "render");
    // The CHILD_OF reference is the parent, not a link.
    assert_eq!(render.parent_span_id, invoice.span_id);
    assert!(render.links.is_empty());
    assert_eq!(
        render.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(render.events[0].name, "rendered");
    assert_eq!(
        render.events[0].time_unix_nano,
        start * 1_000_000_000 + 2_000_000
    );
    assert_eq!(
        search(
            &srv,
            r#"{ resource.service.name = "billing" } > { status = error }"#
        ),
        [trace_id.to_string()]
    );
}

#[test]
fn agent_compact_datagrams_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let srv = jaeger_server(dir.path());
    // An `Agent.emitBatch` call in the compact protocol, written by hand from the Thrift
    // specification (field headers `delta << 4 | type`, integers zigzag varints), as the Jaeger
    // clients' compact UDP senders (port 6831) emit it.
    let mut datagram = vec![0x82, 0x81, 0x00, 0x09];
    datagram.extend(b"emitBatch");
    datagram.extend([0x1c, 0x1c, 0x18, 0x0c]); // args.batch, batch.process, serviceName
    datagram.extend(b"legacy-agent");
    datagram.extend([0x00, 0x19, 0x1c]); // end of process; spans: a list of one struct
    datagram.extend([0x16, 0x9a, 0x01]); // traceIdLow = 77
    datagram.extend([0x26, 0x0a]); // spanId = 5
    datagram.extend([0x28, 0x04]); // operationName
    datagram.extend(b"poll");
    datagram.extend([0x36, 0x80, 0x92, 0xf4, 0x01]); // startTime = 2 s (in µs)
    datagram.extend([0x16, 0xf4, 0x03]); // duration = 250 µs
    datagram.extend([0x00, 0x00, 0x00]); // end of span, batch, arguments
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&datagram, srv.addrs.jaeger_thrift_compact.unwrap())
        .unwrap();
    let t = trace_eventually(&srv, &format!("{:032x}", 77));
    let (poll, res) = span(&t, "poll");
    assert_eq!(str_attr(res, "service.name"), "legacy-agent");
    assert_eq!(poll.span_id, 5u64.to_be_bytes());
    assert_eq!(poll.start_time_unix_nano, 2_000_000_000);
    assert_eq!(poll.end_time_unix_nano, 2_000_250_000);
}
