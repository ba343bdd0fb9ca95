//! TraceQL metrics: Traces Drilldown's query set over 1h and 6h ranges, latency percentiles
//! and spans/s, side by side with DuckDB running equivalent SQL on the same Parquet files
//! (`benches/duckdb/metrics.py`), and `with(sample=true)` against exact with its error.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use allegro_engine::query::QueryEngine;
use allegro_engine::query::metrics::{MetricsLimits, MetricsRequest, Mode};
use serde_json::{Value, json};

use crate::dataset::{self, TENANT};
use crate::report::{Latency, emit_ranges, timed};
use crate::{Common, Versus};

/// Drilldown's panels (grafana-clients.md §2.2): name, query, the step divisor (range / n).
pub const QUERIES: [(&str, &str, u64); 9] = [
    ("red-rate", "{nestedSetParent<0 && true} | rate()", 64),
    // The RED span rate with the "all spans" signal (Drilldown's default when embedded).
    ("red-rate-all", "{true && true} | rate()", 64),
    (
        "red-errors",
        "{nestedSetParent<0 && true && status=error} | rate()",
        64,
    ),
    (
        "heatmap",
        "{nestedSetParent<0 && true} | histogram_over_time(duration)",
        24,
    ),
    (
        "breakdown-rate",
        "{nestedSetParent<0 && true && resource.service.name != nil} | rate() by(resource.service.name)",
        64,
    ),
    (
        "breakdown-errors",
        "{nestedSetParent<0 && true && resource.service.name != nil && status=error} | rate() by(resource.service.name)",
        64,
    ),
    (
        "breakdown-p90",
        "{nestedSetParent<0 && true && resource.service.name != nil} | quantile_over_time(duration, 0.9) by(resource.service.name)",
        64,
    ),
    (
        "compare",
        "{nestedSetParent<0 && true} | compare({status = error}, 10)",
        1,
    ),
    (
        "all-spans-rate",
        "{} | rate() by(resource.service.name)",
        64,
    ),
];

/// Options of the metrics suite.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Dataset, repetitions, output.
    #[command(flatten)]
    pub common: Common,
    /// Ranges, DuckDB, which queries.
    #[command(flatten)]
    pub versus: Versus,
    /// Exemplars per query (default: the server's default, 100, as Drilldown gets).
    #[arg(long)]
    pub exemplars: Option<u32>,
    /// Ad-hoc queries to time instead of the Drilldown set (step = range ÷ 64, with a sampled
    /// twin, no DuckDB); repeatable.
    #[arg(long)]
    pub query: Vec<String>,
    /// The hint of the sampled twin of the RED, heatmap and ad-hoc queries.
    #[arg(long, default_value = "sample=true")]
    pub sample: String,
}

/// A range query of `q` over `range` (unix ns) with a step of the range ÷ `div` (whole
/// seconds), `exemplars` per series.
pub fn request(q: &str, range: (u64, u64), div: u64, exemplars: Option<u32>) -> MetricsRequest {
    let (start, end) = range;
    MetricsRequest {
        query: q.to_string(),
        start,
        end,
        step: Some(((end - start) / 1_000_000_000 / div).max(1) * 1_000_000_000),
        exemplars,
        max_series: None,
        mode: Mode::All,
    }
}

struct Run {
    latency: Latency,
    series: Vec<allegro_engine::tempopb::TimeSeries>,
    bytes: u64,
}

async fn run_query(engine: &QueryEngine, c: &Common, req: &MetricsRequest) -> Result<Run, String> {
    let tenants = [TENANT.to_string()];
    let limits = MetricsLimits::default();
    for _ in 0..c.warmup {
        engine
            .query_range(&tenants, req, &limits)
            .await
            .map_err(|e| format!("{}: {e}", req.query))?;
    }
    let mut samples = Vec::new();
    let mut last = None;
    for _ in 0..c.reps {
        let t0 = Instant::now();
        let r = engine
            .query_range(&tenants, req, &limits)
            .await
            .map_err(|e| format!("{}: {e}", req.query))?;
        samples.push(t0.elapsed());
        last = Some(r);
    }
    let r = last.unwrap_or_default();
    Ok(Run {
        latency: Latency::of(samples),
        bytes: r.metrics.map_or(0, |m| m.inspected_bytes),
        series: r.series,
    })
}

/// Planning alone: `req` explained (compiled, its blocks chosen, its plans built, nothing
/// read), as often as it is run. A little above the true figure, as the explanation also
/// prints the plans.
async fn plan_only(
    engine: &QueryEngine,
    c: &Common,
    req: &MetricsRequest,
) -> Result<Latency, String> {
    let limits = MetricsLimits::default();
    timed(c, async || {
        engine.explain_metrics(TENANT, req, &limits).await
    })
    .await
    .map_err(|e| format!("{}: {e}", req.query))
}

