//! `allegro-bench soak`: sustained ingest from several tenants plus a Drilldown-like query mix
//! against one server, minute by minute, then the same queries over the same data with ingest
//! stopped (the idle baseline).
//!
//! Ingest is real OTLP/HTTP at a paced rate, each request for one tenant in turn, its trace IDs
//! new and its timestamps set to the moment it is sent (so queries over "the last ten minutes"
//! read what a real store would, and blocks, compaction and retention see a moving clock).
//! Queries run one at a time, a tenant in turn, each over the last `--window`: the panels of
//! Traces Drilldown (root-span rate, errors and p90 by service), its span list, an error search,
//! tag values and a trace by ID. Every minute: RSS, spans acked, refusals by status and reason,
//! each query kind's p50/p99 and failures, and from the server's `/metrics` (sampled every 5 s)
//! the most bytes the heads held and the spans compaction merged and the time it waited.
//!
//! Targets (issue 28): RSS levels off below the head budget + caches + 1 GiB; every query kind's
//! p99 under load within 3× its idle p99; refusals only from configured limits, each with its
//! reason.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::json;

use crate::ingest::{Templates, proc_status_kb, start_with};
use crate::report::Latency;

/// Options of `allegro-bench soak`.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The `allegro` binary to start.
    #[arg(long, default_value = "target/profiling/allegro")]
    pub allegro: PathBuf,
    /// Minutes of ingest plus queries.
    #[arg(long, default_value_t = 30)]
    pub minutes: u64,
    /// Minutes of queries alone afterwards, over the same windows (the idle baseline).
    #[arg(long, default_value_t = 3)]
    pub idle_minutes: u64,
    /// Target spans/s over all tenants.
    #[arg(long, default_value_t = 60_000)]
    pub rate: u64,
    /// Tenants sending.
    #[arg(long, default_value_t = 4)]
    pub tenants: usize,
    /// Concurrent ingest connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Spans per request.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// `ingester.max_head_bytes` (all tenants together, Arrow copies for queries included),
    /// MiB: the four queried tenants' heads hold about 1.6 GiB at 60k spans/s.
    #[arg(long, default_value_t = 3072)]
    pub head_mib: u64,
    /// `ingester.max_block_bytes`, MiB: a tenant's block is cut at this size or each minute.
    #[arg(long, default_value_t = 64)]
    pub block_mib: u64,
    /// Pause between queries, ms.
    #[arg(long, default_value_t = 500)]
    pub query_pause_ms: u64,
    /// The range each query covers, ending now.
    #[arg(long, default_value = "10m")]
    pub window: String,
    /// `compactor.compaction.compaction_window`: with less than the run, windows close and are
    /// merged while it runs, and the queries read merged blocks.
    #[arg(long, default_value = "1h")]
    pub compaction_window: String,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The caches the server is configured with, MiB (`storage.trace.cache`), and what else the
/// RSS target allows for.
const CACHE_MIB: u64 = 64 + 256 + 256;

