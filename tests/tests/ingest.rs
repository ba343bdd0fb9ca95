//! Ingest through every receiver, as clients send it: spans are queryable the moment they are
//! acknowledged, bad requests get the right status and lose nothing else, and the head becomes
//! blocks.

use std::io::Write;
use std::time::{Duration, Instant};

use allegro_datasets::{generate_all, small_fixture_options};
use allegro_engine::convert::normalize::normalize;
use allegro_engine::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use allegro_engine::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use allegro_engine::otlp::trace::v1::ResourceSpans;
use allegro_engine::otlp_json::{Dialect, decode_traces_json, encode_resource_spans};
use allegro_server::receivers::RpcStatus;
use allegro_tests::{TestServer, config_for};
use prost::Message;

const PROTO: (&str, &str) = ("Content-Type", "application/x-protobuf");
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn trace_id(t: &[ResourceSpans]) -> String {
    hex::encode(&t[0].scope_spans[0].spans[0].trace_id)
}

fn request(t: &[ResourceSpans]) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: t.to_vec(),
    }
    .encode_to_vec()
}

/// The trace as the query API returns it (OTLP JSON of `/api/v2/traces`), normalised.
fn fetch(srv: &TestServer, id: &str, tenant: &[(&str, &str)]) -> Option<Vec<ResourceSpans>> {
    let a = srv.get(&format!("/api/v2/traces/{id}"), tenant);
    if a.status == 404 {
        return None;
    }
    assert_eq!(a.status, 200, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    let body = serde_json::json!({"resourceSpans": v["trace"]["resourceSpans"]});
    Some(normalize(
        decode_traces_json(body.to_string().as_bytes()).unwrap(),
    ))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[test]
fn every_receiver_makes_spans_queryable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(config_for(dir.path()));
    let traces = generate_all(small_fixture_options());
    assert!(traces.len() >= 8);
    let otlp = srv.otlp_http();
    // 1. OTLP/HTTP protobuf.
    let a = srv.post(&otlp, "/v1/traces", &[PROTO], &request(&traces[0]));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.content_type, "application/x-protobuf");
    assert_eq!(
        ExportTraceServiceResponse::decode(&*a.body).unwrap(),
        ExportTraceServiceResponse::default()
    );
    // 2. OTLP/HTTP JSON (hex IDs, numeric enums).
    let json =
        serde_json::json!({"resourceSpans": encode_resource_spans(&traces[1], Dialect::Otlp)});
    let a = srv.post(&otlp, "/v1/traces", &[JSON], json.to_string().as_bytes());
    assert_eq!((a.status, a.text().as_str()), (200, "{}"));
    // 3. gzip'd protobuf.
    let a = srv.post(
        &otlp,
        "/v1/traces",
        &[PROTO, ("Content-Encoding", "gzip")],
        &gzip(&request(&traces[2])),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    // 4. gRPC, gzip'd.
    let grpc = format!("http://{}", srv.addrs.otlp_grpc.unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply = rt.block_on(async {
        let mut c = TraceServiceClient::connect(grpc)
            .await
            .unwrap()
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        c.export(ExportTraceServiceRequest {
            resource_spans: traces[3].clone(),
        })
        .await
    });
    assert!(reply.unwrap().into_inner().partial_success.is_none());
    for (i, t) in traces[..4].iter().enumerate() {
        let got = fetch(&srv, &trace_id(t), &[]).unwrap_or_else(|| panic!("trace {i} missing"));
        assert_eq!(got, normalize(t.clone()), "trace {i}");
    }
    // 5. Zipkin v2 JSON.
    let z = format!("http://{}", srv.addrs.zipkin.unwrap());
    let body = r#"[{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","name":"get /api","timestamp":1556604172355737,"duration":1431,"kind":"SERVER","localEndpoint":{"serviceName":"backend"},"tags":{"http.method":"GET"}}]"#;
    let a = srv.post(&z, "/api/v2/spans", &[JSON], body.as_bytes());
    assert_eq!(a.status, 202, "{}", a.text());
    let got = fetch(&srv, "5af7183fb1d4cf5f", &[]).unwrap();
    assert_eq!(got[0].scope_spans[0].spans[0].name, "get /api");
    // Sending a trace again changes nothing: exact duplicates merge.
    srv.post(&otlp, "/v1/traces", &[PROTO], &request(&traces[0]));
    assert_eq!(
        fetch(&srv, &trace_id(&traces[0]), &[]).unwrap(),
        normalize(traces[0].clone())
    );
}

fn status_of(a: &allegro_tests::Answer) -> RpcStatus {
    RpcStatus::decode(&*a.body).unwrap_or_else(|e| panic!("{e}: {}", a.text()))
}

#[test]
fn bad_requests_get_the_right_status_and_lose_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    cfg.multitenancy_enabled = true;
    if let Some(h) = cfg
        .distributor
        .receivers
        .as_mut()
        .and_then(|r| r.otlp.as_mut())
        .and_then(|o| o.protocols.http.as_mut())
    {
        h.max_request_body_size = 64 << 10;
    }
    cfg.overrides.per_tenant.insert(
        "slow".into(),
        serde_yaml::from_str("ingestion: {rate_limit_bytes: 20000, burst_size_bytes: 20000}")
            .unwrap(),
    );
    let srv = TestServer::start(cfg);
    let otlp = srv.otlp_http();
    let traces = generate_all(small_fixture_options());
    let t = ("X-Scope-OrgID", "team-a");
    let good = srv.post(&otlp, "/v1/traces", &[PROTO, t], &request(&traces[0]));
    assert_eq!(good.status, 200, "{}", good.text());

    let a = srv.post(
        &otlp,
        "/v1/traces",
        &[PROTO, t],
        b"\xff\xff\xff not protobuf",
    );
    assert_eq!(a.status, 400);
    let st = status_of(&a);
    assert_eq!(st.code, tonic::Code::InvalidArgument as i32);
    assert!(
        st.message.contains("malformed OTLP protobuf"),
        "{}",
        st.message
    );

    let a = srv.post(
        &otlp,
        "/v1/traces",
        &[JSON, t],
        br#"{"resourceSpans": [{"scopeSpans": 7}]}"#,
    );
    assert_eq!(a.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("malformed OTLP JSON"),
        "{v}"
    );

    let a = srv.post(
        &otlp,
        "/v1/traces",
        &[("Content-Type", "text/plain"), t],
        b"hello",
    );
    assert_eq!(a.status, 415);
    assert!(status_of(&a).message.contains("application/x-protobuf"));

    let a = srv.post(&otlp, "/v1/traces", &[PROTO, t], &vec![0u8; 100 << 10]);
    assert_eq!(a.status, 413);
    assert!(status_of(&a).message.contains("max_request_body_size"));
    // A small gzip body that inflates past the limit is refused too.
    let bomb = gzip(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 64 << 10);
    let a = srv.post(
        &otlp,
        "/v1/traces",
        &[PROTO, t, ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(a.status, 413);
    let a = srv.post(
        &otlp,
        "/v1/traces",
        &[PROTO, t, ("Content-Encoding", "gzip")],
        b"not gzip",
    );
    assert_eq!(a.status, 400);
    assert!(status_of(&a).message.contains("malformed gzip body"));
    let a = srv.post(
        &otlp,
        "/v1/traces",
        &[PROTO, t, ("Content-Encoding", "br")],
        b"x",
    );
    assert_eq!(a.status, 415);

    let a = srv.post(
        &otlp,
        "/v1/traces",
        &[PROTO, ("X-Scope-OrgID", "a/b")],
        &request(&traces[1]),
    );
    assert_eq!(a.status, 400);
    assert!(status_of(&a).message.contains("tenant ID"));
    let a = srv.post(&otlp, "/v1/traces", &[PROTO], &request(&traces[1]));
    assert_eq!(a.status, 401);

    // Spans with bad IDs are refused one by one (partial success); the rest are stored.
    let mut mixed = traces[2].clone();
    mixed[0].scope_spans[0].spans[0].span_id = vec![1, 2, 3];
    let a = srv.post(&otlp, "/v1/traces", &[PROTO, t], &request(&mixed));
    assert_eq!(a.status, 200);
    let p = ExportTraceServiceResponse::decode(&*a.body)
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(p.rejected_spans, 1);
    assert!(
        p.error_message.contains("span ID must be 8 bytes, got 3"),
        "{}",
        p.error_message
    );

    // Over the rate: 429 with Retry-After, for that tenant only.
    let slow = ("X-Scope-OrgID", "slow");
    let mut statuses = Vec::new();
    for tr in &traces[3..8] {
        statuses.push(
            srv.post(&otlp, "/v1/traces", &[PROTO, slow], &request(tr))
                .status,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200);
    let a = srv.post(&otlp, "/v1/traces", &[PROTO, slow], &request(&traces[7]));
    if a.status == 429 {
        assert!(status_of(&a).message.contains("RATE_LIMITED"));
    }

    // gRPC: the same mistakes get gRPC codes.
    let grpc = format!("http://{}", srv.addrs.otlp_grpc.unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = TraceServiceClient::connect(grpc).await.unwrap();
        let req = |tenant: Option<&str>, t: &[ResourceSpans]| {
            let mut r = tonic::Request::new(ExportTraceServiceRequest {
                resource_spans: t.to_vec(),
            });
            if let Some(x) = tenant {
                r.metadata_mut().insert("x-scope-orgid", x.parse().unwrap());
            }
            r
        };
        let e = c.export(req(None, &traces[1])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = c.export(req(Some("a|b"), &traces[1])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        // Over max_recv_msg_size_mib (16): RESOURCE_EXHAUSTED, which exporters do not retry.
        let mut big = traces[1].clone();
        big[0].scope_spans[0].spans[0].name = "x".repeat(17 << 20);
        let e = c.export(req(Some("team-a"), &big)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("max_recv_msg_size_mib"), "{e:?}");
        let mut statuses = Vec::new();
        for tr in &traces[3..10] {
            statuses.push(
                c.export(req(Some("slow"), tr))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.code()),
            );
        }
        assert!(
            statuses.contains(&Err(tonic::Code::ResourceExhausted)),
            "{statuses:?}"
        );
        let ok = c.export(req(Some("team-a"), &traces[1])).await.unwrap();
        assert!(ok.into_inner().partial_success.is_none());
    });

    // The server kept serving and every good request's data is there.
    let t = [("X-Scope-OrgID", "team-a")];
    assert_eq!(
        fetch(&srv, &trace_id(&traces[0]), &t).unwrap(),
        normalize(traces[0].clone())
    );
    assert_eq!(
        fetch(&srv, &trace_id(&traces[1]), &t).unwrap(),
        normalize(traces[1].clone())
    );
    let mut kept = traces[2].clone();
    kept[0].scope_spans[0].spans.remove(0);
    assert_eq!(
        fetch(&srv, &trace_id(&traces[2]), &t).unwrap(),
        normalize(kept)
    );
    let m = srv.get("/metrics", &[]).text();
    assert!(
        m.contains("allegro_ingest_spans_refused_total{tenant=\"slow\",reason=\"rate_limited\"}"),
        "{m}"
    );
    assert!(
        m.contains(
            "allegro_ingest_spans_refused_total{tenant=\"team-a\",reason=\"invalid_span\"} 1"
        ),
        "{m}"
    );
}

#[test]
fn the_head_becomes_blocks_and_the_wal_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    cfg.ingester.trace_idle_period = Some(Duration::from_millis(200));
    cfg.ingester.max_block_duration = Some(Duration::from_millis(300));
    cfg.ingester.flush_check_period = Some(Duration::from_millis(100));
    let srv = TestServer::start(cfg);
    let traces = generate_all(small_fixture_options());
    let otlp = srv.otlp_http();
    for t in &traces[..5] {
        assert_eq!(
            srv.post(&otlp, "/v1/traces", &[PROTO], &request(t)).status,
            200
        );
    }
    let start = Instant::now();
    loop {
        let m = srv.get("/metrics", &[]).text();
        if m.contains("allegro_blocks_flushed_total{tenant=\"single-tenant\"} 1") {
            assert!(
                m.contains("allegro_head_spans{tenant=\"single-tenant\"} 0"),
                "{m}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no block after 20 s:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The block is in storage, every trace is served from it, and the WAL dropped its segment.
    let tenant_dir = dir.path().join("single-tenant");
    let blocks: Vec<_> = std::fs::read_dir(&tenant_dir).unwrap().collect();
    assert_eq!(blocks.len(), 1);
    for t in &traces[..5] {
        assert_eq!(
            fetch(&srv, &trace_id(t), &[]).unwrap(),
            normalize(t.clone())
        );
    }
    let start = Instant::now();
    loop {
        let segs = std::fs::read_dir(dir.path().join("@wal")).unwrap().count();
        if segs == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{segs} WAL segments remain"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A late span of a flushed trace goes to a later block; lookups merge both.
    let mut late = traces[0].clone();
    late[0].scope_spans[0].spans.truncate(1);
    late[0].scope_spans[0].spans[0].span_id = vec![7; 8];
    late[0].scope_spans[0].spans[0].name = "late".into();
    srv.post(&otlp, "/v1/traces", &[PROTO], &request(&late));
    let mut all = traces[0].clone();
    all.extend(late);
    assert_eq!(
        fetch(&srv, &trace_id(&traces[0]), &[]).unwrap(),
        normalize(all)
    );
}

/// Spans as broken clients and clocks send them: each is fixed by a documented rule and counted,
/// or refused on its own with a reason, and the rest of the request is stored.
#[test]
fn impossible_spans_are_fixed_or_refused_one_by_one() {
    use allegro_engine::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
    use allegro_engine::otlp::trace::v1::{ScopeSpans, Span};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    // The default window (336h back, 1h ahead), not the tests' "any age".
    cfg.overrides.defaults.ingestion.max_span_age = None;
    let srv = TestServer::start(cfg);
    let now = allegro_engine::now_unix_nanos();
    let kv = |k: String| KeyValue {
        key: k,
        value: Some(AnyValue {
            value: Some(Value::IntValue(1)),
        }),
        ..Default::default()
    };
    let span = |id: u8, start: u64, end: u64| Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        parent_span_id: if id > 1 { vec![1; 8] } else { Vec::new() },
        name: format!("s{id}"),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    };
    let spans = vec![
        span(1, now - 5_000_000_000, now - 1_000_000_000),
        // Ends a second before it starts.
        span(2, now - 2_000_000_000, now - 3_000_000_000),
        span(3, 0, 1_000),
        span(4, u64::MAX - 1, u64::MAX),
        Span {
            attributes: vec![kv("k".repeat(4 << 20))],
            ..span(5, now - 2_000_000_000, now - 1_000_000_000)
        },
        Span {
            attributes: (0..300).map(|i| kv(format!("a{i}"))).collect(),
            ..span(6, now - 2_000_000_000, now - 1_000_000_000)
        },
        Span {
            name: "n".repeat(4096),
            ..span(7, now - 2_000_000_000, now - 1_000_000_000)
        },
    ];
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let a = srv.post(&srv.otlp_http(), "/v1/traces", &[PROTO], &body);
    assert_eq!(a.status, 200, "{}", a.text());
    let partial = ExportTraceServiceResponse::decode(&*a.body)
        .unwrap()
        .partial_success
        .expect("two spans refused");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("2 span(s) starting outside the accepted time range")
            && partial.error_message.contains("max_span_age"),
        "{}",
        partial.error_message
    );
    let got = fetch(&srv, &"07".repeat(16), &[]).expect("the trace is stored");
    let stored: Vec<&Span> = got
        .iter()
        .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
        .collect();
    let by_name = |n: &str| {
        *stored
            .iter()
            .find(|s| s.name.starts_with(n))
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert_eq!(stored.len(), 5);
    let s2 = by_name("s2");
    assert_eq!(s2.end_time_unix_nano, s2.start_time_unix_nano, "duration 0");
    assert_eq!(by_name("s5").attributes[0].key.len(), 256);
    let s6 = by_name("s6");
    assert_eq!(
        (s6.attributes.len(), s6.dropped_attributes_count),
        (256, 44)
    );
    assert_eq!(by_name("nnn").name.len(), 2048);
    let m = srv.get("/metrics", &[]).text();
    for line in [
        "allegro_ingest_spans_refused_total{tenant=\"single-tenant\",reason=\"outside_time_window\"} 2",
        "allegro_ingest_span_fixes_total{tenant=\"single-tenant\",fix=\"end_before_start\"} 1",
        "allegro_ingest_span_fixes_total{tenant=\"single-tenant\",fix=\"key_truncated\"} 1",
        "allegro_ingest_span_fixes_total{tenant=\"single-tenant\",fix=\"attribute_dropped\"} 44",
        "allegro_ingest_span_fixes_total{tenant=\"single-tenant\",fix=\"name_truncated\"} 1",
    ] {
        assert!(m.contains(line), "/metrics lacks {line}");
    }
}
