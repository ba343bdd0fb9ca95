//! The ingest load generator: real OTLP over HTTP or gRPC at a target rate or flat out, many
//! connections, ack latency measured open-loop (from the scheduled send time, so a slow server
//! cannot hide queueing), against a server it starts from the given binary.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use allegro_datasets::{GenOptions, Generator};
use allegro_engine::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use bytes::{Buf, BufMut, Bytes};
use parking_lot::Mutex;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::report::Latency;

/// Options of `allegro-bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// The `allegro` binary to start (build it with `cargo build --release -p allegro-server`).
    #[arg(long, default_value = "target/release/allegro")]
    pub allegro: PathBuf,
    /// `http` or `grpc`.
    #[arg(long, default_value = "http")]
    pub protocol: String,
    /// Target spans/s; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Spans per request (the OTel SDK's batch processor sends up to 512).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Stop after this many spans (0 = run for --duration).
    #[arg(long, default_value_t = 0)]
    pub max_spans: u64,
    /// Keep every trace live (idle period 1h) to measure memory with all spans in the head.
    #[arg(long)]
    pub keep_live: bool,
    /// `trace_idle_period`, `max_trace_live` and `max_block_duration` of the server.
    #[arg(long, default_value = "5s")]
    pub idle: String,
    /// `ingester.max_head_bytes` of the server, MiB.
    #[arg(long, default_value_t = 512)]
    pub max_head_mib: u64,
    /// Run the metrics generator (span metrics and service graphs, scrape output only).
    #[arg(long)]
    pub generator: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Encoded requests whose trace IDs (and, when timed, timestamps) can be rewritten per send,
/// so every send is new data.
pub(crate) struct Templates {
    requests: Vec<Template>,
}

/// One encoded request: its bytes, where its trace IDs' per-send bytes are, its spans, and
/// where its timestamps are with each one's offset below the request's latest.
struct Template {
    body: Bytes,
    id_offsets: Vec<usize>,
    spans: u64,
    times: Vec<(usize, u64)>,
}

const MARK: [u8; 4] = [0xA1, 0x1E, 0x6B, 0x0B];

/// Timed templates' timestamps are this plus up to 2^40 ns: the top three bytes of a fixed64
/// (little-endian, so its last three) mark a timestamp to rewrite.
const TIME_MARK: u64 = 0x5E_ED_77 << 40;

/// Tags of the fixed64 timestamps rewritten: span start (7) and end (8), event time (1).
const TIME_TAGS: [u8; 3] = [0x39, 0x41, 0x09];

impl Templates {
    fn build(batch: usize) -> Self {
        Self::generate(batch, 1_767_225_600_000_000_000, 3_600_000_000_000)
    }

    /// Templates whose timestamps [`Templates::make_at`] sets to the time of each send.
    pub(crate) fn build_timed(batch: usize) -> Self {
        Self::generate(batch, TIME_MARK, 600_000_000_000)
    }

