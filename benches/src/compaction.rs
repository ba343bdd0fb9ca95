//! Compaction over a simulated day: compaction of every closed window (first, so its peak RSS
//! is its own), then the same queries over the blocks as written and over the merged blocks.
//!
//! The dataset is generated once and cached; the suite works on a hard-linked copy of it, so
//! the cached blocks are never changed (compaction writes new blocks and only hides its
//! inputs).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use allegro_engine::block::compact::{Compacted, compact};
use allegro_engine::block::lifecycle::{self, LifecycleConfig, plan_compaction};
use allegro_engine::block::pace::Pace;
use allegro_engine::block::writer::BlockWriteOptions;
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::ids::TraceId;
use allegro_engine::query::metrics::{MetricsLimits, MetricsRequest, Mode};
use allegro_engine::query::search::SearchRequest;
use serde_json::{Value, json};

use crate::Common;
use crate::dataset::{self, TENANT, local_store};
use crate::report::{Latency, current_rss, emit, peak_rss, reset_peak_rss};

/// Options of `allegro-bench compaction`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompactionArgs {
    /// Dataset, repetitions, output.
    #[command(flatten)]
    pub common: Common,
    /// `compaction_window`.
    #[arg(long, default_value = "1h")]
    pub window: String,
    /// Ranges to query, ending at the end of the data.
    #[arg(long, value_delimiter = ',', default_value = "1h,6h,24h")]
    pub ranges: Vec<String>,
    /// Only the queries after compaction, over the merged copy kept by an earlier run with
    /// this flag (merged now when there is none), which is kept again: for profiling a query
    /// over merged blocks without merging the day each time.
    #[arg(long)]
    pub after_only: bool,
    /// Only the queries whose name contains this (`search-nomatch`, `trace-by-id`, …).
    #[arg(long)]
    pub only: Option<String>,
}

/// Searches and Drilldown's metrics panels, by name.
const SEARCHES: [(&str, &str); 4] = [
    ("search-intrinsic", "{ status = error }"),
    ("search-nomatch", "{ span.http.route = \"/api/none\" }"),
    (
        "search-descendant",
        "{ resource.service.name = \"api-gateway\" } >> { status = error }",
    ),
    ("search-count", "{ } | count() > 60"),
];
const PANELS: [(&str, &str); 3] = [
    (
        "metrics-rate-by-service",
        "{ } | rate() by (resource.service.name)",
    ),
    // Drilldown's default: root spans only (docs grafana-clients.md).
    (
        "metrics-roots-by-service",
        "{ nestedSetParent < 0 && true } | rate() by (resource.service.name)",
    ),
    (
        "metrics-errors",
        "{ status = error } | count_over_time() by (resource.service.name)",
    ),
];

/// Hard-links every file of `from` into `to`, directories made anew.
fn link_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for e in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let target = to.join(e.file_name());
        if e.file_type().map_err(|e| e.to_string())?.is_dir() {
            link_tree(&e.path(), &target)?;
        } else {
            std::fs::hard_link(e.path(), &target).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn time<F, Fut>(reps: usize, warmup: usize, mut f: F) -> Result<Latency, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    for _ in 0..warmup {
        f().await?;
    }
    let mut samples = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        f().await?;
        samples.push(t0.elapsed());
    }
    Ok(Latency::of(samples))
}