/// One query of the mix: its name and its path for (tenant's trace ID, start s, end s).
type Kind = (&'static str, fn(&str, u64, u64) -> String);

fn enc(q: &str) -> String {
    let mut out = String::new();
    for b in q.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const KINDS: [Kind; 7] = [
    ("rate-by-service", |_, s, e| {
        format!(
            "/api/metrics/query_range?q={}&start={s}&end={e}&step=30s",
            enc("{nestedSetParent<0 && true} | rate() by(resource.service.name)")
        )
    }),
    ("errors-by-service", |_, s, e| {
        format!(
            "/api/metrics/query_range?q={}&start={s}&end={e}&step=30s",
            enc("{nestedSetParent<0 && status=error} | rate() by(resource.service.name)")
        )
    }),
    ("p90-by-service", |_, s, e| {
        format!(
            "/api/metrics/query_range?q={}&start={s}&end={e}&step=30s",
            enc(
                "{nestedSetParent<0 && true} | quantile_over_time(duration, 0.9) by(resource.service.name)"
            )
        )
    }),
    ("span-list", |_, s, e| {
        format!(
            "/api/search?q={}&start={s}&end={e}&limit=20&spss=3",
            enc("{nestedSetParent<0 && true}")
        )
    }),
    ("error-search", |_, s, e| {
        format!(
            "/api/search?q={}&start={s}&end={e}&limit=20&spss=3",
            enc("{ status = error }")
        )
    }),
    ("tag-values", |_, s, e| {
        format!("/api/v2/search/tag/resource.service.name/values?start={s}&end={e}")
    }),
    ("trace-by-id", |id, s, e| {
        format!("/api/v2/traces/{id}?start={s}&end={e}")
    }),
];

/// What one minute saw.
#[derive(Default)]
struct Minute {
    spans: u64,
    requests: u64,
    refused: BTreeMap<String, u64>,
    queries: BTreeMap<&'static str, Vec<Duration>>,
    query_failures: BTreeMap<String, u64>,
    /// Most bytes the heads held (`allegro_head_bytes` + `allegro_head_snapshot_bytes`, all
    /// tenants) over the minute's samples.
    head_max: u64,
    /// `allegro_compaction_spans_total` and `allegro_compaction_paused_seconds_total` at the
    /// minute's last sample.
    compaction: (f64, f64),
}

struct Shared {
    templates: Templates,
    next: AtomicU64,
    started: Instant,
    minutes: Mutex<Vec<Minute>>,
    stop_ingest: AtomicBool,
}

/// Latencies per query kind.
type Samples = Arc<Mutex<BTreeMap<&'static str, Vec<Duration>>>>;

impl Shared {
    fn minute(&self) -> usize {
        (self.started.elapsed().as_secs() / 60) as usize
    }

    fn with_minute(&self, f: impl FnOnce(&mut Minute)) {
        let m = self.minute();
        let mut all = self.minutes.lock();
        while all.len() <= m {
            all.push(Minute::default());
        }
        f(&mut all[m]);
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `google.rpc.Status`, the body of an OTLP/HTTP refusal sent as protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A refusal's class: its status and the first words of its answer's text.
fn reason(status: u16, body: &str) -> String {
    let words: String = body.chars().take(80).collect();
    format!("{status} {}", words.replace('\n', " "))
}

/// An ingest refusal's status and reason, from its protobuf `google.rpc.Status` body (the
/// load is sent as protobuf, so refusals come back so).
fn refusal_reason(status: u16, body: &[u8]) -> String {
    match <RpcStatus as prost::Message>::decode(body) {
        Ok(st) => reason(status, &st.message),
        Err(_) => reason(status, &String::from_utf8_lossy(body)),
    }
}

fn ingest_loop(
    shared: Arc<Shared>,
    url: String,
    tenants: usize,
    interval: Duration,
    offset: Duration,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut k = 0u32;
    while !shared.stop_ingest.load(Relaxed) {
        let due = shared.started + offset + interval * k;
        k += 1;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let n = shared.next.fetch_add(1, Relaxed);
        let tenant = format!("soak-{}", n as usize % tenants);
        let (body, spans) = shared.templates.make_at(n, Some(now_ns()));
        let r = agent
            .post(&url)
            .header("Content-Type", "application/x-protobuf")
            .header("X-Scope-OrgID", &tenant)
            .send(&body[..]);
        match r {
            Ok(mut resp) if resp.status().as_u16() == 200 => {
                shared.with_minute(|m| {
                    m.spans += spans;
                    m.requests += 1;
                });
                let _ = resp.body_mut().read_to_vec();
            }
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let body = resp.body_mut().read_to_vec().unwrap_or_default();
                shared.with_minute(|m| {
                    m.requests += 1;
                    *m.refused.entry(refusal_reason(status, &body)).or_default() += 1;
                });
            }
            Err(e) => shared.with_minute(|m| {
                m.requests += 1;
                *m.refused.entry(format!("transport {e}")).or_default() += 1;
            }),
        }
    }
}

/// How often the server's `/metrics` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Samples the heads' bytes and compaction's counters from `/metrics` into each minute until
/// `stop` is set.
fn sample_loop(shared: &Shared, api: &str, stop: &AtomicBool) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    while !stop.load(Relaxed) {
        std::thread::sleep(SAMPLE_EVERY);
        let Ok(text) = agent
            .get(&format!("{api}/metrics"))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
        else {
            continue;
        };
        let (mut head, mut merged, mut paused) = (0.0, 0.0, 0.0);
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let v: f64 = value.parse().unwrap_or(0.0);
            let metric = name.split('{').next().unwrap_or(name);
            match metric {
                "allegro_head_bytes" | "allegro_head_snapshot_bytes" => head += v,
                "allegro_compaction_spans_total" => merged = v,
                "allegro_compaction_paused_seconds_total" => paused = v,
                _ => {}
            }
        }
        shared.with_minute(|m| {
            m.head_max = m.head_max.max(head as u64);
            m.compaction = (merged, paused);
        });
    }
}

/// Starts the query mix on a thread of its own, until the returned flag is set; `end` gives
/// each query's range end (unix s).
fn spawn_queries(
    shared: &Arc<Shared>,
    a: &SoakArgs,
    api: &str,
    window: u64,
    end: impl Fn() -> u64 + Send + 'static,
    samples: &Samples,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (s, api, samples, flag) = (
        shared.clone(),
        api.to_string(),
        samples.clone(),
        stop.clone(),
    );
    let (tenants, pause) = (a.tenants, Duration::from_millis(a.query_pause_ms));
    let h = std::thread::spawn(move || {
        query_loop(&s, &api, tenants, window, pause, end, &samples, &flag)
    });
    (stop, h)
}

/// Runs the query mix until `stop` is set.
#[allow(clippy::too_many_arguments)]
fn query_loop(
    shared: &Shared,
    api: &str,
    tenants: usize,
    window: u64,
    pause: Duration,
    end: impl Fn() -> u64,
    samples: &Samples,
    stop: &AtomicBool,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut ids: Vec<String> = vec![String::new(); tenants];
    let mut turn = 0usize;
    while !stop.load(Relaxed) {
        let (name, path) = KINDS[turn % KINDS.len()];
        let tenant_no = (turn / KINDS.len()) % tenants;
        turn += 1;
        let tenant = format!("soak-{tenant_no}");
        if name == "trace-by-id" && ids[tenant_no].is_empty() {
            continue;
        }
        let e = end();
        let url = format!(
            "{api}{}",
            path(&ids[tenant_no], e.saturating_sub(window), e)
        );
        let t = Instant::now();
        let r = agent.get(&url).header("X-Scope-OrgID", &tenant).call();
        let took = t.elapsed();
        match r {
            Ok(mut resp) if resp.status().as_u16() == 200 => {
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                if name == "span-list"
                    && let Some(id) = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["traces"][0]["traceID"].as_str().map(str::to_string))
                {
                    ids[tenant_no] = id;
                }
                shared.with_minute(|m| m.queries.entry(name).or_default().push(took));
                samples.lock().entry(name).or_default().push(took);
            }
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                shared.with_minute(|m| {
                    *m.query_failures
                        .entry(format!("{name}: {}", reason(status, &text)))
                        .or_default() += 1;
                });
            }
            Err(e) => shared.with_minute(|m| {
                *m.query_failures.entry(format!("{name}: {e}")).or_default() += 1;
            }),
        }
        std::thread::sleep(pause);
    }
}

