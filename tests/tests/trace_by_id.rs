//! Trace by ID through Tempo's HTTP API, as Grafana and other clients call it.

use std::collections::BTreeMap;
use std::sync::Arc;

use allegro_datasets::{BlockCut, GenOptions, generate_all, small_fixture_options, write_blocks};
use allegro_engine::block::writer::{BlockWriteOptions, encode_block, put_block};
use allegro_engine::convert::flatten::flatten;
use allegro_engine::convert::normalize::normalize;
use allegro_engine::otlp::trace::v1::ResourceSpans;
use allegro_engine::otlp_json::decode_traces_json;
use allegro_engine::storage::{StorageBackend, open_store};
use allegro_engine::tempopb::{Trace, TraceByIdResponse};
use allegro_tests::{TestServer, config_for};
use object_store::ObjectStore;
use prost::Message;

const PB: (&str, &str) = ("Accept", "application/protobuf");

fn store(dir: &std::path::Path) -> Arc<dyn ObjectStore> {
    open_store(&StorageBackend::Local {
        path: dir.to_path_buf(),
    })
    .unwrap()
}

fn by_trace(rs: Vec<ResourceSpans>) -> BTreeMap<String, Vec<ResourceSpans>> {
    let mut out: BTreeMap<String, Vec<ResourceSpans>> = BTreeMap::new();
    for r in rs {
        for ss in &r.scope_spans {
            for s in &ss.spans {
                let mut one = r.clone();
                one.scope_spans = vec![ss.clone()];
                one.scope_spans[0].spans = vec![s.clone()];
                out.entry(hex::encode(&s.trace_id)).or_default().push(one);
            }
        }
    }
    out.into_iter().map(|(k, v)| (k, normalize(v))).collect()
}

/// Fetches `id` four ways and checks each against `expected`.
fn check_all_forms(
    srv: &TestServer,
    id: &str,
    expected: &[ResourceSpans],
    tenant: &[(&'static str, &'static str)],
) {
    let with = |extra: Option<(&'static str, &'static str)>| -> Vec<(&'static str, &'static str)> {
        tenant.iter().copied().chain(extra).collect()
    };
    let v1 = srv.get(&format!("/api/traces/{id}"), &with(Some(PB)));
    assert_eq!(v1.status, 200, "{id}: {}", v1.text());
    assert_eq!(v1.content_type, "application/protobuf");
    assert_eq!(
        normalize(Trace::decode(&*v1.body).unwrap().resource_spans),
        expected,
        "v1 protobuf {id}"
    );
    let v2 = srv.get(&format!("/api/v2/traces/{id}"), &with(Some(PB)));
    assert_eq!(v2.status, 200);
    let resp = TraceByIdResponse::decode(&*v2.body).unwrap();
    assert_eq!(
        normalize(resp.trace.unwrap().resource_spans),
        expected,
        "v2 protobuf {id}"
    );
    assert!(resp.metrics.unwrap().inspected_bytes > 0);
    let v1j = srv.get(&format!("/api/traces/{id}"), &with(None));
    assert_eq!(v1j.content_type, "application/json");
    assert_eq!(
        normalize(decode_traces_json(&v1j.body).unwrap()),
        expected,
        "v1 JSON {id}"
    );
    let v2j = srv.get(
        &format!("/api/v2/traces/{id}"),
        &with(Some(("Accept", "application/json"))),
    );
    let doc: serde_json::Value = serde_json::from_slice(&v2j.body).unwrap();
    let inner = serde_json::to_vec(&doc["trace"]).unwrap();
    assert_eq!(
        normalize(decode_traces_json(&inner).unwrap()),
        expected,
        "v2 JSON {id}"
    );
}

