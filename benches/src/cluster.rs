//! What distribution costs: the SQL suite's ten queries over the same blocks, answered in this
//! process and through a Ballista cluster (a scheduler and executors started in this process
//! by `allegro_cluster::in_process`, speaking gRPC and Arrow Flight over loopback and
//! shuffling through files, as separate processes do), the two alternating repetition by
//! repetition. Per query: p50/p99 of both, the overhead (cluster p50 − local p50), the bytes
//! of the plan sent to the scheduler, the bytes the executors shuffled, and whether the
//! answers are equal (the columns computed exactly, as sorted rows). Then Drilldown's TraceQL
//! metrics panels (the metrics suite's set) the same way: their first stage runs on the
//! cluster, and the answers must be the same series with the same samples. Then the search
//! suite's shapes: blocks read on the cluster in waves, the same traces and spansets.
//!
//! ```text
//! allegro-bench cluster --spans 10000000 --duration 6h --ranges 6h --executors 2
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_cluster::in_process::{InProcessCluster, InProcessOptions};
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::query::QueryEngine;
use allegro_engine::query::metrics::MetricsLimits;
use allegro_engine::tempopb::{SearchResponse, TimeSeries};
use serde_json::{Value, json};

use crate::dataset::{self, TENANT};
use crate::report::{Latency, emit_ranges};
use crate::sql::{MAX_ROWS, QUERIES, answer, fill, rows_of, run_allegro};
use crate::{Common, Versus, Window};