/// Every query over every range, and trace by ID cold and warm, on the store in `dir`.
async fn queries(dir: &Path, a: &CompactionArgs, ids: &[TraceId]) -> Result<Value, String> {
    let (engine, end) = dataset::open_engine(dir).await?;
    let engine = Arc::new(engine);
    let c = &a.common;
    let mut out = serde_json::Map::new();
    out.insert("blocks".into(), json!(engine_blocks(dir).await?));
    for range in &a.ranges {
        let span = humantime::parse_duration(range).map_err(|e| e.to_string())?;
        let start = end.saturating_sub(span.as_nanos() as u64);
        for (name, q) in SEARCHES.into_iter().filter(|(n, _)| a.wanted(n)) {
            let req = SearchRequest {
                query: q.into(),
                limit: 20,
                spss: 3,
                range: Some((start, end)),
            };
            let e = engine.clone();
            let lat = time(c.reps, c.warmup, || {
                let (e, req) = (e.clone(), req.clone());
                async move {
                    e.search(&[TENANT.to_string()], &req)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            out.insert(format!("{range}.{name}"), json!({ "latency": lat }));
        }
        for (name, q) in PANELS.into_iter().filter(|(n, _)| a.wanted(n)) {
            let req = MetricsRequest {
                query: q.into(),
                start,
                end,
                step: Some((span.as_nanos() as u64 / 64).max(1)),
                exemplars: Some(0),
                max_series: None,
                mode: Mode::Blocks,
            };
            let e = engine.clone();
            let lat = time(c.reps, c.warmup, || {
                let (e, req) = (e.clone(), req.clone());
                async move {
                    e.query_range(&[TENANT.to_string()], &req, &MetricsLimits::default())
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            out.insert(format!("{range}.{name}"), json!({ "latency": lat }));
        }
    }
    if !a.wanted("trace-by-id") {
        return Ok(Value::Object(out));
    }
    // Trace by ID: cold is a fresh catalog per lookup (a process's first), warm one catalog
    // with its caches.
    let cold = cold_lookups(dir, ids).await?;
    // As a running server looks a trace up: its block list known (it polls it), the trace's
    // bloom filters, footers and pages not yet cached.
    let mut listed = Vec::new();
    for id in ids.iter().take(50) {
        let fresh = Catalog::new(local_store(dir)?, CatalogConfig::default());
        fresh.blocks(TENANT).await.map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        fresh
            .find_trace(TENANT, id, None)
            .await
            .map_err(|e| e.to_string())?;
        listed.push(t0.elapsed());
    }
    let warm_catalog = Catalog::new(local_store(dir)?, CatalogConfig::default());
    for id in ids {
        warm_catalog
            .find_trace(TENANT, id, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut warm = Vec::new();
    for id in ids {
        let t0 = Instant::now();
        warm_catalog
            .find_trace(TENANT, id, None)
            .await
            .map_err(|e| e.to_string())?;
        warm.push(t0.elapsed());
    }
    out.insert("trace-by-id.cold".into(), json!({ "latency": cold }));
    out.insert(
        "trace-by-id.cold-listed".into(),
        json!({ "latency": Latency::of(listed) }),
    );
    out.insert(
        "trace-by-id.warm".into(),
        json!({ "latency": Latency::of(warm) }),
    );
    Ok(Value::Object(out))
}

/// Trace by ID as a process's first lookup, 50 of `ids` ([`dataset::cold_trace_lookups`]).
async fn cold_lookups(dir: &Path, ids: &[TraceId]) -> Result<Latency, String> {
    let (took, _) = dataset::cold_trace_lookups(dir, &ids[..ids.len().min(50)]).await?;
    Ok(Latency::of(took))
}

impl CompactionArgs {
    /// Whether the query `name` is measured (see `--only`).
    fn wanted(&self, name: &str) -> bool {
        self.only.as_deref().is_none_or(|o| name.contains(o))
    }
}

async fn engine_blocks(dir: &Path) -> Result<usize, String> {
    let c = Catalog::new(local_store(dir)?, CatalogConfig::default());
    Ok(c.blocks(TENANT).await.map_err(|e| e.to_string())?.len())
}

/// Real IDs from every block of the day as written (under `dir`), for trace by ID.
async fn trace_ids(dir: &Path) -> Result<Vec<TraceId>, String> {
    let blocks = Catalog::new(local_store(dir)?, CatalogConfig::default())
        .blocks(TENANT)
        .await
        .map_err(|e| e.to_string())?;
    Ok(blocks
        .iter()
        .step_by((blocks.len() / 50).max(1))
        .filter_map(|b| TraceId::parse_hex(&b.min_id).ok())
        .collect())
}

/// What merging every closed window did.
struct Merged {
    total: Compacted,
    took: Vec<std::time::Duration>,
    /// Per merge: what it read and its own peak RSS.
    steps: Vec<Value>,
    /// The highest of the merges' peak RSS.
    peak: u64,
}

/// Merges every closed window of the tenant until none has two blocks, as `serve` does: a
/// window of more blocks than one merge takes in steps, lowest level first.
async fn compact_all(
    catalog: &Catalog,
    cfg: &LifecycleConfig,
    opts: &BlockWriteOptions,
) -> Result<Merged, String> {
    let mut m = Merged {
        total: Compacted::default(),
        took: Vec::new(),
        steps: Vec::new(),
        peak: 0,
    };
    loop {
        let blocks = catalog.blocks(TENANT).await.map_err(|e| e.to_string())?;
        // Every window of the data is closed.
        let Some(inputs) = plan_compaction(&blocks, cfg, u64::MAX) else {
            return Ok(m);
        };
        let levels: Vec<u32> = inputs.iter().map(|b| b.compaction_level).collect();
        // Each merge's own peak.
        reset_peak_rss();
        let m0 = Instant::now();
        let (_, done) = compact(catalog, &inputs, opts, &Pace::never())
            .await
            .map_err(|e| e.to_string())?;
        let took = m0.elapsed();
        let merge_peak = peak_rss();
        eprintln!(
            "merge {}: {} inputs (levels {levels:?}), {} spans in {:.1} s, peak RSS {} MiB",
            m.took.len(),
            inputs.len(),
            done.spans_in,
            took.as_secs_f64(),
            merge_peak >> 20
        );
        m.peak = m.peak.max(merge_peak);
        m.steps.push(json!({
            "input_levels": levels,
            "spans_in": done.spans_in,
            "seconds": took.as_secs_f64(),
            "peak_rss_bytes": merge_peak,
        }));
        m.took.push(took);
        m.total.spans_in += done.spans_in;
        m.total.spans_out += done.spans_out;
        m.total.bytes_in += done.bytes_in;
        m.total.bytes_out += done.bytes_out;
        m.total.traces += done.traces;
        m.total.rewritten += done.rewritten;
    }
}

/// `allegro-bench compaction`.
pub async fn run(a: &CompactionArgs) -> Result<(), String> {
    let c = &a.common;
    let (_, cached, info) = dataset::ensure(c).await?;
    let work = c.data.join("compaction-scratch");
    let kept = c.data.join("compaction-kept");
    if a.after_only && kept.exists() {
        let ids = trace_ids(&cached).await?;
        let after = queries(&kept, a, &ids).await?;
        return emit("compaction", &json!({ "after": after }), c.json.as_deref());
    }
    let _ = std::fs::remove_dir_all(&work);
    link_tree(&cached, &work)?;
    let catalog = Catalog::new(local_store(&work)?, CatalogConfig::default());
    let blocks = catalog.blocks(TENANT).await.map_err(|e| e.to_string())?;
    let ids = trace_ids(&work).await?;
    eprintln!("before: {} blocks", blocks.len());

    // Compaction first, in a process that has run nothing else: its peak RSS is its own, not
    // the query caches'. The queries before compaction read the cached dataset, which the
    // scratch copy's compaction leaves untouched (it writes new blocks beside hard links).
    let window = humantime::parse_duration(&a.window).map_err(|e| e.to_string())?;
    let cfg = LifecycleConfig {
        window,
        ..Default::default()
    };
    // As `serve` does (its WAL directory): merged blocks are written to local disk, then
    // uploaded, so the compactor's memory does not follow its output.
    let opts = BlockWriteOptions {
        spill_dir: Some(c.data.join("compaction-spill")),
        ..dataset::write_options(c)?
    };
    reset_peak_rss();
    let rss0 = current_rss();
    let cpu0 = crate::ingest::proc_cpu_secs(std::process::id());
    let t0 = Instant::now();
    // As `serve` does: on a thread of its own, on the compactor's runtime.
    let merged = std::thread::scope(|s| {
        s.spawn(|| {
            lifecycle::compactor_runtime()
                .map_err(|e| e.to_string())?
                .block_on(compact_all(&catalog, &cfg, &opts))
        })
        .join()
        .map_err(|_| "the compaction thread panicked".to_string())?
    })?;
    let Merged {
        total,
        took,
        steps,
        peak,
    } = merged;
    let merges = took.len();
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = crate::ingest::proc_cpu_secs(std::process::id()) - cpu0;
    let rss = peak.max(peak_rss());
    let after_blocks = catalog
        .blocks(TENANT)
        .await
        .map_err(|e| e.to_string())?
        .len();
    eprintln!("after: {after_blocks} blocks, {merges} merges in {seconds:.1} s");
    // The first hour after a merge its inputs wait out `compacted_block_retention` (hidden
    // from queries, but listed: a fresh process still reads their metas). Measured here, then
    // deleted as retention does once that hour has passed: the state of a store that has been
    // compacting all day, which the queries after compaction measure.
    let cold_inputs_held = if a.wanted("trace-by-id") {
        Some(cold_lookups(&work, &ids).await?)
    } else {
        None
    };
    let settled = LifecycleConfig {
        block_retention: std::time::Duration::ZERO,
        compacted_block_retention: std::time::Duration::ZERO,
        ..cfg
    };
    let deleted =
        lifecycle::apply_retention(&catalog, TENANT, &settled, allegro_engine::now_unix_nanos())
            .await
            .map_err(|e| e.to_string())?;
    eprintln!("retention: {} merged inputs deleted", deleted.retired.len());
    let with_held = |mut after: Value| {
        if let (Some(l), Value::Object(m)) = (&cold_inputs_held, &mut after) {
            m.insert(
                "trace-by-id.cold-inputs-held".into(),
                json!({ "latency": l }),
            );
        }
        after
    };
    if a.after_only {
        let _ = std::fs::remove_dir_all(&kept);
        std::fs::rename(&work, &kept).map_err(|e| e.to_string())?;
        let after = with_held(queries(&kept, a, &ids).await?);
        return emit("compaction", &json!({ "after": after }), c.json.as_deref());
    }
    let before = queries(&cached, a, &ids).await?;
    let after = with_held(queries(&work, a, &ids).await?);

    let mut speedup = serde_json::Map::new();
    if let (Value::Object(b), Value::Object(af)) = (&before, &after) {
        for (k, v) in b {
            let (Some(x), Some(y)) = (
                v["latency"]["p50_ms"].as_f64(),
                af.get(k).and_then(|w| w["latency"]["p50_ms"].as_f64()),
            ) else {
                continue;
            };
            speedup.insert(k.clone(), json!(x / y.max(1e-9)));
        }
    }
    let report = json!({
        "suite": "compaction",
        "dataset": { "spans": info.spans, "traces": info.traces, "blocks": info.blocks, "data_bytes": info.data_bytes, "duration": c.duration, "block_spans": c.block_spans },
        "window": a.window,
        "compaction": {
            "merges": merges,
            "blocks_before": blocks.len(),
            "blocks_after": after_blocks,
            "spans": total.spans_in,
            "spans_rewritten": total.rewritten,
            "bytes_in": total.bytes_in,
            "bytes_out": total.bytes_out,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "spans_per_second": total.spans_in as f64 / seconds.max(1e-9),
            "spans_per_cpu_second": total.spans_in as f64 / cpu.max(1e-9),
            "merge_latency": Latency::of(took),
            "peak_rss_bytes": rss,
            "rss_at_start_bytes": rss0,
            "merges_detail": steps,
        },
        "before": before,
        "after": after,
        "speedup_p50": speedup,
    });
    let _ = std::fs::remove_dir_all(&work);
    emit("compaction", &report, c.json.as_deref())?;
    Ok(())
}
