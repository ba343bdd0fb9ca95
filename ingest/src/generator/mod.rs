//! The metrics generator: span metrics and service graphs computed from the accepted span
//! stream, per tenant, collected every `collection_interval` for Prometheus remote write and a
//! scrape endpoint (Tempo's `modules/generator`).
//!
//! ```text
//! ingester push (after the WAL) → SpanTap::spans → per tenant: span metrics, service graphs
//!                                                  → registry → collect → remote write queue
//! ```

pub mod attrs;
pub mod filter;
pub mod prompb;
pub mod registry;
pub mod remote_write;
pub mod servicegraphs;
pub mod spanmetrics;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_engine::ids::TraceId;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use parking_lot::{Mutex, RwLock};

use crate::generator::prompb::TimeSeries;
use crate::generator::registry::{Registry, RegistryConfig, now_ms};
use crate::generator::servicegraphs::{EdgeStats, ServiceGraphs, ServiceGraphsConfig};
use crate::generator::spanmetrics::{SpanMetrics, SpanMetricsConfig};
use crate::ingester::SpanTap;

/// Which outputs of a processor are on (Tempo's sub-processors: `span-metrics-count`,
/// `-latency`, `-size`; `service-graphs-request`, `-latency`, `-connection-info`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Parts {
    /// Calls / requests counters.
    pub count: bool,
    /// Latency histograms.
    pub latency: bool,
    /// Span sizes (span metrics) or connection info (service graphs).
    pub size: bool,
}

impl Parts {
    fn any(self) -> bool {
        self.count || self.latency || self.size
    }
}

/// The processors a tenant runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Processors {
    /// Span metrics outputs.
    pub span_metrics: Parts,
    /// Service graph outputs.
    pub service_graphs: Parts,
    /// TraceQL metrics over the recent store.
    pub local_blocks: bool,
}

/// Every processor name and sub-name Allegro accepts in `metrics_generator.processors`.
pub const PROCESSOR_NAMES: [&str; 10] = [
    "span-metrics",
    "span-metrics-count",
    "span-metrics-latency",
    "span-metrics-size",
    "service-graphs",
    "service-graphs-request",
    "service-graphs-latency",
    "service-graphs-connection-info",
    "local-blocks",
    "host-info",
];

impl Processors {
    /// What a tenant runs when no `processors` list applies: both generator processors with
    /// their default outputs, and the recent store.
    pub fn all() -> Self {
        let on = Parts {
            count: true,
            latency: true,
            size: true,
        };
        Self {
            span_metrics: on,
            service_graphs: Parts { size: false, ..on },
            local_blocks: true,
        }
    }

    /// Parses a `processors` list; unknown names are an error naming the valid ones.
    pub fn from_names(names: &[String]) -> Result<Self, String> {
        let mut p = Self::default();
        for n in names {
            let (sm, sg) = (&mut p.span_metrics, &mut p.service_graphs);
            match n.as_str() {
                "span-metrics" => {
                    (sm.count, sm.latency, sm.size) = (true, true, true);
                }
                "span-metrics-count" => sm.count = true,
                "span-metrics-latency" => sm.latency = true,
                "span-metrics-size" => sm.size = true,
                "service-graphs" => (sg.count, sg.latency) = (true, true),
                "service-graphs-request" => sg.count = true,
                "service-graphs-latency" => sg.latency = true,
                "service-graphs-connection-info" => sg.size = true,
                "local-blocks" => p.local_blocks = true,
                // Accepted for Tempo configs; Allegro has no host-info processor.
                "host-info" => {}
                other => {
                    return Err(format!(
                        "unknown processor {other:?}; expected one of {}",
                        PROCESSOR_NAMES.join(", ")
                    ));
                }
            }
        }
        Ok(p)
    }

    /// True when span metrics or service graphs run (the generator proper).
    pub fn generates(&self) -> bool {
        self.span_metrics.any() || self.service_graphs.any()
    }
}

/// A tenant's generator settings (from `overrides`).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSettings {
    /// Processors that run.
    pub processors: Processors,
    /// Most active series; 0 = no limit.
    pub max_active_series: usize,
    /// Overrides `registry.collection_interval` when set.
    pub collection_interval: Option<Duration>,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            processors: Processors::all(),
            max_active_series: 0,
            collection_interval: None,
        }
    }
}

/// Everything the generator is configured with.
#[derive(Debug, Clone, Default)]
pub struct GeneratorConfig {
    /// Registry settings.
    pub registry: RegistryConfig,
    /// Span metrics settings.
    pub span_metrics: Arc<SpanMetricsConfig>,
    /// Service graph settings.
    pub service_graphs: Arc<ServiceGraphsConfig>,
    /// Spans ending further than this from now are not counted
    /// (`metrics_ingestion_time_range_slack`, 30s); zero = no check.
    pub ingestion_slack: Duration,
    /// Settings of tenants without their own.
    pub defaults: TenantSettings,
    /// Tenants with their own settings.
    pub per_tenant: HashMap<String, TenantSettings>,
}

