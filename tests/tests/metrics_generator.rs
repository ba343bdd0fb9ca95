//! The metrics generator against a real Prometheus: the generated dataset goes in through
//! OTLP/HTTP, span metrics and service graphs go out by remote write, and PromQL over
//! Prometheus's HTTP API — including the exact queries Grafana's service graph sends — returns
//! the counts computed independently from the dataset below.
//!
//! Prometheus starts only after the first collections were queued, so the test also shows that
//! a receiver that was down loses nothing: samples stamped before it started arrive.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use allegro_datasets::generate::GenOptions;
use allegro_datasets::generate_all;
use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::common::v1::KeyValue;
use allegro_engine::otlp::common::v1::any_value::Value;
use allegro_engine::otlp::trace::v1::{ResourceSpans, Span};
use allegro_server::config::Config;
use allegro_tests::TestServer;
use allegro_tests::ports::free_port;
use allegro_tests::prometheus::{Prometheus, binary};
use prost::Message;

const KINDS: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUSES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
const DB_NAME: [&str; 4] = ["db.namespace", "db.name", "db.system", "db.system.name"];
const PEER: [&str; 4] = ["peer.service", "db.name", "db.system", "db.system.name"];

fn text(v: &Value) -> String {
    match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => panic!("unexpected attribute value {other:?}"),
    }
}

fn attr(lists: &[&[KeyValue]], key: &str) -> Option<String> {
    lists
        .iter()
        .find_map(|l| l.iter().find(|kv| kv.key == key))
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(text)
}

struct Flat<'a> {
    service: String,
    resource: &'a [KeyValue],
    span: &'a Span,
}

/// Edge key: (client, server, connection_type).
type EdgeKey = (String, String, String);

/// What the generator must produce, derived from the spans by plain rules (parent lookups,
/// not the processor's edge store).
#[derive(Default)]
struct Expected {
    calls: BTreeMap<(String, String, String, String), f64>,
    /// Per span name: durations in seconds of SERVER spans.
    server_durations: HashMap<String, Vec<f64>>,
    edges: BTreeMap<EdgeKey, (f64, f64)>,
    trace_ids: BTreeSet<String>,
}

fn expected(traces: &[Vec<ResourceSpans>]) -> Expected {
    let mut e = Expected::default();
    for t in traces {
        let mut spans: Vec<Flat> = Vec::new();
        for rs in t {
            let resource: &[KeyValue] = &rs.resource.as_ref().expect("resource").attributes;
            let service = attr(&[resource], "service.name").expect("service.name");
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                spans.push(Flat {
                    service: service.clone(),
                    resource,
                    span,
                });
            }
        }
        let by_id: HashMap<&[u8], &Flat> = spans
            .iter()
            .map(|s| (s.span.span_id.as_slice(), s))
            .collect();
        let failed = |s: &Span| s.status.as_ref().is_some_and(|st| st.code == 2);
        let mut edge = |k: EdgeKey, failed: bool| {
            let v = e.edges.entry(k).or_default();
            v.0 += 1.0;
            v.1 += f64::from(u8::from(failed));
        };
        let mut served: HashMap<&[u8], &Flat> = HashMap::new();
        for s in &spans {
            let sp = s.span;
            e.trace_ids.insert(hex::encode(&sp.trace_id));
            *e.calls
                .entry((
                    s.service.clone(),
                    sp.name.clone(),
                    KINDS[sp.kind as usize].to_string(),
                    STATUSES[sp.status.as_ref().map_or(0, |s| s.code) as usize].to_string(),
                ))
                .or_default() += 1.0;
            if sp.kind == 2 {
                e.server_durations
                    .entry(sp.name.clone())
                    .or_default()
                    .push((sp.end_time_unix_nano - sp.start_time_unix_nano) as f64 / 1e9);
            }
            if sp.kind == 2 || sp.kind == 5 {
                if sp.parent_span_id.is_empty() {
                    let client = attr(&[&sp.attributes], "peer.service")
                        .or_else(|| PEER[1..].iter().find_map(|k| attr(&[&sp.attributes], k)))
                        .unwrap_or_else(|| "user".into());
                    edge(
                        (client, s.service.clone(), "virtual_node".into()),
                        failed(sp),
                    );
                } else if let Some(p) = by_id.get(sp.parent_span_id.as_slice())
                    && (p.span.kind == 3 || p.span.kind == 4)
                {
                    let dup = served.insert(p.span.span_id.as_slice(), s);
                    assert!(dup.is_none(), "a client span with two server children");
                }
            }
        }
        for c in &spans {
            let sp = c.span;
            if sp.kind != 3 && sp.kind != 4 {
                continue;
            }
            let lists: [&[KeyValue]; 2] = [c.resource, &sp.attributes];
            if let Some(db) = DB_NAME.iter().find_map(|k| attr(&lists, k)) {
                let a: &[KeyValue] = &sp.attributes;
                let address = attr(&[a], "network.peer.address").map(|h| {
                    match attr(&[a], "network.peer.port") {
                        Some(p) => format!("{h}:{p}"),
                        None => h,
                    }
                });
                let server = attr(&[a], "peer.service")
                    .or_else(|| attr(&[a], "server.address"))
                    .or(address)
                    .unwrap_or(db);
                edge((c.service.clone(), server, "database".into()), failed(sp));
            } else if let Some(s) = served.get(sp.span_id.as_slice()) {
                let messaging = sp.kind == 4 || s.span.kind == 5;
                edge(
                    (
                        c.service.clone(),
                        s.service.clone(),
                        if messaging { "messaging_system" } else { "" }.into(),
                    ),
                    failed(sp) || failed(s.span),
                );
            } else if let Some(peer) = PEER.iter().find_map(|k| attr(&[&sp.attributes], k)) {
                edge((c.service.clone(), peer, "virtual_node".into()), failed(sp));
            }
        }
    }
    e
}