    fn generate(batch: usize, start_unix_nano: u64, duration_nano: u64) -> Self {
        let mut g = Generator::new(GenOptions {
            seed: 7,
            spans: 200_000,
            start_unix_nano,
            duration_nano,
        });
        let mut requests = Vec::new();
        let mut cur: Vec<_> = Vec::new();
        let mut spans = 0usize;
        let mut trace_no = 0u32;
        while let Some(mut t) = g.next_trace() {
            trace_no += 1;
            // Marked trace IDs: [MARK][trace number][8 bytes rewritten per send].
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&MARK);
            id[4..8].copy_from_slice(&trace_no.to_be_bytes());
            for rs in &mut t {
                for ss in &mut rs.scope_spans {
                    for s in &mut ss.spans {
                        s.trace_id = id.to_vec();
                        s.links.clear();
                        spans += 1;
                    }
                }
            }
            cur.extend(t);
            if spans >= batch {
                let body = ExportTraceServiceRequest {
                    resource_spans: std::mem::take(&mut cur),
                }
                .encode_to_vec();
                let id_offsets: Vec<usize> = body
                    .windows(6)
                    .enumerate()
                    .filter(|(_, w)| w[0] == 0x0A && w[1] == 0x10 && w[2..6] == MARK)
                    .map(|(i, _)| i + 2 + 8)
                    .collect();
                let times = if start_unix_nano == TIME_MARK {
                    time_offsets(&body)
                } else {
                    Vec::new()
                };
                requests.push(Template {
                    body: Bytes::from(body),
                    id_offsets,
                    spans: spans as u64,
                    times,
                });
                spans = 0;
            }
        }
        Self { requests }
    }

    /// Request `n` with its trace IDs made unique for send number `n`.
    fn make(&self, n: u64) -> (Bytes, u64) {
        self.make_at(n, None)
    }

    /// [`Templates::make`], with a timed template's latest timestamp at `now` (unix ns) and
    /// the others as far before it as in the template.
    pub(crate) fn make_at(&self, n: u64, now: Option<u64>) -> (Bytes, u64) {
        let t = &self.requests[(n as usize) % self.requests.len()];
        let mut b = t.body.to_vec();
        for &o in &t.id_offsets {
            b[o..o + 8].copy_from_slice(&n.to_be_bytes());
        }
        if let Some(now) = now {
            for &(o, before) in &t.times {
                b[o..o + 8].copy_from_slice(&now.saturating_sub(before).to_le_bytes());
            }
        }
        (Bytes::from(b), t.spans)
    }
}

/// Where a timed request's timestamps are, each with how long before the request's latest.
fn time_offsets(body: &[u8]) -> Vec<(usize, u64)> {
    let found: Vec<(usize, u64)> = (1..body.len().saturating_sub(8))
        .filter(|&i| {
            TIME_TAGS.contains(&body[i - 1]) && body[i + 5..i + 8] == TIME_MARK.to_le_bytes()[5..]
        })
        .map(|i| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&body[i..i + 8]);
            (i, u64::from_le_bytes(v))
        })
        .collect();
    let latest = found.iter().map(|f| f.1).max().unwrap_or(0);
    found.into_iter().map(|(i, t)| (i, latest - t)).collect()
}

#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        ExportTraceServiceResponse::decode(bytes)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

/// A server started for a bench, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) api: String,
    pub(crate) http: String,
    grpc: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(a: &IngestArgs) -> Result<Server, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let idle = if a.keep_live { "1h" } else { a.idle.as_str() };
    let cfg = format!(
        "distributor:\n  receivers:\n    otlp:\n      protocols:\n        grpc:\n          endpoint: 127.0.0.1:0\n        http:\n          endpoint: 127.0.0.1:0\ningester:\n  trace_idle_period: {idle}\n  max_trace_live: {idle}\n  max_block_duration: {idle}\n  max_block_bytes: 1000000000\n  max_head_bytes: {head}\noverrides:\n  defaults:\n    ingestion:\n      rate_limit_bytes: 0\n      max_traces_per_user: 0\n",
        head = a.max_head_mib << 20
    );
    // The templates' timestamps are fixed, so the slack check is off: every span is processed.
    let cfg = if a.generator {
        cfg + "metrics_generator:\n  metrics_ingestion_time_range_slack: 0s\n"
    } else {
        cfg
    };
    start_with(&a.allegro, dir, &cfg)
}

