//! Crash test: while clients send flat out, the server is killed with SIGKILL at several points
//! (during appends, block flushes and WAL cleanup). After every restart each span whose export
//! was acknowledged is served, nothing is served twice, and after a final clean stop the blocks
//! hold each stored span exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use allegro_engine::otlp::resource::v1::Resource;
use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use allegro_engine::tempopb::TraceByIdResponse;
use prost::Message;

const CONFIG: &str = "distributor:
  receivers:
    otlp:
      protocols:
        http:
          endpoint: 127.0.0.1:0
ingester:
  trace_idle_period: 150ms
  max_block_duration: 400ms
  flush_check_period: 100ms
storage:
  trace:
    wal:
      segment_bytes: 200000
overrides:
  defaults:
    ingestion:
      max_span_age: 0s  # the spans start on 2026-01-01
compactor:
  compaction:
    block_retention: 0s  # ... so retention must keep them
";

/// Spans per request; a trace grows over `REQUESTS_PER_TRACE` requests, so its spans cross
/// WAL segments, block cuts and restarts.
const SPANS_PER_REQUEST: u64 = 4;
const REQUESTS_PER_TRACE: u64 = 40;

struct Server {
    /// Killed when dropped, so a failing round leaves no server behind holding the test
    /// runner's output open.
    child: common::Killed,
    api: String,
    otlp: String,
}

fn start(dir: &std::path::Path) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_allegro"));
    cmd.arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(dir.join("allegro.yaml"))
        .env("RUST_LOG", "warn");
    let common::Served {
        child,
        base: api,
        before,
        mut lines,
    } = common::serve(cmd);
    // Printed before or after the API's line.
    let mut printed = before
        .into_iter()
        .chain(std::iter::from_fn(|| lines.next().map(Result::unwrap)));
    let otlp = printed
        .find_map(|l| {
            l.strip_prefix("OTLP/HTTP receiver on ")
                .map(|a| format!("http://{a}"))
        })
        .expect("server exited");
    drop(printed);
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, api, otlp }
}

fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0xA1; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}

fn span_id(trace: u64, i: u64) -> u64 {
    (trace << 20) | (i + 1)
}