fn label(l: &serde_json::Map<String, serde_json::Value>, k: &str) -> String {
    l.get(k)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn config(dir: &std::path::Path, prometheus_port: u16) -> Config {
    let yaml = format!(
        r#"
storage:
  trace:
    local:
      path: {data}
distributor:
  receivers:
    otlp:
      protocols:
        http:
          endpoint: 127.0.0.1:0
metrics_generator:
  registry:
    collection_interval: 1s
    external_labels:
      source: allegro
  storage:
    path: {queue}
    remote_write:
      - url: http://127.0.0.1:{prometheus_port}/api/v1/write
        send_exemplars: true
  processor:
    service_graphs:
      wait: 2s
"#,
        data = dir.join("data").display(),
        queue = dir.join("generator").display(),
    );
    let cfg = Config::parse("test", &yaml).expect("config");
    cfg.validate().expect("valid config");
    cfg
}

#[test]
fn span_metrics_and_service_graphs_reach_prometheus() {
    let Some(bin) = binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let srv = TestServer::start(config(dir.path(), port));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Spans of the last 20 s, well inside the 30 s ingestion slack.
    let traces = generate_all(GenOptions {
        seed: 7,
        spans: 6_000,
        start_unix_nano: now - 20_000_000_000,
        duration_nano: 15_000_000_000,
    });
    let want = expected(&traces);
    let total_spans: f64 = want.calls.values().sum();
    let total_edges: f64 = want.edges.values().map(|v| v.0).sum();
    assert!(
        want.edges.len() >= 10,
        "the dataset should have a real topology"
    );
    for kind in ["", "database", "messaging_system", "virtual_node"] {
        assert!(
            want.edges.keys().any(|k| k.2 == kind),
            "no {kind:?} edge in the dataset"
        );
    }
    let otlp = srv.otlp_http();
    for batch in traces.chunks(20) {
        let body = ExportTraceServiceRequest {
            resource_spans: batch.iter().flatten().cloned().collect(),
        }
        .encode_to_vec();
        let a = srv.post(
            &otlp,
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &body,
        );
        assert_eq!(a.status, 200, "{}", a.text());
    }
    // Prometheus is down for the first collections: they wait in the on-disk queue.
    std::thread::sleep(Duration::from_secs(3));
    let prom_started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let prom = Prometheus::start(&bin, dir.path(), port);

    // Wait until the last collection (after the edges' 2 s wait) has arrived.
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let spans = prom.query("sum(traces_spanmetrics_calls_total)");
        let edges = prom.query("sum(traces_service_graph_request_total)");
        let got = (
            spans.first().map(|s| s.1).unwrap_or(0.0),
            edges.first().map(|s| s.1).unwrap_or(0.0),
        );
        if got == (total_spans, total_edges) {
            break;
        }
        assert!(
            Instant::now() < until,
            "Prometheus has {got:?}, want ({total_spans}, {total_edges}); generator metrics:\n{}",
            srv.get("/metrics", &[]).text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Span metrics: calls by Tempo's four intrinsic labels, exactly.
    let got: BTreeMap<_, f64> = prom
        .query(
            "sum by (service, span_name, span_kind, status_code) (traces_spanmetrics_calls_total)",
        )
        .into_iter()
        .map(|(l, v)| {
            (
                (
                    label(&l, "service"),
                    label(&l, "span_name"),
                    label(&l, "span_kind"),
                    label(&l, "status_code"),
                ),
                v,
            )
        })
        .collect();
    assert_eq!(got, want.calls);
    let count = prom.query("sum(traces_spanmetrics_latency_count)");
    assert_eq!(count[0].1, total_spans);
    let inf = prom.query(r#"sum(traces_spanmetrics_latency_bucket{le="+Inf"})"#);
    assert_eq!(inf[0].1, total_spans);
    // External labels are on every series.
    let unlabelled = prom.query(r#"count({__name__=~"traces_.+", source!="allegro"})"#);
    assert!(unlabelled.is_empty(), "{unlabelled:?}");

    // Service graph: every edge with its request and failure counts, exactly.
    let totals = |metric: &str| -> BTreeMap<EdgeKey, f64> {
        prom.query(&format!(
            "sum by (client, server, connection_type) ({metric})"
        ))
        .into_iter()
        .map(|(l, v)| {
            (
                (
                    label(&l, "client"),
                    label(&l, "server"),
                    label(&l, "connection_type"),
                ),
                v,
            )
        })
        .collect()
    };
    let requests = totals("traces_service_graph_request_total");
    let want_requests: BTreeMap<EdgeKey, f64> =
        want.edges.iter().map(|(k, v)| (k.clone(), v.0)).collect();
    assert_eq!(requests, want_requests);
    let failed = totals("traces_service_graph_request_failed_total");
    let want_failed: BTreeMap<EdgeKey, f64> = want
        .edges
        .iter()
        .filter(|(_, v)| v.1 > 0.0)
        .map(|(k, v)| (k.clone(), v.1))
        .collect();
    assert_eq!(failed, want_failed);
    assert!(!want_failed.is_empty(), "the dataset has failing calls");

    // Grafana's service graph phase 1, as it sends them ($__range = 10m).
    let pairs: BTreeSet<(String, String)> = want
        .edges
        .keys()
        .map(|k| (k.0.clone(), k.1.clone()))
        .collect();
    for metric in [
        "traces_service_graph_request_server_seconds_sum",
        "traces_service_graph_request_total",
        "traces_service_graph_request_failed_total",
        "traces_service_graph_request_server_seconds_bucket",
    ] {
        let rows = prom.query(&format!("sum by (client, server) (rate({metric}[10m]))"));
        let got: BTreeSet<(String, String)> = rows
            .iter()
            .map(|(l, _)| (label(l, "client"), label(l, "server")))
            .collect();
        if metric.contains("failed") {
            assert!(got.is_subset(&pairs) && !got.is_empty(), "{metric}");
        } else {
            assert_eq!(got, pairs, "{metric}");
        }
        if metric == "traces_service_graph_request_total" {
            // The initial zero before each new series makes rate() see every request.
            assert!(rows.iter().all(|(_, v)| *v > 0.0), "{rows:?}");
        }
        let groups = prom.query(&format!(
            "group by (client, connection_type, server) ({metric})"
        ));
        let got: BTreeSet<EdgeKey> = groups
            .iter()
            .map(|(l, _)| {
                (
                    label(l, "client"),
                    label(l, "server"),
                    label(l, "connection_type"),
                )
            })
            .collect();
        let want_keys: BTreeSet<EdgeKey> = if metric.contains("failed") {
            want_failed.keys().cloned().collect()
        } else {
            want.edges.keys().cloned().collect()
        };
        assert_eq!(got, want_keys, "{metric}");
    }

    // Phase 2: the top server operations, ranked as the dataset ranks them.
    let top = prom.query(
        r#"topk(5, sum(rate(traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER"}[10m])) by (span_name))"#,
    );
    assert_eq!(top.len(), 5);
    let mut server_counts: HashMap<String, f64> = HashMap::new();
    for ((_, name, kind, _), v) in &want.calls {
        if kind == "SPAN_KIND_SERVER" {
            *server_counts.entry(name.clone()).or_default() += v;
        }
    }
    let chosen: BTreeSet<String> = top.iter().map(|(l, _)| label(l, "span_name")).collect();
    let lowest_chosen = chosen
        .iter()
        .map(|n| server_counts[n])
        .fold(f64::INFINITY, f64::min);
    let best_left = server_counts
        .iter()
        .filter(|(n, _)| !chosen.contains(*n))
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    assert!(lowest_chosen >= best_left, "{chosen:?} {server_counts:?}");

    // Phase 3: p90 latency of the busiest operation lies in the bucket the dataset puts it in.
    let (name, _) = server_counts
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    let p90 = prom.query(&format!(
        r#"histogram_quantile(.9, sum(rate(traces_spanmetrics_latency_bucket{{span_name=~"{}"}}[10m])) by (le))"#,
        regex::escape(name).replace('\\', "\\\\")
    ));
    let mut d = want.server_durations[name].clone();
    d.sort_by(f64::total_cmp);
    let rank = d[((d.len() as f64 * 0.9).ceil() as usize).saturating_sub(1)];
    let bounds: Vec<f64> = (0..14).map(|i| 0.002 * f64::from(1u32 << i)).collect();
    let upper = bounds
        .iter()
        .copied()
        .find(|b| *b >= rank)
        .unwrap_or(f64::INFINITY);
    let lower = bounds
        .iter()
        .copied()
        .rev()
        .find(|b| *b < upper)
        .unwrap_or(0.0);
    assert!(
        p90[0].1 >= lower && p90[0].1 <= upper,
        "p90 {} outside ({lower}, {upper}]",
        p90[0].1
    );

    // Exemplars carry the dataset's trace IDs.
    let start = format!("{}", (now / 1_000_000_000) - 600);
    let end = format!("{}", now / 1_000_000_000 + 600);
    let ex = prom.api(
        "/api/v1/query_exemplars",
        &[
            ("query", "traces_spanmetrics_latency_bucket"),
            ("start", &start),
            ("end", &end),
        ],
    );
    let ids: Vec<String> = ex
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["exemplars"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            e["labels"]["traceID"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(!ids.is_empty(), "no exemplars");
    assert!(ids.iter().all(|i| want.trace_ids.contains(i)), "{ids:?}");

    // What was queued while Prometheus was down arrived: samples older than its start.
    let raw = prom.api(
        "/api/v1/query",
        &[(
            "query",
            r#"traces_spanmetrics_calls_total{span_kind="SPAN_KIND_SERVER"}[10m]"#,
        )],
    );
    let earliest = raw["result"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
        // Initial zeros are stamped a minute back anyway; only counted values tell.
        .filter(|v| v[1].as_str() != Some("0"))
        .filter_map(|v| v[0].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert!(
        earliest * 1000.0 < prom_started_ms,
        "earliest sample {earliest} is not before Prometheus started ({prom_started_ms} ms)"
    );

    // The generator's own metrics on /metrics.
    let m = srv.get("/metrics", &[]).text();
    assert!(
        m.contains(&format!(
            "tempo_metrics_generator_spans_received_total{{tenant=\"single-tenant\"}} {total_spans}"
        )),
        "{m}"
    );
    // The queue drains: each collection interval queues a request, so one may be in flight
    // at any single look.
    let drained = "allegro_generator_remote_write_queued_requests{endpoint=\"remote_write_0\"} 0";
    let until = Instant::now() + Duration::from_secs(10);
    while !srv.get("/metrics", &[]).text().contains(drained) {
        assert!(
            Instant::now() < until,
            "the remote-write queue did not drain"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