impl GeneratorConfig {
    /// The settings of `tenant`.
    pub fn tenant(&self, tenant: &str) -> &TenantSettings {
        self.per_tenant.get(tenant).unwrap_or(&self.defaults)
    }
}

/// The multiplier of a span: the numeric value of `key` (span attributes first, then the
/// resource), else 1.
pub fn multiplier(key: Option<&str>, resource: &[KeyValue], span: &Span) -> f64 {
    key.and_then(|k| attrs::find_number(k, &[&span.attributes, resource]))
        .filter(|m| m.is_finite() && *m > 0.0)
        .unwrap_or(1.0)
}

struct TenantGen {
    reg: Registry,
    spans: Option<SpanMetrics>,
    graphs: Option<ServiceGraphs>,
    interval: Duration,
    next_collect: Instant,
    received: u64,
    out_of_slack: u64,
    removed_stale: u64,
}

/// The metrics generator of every tenant.
pub struct Generator {
    cfg: GeneratorConfig,
    tenants: RwLock<HashMap<String, Arc<Mutex<TenantGen>>>>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").finish_non_exhaustive()
    }
}

impl Generator {
    /// A generator with no series yet.
    pub fn new(cfg: GeneratorConfig) -> Self {
        Self {
            cfg,
            tenants: RwLock::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    fn tenant(&self, tenant: &str) -> Option<Arc<Mutex<TenantGen>>> {
        if let Some(t) = self.tenants.read().get(tenant) {
            return Some(t.clone());
        }
        let s = self.cfg.tenant(tenant);
        if !s.processors.generates() {
            return None;
        }
        let mut reg_cfg = self.cfg.registry.clone();
        reg_cfg.max_active_series = s.max_active_series;
        let interval = s.collection_interval.unwrap_or(reg_cfg.collection_interval);
        let mut reg = Registry::new(tenant, reg_cfg);
        let p = s.processors;
        let spans = p
            .span_metrics
            .any()
            .then(|| SpanMetrics::new(self.cfg.span_metrics.clone(), &mut reg, p.span_metrics));
        let graphs = p.service_graphs.any().then(|| {
            ServiceGraphs::new(self.cfg.service_graphs.clone(), &mut reg, p.service_graphs)
        });
        let t = TenantGen {
            reg,
            spans,
            graphs,
            interval,
            next_collect: Instant::now() + interval,
            received: 0,
            out_of_slack: 0,
            removed_stale: 0,
        };
        Some(
            self.tenants
                .write()
                .entry(tenant.to_string())
                .or_insert_with(|| Arc::new(Mutex::new(t)))
                .clone(),
        )
    }

    /// Feeds accepted spans of `tenant`; with `accepted`, only spans of those traces count.
    /// `sizes` are the spans' encoded sizes in request order when the caller has them.
    pub fn consume(
        &self,
        tenant: &str,
        batches: &[ResourceSpans],
        sizes: Option<&[u32]>,
        accepted: Option<&HashSet<TraceId>>,
    ) {
        let Some(t) = self.tenant(tenant) else {
            return;
        };
        let now_ms = now_ms();
        let slack = self.cfg.ingestion_slack.as_nanos() as u64;
        let now_ns = (now_ms as u64).saturating_mul(1_000_000);
        let (lo, hi) = (now_ns.saturating_sub(slack), now_ns.saturating_add(slack));
        // None: not a stored span; Some(false): outside the slack; Some(true): counted.
        let verdict = |s: &Span| -> Option<bool> {
            let id = <[u8; 16]>::try_from(s.trace_id.as_slice()).ok()?;
            if s.span_id.len() != 8 || accepted.is_some_and(|a| !a.contains(&TraceId(id))) {
                return None;
            }
            Some(slack == 0 || (s.end_time_unix_nano > lo && s.end_time_unix_nano < hi))
        };
        let (mut seen, mut late) = (0u64, 0u64);
        let mut mask = Vec::new();
        for s in batches
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let v = verdict(s);
            match v {
                Some(true) => seen += 1,
                Some(false) => (seen, late) = (seen + 1, late + 1),
                None => {}
            }
            mask.push(v == Some(true));
        }
        let mut t = t.lock();
        let t = &mut *t;
        t.received += seen;
        t.out_of_slack += late;
        t.reg.set_now(Instant::now());
        if let Some(p) = &mut t.spans {
            p.consume(&mut t.reg, batches, &mask, sizes, now_ms);
        }
        if let Some(p) = &mut t.graphs {
            p.consume(&mut t.reg, batches, &mask, now_ms);
        }
    }

    /// Series of the tenants whose collection is due (all with `force`), after expiring edges
    /// and removing stale series.
    pub fn collect_due(&self, force: bool) -> Vec<(String, Vec<TimeSeries>)> {
        let now = Instant::now();
        let ts = now_ms();
        let tenants: Vec<(String, Arc<Mutex<TenantGen>>)> = self
            .tenants
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out = Vec::new();
        for (name, t) in tenants {
            let mut t = t.lock();
            let t = &mut *t;
            t.reg.set_now(now);
            if let Some(g) = &mut t.graphs {
                g.expire(&mut t.reg, now, ts);
            }
            if !force && now < t.next_collect {
                continue;
            }
            t.next_collect = now + t.interval;
            t.removed_stale += t.reg.remove_stale() as u64;
            let series = t.reg.collect(ts);
            if !series.is_empty() {
                out.push((name, series));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The generated series of `tenants` in the Prometheus text format; with several, each
    /// series has a `tenant` label (unless `inject_tenant_id_as` already names it).
    pub fn render(&self, tenants: &[String]) -> String {
        let mut picked: Vec<(String, Arc<Mutex<TenantGen>>)> = self
            .tenants
            .read()
            .iter()
            .filter(|(k, _)| tenants.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        picked.sort_by(|a, b| a.0.cmp(&b.0));
        // Several tenants' series would collide without a label telling them apart.
        let label = tenants.len() > 1 && self.cfg.registry.inject_tenant_id_as.is_none();
        let mut out = String::new();
        for (name, t) in picked {
            let extra = if label {
                vec![("tenant".to_string(), name)]
            } else {
                Vec::new()
            };
            t.lock().reg.render(&mut out, &extra);
        }
        out
    }

    /// The generator's own metrics (Tempo's names where it has them), per tenant.
    pub fn render_self_metrics(&self, out: &mut String) {
        struct Row {
            tenant: String,
            received: u64,
            late: u64,
            stale: u64,
            active: usize,
            limited: u64,
            filtered: Option<u64>,
            graphs: Option<(EdgeStats, usize)>,
        }
        let mut rows: Vec<Row> = self
            .tenants
            .read()
            .iter()
            .map(|(k, t)| {
                let t = t.lock();
                Row {
                    tenant: k.clone(),
                    received: t.received,
                    late: t.out_of_slack,
                    stale: t.removed_stale,
                    active: t.reg.active_series(),
                    limited: t.reg.limited,
                    filtered: t.spans.as_ref().map(|p| p.filtered),
                    graphs: t.graphs.as_ref().map(|g| (g.stats, g.waiting())),
                }
            })
            .collect();
        rows.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let mut family = |name: &str, ty: &str, help: &str, value: &dyn Fn(&Row) -> Option<f64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
            for r in &rows {
                if let Some(v) = value(r) {
                    let _ = writeln!(out, "{name}{{tenant=\"{}\"}} {v}", r.tenant);
                }
            }
        };
        family(
            "tempo_metrics_generator_spans_received_total",
            "counter",
            "Spans fed to the metrics generator.",
            &|r| Some(r.received as f64),
        );
        family(
            "tempo_metrics_generator_spans_discarded_total",
            "counter",
            "Spans not counted because they ended outside metrics_ingestion_time_range_slack.",
            &|r| Some(r.late as f64),
        );
        family(
            "tempo_metrics_generator_processor_span_metrics_filtered_spans_total",
            "counter",
            "Spans left out of span metrics by filter_policies.",
            &|r| r.filtered.map(|f| f as f64),
        );
        family(
            "tempo_metrics_generator_registry_active_series",
            "gauge",
            "Generated series held.",
            &|r| Some(r.active as f64),
        );
        family(
            "tempo_metrics_generator_registry_series_limited_total",
            "counter",
            "New series refused because of max_active_series.",
            &|r| Some(r.limited as f64),
        );
        family(
            "tempo_metrics_generator_registry_series_removed_total",
            "counter",
            "Series removed after stale_duration without updates.",
            &|r| Some(r.stale as f64),
        );
        family(
            "tempo_metrics_generator_processor_service_graphs_edges",
            "counter",
            "Service graph edges completed.",
            &|r| r.graphs.map(|(s, _)| s.edges as f64),
        );
        family(
            "tempo_metrics_generator_processor_service_graphs_expired_edges",
            "counter",
            "Service graph edges that expired before their other side arrived.",
            &|r| r.graphs.map(|(s, _)| s.expired as f64),
        );
        family(
            "tempo_metrics_generator_processor_service_graphs_dropped_spans",
            "counter",
            "Spans dropped because max_items edges were waiting.",
            &|r| r.graphs.map(|(s, _)| s.dropped_spans as f64),
        );
        family(
            "tempo_metrics_generator_processor_service_graphs_waiting_edges",
            "gauge",
            "Service graph edges waiting for their other side.",
            &|r| r.graphs.map(|(_, w)| w as f64),
        );
    }
}

impl SpanTap for Generator {
    fn spans(
        &self,
        tenant: &str,
        batches: &[ResourceSpans],
        sizes: &[u32],
        accepted: Option<&HashSet<TraceId>>,
    ) {
        self.consume(tenant, batches, Some(sizes), accepted);
    }
}