/// Runs the soak and prints its minutes and summary.
pub async fn run(a: &SoakArgs) -> Result<(), String> {
    let window = humantime::parse_duration(&a.window)
        .map_err(|e| format!("--window: {e}"))?
        .as_secs();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let head = a.head_mib << 20;
    let cfg = format!(
        "multitenancy_enabled: true\n\
         distributor:\n  receivers:\n    otlp:\n      protocols:\n        grpc:\n          endpoint: 127.0.0.1:0\n        http:\n          endpoint: 127.0.0.1:0\n\
         ingester:\n  trace_idle_period: 5s\n  max_block_duration: 1m\n  max_block_bytes: {block}\n  max_head_bytes: {head}\n\
         compactor:\n  compaction:\n    compaction_window: {compaction}\n",
        block = a.block_mib << 20,
        compaction = a.compaction_window,
    );
    let srv = start_with(&a.allegro, dir, &cfg)?;
    let pid = srv.child.id();
    let shared = Arc::new(Shared {
        templates: Templates::build_timed(a.batch),
        next: AtomicU64::new(1),
        started: Instant::now(),
        minutes: Mutex::default(),
        stop_ingest: AtomicBool::new(false),
    });
    let interval =
        Duration::from_secs_f64(a.batch as f64 * a.connections as f64 / a.rate.max(1) as f64);
    let mut senders = Vec::new();
    for c in 0..a.connections {
        let (s, url) = (shared.clone(), format!("{}/v1/traces", srv.http));
        let offset = interval.mul_f64(c as f64 / a.connections as f64);
        let tenants = a.tenants;
        senders.push(std::thread::spawn(move || {
            ingest_loop(s, url, tenants, interval, offset)
        }));
    }
    let loaded: Samples = Arc::default();
    let idle: Samples = Arc::default();
    let mut querier = Some(spawn_queries(
        &shared,
        a,
        &srv.api,
        window,
        || now_ns() / 1_000_000_000,
        &loaded,
    ));
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (s, api, stop) = (shared.clone(), srv.api.clone(), sampling.clone());
        std::thread::spawn(move || sample_loop(&s, &api, &stop))
    };
    let mut rss = Vec::new();
    println!(
        "{:>3} {:>9} {:>7} {:>9} {:>8} {:>8} {:>9} {:>7}  query p50/p99 ms (n)",
        "min", "spans/s", "refused", "RSS MiB", "q-fail", "head MiB", "merged M", "paused"
    );
    for minute in 0..a.minutes + a.idle_minutes {
        let until = shared.started + Duration::from_secs((minute + 1) * 60);
        tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
        rss.push(proc_status_kb(pid, "VmRSS:") * 1024);
        if minute + 1 == a.minutes {
            // Ingest stops; the same queries go on over the windows that ended here.
            shared.stop_ingest.store(true, Relaxed);
            for h in senders.drain(..) {
                let _ = h.join();
            }
            if let Some((stop, h)) = querier.take() {
                stop.store(true, Relaxed);
                let _ = h.join();
            }
            let end = now_ns() / 1_000_000_000;
            querier = Some(spawn_queries(
                &shared,
                a,
                &srv.api,
                window,
                move || end,
                &idle,
            ));
        }
        print_minute(&shared, minute as usize, *rss.last().unwrap_or(&0));
    }
    sampling.store(true, Relaxed);
    let _ = sampler.join();
    shared.stop_ingest.store(true, Relaxed);
    for h in senders {
        let _ = h.join();
    }
    if let Some((stop, h)) = querier {
        stop.store(true, Relaxed);
        let _ = h.join();
    }
    summarise(a, &shared, &rss, &loaded.lock(), &idle.lock(), head)
}

