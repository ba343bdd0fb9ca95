//! `/metrics`: request counts and latencies by route and status, plus process metrics, in the
//! Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// Latency buckets in seconds (Prometheus client defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Per-route request metrics.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    started: Instant,
    started_unix: f64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            started: Instant::now(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        }
    }
}

impl HttpMetrics {
    /// Records one request.
    pub fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let h = m
            .entry((route.to_string(), method.to_string(), status))
            .or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let m = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        out.push_str("# HELP allegro_request_duration_seconds Time spent serving HTTP requests.\n");
        out.push_str("# TYPE allegro_request_duration_seconds histogram\n");
        for ((route, method, status), h) in &m {
            let labels = format!(
                "route=\"{}\",method=\"{method}\",status_code=\"{status}\"",
                escape(route)
            );
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "allegro_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "allegro_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "allegro_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "allegro_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP allegro_requests_total Total HTTP requests by route and status.\n");
        out.push_str("# TYPE allegro_requests_total counter\n");
        for ((route, method, status), h) in &m {
            let _ = writeln!(
                out,
                "allegro_requests_total{{route=\"{}\",method=\"{method}\",status_code=\"{status}\"}} {}",
                escape(route),
                h.count
            );
        }
        process_metrics(&mut out, self.started_unix, self.started.elapsed());
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn process_metrics(out: &mut String, start_unix: f64, _up: Duration) {
    let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    gauge(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        "gauge",
        start_unix,
    );
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        if let Some(rest) = stat.rsplit(')').next() {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = 100.0;
            if let (Some(u), Some(s)) = (
                f.get(11).and_then(|v| v.parse::<f64>().ok()),
                f.get(12).and_then(|v| v.parse::<f64>().ok()),
            ) {
                gauge(
                    "process_cpu_seconds_total",
                    "Total user and system CPU time spent in seconds.",
                    "counter",
                    (u + s) / ticks,
                );
            }
            if let Some(vsize) = f.get(20).and_then(|v| v.parse::<f64>().ok()) {
                gauge(
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes.",
                    "gauge",
                    vsize,
                );
            }
            if let Some(rss) = f.get(21).and_then(|v| v.parse::<f64>().ok()) {
                gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                    "gauge",
                    rss * 4096.0,
                );
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            fds.count() as f64,
        );
    }
}

/// Middleware recording every request under its route template (never the raw path, so trace
/// IDs do not explode the label set).
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics
        .observe(&route, &method, resp.status().as_u16(), start.elapsed());
    resp
}