/// Mean relative error of sampled against exact, over every (series, timestamp) of the exact
/// answer with a non-zero value; and the error of the grand total.
fn sample_error(
    exact: &[allegro_engine::tempopb::TimeSeries],
    sampled: &[allegro_engine::tempopb::TimeSeries],
) -> (f64, f64) {
    let key = |s: &allegro_engine::tempopb::TimeSeries| format!("{:?}", s.labels);
    let got: std::collections::HashMap<String, std::collections::HashMap<i64, f64>> = sampled
        .iter()
        .map(|s| {
            (
                key(s),
                s.samples
                    .iter()
                    .map(|x| (x.timestamp_ms, x.value))
                    .collect(),
            )
        })
        .collect();
    let (mut sum, mut n, mut te, mut tg) = (0.0, 0usize, 0.0, 0.0);
    for s in exact {
        let g = got.get(&key(s));
        for x in &s.samples {
            let y = g
                .and_then(|g| g.get(&x.timestamp_ms))
                .copied()
                .unwrap_or(0.0);
            te += x.value;
            tg += y;
            if x.value != 0.0 {
                sum += ((y - x.value) / x.value).abs();
                n += 1;
            }
        }
    }
    (sum / n.max(1) as f64, ((tg - te) / te.max(1e-12)).abs())
}

fn duckdb(dir: &Path, start: u64, end: u64, reps: usize, only: &str) -> Result<Value, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb/metrics.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--data")
        .arg(dir)
        .args([
            "--start",
            &start.to_string(),
            "--end",
            &end.to_string(),
            "--reps",
            &reps.to_string(),
            "--only",
            only,
        ])
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "duckdb script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("duckdb output: {e}"))
}

/// Runs the suite.
pub async fn run(a: &MetricsArgs) -> Result<(), String> {
    let c = &a.common;
    let (_, dir, info) = dataset::ensure(c).await?;
    let (engine, data_end) = dataset::open_engine(&dir).await?;
    let mut ranges = serde_json::Map::new();
    for r in &a.versus.ranges {
        let len = humantime::parse_duration(r).map_err(|e| format!("--ranges {r}: {e}"))?;
        // Whole seconds, as Grafana sends them.
        let end = data_end / 1_000_000_000 * 1_000_000_000;
        let start = end - len.as_nanos() as u64;
        let spans_in_range = info.spans as f64 * (len.as_secs_f64() / c.duration_secs()).min(1.0);
        let mut queries = serde_json::Map::new();
        let adhoc: Vec<(String, &str, u64)> = a
            .query
            .iter()
            .enumerate()
            .map(|(i, q)| (format!("adhoc-{i}"), q.as_str(), 64))
            .collect();
        let set: Vec<(String, &str, u64)> = if adhoc.is_empty() {
            QUERIES
                .iter()
                .map(|(n, q, d)| (n.to_string(), *q, *d))
                .collect()
        } else {
            adhoc
        };
        for (name, q, div) in set {
            let name = name.as_str();
            if !a.versus.runs(name) {
                continue;
            }
            let req = request(q, (start, end), div, a.exemplars);
            let exact = run_query(&engine, c, &req).await?;
            let planning = plan_only(&engine, c, &req).await?;
            let mut entry = json!({
                "query": q,
                "step_s": req.step.unwrap_or(0) / 1_000_000_000,
                "latency": exact.latency,
                "planning": planning,
                "spans_per_second": spans_in_range / (exact.latency.p50_ms / 1e3).max(1e-9),
                "series": exact.series.len(),
                "bytes_read": exact.bytes,
            });
            if name.starts_with("red-") || name == "heatmap" || name.starts_with("adhoc-") {
                let sampled_req = MetricsRequest {
                    query: format!("{q} with({})", a.sample),
                    ..req.clone()
                };
                let sampled = run_query(&engine, c, &sampled_req).await?;
                let (mean_err, total_err) = sample_error(&exact.series, &sampled.series);
                entry["sampled"] = json!({
                    "latency": sampled.latency,
                    "speedup_p50": exact.latency.p50_ms / sampled.latency.p50_ms.max(1e-9),
                    "mean_relative_error": mean_err,
                    "total_relative_error": total_err,
                    "bytes_read": sampled.bytes,
                });
            }
            // DuckDB runs right after Allegro on the same query, so both see the same machine
            // (a shared VM's speed drifts over minutes).
            if !a.versus.no_duckdb && a.query.is_empty() {
                let d = duckdb(&dir, start, end, c.reps, name)?;
                if let Some(dd) = d.get(name) {
                    let theirs = dd["p50_ms"].as_f64().unwrap_or(f64::NAN);
                    entry["duckdb"] = dd.clone();
                    entry["faster_than_duckdb"] = json!(theirs / exact.latency.p50_ms);
                }
            }
            queries.insert(name.to_string(), entry);
        }
        ranges.insert(r.clone(), Value::Object(queries));
    }
    emit_ranges("metrics", "TraceQL metrics", c, &info, ranges)
}