fn print_minute(shared: &Shared, minute: usize, rss: u64) {
    let all = shared.minutes.lock();
    let Some(m) = all.get(minute) else {
        return;
    };
    let refused: u64 = m.refused.values().sum();
    let failed: u64 = m.query_failures.values().sum();
    let mut line = format!(
        "{:>3} {:>9.0} {:>7} {:>9.0} {:>8} {:>8.0} {:>9.1} {:>6.0}s ",
        minute + 1,
        m.spans as f64 / 60.0,
        refused,
        rss as f64 / (1 << 20) as f64,
        failed,
        m.head_max as f64 / (1 << 20) as f64,
        m.compaction.0 / 1e6,
        m.compaction.1,
    );
    for (k, v) in &m.queries {
        let l = Latency::of(v.clone());
        line.push_str(&format!(" {k} {:.0}/{:.0} ({})", l.p50_ms, l.p99_ms, l.n));
    }
    println!("{line}");
    for (r, n) in m.refused.iter().chain(&m.query_failures) {
        println!("      {n} × {r}");
    }
}

fn summarise(
    a: &SoakArgs,
    shared: &Shared,
    rss: &[u64],
    loaded: &BTreeMap<&'static str, Vec<Duration>>,
    idle: &BTreeMap<&'static str, Vec<Duration>>,
    head: u64,
) -> Result<(), String> {
    let all = shared.minutes.lock();
    let load = &all[..(a.minutes as usize).min(all.len())];
    let spans: u64 = load.iter().map(|m| m.spans).sum();
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for m in all.iter() {
        for (k, v) in &m.refused {
            *refused.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &m.query_failures {
            *failures.entry(k.clone()).or_default() += v;
        }
    }
    let budget = head + (CACHE_MIB << 20) + (1 << 30);
    let third = (a.minutes as usize / 3).max(1);
    let load_rss = &rss[..(a.minutes as usize).min(rss.len())];
    let max_of = |r: &[u64]| r.iter().copied().max().unwrap_or(0);
    let middle = max_of(&load_rss[third.min(load_rss.len())..(2 * third).min(load_rss.len())]);
    let last = max_of(&load_rss[(2 * third).min(load_rss.len())..]);
    println!(
        "\n{} min at {:.0} spans/s acked ({} tenants), {} refusals, {} failed queries",
        a.minutes,
        spans as f64 / (a.minutes * 60) as f64,
        a.tenants,
        refused.values().sum::<u64>(),
        failures.values().sum::<u64>()
    );
    println!(
        "RSS: max {:.0} MiB in the middle third, {:.0} MiB in the last; budget head {} MiB + caches {} MiB + 1 GiB = {:.0} MiB",
        middle as f64 / (1 << 20) as f64,
        last as f64 / (1 << 20) as f64,
        a.head_mib,
        CACHE_MIB,
        budget as f64 / (1 << 20) as f64
    );
    let mut kinds = Vec::new();
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>10} {:>6}",
        "query", "idle p50", "idle p99", "load p50", "load p99", "ratio"
    );
    for (name, _) in KINDS {
        let l = Latency::of(loaded.get(name).cloned().unwrap_or_default());
        let i = Latency::of(idle.get(name).cloned().unwrap_or_default());
        let ratio = l.p99_ms / i.p99_ms.max(1e-9);
        println!(
            "{name:<18} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>6.2}",
            i.p50_ms, i.p99_ms, l.p50_ms, l.p99_ms, ratio
        );
        kinds.push(json!({"query": name, "idle": i, "load": l, "p99_ratio": ratio}));
    }
    for (r, n) in refused.iter().chain(&failures) {
        println!("  {n} × {r}");
    }
    if let Some(p) = &a.json {
        let minutes: Vec<_> = all
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let q: BTreeMap<&str, Latency> = m
                    .queries
                    .iter()
                    .map(|(k, v)| (*k, Latency::of(v.clone())))
                    .collect();
                json!({
                    "minute": i + 1,
                    "spans_per_s": m.spans as f64 / 60.0,
                    "requests": m.requests,
                    "refused": m.refused,
                    "rss_bytes": rss.get(i),
                    "head_bytes_max": m.head_max,
                    "compacted_spans_total": m.compaction.0,
                    "compaction_paused_s_total": m.compaction.1,
                    "queries": q,
                    "query_failures": m.query_failures,
                })
            })
            .collect();
        let report = json!({
            "minutes": a.minutes, "idle_minutes": a.idle_minutes, "rate": a.rate,
            "tenants": a.tenants, "head_mib": a.head_mib, "window": a.window,
            "spans_acked": spans, "rss_budget_bytes": budget,
            "rss_max_middle_third": middle, "rss_max_last_third": last,
            "kinds": kinds, "refused": refused, "query_failures": failures,
            "per_minute": minutes,
        });
        std::fs::write(p, serde_json::to_string_pretty(&report).unwrap_or_default())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
