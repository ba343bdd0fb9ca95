//! Every route answers for the caller's tenants only. Two tenants send one trace each, with a
//! service name and an attribute key of their own; then each route is called as tenant `b`
//! and must show `b`'s data and nothing of `a`'s, without a tenant it is a 401, and `a|b`
//! federates where Tempo federates.

use std::time::Duration;

use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use allegro_engine::otlp::resource::v1::Resource;
use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use allegro_tests::url_encode as enc;
use allegro_tests::{TestServer, config_for};
use prost::Message;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// One two-span trace of `tenant` ending two minutes ago: service `svc-<tenant>`, span attribute
/// `only_<tenant>`.
fn trace(tenant: &str, id: u8) -> Vec<ResourceSpans> {
    let now = allegro_engine::now_unix_nanos();
    let span = |sid: u8, parent: Option<u8>| Span {
        trace_id: vec![id; 16],
        span_id: vec![sid; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("op-{tenant}"),
        kind: 2,
        start_time_unix_nano: now - 121_000_000_000,
        end_time_unix_nano: now - 120_000_000_000,
        attributes: vec![kv(&format!("only_{tenant}"), "x")],
        ..Default::default()
    };
    vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", &format!("svc-{tenant}"))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![span(1, None), span(2, Some(1))],
            ..Default::default()
        }],
        ..Default::default()
    }]
}

#[test]
fn every_route_answers_for_the_callers_tenants_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    cfg.multitenancy_enabled = true;
    // Spans end two minutes ago (older than the generator's default 30 s slack): count them.
    cfg.metrics_generator = Some(allegro_server::config::generator::GeneratorSection {
        metrics_ingestion_time_range_slack: Some(Duration::ZERO),
        ..Default::default()
    });
    let srv = TestServer::start(cfg);
    for (tenant, id) in [("a", 0xaa), ("b", 0xbb)] {
        let body = ExportTraceServiceRequest {
            resource_spans: trace(tenant, id),
        }
        .encode_to_vec();
        let a = srv.post(
            &srv.otlp_http(),
            "/v1/traces",
            &[
                ("content-type", "application/x-protobuf"),
                ("X-Scope-OrgID", tenant),
            ],
            &body,
        );
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let (a_id, b_id) = ("aa".repeat(16), "bb".repeat(16));
    let now = allegro_engine::now_unix_nanos() / 1_000_000_000;
    let window = format!("start={}&end={}", now - 600, now + 60);
    let metrics = enc("{ } | rate() by (resource.service.name)");
    let routes: Vec<String> = vec![
        format!("/api/traces/{b_id}"),
        format!("/api/v2/traces/{b_id}"),
        format!("/api/search?q={}", enc("{ }")),
        "/api/search?tags=".into(),
        "/api/search/tags".into(),
        "/api/v2/search/tags".into(),
        "/api/search/tag/service.name/values".into(),
        "/api/v2/search/tag/resource.service.name/values".into(),
        format!("/api/metrics/query_range?q={metrics}&{window}&step=60s"),
        format!("/api/metrics/query?q={metrics}&{window}"),
        "/api/metrics-generator/metrics".into(),
    ];
    let b = [("X-Scope-OrgID", "b")];
    for route in &routes {
        let got = srv.get(route, &b);
        assert_eq!(got.status, 200, "{route}: {}", got.text());
        let text = got.text();
        // Trace bodies carry service names; search answers carry trace IDs.
        let shows_b = text.contains("svc-b") || text.contains("only_b") || text.contains(&b_id);
        assert!(shows_b, "{route} shows nothing of tenant b: {text}");
        for leak in ["svc-a", "only_a", a_id.as_str(), "op-a"] {
            assert!(
                !text.contains(leak),
                "{route} leaks tenant a's {leak}: {text}"
            );
        }
        assert_eq!(
            srv.get(route, &[]).status,
            401,
            "{route} without X-Scope-OrgID"
        );
    }
    // Tenant a's trace, asked for by b.
    for route in [
        format!("/api/traces/{a_id}"),
        format!("/api/v2/traces/{a_id}"),
    ] {
        assert_eq!(srv.get(&route, &b).status, 404, "{route}");
    }
    // The scrape endpoint's tenant parameter picks one of the caller's tenants, no other.
    let a = srv.get("/api/metrics-generator/metrics?tenant=a", &b);
    assert_eq!(a.status, 403, "{}", a.text());
    let both = srv.get(
        "/api/metrics-generator/metrics?tenant=a",
        &[("X-Scope-OrgID", "a|b")],
    );
    assert_eq!(both.status, 200);
    assert!(both.text().contains("svc-a") && !both.text().contains("svc-b"));
    // `a|b` federates: both tenants' traces, each series labelled with its tenant.
    let fed = srv.get(
        &format!("/api/search?q={}", enc("{ }")),
        &[("X-Scope-OrgID", "a|b")],
    );
    assert!(
        fed.text().contains(&a_id) && fed.text().contains(&b_id),
        "{}",
        fed.text()
    );
    let scraped = srv
        .get(
            "/api/metrics-generator/metrics",
            &[("X-Scope-OrgID", "a|b")],
        )
        .text();
    assert!(
        scraped.contains("tenant=\"a\"") && scraped.contains("tenant=\"b\""),
        "{scraped}"
    );
}