#[test]
fn every_fixture_trace_comes_back_field_for_field_in_all_four_forms() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = decode_traces_json(
        &std::fs::read(allegro_datasets::fixtures_dir().join("small.otlp.json")).unwrap(),
    )
    .unwrap();
    let expected = by_trace(fixture.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Two blocks, so lookups must find the right one.
    let (a, b): (Vec<_>, Vec<_>) = fixture
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 0);
    for part in [a, b] {
        let block = encode_block(
            "single-tenant",
            flatten(part.into_iter().map(|(_, r)| r).collect()).0,
            &BlockWriteOptions::default(),
        )
        .unwrap();
        rt.block_on(put_block(&store(dir.path()), &block)).unwrap();
    }
    let srv = TestServer::start(config_for(dir.path()));
    assert!(expected.len() >= 20);
    for (id, trace) in &expected {
        check_all_forms(&srv, id, trace, &[]);
        // Grafana's rules: resource, scope and status present, resource attributes non-empty.
        for r in trace {
            assert!(!r.resource.as_ref().unwrap().attributes.is_empty());
        }
    }
}

#[test]
fn a_sample_of_a_generated_dataset_is_found_and_equal() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GenOptions {
        seed: 11,
        spans: 40_000,
        start_unix_nano: 1_767_225_600_000_000_000,
        duration_nano: 3_600_000_000_000,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let summary = rt
        .block_on(write_blocks(
            &store(dir.path()),
            "single-tenant",
            opts.clone(),
            BlockCut::whole(5_000),
            &BlockWriteOptions::default(),
            &mut |_| {},
        ))
        .unwrap();
    assert!(summary.blocks.len() >= 8, "{} blocks", summary.blocks.len());
    let srv = TestServer::start(config_for(dir.path()));
    let traces = generate_all(opts);
    for t in traces.iter().step_by(37) {
        let expected = by_trace(t.clone());
        let (id, trace) = expected.iter().next().unwrap();
        let a = srv.get(&format!("/api/v2/traces/{id}"), &[PB]);
        assert_eq!(a.status, 200, "{id}");
        assert_eq!(
            &normalize(
                TraceByIdResponse::decode(&*a.body)
                    .unwrap()
                    .trace
                    .unwrap()
                    .resource_spans
            ),
            trace,
            "{id}"
        );
    }
    // Every trace is found (cheaply, via v1 protobuf): nothing lost.
    for t in &traces {
        let id = hex::encode(&t[0].scope_spans[0].spans[0].trace_id);
        assert_eq!(
            srv.get(&format!("/api/traces/{id}"), &[PB]).status,
            200,
            "{id}"
        );
    }
}

#[test]
fn ids_are_validated_padded_and_time_ranges_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut rs = generate_all(small_fixture_options()).remove(0);
    let mut short = [0u8; 16];
    short[13..].copy_from_slice(&[0x0a, 0xbc, 0xde]);
    for r in &mut rs {
        for ss in &mut r.scope_spans {
            for s in &mut ss.spans {
                s.trace_id = short.to_vec();
            }
        }
    }
    let start_s = rs[0].scope_spans[0].spans[0].start_time_unix_nano / 1_000_000_000;
    let block = encode_block(
        "single-tenant",
        flatten(rs).0,
        &BlockWriteOptions::default(),
    )
    .unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(put_block(&store(dir.path()), &block))
        .unwrap();
    let srv = TestServer::start(config_for(dir.path()));
    // Leading zeros dropped, as Tempo search results and Grafana send them; any case.
    for id in [
        "abcde",
        "ABCDE",
        "0abcde",
        "000000000000000000000000000abcde",
    ] {
        assert_eq!(
            srv.get(&format!("/api/v2/traces/{id}"), &[PB]).status,
            200,
            "{id}"
        );
    }
    let a = srv.get("/api/v2/traces/xyz", &[]);
    assert_eq!(a.status, 400);
    assert!(
        a.text().contains("invalid trace id") && a.text().contains("'x'"),
        "{}",
        a.text()
    );
    let a = srv.get(&format!("/api/traces/{}", "1".repeat(33)), &[]);
    assert_eq!(a.status, 400);
    assert!(a.text().contains("33 hex digits"), "{}", a.text());
    let a = srv.get("/api/traces/1234", &[]);
    assert_eq!(a.status, 404);
    assert!(a.text().contains("not found"));
    assert_eq!(srv.get("/api/v2/traces/1234", &[PB]).status, 404);
    // Time ranges in unix seconds: inside finds it, outside does not, nonsense is a 400.
    let inside = format!(
        "/api/v2/traces/abcde?start={}&end={}",
        start_s - 60,
        start_s + 3600
    );
    assert_eq!(srv.get(&inside, &[]).status, 200);
    assert_eq!(
        srv.get("/api/v2/traces/abcde?start=1000&end=2000", &[])
            .status,
        404
    );
    assert_eq!(
        srv.get("/api/v2/traces/abcde?start=yesterday", &[]).status,
        400
    );
    assert_eq!(
        srv.get("/api/v2/traces/abcde?start=20&end=10", &[]).status,
        400
    );
}

