//! Grafana's streaming API with a real gRPC client: grpcio (stubs generated at run time from
//! the project's `.proto` files by grpcio-tools) calls every `tempopb.StreamingQuerier` RPC on
//! the HTTP port as Grafana's Tempo data source sends it. The final streamed answer equals the
//! REST answer to the same query (both decoded as protobuf), and a search over many blocks
//! streams partial answers before it. Needs `pip install grpcio grpcio-tools` (`.ci/run`
//! installs them); fails under `CI=true` when they are missing, skips with a note otherwise.

use allegro_datasets::{BlockCut, GenOptions, write_blocks};
use allegro_engine::block::writer::BlockWriteOptions;
use allegro_engine::storage::{StorageBackend, open_store};
use allegro_engine::tempopb::{
    QueryInstantResponse, QueryRangeResponse, SearchResponse, SearchTagValuesV2Response,
    SearchTagsV2Response,
};
use allegro_tests::{TestServer, config_for, python_with, run_python, url_encode};
use base64::Engine as _;
use prost::Message;
use serde_json::{Value, json};

const TENANT: &str = "acme";

/// What the client got for one request.
struct Called {
    messages: Vec<Vec<u8>>,
    code: Option<String>,
    details: String,
}

impl Called {
    fn decoded<M: Message + Default>(&self) -> Vec<M> {
        self.messages
            .iter()
            .map(|m| M::decode(m.as_slice()).expect("a message of the RPC's type"))
            .collect()
    }
}

