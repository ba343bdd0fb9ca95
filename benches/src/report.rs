//! Figures, percentiles, peak memory, and the table/JSON report.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// Median, p99 and mean of durations, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// Runs `f` `c.warmup` times unmeasured, then `c.reps` times measured: their latency.
pub async fn timed<T, E>(
    c: &crate::Common,
    mut f: impl AsyncFnMut() -> Result<T, E>,
) -> Result<Latency, E> {
    let mut samples = Vec::with_capacity(c.reps);
    for i in 0..c.warmup + c.reps {
        let t0 = std::time::Instant::now();
        f().await?;
        if i >= c.warmup {
            samples.push(t0.elapsed());
        }
    }
    Ok(Latency::of(samples))
}

impl Latency {
    /// Summarises samples (nearest-rank percentiles).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let n = samples.len().max(1);
        let rank = |p: f64| {
            samples
                .get(
                    ((p * n as f64).ceil() as usize)
                        .saturating_sub(1)
                        .min(n - 1),
                )
                .copied()
                .unwrap_or_default()
        };
        Self {
            n: samples.len(),
            p50_ms: ms(rank(0.50)),
            p99_ms: ms(rank(0.99)),
            mean_ms: samples.iter().map(|d| ms(*d)).sum::<f64>() / n as f64,
            max_ms: samples.last().map_or(0.0, |d| ms(*d)),
        }
    }
}

/// Peak resident memory of this process (VmHWM), bytes.
pub fn peak_rss() -> u64 {
    status_bytes("VmHWM:")
}

/// Resets this process's peak RSS, so the next reading is one step's.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Resident memory of this process now (VmRSS), bytes.
pub fn current_rss() -> u64 {
    status_bytes("VmRSS:")
}

/// A size in kB from `/proc/self/status`, as bytes.
fn status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The report of a query suite over ranges (search, metrics, SQL): the dataset, the figures per
/// range, the run's peak RSS; printed and written as [`emit`] does.
pub fn emit_ranges(
    suite: &str,
    title: &str,
    c: &crate::Common,
    info: &crate::dataset::DatasetInfo,
    ranges: serde_json::Map<String, Value>,
) -> Result<(), String> {
    let report = serde_json::json!({
        "suite": suite,
        "compression": c.compression,
        "dataset": { "spans": info.spans, "traces": info.traces, "blocks": info.blocks, "data_bytes": info.data_bytes, "duration": c.duration },
        "ranges": Value::Object(ranges),
        "peak_rss_bytes": peak_rss(),
    });
    emit(title, &report, c.json.as_deref())
}

/// Prints `rows` as an aligned two-column table and writes the JSON if asked.
pub fn emit(title: &str, report: &Value, json: Option<&std::path::Path>) -> Result<(), String> {
    println!("\n== {title} ==");
    let mut rows = Vec::new();
    flatten("", report, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
    if let Some(path) = json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(report).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("(JSON written to {})", path.display());
    }
    Ok(())
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Number(n) => out.push((
            prefix.to_string(),
            n.as_f64().map_or_else(
                || n.to_string(),
                |f| {
                    if f.fract() == 0.0 {
                        format!("{f:.0}")
                    } else {
                        format!("{f:.3}")
                    }
                },
            ),
        )),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}
