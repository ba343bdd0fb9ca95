//! Traces Drilldown's TraceQL metrics traffic, replayed as the exact HTTP requests Grafana's
//! Tempo data source sends (grafana-clients.md §1.2 C/D, §1.5, §2.2), against the generated
//! shop: 50 minutes of it in blocks, the last minute live over OTLP. Each answer is checked
//! for what Drilldown parses: labels, `__bucket`, `p`, `__meta_type`, exemplar `trace:id`,
//! non-empty series, and its two error texts. The panels and the span list are also streamed
//! over gRPC, as with Grafana's streaming toggles on, and answer as over REST.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use allegro_datasets::{BlockCut, GenOptions, generate_all, write_blocks};
use allegro_engine::block::writer::BlockWriteOptions;
use allegro_engine::storage::{StorageBackend, open_store};
use allegro_engine::tempopb::{
    QueryInstantRequest, QueryInstantResponse, QueryRangeRequest, QueryRangeResponse,
    SearchRequest, SearchResponse,
};
use allegro_server::config::{GeneratorOverrides, TenantLimits};
use allegro_tests::{TestServer, config_for};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value as J;

const TENANT: &str = "shop";

/// Go's form encoding, as Grafana's backend builds the query string (spaces become `+`).
fn form(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Replay {
    server: TestServer,
    start: u64,
    end: u64,
}

impl Replay {
    fn get(&self, path: &str, tenant: &str) -> (u16, String) {
        let a = self.server.get(
            path,
            &[("X-Scope-OrgID", tenant), ("Accept", "application/json")],
        );
        (a.status, a.text())
    }

    /// Every message of the server-streaming RPC `path` (as the data source's backend calls
    /// it: tonic, h2c to the HTTP port, `x-scope-orgid` metadata).
    fn stream<Req, Resp>(&self, path: &'static str, req: Req) -> Vec<Resp>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let base = self.server.base.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let channel = tonic::transport::Channel::from_shared(base)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let mut request = tonic::Request::new(req);
            request
                .metadata_mut()
                .insert("x-scope-orgid", TENANT.parse().unwrap());
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
            let mut s = grpc
                .server_streaming(request, path, codec)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .into_inner();
            let mut out = Vec::new();
            while let Some(m) = s.message().await.unwrap() {
                out.push(m);
            }
            out
        })
    }

    /// `GET /api/metrics/query_range?q=..&start=..&end=..&step=..` (request C).
    fn range(&self, q: &str, step: Option<String>) -> J {
        let mut path = format!(
            "/api/metrics/query_range?q={}&start={}&end={}",
            form(q),
            self.start,
            self.end
        );
        if let Some(s) = step {
            path.push_str(&format!("&step={s}"));
        }
        let (status, body) = self.get(&path, TENANT);
        assert_eq!(status, 200, "{q}: {body}");
        let v: J = serde_json::from_str(&body).unwrap();
        assert!(
            !v["series"].as_array().unwrap().is_empty(),
            "{q}: no series (Drilldown shows No data)"
        );
        v
    }

    /// Drilldown's step for RED panels and breakdowns: `floor(range / 64)s`.
    fn step64(&self) -> String {
        format!("{}s", ((self.end - self.start) / 64).max(1))
    }
}

