//! `allegro-bench generator`: the metrics generator's processors alone, on one core — spans/s
//! through span metrics, service graphs and both, with the series and edges they hold.

use std::time::{Duration, Instant};

use allegro_datasets::{GenOptions, Generator as Traces};
use allegro_engine::otlp::trace::v1::ResourceSpans;
use allegro_ingest::generator::servicegraphs::ServiceGraphsConfig;
use allegro_ingest::generator::{Generator, GeneratorConfig, Processors};
use serde_json::json;

use crate::report::{emit, peak_rss};

/// Options of `allegro-bench generator`.
#[derive(Debug, Clone, clap::Args)]
pub struct GeneratorArgs {
    /// Spans fed per repetition.
    #[arg(long, default_value_t = 1_000_000)]
    pub spans: u64,
    /// Spans per request (the OTel SDK's batch processor sends up to 512).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// `service_graphs.max_items`.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_items: usize,
    /// Measured repetitions per processor set.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

fn requests(a: &GeneratorArgs) -> Vec<Vec<ResourceSpans>> {
    let mut g = Traces::new(GenOptions {
        seed: 11,
        spans: a.spans,
        start_unix_nano: 1_767_225_600_000_000_000,
        duration_nano: 3_600_000_000_000,
    });
    let (mut out, mut cur, mut n) = (Vec::new(), Vec::new(), 0usize);
    while let Some(t) = g.next_trace() {
        n += t
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum::<usize>();
        cur.extend(t);
        if n >= a.batch {
            out.push(std::mem::take(&mut cur));
            n = 0;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Runs the suite.
pub async fn run(a: &GeneratorArgs) -> Result<(), String> {
    let reqs = requests(a);
    // The server hands the generator the span sizes it computed while regrouping by trace.
    let sizes: Vec<Vec<u32>> = reqs
        .iter()
        .map(|r| {
            r.iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
                .map(|s| prost::Message::encoded_len(s) as u32)
                .collect()
        })
        .collect();
    let spans: usize = reqs
        .iter()
        .flatten()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mut report = serde_json::Map::new();
    report.insert("spans_per_rep".into(), json!(spans));
    for (name, procs) in [
        ("span-metrics", "span-metrics"),
        ("service-graphs", "service-graphs"),
        ("both", ""),
    ] {
        let processors = if procs.is_empty() {
            Processors::all()
        } else {
            Processors::from_names(&[procs.to_string()])?
        };
        let mut cfg = GeneratorConfig::default();
        cfg.defaults.processors = processors;
        // The dataset's timestamps are fixed; every span counts.
        cfg.ingestion_slack = Duration::ZERO;
        // Unpaired edges (root spans, calls to uninstrumented peers) wait 10 s; at millions of
        // spans/s the default 10000 fills in milliseconds and the rest would be dropped, which
        // measures the drop path instead of pairing.
        cfg.service_graphs = std::sync::Arc::new(ServiceGraphsConfig {
            max_items: a.max_items,
            ..Default::default()
        });
        let g = Generator::new(cfg);
        // Warm-up: series and edges exist, as in a running server.
        for (r, s) in reqs.iter().zip(&sizes) {
            g.consume("bench", r, Some(s), None);
        }
        let mut rates = Vec::new();
        for _ in 0..a.reps {
            let t = Instant::now();
            for (r, s) in reqs.iter().zip(&sizes) {
                g.consume("bench", r, Some(s), None);
            }
            rates.push(spans as f64 / t.elapsed().as_secs_f64());
        }
        rates.sort_by(f64::total_cmp);
        let mut own = String::new();
        g.render_self_metrics(&mut own);
        let gauge = |metric: &str| {
            own.lines()
                .find(|l| l.starts_with(metric))
                .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let collected = g.collect_due(true);
        report.insert(
            name.into(),
            json!({
                "spans_per_s_median": rates[rates.len() / 2].round(),
                "spans_per_s_min": rates[0].round(),
                "active_series": gauge("tempo_metrics_generator_registry_active_series"),
                "waiting_edges": gauge("tempo_metrics_generator_processor_service_graphs_waiting_edges"),
                "dropped_spans_max_items": gauge("tempo_metrics_generator_processor_service_graphs_dropped_spans"),
                "series_collected": collected.iter().map(|(_, s)| s.len()).sum::<usize>(),
            }),
        );
    }
    report.insert("peak_rss_mib".into(), json!(peak_rss() >> 20));
    emit(
        "metrics generator processors (one core)",
        &serde_json::Value::Object(report),
        a.json.as_deref(),
    )
}
