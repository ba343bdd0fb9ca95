//! The generator's processors on hand-built spans, read back from the scrape rendering: every
//! expected value below is worked out by hand from the spans in the test.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use allegro_engine::ids::TraceId;
use allegro_ingest::generator::servicegraphs::ServiceGraphsConfig;
use allegro_ingest::generator::spanmetrics::{DimensionMapping, SpanMetricsConfig};
use allegro_ingest::generator::{Generator, GeneratorConfig, Processors};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(k: &str, v: &str) -> KeyValue {
    kv(k, Value::StringValue(v.into()))
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

struct SpanSpec<'a> {
    trace: u8,
    id: u8,
    parent: u8,
    name: &'a str,
    kind: i32,
    ms: u64,
    error: bool,
    attrs: Vec<KeyValue>,
}

fn span(x: SpanSpec) -> Span {
    let end = now_ns();
    Span {
        trace_id: vec![x.trace; 16],
        span_id: vec![x.id; 8],
        parent_span_id: if x.parent == 0 {
            Vec::new()
        } else {
            vec![x.parent; 8]
        },
        name: x.name.into(),
        kind: x.kind,
        start_time_unix_nano: end - x.ms * 1_000_000,
        end_time_unix_nano: end,
        status: x.error.then(|| Status {
            code: 2,
            message: "boom".into(),
        }),
        attributes: x.attrs,
        ..Default::default()
    }
}