/// Starts `allegro` with the config `cfg` and its data under `dir`; waits for its addresses.
pub(crate) fn start_with(
    allegro: &std::path::Path,
    dir: tempfile::TempDir,
    cfg: &str,
) -> Result<Server, String> {
    let cfg_path = dir.path().join("allegro.yaml");
    std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
    let mut child = Command::new(allegro)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg_path)
        .args([
            "serve",
            "--http-listen-port",
            "0",
            "--http-listen-address",
            "127.0.0.1",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", allegro.display()))?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let (mut api, mut http, mut grpc) = (String::new(), String::new(), String::new());
    while api.is_empty() || http.is_empty() || grpc.is_empty() {
        let l = lines
            .next()
            .ok_or("server exited")?
            .map_err(|e| e.to_string())?;
        if let Some(x) = l.strip_prefix("allegro listening on ") {
            api = x.to_string();
        } else if let Some(x) = l.strip_prefix("OTLP/HTTP receiver on ") {
            http = format!("http://{x}");
        } else if let Some(x) = l.strip_prefix("OTLP/gRPC receiver on ") {
            grpc = format!("http://{x}");
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok(Server {
        child,
        api,
        http,
        grpc,
        _dir: dir,
    })
}

pub(crate) fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) the process has used so far.
pub(crate) fn proc_cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces) start at ") ".
            let rest = s.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

struct Shared {
    templates: Templates,
    next: AtomicU64,
    spans: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

/// Runs the load and prints the report.
pub async fn run(a: &IngestArgs) -> Result<(), String> {
    let srv = start_server(a)?;
    let shared = Arc::new(Shared {
        templates: Templates::build(a.batch),
        next: AtomicU64::new(1),
        spans: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latencies: Mutex::default(),
    });
    let per_req = a.batch as f64;
    // Each connection sends every `interval`; all together make the target rate.
    let interval = (a.rate > 0)
        .then(|| Duration::from_secs_f64(per_req * a.connections as f64 / a.rate as f64));
    let deadline = Instant::now() + Duration::from_secs(a.duration);
    let started = Instant::now();
    let cpu_before = proc_cpu_secs(srv.child.id());
    let max_spans = a.max_spans;
    let mut tasks = Vec::new();
    for c in 0..a.connections {
        let shared = shared.clone();
        let offset = interval.map(|i| i.mul_f64(c as f64 / a.connections as f64));
        match a.protocol.as_str() {
            "grpc" => {
                let url = srv.grpc.clone();
                tasks.push(tokio::spawn(async move {
                    let ch = tonic::transport::Channel::from_shared(url)
                        .map_err(|e| e.to_string())?
                        .connect()
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut grpc = tonic::client::Grpc::new(ch);
                    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                    );
                    let mut k = 0u32;
                    loop {
                        let due = interval.map(|i| started + offset.unwrap_or_default() + i * k);
                        k += 1;
                        if let Some(d) = due {
                            tokio::time::sleep_until(d.into()).await;
                        }
                        let now = Instant::now();
                        if now >= deadline
                            || (max_spans > 0 && shared.spans.load(Relaxed) >= max_spans)
                        {
                            return Ok::<_, String>(());
                        }
                        let (body, spans) =
                            shared.templates.make(shared.next.fetch_add(1, Relaxed));
                        let len = body.len() as u64;
                        grpc.ready().await.map_err(|e| e.to_string())?;
                        let r = grpc
                            .unary(tonic::Request::new(body), path.clone(), RawCodec)
                            .await;
                        record(&shared, r.is_ok(), spans, len, due.unwrap_or(now));
                    }
                }));
            }
            _ => {
                let url = format!("{}/v1/traces", srv.http);
                tasks.push(tokio::task::spawn_blocking(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut k = 0u32;
                    loop {
                        let due = interval.map(|i| started + offset.unwrap_or_default() + i * k);
                        k += 1;
                        if let Some(d) = due {
                            std::thread::sleep(d.saturating_duration_since(Instant::now()));
                        }
                        let now = Instant::now();
                        if now >= deadline
                            || (max_spans > 0 && shared.spans.load(Relaxed) >= max_spans)
                        {
                            return Ok::<_, String>(());
                        }
                        let (body, spans) =
                            shared.templates.make(shared.next.fetch_add(1, Relaxed));
                        let len = body.len() as u64;
                        let ok = agent
                            .post(&url)
                            .header("Content-Type", "application/x-protobuf")
                            .send(&body[..])
                            .is_ok_and(|r| r.status().as_u16() == 200);
                        record(&shared, ok, spans, len, due.unwrap_or(now));
                    }
                }));
            }
        }
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let took = started.elapsed();
    let pid = srv.child.id();
    let cpu = proc_cpu_secs(pid) - cpu_before;
    let rss = proc_status_kb(pid, "VmRSS:") * 1024;
    let peak = proc_status_kb(pid, "VmHWM:") * 1024;
    let spans = shared.spans.load(Relaxed);
    let bytes = shared.bytes.load(Relaxed);
    let lat = Latency::of(std::mem::take(&mut *shared.latencies.lock()));
    let metrics = ureq::get(format!("{}/metrics", srv.api))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default();
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |a, b| a + b)
    };
    let fsyncs = metric("allegro_wal_fsync_duration_seconds_count");
    let mean_ms = |histogram: &str| {
        let n = metric(&format!("{histogram}_count"));
        if n > 0.0 {
            metric(&format!("{histogram}_sum")) / n * 1e3
        } else {
            0.0
        }
    };
    let report = serde_json::json!({
        "protocol": a.protocol,
        "target_spans_per_s": a.rate,
        "connections": a.connections,
        "batch": a.batch,
        "seconds": took.as_secs_f64(),
        "spans_acked": spans,
        "spans_per_s": spans as f64 / took.as_secs_f64(),
        "mb_per_s": bytes as f64 / took.as_secs_f64() / 1e6,
        "bytes_per_span": bytes as f64 / spans.max(1) as f64,
        "errors": shared.errors.load(Relaxed),
        "ack_latency": lat,
        "wal_group_commits": fsyncs,
        "wal_mean_commit_ms": mean_ms("allegro_wal_fsync_duration_seconds"),
        "server_rss_bytes": rss,
        "server_peak_rss_bytes": peak,
        "head_spans": metric("allegro_head_spans"),
        "server_cpu_seconds": cpu,
        "server_cpu_us_per_span": cpu / spans.max(1) as f64 * 1e6,
        "blocks_flushed": metric("allegro_blocks_flushed_total"),
        "spans_flushed": metric("allegro_spans_flushed_total"),
        "spans_flushed_per_s": metric("allegro_spans_flushed_total") / took.as_secs_f64(),
        "mean_flush_ms": mean_ms("allegro_block_flush_duration_seconds"),
    });
    println!(
        "ingest {} rate={} conns={} batch={}: {:.0} spans/s acked ({:.1} MB/s, {:.0} B/span), {} errors\n  ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)\n  WAL: {} group commits, mean {:.2} ms\n  server RSS {:.0} MiB (peak {:.0} MiB) with {} spans in the head\n  flushed {} blocks, {:.0} spans/s, mean flush {:.0} ms; server CPU {:.1} µs/span",
        a.protocol,
        if a.rate == 0 {
            "flat-out".to_string()
        } else {
            a.rate.to_string()
        },
        a.connections,
        a.batch,
        report["spans_per_s"].as_f64().unwrap_or(0.0),
        report["mb_per_s"].as_f64().unwrap_or(0.0),
        report["bytes_per_span"].as_f64().unwrap_or(0.0),
        report["errors"],
        lat.p50_ms,
        lat.p99_ms,
        lat.max_ms,
        lat.n,
        fsyncs,
        report["wal_mean_commit_ms"].as_f64().unwrap_or(0.0),
        rss as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        report["head_spans"],
        report["blocks_flushed"],
        report["spans_flushed_per_s"].as_f64().unwrap_or(0.0),
        report["mean_flush_ms"].as_f64().unwrap_or(0.0),
        report["server_cpu_us_per_span"].as_f64().unwrap_or(0.0),
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report).unwrap_or_default())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn record(s: &Shared, ok: bool, spans: u64, bytes: u64, since: Instant) {
    if ok {
        s.spans.fetch_add(spans, Relaxed);
        s.bytes.fetch_add(bytes, Relaxed);
        s.latencies.lock().push(since.elapsed());
    } else {
        s.errors.fetch_add(1, Relaxed);
    }
}