#[test]
fn multitenancy_requires_and_isolates_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let traces = generate_all(small_fixture_options());
    let id_a = hex::encode(&traces[0][0].scope_spans[0].spans[0].trace_id);
    let id_b = hex::encode(&traces[1][0].scope_spans[0].spans[0].trace_id);
    for (tenant, t) in [("team-a", &traces[0]), ("team-b", &traces[1])] {
        let block =
            encode_block(tenant, flatten(t.clone()).0, &BlockWriteOptions::default()).unwrap();
        rt.block_on(put_block(&store(dir.path()), &block)).unwrap();
    }
    let mut cfg = config_for(dir.path());
    cfg.multitenancy_enabled = true;
    let srv = TestServer::start(cfg);
    let a = srv.get(&format!("/api/traces/{id_a}"), &[]);
    assert_eq!(a.status, 401);
    assert!(a.text().contains("X-Scope-OrgID"));
    assert_eq!(
        srv.get(
            &format!("/api/traces/{id_a}"),
            &[("X-Scope-OrgID", "team-a")]
        )
        .status,
        200
    );
    assert_eq!(
        srv.get(
            &format!("/api/traces/{id_a}"),
            &[("X-Scope-OrgID", "team-b")]
        )
        .status,
        404
    );
    assert_eq!(
        srv.get(
            &format!("/api/traces/{id_b}"),
            &[("X-Scope-OrgID", "team-a|team-b")]
        )
        .status,
        200
    );
    assert_eq!(
        srv.get(
            &format!("/api/traces/{id_a}"),
            &[("X-Scope-OrgID", "../etc")]
        )
        .status,
        400
    );
    check_all_forms(
        &srv,
        &id_b,
        &by_trace(traces[1].clone())[&id_b],
        &[("X-Scope-OrgID", "team-b")],
    );
}

#[test]
fn status_endpoints_answer_as_tempo_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    cfg.server.http_api_prefix = "/tempo".into();
    let srv = TestServer::start(cfg);
    assert_eq!(srv.get("/tempo/ready", &[]).text(), "ready\n");
    let echo = srv.get("/tempo/api/echo", &[]);
    assert_eq!((echo.status, echo.text().as_str()), (200, "echo"));
    let info: serde_json::Value =
        serde_json::from_slice(&srv.get("/tempo/api/status/buildinfo", &[]).body).unwrap();
    let version = info["version"].as_str().unwrap();
    // Grafana compares with semver: major.minor.patch must be at least 2.9.0.
    let core: Vec<u64> = version
        .split(['+', '-'])
        .next()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(core >= vec![2, 9, 0], "{version}");
    assert_eq!(
        srv.get("/ready", &[]).status,
        404,
        "the prefix applies to every route"
    );
    srv.get("/tempo/api/traces/abc", &[]);
    let metrics = srv.get("/tempo/metrics", &[]).text();
    assert!(metrics.contains(r#"allegro_requests_total{route="/tempo/api/traces/{id}",method="GET",status_code="404"} 1"#), "{metrics}");
    assert!(metrics.contains("allegro_request_duration_seconds_bucket{route=\"/tempo/api/echo\""));
    assert!(metrics.contains("process_resident_memory_bytes"));
}