/// Options of the cluster suite.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Dataset, repetitions, output.
    #[command(flatten)]
    pub common: Common,
    /// Ranges and which queries (DuckDB is not run here; the SQL suite compares with it).
    #[command(flatten)]
    pub versus: Versus,
    /// Executors in the cluster.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// Tasks each executor runs at once.
    #[arg(long, default_value_t = 2)]
    pub tasks_per_executor: usize,
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Runs the suite.
pub async fn run(a: &ClusterArgs) -> Result<(), String> {
    let c = &a.common;
    let (_, dir, info) = dataset::ensure(c).await?;
    let (local, data_end) = dataset::open_engine(&dir).await?;
    let store = dataset::local_store(&dir)?;
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let opts = InProcessOptions {
        executors: a.executors,
        tasks_per_executor: a.tasks_per_executor,
        memory_bytes: None,
        work_dir: work.path().to_path_buf(),
    };
    let catalog = || Arc::new(Catalog::new(store.clone(), CatalogConfig::default()));
    let cluster = InProcessCluster::start(opts, catalog, free_port)
        .await
        .map_err(|e| e.to_string())?;
    let (engine, _) = dataset::open_engine(&dir).await?;
    let client = cluster.client(engine.catalog().clone());
    let remote = engine.with_remote(Arc::new(client.clone()));
    let tenants = [TENANT.to_string()];
    let v = &a.versus;
    let mut ranges = serde_json::Map::new();
    for r in &v.ranges {
        let Window {
            start,
            end,
            spans: spans_in_range,
        } = Versus::window(r, c, info.spans, data_end)?;
        let mut queries = serde_json::Map::new();
        for q in QUERIES.iter().filter(|q| v.runs(q.name)) {
            let sql = fill(q.allegro, start, end);
            let plan = remote
                .sql_plan(&tenants, &sql, MAX_ROWS)
                .await
                .map_err(|e| e.to_string())?;
            let plan_bytes = client.plan_bytes(&plan).map_err(|e| e.to_string())?;
            let (mut ours, mut theirs, mut shuffled) = (Vec::new(), Vec::new(), Vec::new());
            let (mut here, mut there) = (Vec::new(), Vec::new());
            let mut jobs: Vec<PathBuf> = cluster.shuffled_since(&[]).1;
            for i in 0..c.warmup + c.reps {
                let t0 = Instant::now();
                here = run_allegro(&local, &sql).await?;
                let took_here = t0.elapsed();
                let t0 = Instant::now();
                there = run_allegro(&remote, &sql).await?;
                let took_there = t0.elapsed();
                let (bytes, now) = cluster.shuffled_since(&jobs);
                jobs = now;
                if i >= c.warmup {
                    ours.push(took_here);
                    theirs.push(took_there);
                    shuffled.push(bytes);
                }
            }
            let (rows_here, rows_there) = (rows_of(&here)?, rows_of(&there)?);
            let equal = answer(&rows_here, q.exact) == answer(&rows_there, q.exact);
            let (l, d) = (Latency::of(ours), Latency::of(theirs));
            shuffled.sort_unstable();
            let shuffle_bytes = shuffled.get(shuffled.len() / 2).copied().unwrap_or(0);
            let mut entry = json!({
                "sql": sql,
                "local": l,
                "cluster": d,
                "overhead_ms": d.p50_ms - l.p50_ms,
                "cluster_over_local": d.p50_ms / l.p50_ms.max(1e-9),
                "spans_per_second_local": spans_in_range / (l.p50_ms / 1e3).max(1e-9),
                "spans_per_second_cluster": spans_in_range / (d.p50_ms / 1e3).max(1e-9),
                "plan_bytes": plan_bytes,
                "shuffle_bytes": shuffle_bytes,
                "rows": rows_here.len(),
                "answers_equal": equal,
            });
            if !equal {
                entry["cluster_rows"] = json!(rows_there.len());
                entry["first_rows"] = json!(rows_here.iter().take(3).collect::<Vec<_>>());
                entry["cluster_first_rows"] = json!(rows_there.iter().take(3).collect::<Vec<_>>());
            }
            eprintln!(
                "{r} {:<22} local {:>8.1} ms  cluster {:>8.1} ms  plan {:>7} B  shuffle {:>10} B  rows {:>5}  equal {equal}",
                q.name,
                l.p50_ms,
                d.p50_ms,
                plan_bytes,
                shuffle_bytes,
                rows_here.len(),
            );
            queries.insert(q.name.to_string(), entry);
        }
        for (name, q, div) in crate::metrics::QUERIES {
            if !v.runs(name) {
                continue;
            }
            // Exemplars are a sample of spans: which ones may differ, the series may not.
            let req = crate::metrics::request(q, (start, end), div, Some(0));
            let limits = MetricsLimits::default();
            let series =
                async |engine: &QueryEngine| -> Result<(Duration, Vec<TimeSeries>), String> {
                    let t0 = Instant::now();
                    let r = engine
                        .query_range(&tenants, &req, &limits)
                        .await
                        .map_err(|e| format!("{q}: {e}"))?;
                    Ok((t0.elapsed(), r.series))
                };
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let (mut here, mut there) = (Vec::new(), Vec::new());
            for i in 0..c.warmup + c.reps {
                let (took_here, h) = series(&local).await?;
                let (took_there, t) = series(&remote).await?;
                (here, there) = (h, t);
                if i >= c.warmup {
                    ours.push(took_here);
                    theirs.push(took_there);
                }
            }
            let differences = series_differences(&here, &there);
            let equal = differences.is_empty();
            let (l, d) = (Latency::of(ours), Latency::of(theirs));
            eprintln!(
                "{r} {name:<22} local {:>8.1} ms  cluster {:>8.1} ms  series {:>4}  equal {equal}",
                l.p50_ms,
                d.p50_ms,
                here.len()
            );
            let mut entry = json!({
                "traceql": q,
                "local": l,
                "cluster": d,
                "overhead_ms": d.p50_ms - l.p50_ms,
                "cluster_over_local": d.p50_ms / l.p50_ms.max(1e-9),
                "series": here.len(),
                "answers_equal": equal,
            });
            if !equal {
                entry["differences"] = json!(differences.iter().take(5).collect::<Vec<_>>());
            }
            queries.insert(format!("metrics:{name}"), entry);
        }
        for shape in crate::search::shapes() {
            if !v.runs(shape.name) {
                continue;
            }
            let req = shape.request(start, end);
            let found = async |engine: &QueryEngine| -> Result<(Duration, Vec<Trace>), String> {
                let t0 = Instant::now();
                let r = engine
                    .search(&tenants, &req)
                    .await
                    .map_err(|e| format!("{}: {e}", shape.traceql))?;
                Ok((t0.elapsed(), traces_of(&r)))
            };
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let (mut here, mut there) = (Vec::new(), Vec::new());
            for i in 0..c.warmup + c.reps {
                let (took_here, h) = found(&local).await?;
                let (took_there, t) = found(&remote).await?;
                (here, there) = (h, t);
                if i >= c.warmup {
                    ours.push(took_here);
                    theirs.push(took_there);
                }
            }
            let equal = here == there;
            let (l, d) = (Latency::of(ours), Latency::of(theirs));
            eprintln!(
                "{r} search:{:<15} local {:>8.1} ms  cluster {:>8.1} ms  traces {:>4}  equal {equal}",
                shape.name,
                l.p50_ms,
                d.p50_ms,
                here.len()
            );
            queries.insert(
                format!("search:{}", shape.name),
                json!({
                    "traceql": shape.traceql,
                    "local": l,
                    "cluster": d,
                    "overhead_ms": d.p50_ms - l.p50_ms,
                    "cluster_over_local": d.p50_ms / l.p50_ms.max(1e-9),
                    "traces": here.len(),
                    "answers_equal": equal,
                }),
            );
        }
        ranges.insert(r.clone(), Value::Object(queries));
    }
    emit_ranges("cluster", "SQL on a Ballista cluster", c, &info, ranges)
}