fn setup() -> Replay {
    let dir = tempfile::tempdir().unwrap().keep();
    let end = now_s();
    let start = end - 3600;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open_store(&StorageBackend::Local { path: dir.clone() }).unwrap();
        let opts = GenOptions {
            seed: 11,
            spans: 40_000,
            start_unix_nano: (end - 3000) * 1_000_000_000,
            duration_nano: 2_900 * 1_000_000_000,
        };
        write_blocks(
            &store,
            TENANT,
            opts,
            BlockCut::whole(10_000),
            &BlockWriteOptions::default(),
            &mut |_| {},
        )
        .await
        .unwrap();
    });
    let mut cfg = config_for(&dir);
    cfg.multitenancy_enabled = true;
    // Span metrics need the generator on (listing them while it is off is a start-up error).
    cfg.metrics_generator = Some(Default::default());
    // A tenant with TraceQL metrics turned off, and one whose processors list (copied from a
    // Tempo 2.x config) lacks local-blocks, which keeps them on.
    cfg.overrides.per_tenant.insert(
        "nometrics".into(),
        serde_yaml::from_str("read: {traceql_metrics_enabled: false}").unwrap(),
    );
    cfg.overrides.per_tenant.insert(
        "spanonly".into(),
        TenantLimits {
            metrics_generator: GeneratorOverrides {
                processors: Some(vec!["span-metrics".into()]),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let server = TestServer::start(cfg);
    // The last minute arrives live, as Drilldown's issue detector looks at it.
    let live = generate_all(GenOptions {
        seed: 12,
        spans: 2_000,
        start_unix_nano: (end - 50) * 1_000_000_000,
        duration_nano: 30 * 1_000_000_000,
    });
    let req = ExportTraceServiceRequest {
        resource_spans: live.into_iter().flatten().collect(),
    };
    let a = server.post(
        &server.otlp_http(),
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("X-Scope-OrgID", TENANT),
        ],
        &req.encode_to_vec(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    Replay { server, start, end }
}

fn labels(series: &J) -> Vec<(String, J)> {
    series["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["key"].as_str().unwrap().to_string(), l["value"].clone()))
        .collect()
}

/// Sample values by timestamp (jsonpb omits zero values).
fn samples(series: &J) -> Vec<(i64, f64)> {
    series["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["timestampMs"].as_str().unwrap().parse().unwrap(),
                s["value"].as_f64().unwrap_or(0.0),
            )
        })
        .collect()
}

fn total(series: &J) -> f64 {
    samples(series).iter().map(|s| s.1).sum()
}

#[test]
fn drilldown_metrics_queries_answer_what_drilldown_parses() {
    let r = setup();
    let step = r.step64();

    // RED "Span rate" and "Errors rate": one unlabeled series with values and exemplars that
    // link to real traces.
    for q in [
        "{nestedSetParent<0 && true} | rate()  with(sample=true)",
        "{nestedSetParent<0 && true && status=error} | rate()  with(sample=true)",
    ] {
        let v = r.range(q, Some(step.clone()));
        let series = v["series"].as_array().unwrap();
        assert_eq!(series.len(), 1, "{q}");
        assert_eq!(
            labels(&series[0]),
            vec![(
                "__name__".into(),
                serde_json::json!({"stringValue": "rate"})
            )]
        );
        assert!(total(&series[0]) > 0.0, "{q}: all zero");
        let ex = series[0]["exemplars"].as_array().expect("exemplars");
        assert!(
            !ex.is_empty() && ex.len() <= 100,
            "{q}: {} exemplars",
            ex.len()
        );
        for e in ex {
            let ts: i64 = e["timestampMs"].as_str().unwrap().parse().unwrap();
            assert!(ts > 0);
            // Drilldown drops exemplars whose value is 0.
            assert_ne!(e["value"], serde_json::json!(0));
            let id = labels(e)
                .into_iter()
                .find(|(k, _)| k == "trace:id")
                .and_then(|(_, v)| v["stringValue"].as_str().map(String::from))
                .expect("trace:id");
            let (status, body) = r.get(&format!("/api/v2/traces/{id}"), TENANT);
            assert_eq!(status, 200, "exemplar trace {id}: {body}");
        }
    }

    // Duration heatmap: every series has exactly one label, __bucket, a double in seconds.
    let v = r.range(
        "{nestedSetParent<0 && true} | histogram_over_time(duration) with(sample=true)",
        Some(format!("{}s", (r.end - r.start) / 24)),
    );
    let mut bounds = Vec::new();
    for s in v["series"].as_array().unwrap() {
        let l = labels(s);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].0, "__bucket");
        let b = l[0].1["doubleValue"].as_f64().expect("double __bucket");
        // A power of two nanoseconds.
        let ns = (b * 1e9).round() as u64;
        assert!(ns.is_power_of_two(), "{b}");
        bounds.push(b);
    }
    assert!(bounds.len() >= 5, "{bounds:?}");

    // Breakdowns by service: the exact attribute string as the label; the per-service rates
    // add up to the unlabeled rate at every timestamp (no sampling here, so exactly).
    let all = r.range("{nestedSetParent<0 && true} | rate() ", Some(step.clone()));
    let by = r.range(
        "{nestedSetParent<0 && true && resource.service.name != nil} | rate() by(resource.service.name)",
        Some(step.clone()),
    );
    let mut sums = std::collections::BTreeMap::<i64, f64>::new();
    let mut services = BTreeSet::new();
    for s in by["series"].as_array().unwrap() {
        let l = labels(s);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].0, "resource.service.name");
        services.insert(l[0].1["stringValue"].as_str().unwrap().to_string());
        for (t, x) in samples(s) {
            *sums.entry(t).or_default() += x;
        }
    }
    assert!(services.len() >= 3, "{services:?}");
    for (t, x) in samples(&all["series"][0]) {
        let got = sums.get(&t).copied().unwrap_or(0.0);
        assert!(
            (got - x).abs() < 1e-9,
            "at {t}: {got} by service vs {x} overall"
        );
    }
    let errors = r.range(
        "{nestedSetParent<0 && true && resource.service.name != nil && status=error} | rate() by(resource.service.name)",
        Some(step.clone()),
    );
    assert!(!errors["series"].as_array().unwrap().is_empty());

    // Duration breakdown: p plus the group-by label.
    for q in [
        "{nestedSetParent<0 && true && resource.service.name != nil} | quantile_over_time(duration, 0.9) by(resource.service.name)",
        "{nestedSetParent<0 && true && resource.service.name != nil} | quantile_over_time(duration, 0.5, 0.9, 0.99) by(resource.service.name)",
    ] {
        let v = r.range(q, Some(step.clone()));
        for s in v["series"].as_array().unwrap() {
            let keys: BTreeSet<String> = labels(s).into_iter().map(|l| l.0).collect();
            assert_eq!(
                keys,
                BTreeSet::from(["p".to_string(), "resource.service.name".to_string()])
            );
        }
    }
    let v = r.range(
        "{nestedSetParent<0 && true} | quantile_over_time(duration, 0.9) ",
        Some(step.clone()),
    );
    assert_eq!(
        labels(&v["series"][0]),
        vec![("p".into(), serde_json::json!({"doubleValue": 0.9}))]
    );
    // Time seeker: fixed 30s step, sampled.
    r.range(
        "{nestedSetParent<0 && true} | quantile_over_time(duration, 0.9)  with(sample=true)",
        Some("30s".into()),
    );

    // Comparison: one step for the whole range; __meta_type on every series, exactly one
    // attribute label on each, totals for both sides.
    for q in [
        "{nestedSetParent<0 && true} | compare({status = error}, 10)".to_string(),
        format!(
            "{{nestedSetParent<0 && true}} | compare({{duration >= 256ms}}, 10, {}, {})",
            (r.start + 600) * 1_000_000_000,
            (r.start + 2400) * 1_000_000_000
        ),
    ] {
        let v = r.range(&q, Some(format!("{}s", r.end - r.start)));
        let mut kinds = BTreeSet::new();
        for s in v["series"].as_array().unwrap() {
            let l = labels(s);
            let kind = l
                .iter()
                .find(|x| x.0 == "__meta_type")
                .and_then(|x| x.1["stringValue"].as_str())
                .expect("__meta_type")
                .to_string();
            let attrs: Vec<_> = l.iter().filter(|x| !x.0.starts_with("__")).collect();
            assert_eq!(attrs.len(), 1, "{q}: {l:?}");
            kinds.insert(kind);
        }
        assert_eq!(
            kinds,
            BTreeSet::from(
                ["baseline", "baseline_total", "selection", "selection_total"].map(String::from)
            ),
            "{q}"
        );
    }

    // Protobuf on Accept, as the streaming path and other clients read it.
    let pb: QueryRangeResponse = r.server.get_proto(
        &format!(
            "/api/metrics/query_range?q={}&start={}&end={}&step={step}",
            form("{nestedSetParent<0 && true} | rate() "),
            r.start,
            r.end
        ),
        TENANT,
    );
    assert_eq!(pb.series.len(), 1);

    // The same panels streamed (requests I and J, Grafana's streaming toggles on): tonic's
    // client on the HTTP port, start/end/step in nanoseconds; the series equal REST's.
    let ns = |s: u64| s * 1_000_000_000;
    let step_ns = step.trim_end_matches('s').parse::<u64>().unwrap() * 1_000_000_000;
    for q in [
        "{nestedSetParent<0 && true} | rate() ",
        "{nestedSetParent<0 && true && resource.service.name != nil} | quantile_over_time(duration, 0.9) by(resource.service.name)",
    ] {
        let streamed: Vec<QueryRangeResponse> = r.stream(
            "/tempopb.StreamingQuerier/MetricsQueryRange",
            QueryRangeRequest {
                query: q.into(),
                start: ns(r.start),
                end: ns(r.end),
                step: step_ns,
                ..Default::default()
            },
        );
        let want: QueryRangeResponse = r.server.get_proto(
            &format!(
                "/api/metrics/query_range?q={}&start={}&end={}&step={step}",
                form(q),
                r.start,
                r.end
            ),
            TENANT,
        );
        // The last message is the whole answer (a partial one over the recent store first).
        let got = &streamed.last().unwrap().series;
        assert_eq!(got.len(), want.series.len(), "{q}");
        for (a, b) in got.iter().zip(&want.series) {
            assert_eq!((&a.labels, &a.samples), (&b.labels, &b.samples), "{q}");
        }
    }
    let q = "{nestedSetParent<0 && true} | rate() by(resource.service.name)";
    let instant: Vec<QueryInstantResponse> = r.stream(
        "/tempopb.StreamingQuerier/MetricsQueryInstant",
        QueryInstantRequest {
            query: q.into(),
            start: ns(r.start),
            end: ns(r.end),
        },
    );
    let want: QueryInstantResponse = r.server.get_proto(
        &format!(
            "/api/metrics/query?q={}&start={}&end={}",
            form(q),
            r.start,
            r.end
        ),
        TENANT,
    );
    // The recent store's value first, then the whole; Grafana shows the latest.
    assert_eq!(instant.len(), 2);
    assert_eq!(instant[1].series, want.series);
    // Drilldown's span list, streamed (request H): the last message is REST's answer.
    let q = "{nestedSetParent<0 && true && status = error}";
    let found: Vec<SearchResponse> = r.stream(
        "/tempopb.StreamingQuerier/Search",
        SearchRequest {
            query: q.into(),
            limit: 200,
            spans_per_span_set: 10,
            start: r.start as u32,
            end: r.end as u32,
            ..Default::default()
        },
    );
    let want: SearchResponse = r.server.get_proto(
        &format!(
            "/api/search?q={}&limit=200&spss=10&start={}&end={}",
            form(q),
            r.start,
            r.end
        ),
        TENANT,
    );
    assert!(!want.traces.is_empty());
    assert_eq!(found.last().unwrap().traces, want.traces);

    // Instant (request D): strict jsonpb, so only known fields.
    let (status, body) = r.get(
        &format!(
            "/api/metrics/query?q={}&start={}&end={}",
            form("{nestedSetParent<0 && true} | rate() by(resource.service.name)"),
            r.start,
            r.end
        ),
        TENANT,
    );
    assert_eq!(status, 200, "{body}");
    let v: J = serde_json::from_str(&body).unwrap();
    let known = ["series", "metrics", "status", "message"];
    for k in v.as_object().unwrap().keys() {
        assert!(known.contains(&k.as_str()), "unknown field {k}");
    }
    for s in v["series"].as_array().unwrap() {
        for k in s.as_object().unwrap().keys() {
            assert!(
                ["labels", "value"].contains(&k.as_str()),
                "unknown field {k}"
            );
        }
    }
    assert!(v["series"].as_array().unwrap().len() >= 3);

    // The issue detector: `{} | rate()` over the last minute, no step → the live spans.
    let now = now_s();
    let last_minute = |tenant: &str| {
        let path = format!(
            "/api/metrics/query_range?q={}&start={}&end={}",
            form("{} | rate()"),
            now - 60,
            now
        );
        r.get(&path, tenant)
    };
    let (status, body) = last_minute(TENANT);
    assert_eq!(status, 200, "{body}");
    let v: J = serde_json::from_str(&body).unwrap();
    assert!(
        total(&v["series"][0]) > 0.0,
        "no live data in the last minute: {body}"
    );
    // A processors list without local-blocks keeps TraceQL metrics on ...
    let (status, body) = last_minute("spanonly");
    assert_eq!(status, 200, "{body}");
    // ... and for a tenant with them turned off, the text Drilldown looks for.
    let (status, body) = last_minute("nometrics");
    assert_eq!(status, 400);
    assert!(body.contains("localblocks processor not found"), "{body}");

    // Ranges too long get the wording Grafana maps to "time range too long".
    let (status, body) = r.get(
        &format!(
            "/api/metrics/query_range?q={}&start={}&end={}",
            form("{} | rate()"),
            now - 3 * 86_400,
            now
        ),
        TENANT,
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("metrics query time range exceeds the maximum allowed duration of"),
        "{body}"
    );
    let (status, body) = r.get(
        &format!(
            "/api/metrics/query_range?q={}&start={}&end={}&step=1s",
            form("{} | rate()"),
            now - 86_000,
            now
        ),
        TENANT,
    );
    assert_eq!(status, 400);
    assert!(body.contains("range specified by start and end"), "{body}");
    // A bad query: 400 with line:column and a caret.
    let (status, body) = r.get(
        &format!(
            "/api/metrics/query_range?q={}",
            form("{ status = } | rate()")
        ),
        TENANT,
    );
    assert_eq!(status, 400);
    assert!(body.contains("1:") && body.contains('^'), "{body}");
}