fn call(python: &str, addr: &str, requests: &[Value]) -> Vec<Called> {
    let proto = allegro_tests::workspace_dir().join("proto");
    let stdout = run_python(
        python,
        "streaming_client.py",
        &[
            proto.into_os_string(),
            addr.into(),
            Value::Array(requests.to_vec()).to_string().into(),
        ],
    );
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Called {
                messages: v["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        base64::engine::general_purpose::STANDARD
                            .decode(m.as_str().unwrap())
                            .unwrap()
                    })
                    .collect(),
                code: v["code"].as_str().map(str::to_string),
                details: v["details"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

#[test]
fn grafana_streaming_requests_get_the_rest_answers() {
    let Some(python) = python_with(&["grpc", "grpc_tools"]) else {
        return;
    };
    // An hour of spans ending now, in 12 blocks.
    let dir = tempfile::tempdir().unwrap();
    let now_s = allegro_engine::now_unix_nanos() / 1_000_000_000;
    let (start_s, end_s) = (now_s - 3600, now_s);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = open_store(&StorageBackend::Local {
        path: dir.path().to_path_buf(),
    })
    .unwrap();
    let summary = rt
        .block_on(write_blocks(
            &store,
            TENANT,
            GenOptions {
                seed: 5,
                spans: 24_000,
                start_unix_nano: start_s * 1_000_000_000,
                duration_nano: 3_540 * 1_000_000_000,
            },
            BlockCut::whole(2_000),
            &BlockWriteOptions::default(),
            &mut |_| {},
        ))
        .unwrap();
    assert!(
        summary.blocks.len() >= 10,
        "{} blocks",
        summary.blocks.len()
    );
    let mut cfg = config_for(dir.path());
    cfg.multitenancy_enabled = true;
    let srv = TestServer::start(cfg);
    let addr = srv.base.trim_start_matches("http://").to_string();
    let (start_ns, end_ns) = (start_s * 1_000_000_000, end_s * 1_000_000_000);
    let range =
        |q: &str| json!({"query": q, "start": start_ns.to_string(), "end": end_ns.to_string()});
    let mut metrics_range = range("{ } | rate() by (resource.service.name)");
    metrics_range["step"] = json!("60000000000");
    let requests = [
        // Grafana's health check: `{}`, limit 1, the last 15 minutes.
        json!({"rpc": "Search", "tenant": TENANT, "request":
            {"Query": "{}", "Limit": 1, "start": now_s - 900, "end": now_s}}),
        json!({"rpc": "Search", "tenant": TENANT, "request":
            {"Query": "{ }", "Limit": 500, "SpansPerSpanSet": 3, "start": start_s, "end": end_s}}),
        json!({"rpc": "Search", "tenant": TENANT, "request":
            {"Query": "{ status = error } | select(span.http.route)", "Limit": 20,
             "SpansPerSpanSet": 2, "start": start_s, "end": end_s}}),
        json!({"rpc": "MetricsQueryRange", "tenant": TENANT, "request": metrics_range}),
        json!({"rpc": "MetricsQueryInstant", "tenant": TENANT, "request":
            range("{ status = error } | count_over_time() by (resource.service.name)")}),
        json!({"rpc": "SearchTagsV2", "tenant": TENANT, "request":
            {"scope": "resource", "start": start_s, "end": end_s}}),
        json!({"rpc": "SearchTagValuesV2", "tenant": TENANT, "request":
            {"tagName": "resource.service.name", "query": "{}", "start": start_s, "end": end_s}}),
        // Errors: bad TraceQL, no tenant, a bad scope.
        json!({"rpc": "Search", "tenant": TENANT, "request": {"Query": "{ .a = }"}}),
        json!({"rpc": "Search", "tenant": null, "request": {"Query": "{}"}}),
        json!({"rpc": "SearchTags", "tenant": TENANT, "request": {"scope": "nope"}}),
    ];
    let got = call(&python, &addr, &requests);
    assert_eq!(got.len(), requests.len());
    for (r, g) in requests.iter().zip(&got).take(7) {
        assert!(g.code.is_none(), "{r}: {:?} {}", g.code, g.details);
        assert!(!g.messages.is_empty(), "{r}: no message");
    }

    // Health check: one trace.
    let health: Vec<SearchResponse> = got[0].decoded();
    assert_eq!(health.last().unwrap().traces.len(), 1);

    // The search over every block: partial answers first, with progress; the last message is
    // the REST answer.
    let search: Vec<SearchResponse> = got[1].decoded();
    let last = search.last().unwrap();
    let want = srv.get_proto::<SearchResponse>(
        &format!(
            "/api/search?q={}&limit=500&spss=3&start={start_s}&end={end_s}",
            url_encode("{ }")
        ),
        TENANT,
    );
    assert!(want.traces.len() > 100, "{} traces", want.traces.len());
    assert_eq!(last.traces, want.traces);
    assert!(search.len() >= 2, "no partial answer before the final one");
    let first = &search[0];
    assert!(!first.traces.is_empty(), "the first partial has no traces");
    let m = first.metrics.unwrap();
    assert!(
        m.completed_jobs < m.total_jobs,
        "first partial: {} of {} jobs",
        m.completed_jobs,
        m.total_jobs
    );
    let m = last.metrics.unwrap();
    assert_eq!(m.completed_jobs, m.total_jobs);
    // A job per block (the tenant has no live spans).
    assert_eq!(m.total_jobs as usize, summary.blocks.len());
    // Every trace a partial sent is in the final answer (the limit holds them all).
    for p in &search[..search.len() - 1] {
        for t in &p.traces {
            assert!(
                last.traces.contains(t),
                "partial trace {} differs",
                t.trace_id
            );
        }
    }

    let errors: Vec<SearchResponse> = got[2].decoded();
    let want = srv.get_proto::<SearchResponse>(
        &format!(
            "/api/search?q={}&limit=20&spss=2&start={start_s}&end={end_s}",
            url_encode("{ status = error } | select(span.http.route)")
        ),
        TENANT,
    );
    assert!(!want.traces.is_empty());
    assert_eq!(errors.last().unwrap().traces, want.traces);

    // Metrics: the streamed series are REST's.
    let series: Vec<QueryRangeResponse> = got[3].decoded();
    let want = srv.get_proto::<QueryRangeResponse>(
        &format!(
            "/api/metrics/query_range?q={}&start={start_s}&end={end_s}&step=60s",
            url_encode("{ } | rate() by (resource.service.name)")
        ),
        TENANT,
    );
    assert!(want.series.len() > 3);
    // Exemplars are a sample (which spans, and how many per series, may differ between two
    // runs of a query, as in Tempo): labels and samples are compared exactly.
    // First the recent store's answer (the range reaches back past it), then the whole one.
    assert_eq!(series.len(), 2, "a partial answer, then the whole");
    assert!(!series[0].series.is_empty());
    let streamed = &series[1].series;
    assert_eq!(streamed.len(), want.series.len());
    for (a, b) in streamed.iter().zip(&want.series) {
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.samples, b.samples, "{:?}", a.labels);
    }
    assert!(streamed.iter().any(|s| !s.exemplars.is_empty()));
    let instant: Vec<QueryInstantResponse> = got[4].decoded();
    let want = srv.get_proto::<QueryInstantResponse>(
        &format!(
            "/api/metrics/query?q={}&start={start_s}&end={end_s}",
            url_encode("{ status = error } | count_over_time() by (resource.service.name)")
        ),
        TENANT,
    );
    assert_eq!(instant.len(), 2, "the recent store's value, then the whole");
    assert_eq!(instant[1].series, want.series);

    // Tags: the same names and values as the JSON API.
    let tags: Vec<SearchTagsV2Response> = got[5].decoded();
    let json_tags: Value = serde_json::from_slice(
        &srv.get(
            &format!("/api/v2/search/tags?scope=resource&start={start_s}&end={end_s}"),
            &[("X-Scope-OrgID", TENANT)],
        )
        .body,
    )
    .unwrap();
    let names: Vec<&str> = tags[0].scopes[0].tags.iter().map(String::as_str).collect();
    assert!(names.contains(&"service.name"), "{names:?}");
    assert_eq!(json!(names), json_tags["scopes"][0]["tags"]);
    let values: Vec<SearchTagValuesV2Response> = got[6].decoded();
    let json_values: Value = serde_json::from_slice(
        &srv.get(
            &format!(
                "/api/v2/search/tag/resource.service.name/values?q=%7B%7D&start={start_s}&end={end_s}"
            ),
            &[("X-Scope-OrgID", TENANT)],
        )
        .body,
    )
    .unwrap();
    let typed: Vec<Value> = values[0]
        .tag_values
        .iter()
        .map(|t| json!({"type": t.r#type, "value": t.value}))
        .collect();
    assert!(typed.len() > 3);
    assert_eq!(json!(typed), json_values["tagValues"]);

    // Errors are gRPC statuses with REST's messages.
    assert_eq!(got[7].code.as_deref(), Some("INVALID_ARGUMENT"));
    assert!(
        got[7].details.contains("--> 1:8") && got[7].details.contains('^'),
        "{}",
        got[7].details
    );
    assert_eq!(
        got[8].code.as_deref(),
        Some("UNAUTHENTICATED"),
        "{}",
        got[8].details
    );
    assert_eq!(got[9].code.as_deref(), Some("INVALID_ARGUMENT"));
    assert!(
        got[9].details.contains("invalid scope"),
        "{}",
        got[9].details
    );
}