/// A search answer's trace: ID, start, and its spansets' span IDs (each sorted, then all).
type Trace = (String, u64, Vec<Vec<String>>);

/// `r`'s traces, in answer order.
fn traces_of(r: &SearchResponse) -> Vec<Trace> {
    r.traces
        .iter()
        .map(|t| {
            let mut sets: Vec<Vec<String>> = t
                .span_sets
                .iter()
                .map(|s| {
                    let mut ids: Vec<String> = s.spans.iter().map(|x| x.span_id.clone()).collect();
                    ids.sort();
                    ids
                })
                .collect();
            sets.sort();
            (t.trace_id.clone(), t.start_time_unix_nano, sets)
        })
        .collect()
}

/// Where two metrics answers differ (empty: the same series, labels and samples; values equal
/// to 1e-9 relative, as sums may add in another order).
fn series_differences(a: &[TimeSeries], b: &[TimeSeries]) -> Vec<String> {
    let by_labels = |s: &[TimeSeries]| -> BTreeMap<String, Vec<(i64, f64)>> {
        s.iter()
            .map(|t| {
                let mut labels: Vec<String> = t.labels.iter().map(|l| format!("{l:?}")).collect();
                labels.sort();
                let samples = t
                    .samples
                    .iter()
                    .map(|p| (p.timestamp_ms, p.value))
                    .collect();
                (labels.join(","), samples)
            })
            .collect()
    };
    let (a, b) = (by_labels(a), by_labels(b));
    let mut out = Vec::new();
    for k in a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x.len() == y.len() => {
                for ((tx, vx), (ty, vy)) in x.iter().zip(y) {
                    let close = (vx - vy).abs() <= 1e-9 * vx.abs().max(vy.abs())
                        || (vx.is_nan() && vy.is_nan());
                    if tx != ty || !close {
                        out.push(format!("{k} at {tx}: {vx} here, {vy} on the cluster"));
                        break;
                    }
                }
            }
            (x, y) => out.push(format!(
                "{k}: {} samples here, {} on the cluster",
                x.map_or(0, Vec::len),
                y.map_or(0, Vec::len)
            )),
        }
    }
    out
}