fn resource(attrs: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: attrs,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `name{labels}` → value, from the text rendering.
fn samples(g: &Generator) -> BTreeMap<String, f64> {
    g.render(&["t".to_string()])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn only(p: &str) -> Processors {
    Processors::from_names(&[p.to_string()]).unwrap()
}

fn generator(procs: Processors, f: impl FnOnce(&mut GeneratorConfig)) -> Generator {
    let mut cfg = GeneratorConfig {
        ingestion_slack: Duration::from_secs(30),
        ..Default::default()
    };
    cfg.defaults.processors = procs;
    f(&mut cfg);
    Generator::new(cfg)
}

#[test]
fn span_metrics_labels_counts_and_histograms() {
    let g = generator(only("span-metrics"), |c| {
        c.span_metrics = Arc::new(SpanMetricsConfig {
            dimensions: vec!["http.method".into(), "span_kind".into()],
            dimension_mappings: vec![DimensionMapping {
                name: "route".into(),
                source_labels: vec!["http.method".into(), "http.route".into()],
                join: " ".into(),
            }],
            span_multiplier_key: Some("sampling.multiplier".into()),
            ..Default::default()
        });
    });
    let res = vec![s("service.name", "cart"), s("http.method", "RESOURCE")];
    let a = span(SpanSpec {
        trace: 1,
        id: 1,
        parent: 0,
        name: "GET /cart",
        kind: 2,
        ms: 3,
        error: false,
        attrs: vec![
            s("http.method", "GET"),
            s("http.route", "/cart"),
            s("span_kind", "x"),
        ],
    });
    let b = span(SpanSpec {
        trace: 1,
        id: 2,
        parent: 1,
        name: "GET /cart",
        kind: 2,
        ms: 40,
        error: true,
        attrs: vec![
            s("http.route", "/cart"),
            kv("sampling.multiplier", Value::DoubleValue(4.0)),
        ],
    });
    let sizes = (a.encoded_len() + 4 * b.encoded_len()) as f64;
    g.consume(
        "t",
        &[resource(res.clone(), vec![a.clone(), b.clone()])],
        None,
        None,
    );
    let m = samples(&g);
    // Resource attributes win over span attributes; `span_kind` collides with an intrinsic.
    let l = r#"service="cart",span_name="GET /cart",span_kind="SPAN_KIND_SERVER""#;
    // Only the first span has `span_kind`; an empty value is no label.
    let rest = |status: &str| {
        let kind = if status == "STATUS_CODE_UNSET" {
            r#"__span_kind="x","#
        } else {
            ""
        };
        format!(r#"{l},status_code="{status}",http_method="RESOURCE",{kind}route="RESOURCE /cart""#)
    };
    let calls = |status: &str| m[&format!("traces_spanmetrics_calls_total{{{}}}", rest(status))];
    assert_eq!(calls("STATUS_CODE_UNSET"), 1.0);
    // The multiplier weighs the error span 4×.
    assert_eq!(calls("STATUS_CODE_ERROR"), 4.0);
    let bucket = |status: &str, le: &str| {
        m[&format!(
            r#"traces_spanmetrics_latency_bucket{{{},le="{le}"}}"#,
            rest(status)
        )]
    };
    // 3 ms lands in (0.002, 0.004]; 40 ms in (0.032, 0.064].
    assert_eq!(bucket("STATUS_CODE_UNSET", "0.002"), 0.0);
    assert_eq!(bucket("STATUS_CODE_UNSET", "0.004"), 1.0);
    assert_eq!(bucket("STATUS_CODE_ERROR", "0.032"), 0.0);
    assert_eq!(bucket("STATUS_CODE_ERROR", "0.064"), 4.0);
    assert_eq!(bucket("STATUS_CODE_ERROR", "16.384"), 4.0);
    assert_eq!(bucket("STATUS_CODE_ERROR", "+Inf"), 4.0);
    let size: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("traces_spanmetrics_size_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(size, sizes);
    // Sizes handed in by the ingester (computed once while regrouping) are used as they are
    // (no multiplier key in this config).
    let g2 = generator(only("span-metrics-size"), |_| {});
    g2.consume("t", &[resource(res, vec![a, b])], Some(&[10, 20]), None);
    let size: f64 = samples(&g2)
        .iter()
        .filter(|(k, _)| k.starts_with("traces_spanmetrics_size_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(size, 10.0 + 20.0);
}

#[test]
fn filters_slack_accepted_traces_and_target_info() {
    let g = generator(only("span-metrics-count"), |c| {
        c.span_metrics = Arc::new(SpanMetricsConfig {
            enable_target_info: true,
            filter_policies: vec![allegro_ingest::generator::filter::FilterPolicy {
                exclude: Some(allegro_ingest::generator::filter::PolicyMatch {
                    attributes: vec![allegro_ingest::generator::filter::AttrMatch {
                        key: allegro_ingest::generator::filter::Key::Name,
                        value: allegro_ingest::generator::filter::Expected::Str("health".into()),
                    }],
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
    });
    let res = vec![
        s("service.name", "api"),
        s("service.namespace", "shop"),
        s("service.instance.id", "pod-1"),
        s("k8s.pod.name", "api-1"),
    ];
    let mk = |trace: u8, id: u8, name: &str| {
        span(SpanSpec {
            trace,
            id,
            parent: 0,
            name,
            kind: 3,
            ms: 1,
            error: false,
            attrs: vec![],
        })
    };
    let mut old = mk(1, 3, "old");
    old.end_time_unix_nano -= 120_000_000_000;
    let spans = vec![
        mk(1, 1, "call"),
        mk(1, 2, "health"),
        old,
        mk(2, 4, "refused"),
    ];
    let kept: HashSet<TraceId> = [TraceId([1; 16])].into();
    g.consume("t", &[resource(res, spans)], None, Some(&kept));
    let m = samples(&g);
    let calls: Vec<(&String, &f64)> = m
        .iter()
        .filter(|(k, _)| k.starts_with("traces_spanmetrics_calls_total"))
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].0.contains(r#"job="shop/api",instance="pod-1""#),
        "{calls:?}"
    );
    assert!(
        !m.keys()
            .any(|k| k.starts_with("traces_spanmetrics_latency"))
    );
    assert_eq!(
        m[r#"traces_target_info{instance="pod-1",job="shop/api",k8s_pod_name="api-1"}"#],
        1.0
    );
    let mut own = String::new();
    g.render_self_metrics(&mut own);
    // Three spans of the kept trace were seen; one ended outside the 30 s slack.
    assert!(
        own.contains("tempo_metrics_generator_spans_received_total{tenant=\"t\"} 3"),
        "{own}"
    );
    assert!(
        own.contains("tempo_metrics_generator_spans_discarded_total{tenant=\"t\"} 1"),
        "{own}"
    );
    // The health check was left out by the filter policy.
    assert!(
        own.contains(
            "tempo_metrics_generator_processor_span_metrics_filtered_spans_total{tenant=\"t\"} 1"
        ),
        "{own}"
    );
}

fn graphs(f: impl FnOnce(&mut ServiceGraphsConfig)) -> Generator {
    generator(only("service-graphs"), |c| {
        let mut sg = ServiceGraphsConfig {
            wait: Duration::from_millis(50),
            ..Default::default()
        };
        f(&mut sg);
        c.service_graphs = Arc::new(sg);
    })
}

fn edge(m: &BTreeMap<String, f64>, metric: &str, labels: &str) -> f64 {
    *m.get(&format!("{metric}{{{labels}}}"))
        .unwrap_or_else(|| panic!("no {metric}{{{labels}}} in {m:#?}"))
}

#[test]
fn service_graph_pairs_client_and_server_across_requests() {
    let g = graphs(|c| {
        c.enable_messaging_system_latency_histogram = true;
        c.dimensions = vec!["cluster".into()];
        c.enable_client_server_prefix = true;
    });
    let client = span(SpanSpec {
        trace: 1,
        id: 1,
        parent: 9,
        name: "call",
        kind: 3,
        ms: 300,
        error: false,
        attrs: vec![],
    });
    let server = span(SpanSpec {
        trace: 1,
        id: 2,
        parent: 1,
        name: "serve",
        kind: 2,
        ms: 150,
        error: true,
        attrs: vec![],
    });
    let mut producer = span(SpanSpec {
        trace: 1,
        id: 3,
        parent: 9,
        name: "publish",
        kind: 4,
        ms: 1,
        error: false,
        attrs: vec![],
    });
    let mut consumer = span(SpanSpec {
        trace: 1,
        id: 4,
        parent: 3,
        name: "process",
        kind: 5,
        ms: 1,
        error: false,
        attrs: vec![],
    });
    // 250 ms in the queue between publish end and process start.
    producer.end_time_unix_nano = consumer.start_time_unix_nano - 250_000_000;
    producer.start_time_unix_nano = producer.end_time_unix_nano - 1_000_000;
    consumer.end_time_unix_nano = consumer.start_time_unix_nano + 1_000_000;
    let a = || vec![s("service.name", "a"), s("cluster", "eu")];
    let b = || vec![s("service.name", "b"), s("cluster", "us")];
    // The two sides arrive in different requests.
    g.consume("t", &[resource(a(), vec![client, producer])], None, None);
    assert!(!samples(&g).keys().any(|k| k.contains("request_total")));
    g.consume("t", &[resource(b(), vec![server, consumer])], None, None);
    let m = samples(&g);
    let l = r#"client="a",server="b",client_cluster="eu",server_cluster="us""#;
    assert_eq!(edge(&m, "traces_service_graph_request_total", l), 1.0);
    assert_eq!(
        edge(&m, "traces_service_graph_request_failed_total", l),
        1.0
    );
    let lb = |le: &str| format!(r#"{l},le="{le}""#);
    // Server 150 ms ∈ (0.1, 0.2]; client 300 ms ∈ (0.2, 0.4].
    assert_eq!(
        edge(
            &m,
            "traces_service_graph_request_server_seconds_bucket",
            &lb("0.1")
        ),
        0.0
    );
    assert_eq!(
        edge(
            &m,
            "traces_service_graph_request_server_seconds_bucket",
            &lb("0.2")
        ),
        1.0
    );
    assert_eq!(
        edge(
            &m,
            "traces_service_graph_request_client_seconds_bucket",
            &lb("0.2")
        ),
        0.0
    );
    assert_eq!(
        edge(
            &m,
            "traces_service_graph_request_client_seconds_bucket",
            &lb("0.4")
        ),
        1.0
    );
    let lm = r#"client="a",server="b",connection_type="messaging_system",client_cluster="eu",server_cluster="us""#;
    assert_eq!(edge(&m, "traces_service_graph_request_total", lm), 1.0);
    assert!(!m.contains_key(&format!(
        "traces_service_graph_request_failed_total{{{lm}}}"
    )));
    assert_eq!(
        edge(
            &m,
            "traces_service_graph_request_messaging_system_seconds_bucket",
            &format!(r#"{lm},le="0.2""#)
        ),
        0.0
    );
    assert_eq!(
        edge(
            &m,
            "traces_service_graph_request_messaging_system_seconds_bucket",
            &format!(r#"{lm},le="0.4""#)
        ),
        1.0
    );
}

#[test]
fn service_graph_virtual_nodes_databases_and_limits() {
    let g = graphs(|c| {
        c.enable_virtual_node_label = true;
        c.max_items = 3;
    });
    let root = span(SpanSpec {
        trace: 1,
        id: 1,
        parent: 0,
        name: "GET /",
        kind: 2,
        ms: 5,
        error: false,
        attrs: vec![],
    });
    let external = span(SpanSpec {
        trace: 1,
        id: 2,
        parent: 1,
        name: "charge",
        kind: 3,
        ms: 5,
        error: true,
        attrs: vec![s("peer.service", "payments-provider")],
    });
    let db = span(SpanSpec {
        trace: 1,
        id: 3,
        parent: 1,
        name: "SELECT",
        kind: 3,
        ms: 5,
        error: false,
        attrs: vec![
            s("db.system", "postgresql"),
            s("server.address", "pg-main"),
            s("network.peer.address", "10.0.0.1"),
        ],
    });
    let orphan = span(SpanSpec {
        trace: 1,
        id: 4,
        parent: 8,
        name: "lost",
        kind: 2,
        ms: 5,
        error: false,
        attrs: vec![],
    });
    g.consume(
        "t",
        &[resource(
            vec![s("service.name", "front")],
            vec![root, external, db, orphan],
        )],
        None,
        None,
    );
    // A database call completes at once, with server.address before network.peer.address.
    let m = samples(&g);
    assert_eq!(
        edge(
            &m,
            "traces_service_graph_request_total",
            r#"client="front",server="pg-main",connection_type="database""#
        ),
        1.0
    );
    // Three edges wait (root, external, orphan): the next new edge is over max_items.
    let extra = span(SpanSpec {
        trace: 2,
        id: 5,
        parent: 0,
        name: "GET /x",
        kind: 2,
        ms: 5,
        error: false,
        attrs: vec![],
    });
    g.consume(
        "t",
        &[resource(vec![s("service.name", "front")], vec![extra])],
        None,
        None,
    );
    std::thread::sleep(Duration::from_millis(80));
    g.collect_due(true);
    let m = samples(&g);
    assert_eq!(
        edge(
            &m,
            "traces_service_graph_request_total",
            r#"client="user",server="front",connection_type="virtual_node",virtual_node="client""#
        ),
        1.0
    );
    let peer = r#"client="front",server="payments-provider",connection_type="virtual_node",virtual_node="server""#;
    assert_eq!(edge(&m, "traces_service_graph_request_total", peer), 1.0);
    assert_eq!(
        edge(&m, "traces_service_graph_request_failed_total", peer),
        1.0
    );
    assert_eq!(
        m.keys()
            .filter(|k| k.starts_with("traces_service_graph_request_total"))
            .count(),
        3,
        "the orphan server span has no edge"
    );
    let mut own = String::new();
    g.render_self_metrics(&mut own);
    for (name, v) in [
        ("edges", 3),
        ("expired_edges", 3),
        ("dropped_spans", 1),
        ("waiting_edges", 0),
    ] {
        let line =
            format!("tempo_metrics_generator_processor_service_graphs_{name}{{tenant=\"t\"}} {v}");
        assert!(own.contains(&line), "{line} not in\n{own}");
    }
}