/// Request `r` of trace `t`: spans `r*SPANS_PER_REQUEST..`, children of the trace's first span.
fn request(t: u64, r: u64) -> Vec<u8> {
    let mut spans = Vec::new();
    for i in r * SPANS_PER_REQUEST..(r + 1) * SPANS_PER_REQUEST {
        {
            spans.push(Span {
                trace_id: trace_id(t),
                span_id: span_id(t, i).to_be_bytes().to_vec(),
                parent_span_id: if i == 0 {
                    vec![]
                } else {
                    span_id(t, 0).to_be_bytes().to_vec()
                },
                name: format!("op-{i}"),
                start_time_unix_nano: 1_767_225_600_000_000_000 + t * 1_000_000 + i,
                end_time_unix_nano: 1_767_225_600_000_000_000 + t * 1_000_000 + i + 500,
                attributes: vec![KeyValue {
                    key: "payload".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("x".repeat(64))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(Value::StringValue("crash-test".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn agent() -> ureq::Agent {
    common::agent(Duration::from_secs(10))
}

/// Span IDs of a trace as served, with duplicates kept (so they can be detected).
fn served(agent: &ureq::Agent, api: &str, t: u64) -> Vec<u64> {
    let mut r = agent
        .get(format!("{api}/api/v2/traces/{}", hex::encode(trace_id(t))))
        .header("Accept", "application/protobuf")
        .call()
        .unwrap();
    match r.status().as_u16() {
        404 => Vec::new(),
        200 => {
            let body = r.body_mut().read_to_vec().unwrap();
            TraceByIdResponse::decode(&*body)
                .unwrap()
                .trace
                .unwrap_or_default()
                .resource_spans
                .iter()
                .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
                .map(|s| u64::from_be_bytes(s.span_id[..].try_into().unwrap()))
                .collect()
        }
        s => panic!("status {s}"),
    }
}

/// What clients sent: per trace, for each request, whether it was acknowledged.
type Sent = BTreeMap<u64, BTreeMap<u64, bool>>;

fn request_spans(t: u64, r: u64) -> impl Iterator<Item = u64> {
    (r * SPANS_PER_REQUEST..(r + 1) * SPANS_PER_REQUEST).map(move |i| span_id(t, i))
}

#[test]
fn sigkill_never_loses_acknowledged_spans_nor_duplicates_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allegro.yaml"), CONFIG).unwrap();
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let next_trace = Arc::new(Mutex::new(1u64));
    let kills = [350u64, 900, 600, 1500, 450, 1100];
    for (round, after_ms) in kills.iter().enumerate() {
        let srv = start(dir.path());
        let stop = Arc::new(AtomicBool::new(false));
        let acked_requests = Arc::new(AtomicU64::new(0));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (sent, next_trace, stop, acked_requests, url) = (
                    sent.clone(),
                    next_trace.clone(),
                    stop.clone(),
                    acked_requests.clone(),
                    format!("{}/v1/traces", srv.otlp),
                );
                std::thread::spawn(move || {
                    let agent = agent();
                    'traces: while !stop.load(Ordering::Relaxed) {
                        let t = {
                            let mut n = next_trace.lock().unwrap();
                            *n += 1;
                            *n - 1
                        };
                        for r in 0..REQUESTS_PER_TRACE {
                            sent.lock().unwrap().entry(t).or_default().insert(r, false);
                            let ok = agent
                                .post(&url)
                                .header("Content-Type", "application/x-protobuf")
                                .send(&request(t, r)[..])
                                .is_ok_and(|resp| resp.status().as_u16() == 200);
                            if !ok {
                                // The server is gone: this request is unacknowledged.
                                break 'traces;
                            }
                            sent.lock().unwrap().entry(t).or_default().insert(r, true);
                            acked_requests.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(*after_ms));
        // On a loaded machine a debug server had acknowledged only 164 spans by the kill (a
        // CI run): the kill waits, at most 30 s more, until the round has something to check.
        let enough = 200 / SPANS_PER_REQUEST + 1;
        let until = Instant::now() + Duration::from_secs(30);
        while acked_requests.load(Ordering::Relaxed) < enough && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut child = srv.child;
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        // Restart and check every acknowledged span, and that nothing is served twice.
        let srv = start(dir.path());
        let agent = agent();
        let sent_now = sent.lock().unwrap().clone();
        let mut acked = 0;
        for (&t, reqs) in &sent_now {
            let ids = served(&agent, &srv.api, t);
            let unique: BTreeSet<u64> = ids.iter().copied().collect();
            assert_eq!(
                ids.len(),
                unique.len(),
                "round {round}: trace {t} has duplicate spans"
            );
            for (&r, &ack) in reqs {
                let present = request_spans(t, r).filter(|s| unique.contains(s)).count() as u64;
                // A request is stored whole or not at all; acknowledged ones always.
                assert!(
                    present == SPANS_PER_REQUEST || (present == 0 && !ack),
                    "round {round}: trace {t} request {r} (acknowledged: {ack}): {present} of {SPANS_PER_REQUEST} spans served"
                );
                acked += u64::from(ack) * SPANS_PER_REQUEST;
            }
        }
        assert!(
            acked > 200,
            "round {round}: only {acked} spans acknowledged"
        );
        eprintln!(
            "round {round}: killed after {after_ms} ms; {acked} acknowledged spans in {} traces, all present once",
            sent_now.len()
        );
        let mut child = srv.child;
        if round + 1 == kills.len() {
            // A clean stop flushes everything; then blocks alone hold each stored span once.
            child.terminate();
            let srv = start(dir.path());
            let stored: u64 = sent_now
                .keys()
                .map(|&t| served(&agent, &srv.api, t).len() as u64)
                .sum();
            let data = dir.path().join("data");
            let in_blocks: u64 = common::blocks(&["--data-dir".as_ref(), data.as_os_str()])
                .iter()
                .map(|b| b["totalSpans"].as_u64().unwrap())
                .sum();
            assert_eq!(
                in_blocks, stored,
                "blocks hold {in_blocks} spans; {stored} distinct are served"
            );
            drop(srv);
        } else {
            drop(child);
        }
    }
}
