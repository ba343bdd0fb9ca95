//! Sharded ingest across two `allegro serve` processes sharing one bucket on a real S3 server
//! (SeaweedFS) (`ingester.ring`):
//! spans sent to one member are stored by the member owning their trace, queries on either
//! member answer every span exactly once while the spans are live and after they are in
//! blocks, a member killed with SIGKILL loses no acknowledged span once it restarts on its
//! WAL, and while it is down queries say so instead of answering without its spans.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use allegro_engine::otlp::resource::v1::Resource;
use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use common::ports::free_port;
use prost::Message;

const TRACES: u64 = 120;
const SPANS_PER_TRACE: u64 = 3;

fn trace_id(t: u64) -> Vec<u8> {
    let mut id = vec![0xab; 8];
    id.extend_from_slice(&t.to_be_bytes());
    id
}

/// Trace `t`'s spans (a root, its child, its grandchild), from services `api`, `cart` and
/// `db`, starting `t` ms after `start`.
fn trace(t: u64, start: u64) -> Vec<ResourceSpans> {
    let services = ["api", "cart", "db"];
    (0..SPANS_PER_TRACE)
        .map(|i| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue(services[i as usize].into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: trace_id(t),
                    span_id: (t * 10 + i + 1).to_be_bytes().to_vec(),
                    parent_span_id: if i == 0 {
                        Vec::new()
                    } else {
                        (t * 10 + i).to_be_bytes().to_vec()
                    },
                    name: format!("t{t}-s{i}"),
                    start_time_unix_nano: start + t * 1_000_000 + i * 1000,
                    end_time_unix_nano: start + t * 1_000_000 + i * 1000 + 500_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

struct Member {
    child: common::Killed,
    api: String,
    otlp: String,
}

/// The config of member `me` of the ring `[a, b]` on API ports `ports`, over the bucket
/// `shared` at `s3` with its own WAL.
fn config(dir: &Path, s3: &str, me: &str, ports: [u16; 2]) -> std::path::PathBuf {
    let yaml = format!(
        "distributor:
  receivers:
    otlp:
      protocols:
        http:
          endpoint: 127.0.0.1:0
ingester:
  trace_idle_period: 1h
  max_block_duration: 1h
  ring:
    instance_id: {me}
    members:
      - id: a
        address: http://127.0.0.1:{}
      - id: b
        address: http://127.0.0.1:{}
storage:
  trace:
    backend: s3
    blocklist_poll: 200ms
    s3:
      bucket: shared
      endpoint: {s3}
      insecure: true
      forcepathstyle: true
      region: us-east-1
      access_key: allegro
      secret_key: allegro
    wal:
      path: {}
sql:
  flight_listen_address: \"\"
",
        ports[0],
        ports[1],
        dir.join(format!("wal-{me}")).display(),
    );
    let path = dir.join(format!("{me}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

fn start(dir: &Path, s3: &str, me: &str, ports: [u16; 2]) -> Member {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allegro"));
    cmd.arg("--config")
        .arg(config(dir, s3, me, ports))
        .env("RUST_LOG", "warn");
    let port = ports[usize::from(me == "b")];
    let common::Served {
        child,
        base,
        before,
        mut lines,
    } = common::serve_on(cmd, port);
    // Printed before or after the API's line.
    let otlp = before
        .into_iter()
        .chain(std::iter::from_fn(|| lines.next().map(Result::unwrap)))
        .find_map(|l| {
            l.strip_prefix("OTLP/HTTP receiver on ")
                .map(|a| format!("http://{}", a.trim()))
        })
        .expect("the OTLP/HTTP receiver's address");
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Member {
        child,
        api: base,
        otlp,
    }
}

/// Spans received by `m` (its `/metrics`), by protocol.
fn received(agent: &ureq::Agent, m: &Member) -> BTreeMap<String, u64> {
    let text = agent
        .get(format!("{}/metrics", m.api))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let mut by = BTreeMap::new();
    for l in text
        .lines()
        .filter(|l| l.starts_with("allegro_ingest_spans_received_total{"))
    {
        let protocol = l
            .split("protocol=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string();
        let n: u64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        *by.entry(protocol).or_default() += n;
    }
    by
}

/// `SELECT trace_id, name FROM spans` on `m`: status, and each trace's span names (sorted).
fn spans_by_trace(agent: &ureq::Agent, m: &Member) -> (u16, BTreeMap<String, Vec<String>>) {
    let mut r = agent
        .post(format!("{}/api/sql", m.api))
        .header("Accept", "text/csv")
        .send("SELECT trace_id, name FROM spans ORDER BY trace_id, name")
        .unwrap();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    let mut traces: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if status == 200 {
        for line in body.lines().skip(1) {
            let (id, name) = line.split_once(',').unwrap();
            traces
                .entry(id.to_string())
                .or_default()
                .push(name.to_string());
        }
    }
    (status, traces)
}

/// Every trace with all its spans, once: what both members must answer.
fn all_traces() -> BTreeMap<String, Vec<String>> {
    (1..=TRACES)
        .map(|t| {
            (
                hex::encode(trace_id(t)),
                (0..SPANS_PER_TRACE).map(|i| format!("t{t}-s{i}")).collect(),
            )
        })
        .collect()
}

/// Trace `t` by ID on `m`: its span names.
fn trace_by_id(agent: &ureq::Agent, m: &Member, t: u64) -> BTreeSet<String> {
    let mut r = agent
        .get(format!("{}/api/traces/{}", m.api, hex::encode(trace_id(t))))
        .header("Accept", "application/protobuf")
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "trace {t}");
    let body = r.body_mut().read_to_vec().unwrap();
    let found = allegro_engine::tempopb::Trace::decode(body.as_slice()).unwrap();
    found
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn two_ingesters_share_spans_by_trace_and_answer_every_span_once() {
    let Some(weed) = common::seaweed::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Killed when dropped, at the end of the test.
    let bucket_server = common::seaweed::SeaweedFs::start(&weed, &dir.path().join("weed"));
    bucket_server.create_bucket("shared");
    let s3 = bucket_server.endpoint.clone();
    let ports = [free_port(), free_port()];
    let a = start(dir.path(), &s3, "a", ports);
    let mut b = start(dir.path(), &s3, "b", ports);
    let agent = common::agent(Duration::from_secs(30));

    // Every trace is sent to a alone, one request per trace.
    let start_ns = allegro_engine::now_unix_nanos() - 60_000_000_000;
    for t in 1..=TRACES {
        let body = ExportTraceServiceRequest {
            resource_spans: trace(t, start_ns),
        }
        .encode_to_vec();
        let r = agent
            .post(format!("{}/v1/traces", a.otlp))
            .header("Content-Type", "application/x-protobuf")
            .send(&body[..])
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "trace {t}");
    }
    // Each member stored a share: b's all came from a, over the ring.
    let (on_a, on_b) = (received(&agent, &a), received(&agent, &b));
    let total: u64 = on_a.values().chain(on_b.values()).sum();
    assert_eq!(total, TRACES * SPANS_PER_TRACE, "a: {on_a:?}, b: {on_b:?}");
    let b_share = on_b.get("ring").copied().unwrap_or(0);
    assert_eq!(on_b.values().sum::<u64>(), b_share, "{on_b:?}");
    let expected_share = TRACES * SPANS_PER_TRACE / 2;
    assert!(
        b_share.abs_diff(expected_share) * 3 < expected_share,
        "b stored {b_share} of {total} spans"
    );

    // Live, on both members: every span once, and any trace by ID whole.
    for m in [&a, &b] {
        let (status, traces) = spans_by_trace(&agent, m);
        assert_eq!(status, 200);
        assert_eq!(traces, all_traces());
    }
    let want = |t: u64| -> BTreeSet<String> {
        (0..SPANS_PER_TRACE).map(|i| format!("t{t}-s{i}")).collect()
    };
    for t in [1, 2, 3, 57, TRACES] {
        assert_eq!(trace_by_id(&agent, &a, t), want(t));
        assert_eq!(trace_by_id(&agent, &b, t), want(t));
    }

    // b dies: a's queries say its live spans are missing rather than answer without them.
    b.child.0.kill().unwrap();
    b.child.0.wait().unwrap();
    let (status, _) = spans_by_trace(&agent, &a);
    assert_eq!(status, 503, "a query while b is down");

    // b restarts on its WAL: every acknowledged span is back, once.
    b = start(dir.path(), &s3, "b", ports);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, traces) = spans_by_trace(&agent, &a);
        if status == 200 {
            assert_eq!(traces, all_traces(), "after b's restart");
            break;
        }
        assert!(Instant::now() < until, "a still answers {status}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A clean stop flushes each member's share to the shared store; restarted, both answer
    // every span once from blocks.
    for mut m in [a, b] {
        m.child.terminate();
    }
    let (a, b) = (
        start(dir.path(), &s3, "a", ports),
        start(dir.path(), &s3, "b", ports),
    );
    for m in [&a, &b] {
        let (status, traces) = spans_by_trace(&agent, m);
        assert_eq!(status, 200);
        assert_eq!(traces, all_traces(), "from blocks");
    }
    let config = dir.path().join("a.yaml");
    let blocks = common::blocks(&["--config".as_ref(), config.as_os_str()]);
    assert_eq!(blocks.len(), 2, "one block from each member: {blocks:?}");
    let spans: Vec<u64> = blocks
        .iter()
        .map(|b| b["totalSpans"].as_u64().unwrap())
        .collect();
    assert!(spans.contains(&b_share), "{spans:?}, b's share {b_share}");
}
