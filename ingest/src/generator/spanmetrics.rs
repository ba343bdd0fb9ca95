//! The span-metrics processor: RED metrics per service, span name, kind and status (Tempo's
//! `spanmetrics`), with Tempo's names, labels and defaults.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

use std::borrow::Cow;
use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use crate::generator::attrs::{find, find_str, find_string, kind_label, status_label, stringify};
use crate::generator::filter::{FilterPolicy, keep};
use crate::generator::registry::{
    FamilyId, Kind, Names, Observations, Registry, sanitize_label_name,
};
use crate::generator::{Parts, multiplier};

/// Which intrinsic labels span metrics carry.
#[derive(Debug, Clone, PartialEq)]
pub struct IntrinsicDimensions {
    /// `service`.
    pub service: bool,
    /// `span_name`.
    pub span_name: bool,
    /// `span_kind`.
    pub span_kind: bool,
    /// `status_code`.
    pub status_code: bool,
    /// `status_message` (off by default).
    pub status_message: bool,
}

impl Default for IntrinsicDimensions {
    fn default() -> Self {
        Self {
            service: true,
            span_name: true,
            span_kind: true,
            status_code: true,
            status_message: false,
        }
    }
}

/// A label built from several attributes (`dimension_mappings`).
#[derive(Debug, Clone, PartialEq)]
pub struct DimensionMapping {
    /// Label name (sanitised).
    pub name: String,
    /// Attributes whose values are joined.
    pub source_labels: Vec<String>,
    /// Separator.
    pub join: String,
}

/// `metrics_generator.processor.span_metrics`.
#[derive(Debug, Clone)]
pub struct SpanMetricsConfig {
    /// Latency histogram bounds in seconds.
    pub histogram_buckets: Vec<f64>,
    /// Intrinsic labels.
    pub intrinsic_dimensions: IntrinsicDimensions,
    /// Extra labels from attributes (resource first, then span).
    pub dimensions: Vec<String>,
    /// Labels joined from several attributes.
    pub dimension_mappings: Vec<DimensionMapping>,
    /// Emit `traces_target_info` and the `job`/`instance` labels.
    pub enable_target_info: bool,
    /// `instance` label with target info (default true).
    pub enable_instance_label: bool,
    /// Resource attributes left out of `traces_target_info`.
    pub target_info_excluded_dimensions: Vec<String>,
    /// Which spans count.
    pub filter_policies: Vec<FilterPolicy>,
    /// Attribute whose numeric value multiplies counts (sampled pipelines).
    pub span_multiplier_key: Option<String>,
}

/// Tempo's default latency buckets: 0.002 s doubling 14 times, to 16.384 s.
pub fn default_latency_buckets() -> Vec<f64> {
    (0..14).map(|i| 0.002 * f64::from(1u32 << i)).collect()
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        Self {
            histogram_buckets: default_latency_buckets(),
            intrinsic_dimensions: IntrinsicDimensions::default(),
            dimensions: Vec::new(),
            dimension_mappings: Vec::new(),
            enable_target_info: false,
            enable_instance_label: true,
            target_info_excluded_dimensions: Vec::new(),
            filter_policies: Vec::new(),
            span_multiplier_key: None,
        }
    }
}

/// The span-metrics processor of one tenant.
#[derive(Debug)]
pub struct SpanMetrics {
    cfg: Arc<SpanMetricsConfig>,
    calls: Option<FamilyId>,
    latency: Option<FamilyId>,
    size: Option<FamilyId>,
    target_info: Option<FamilyId>,
    /// Spans left out by `filter_policies`.
    pub filtered: u64,
}

/// An attribute value as a label value, borrowed when it is a string (the common case).
fn label_value(v: Option<&AnyValue>) -> Cow<'_, str> {
    match v {
        Some(AnyValue {
            value: Some(Value::StringValue(s)),
        }) => Cow::Borrowed(s),
        Some(v) => Cow::Owned(stringify(v).unwrap_or_default()),
        None => Cow::Borrowed(""),
    }
}

/// Label names of the intrinsics, in Tempo's order.
const INTRINSICS: [&str; 5] = [
    "service",
    "span_name",
    "span_kind",
    "status_code",
    "status_message",
];

impl SpanMetrics {
    /// Declares the families the enabled parts (`calls`, `latency`, `size`) write.
    pub fn new(cfg: Arc<SpanMetricsConfig>, reg: &mut Registry, parts: Parts) -> Self {
        let i = &cfg.intrinsic_dimensions;
        let on = [
            i.service,
            i.span_name,
            i.span_kind,
            i.status_code,
            i.status_message,
        ];
        let mut names: Vec<String> = INTRINSICS
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.to_string())
            .collect();
        for d in &cfg.dimensions {
            let mut n = sanitize_label_name(d);
            if INTRINSICS.contains(&n.as_str()) {
                n.insert_str(0, "__");
            }
            names.push(n);
        }
        names.extend(
            cfg.dimension_mappings
                .iter()
                .map(|m| sanitize_label_name(&m.name)),
        );
        if cfg.enable_target_info {
            names.push("job".into());
            if cfg.enable_instance_label {
                names.push("instance".into());
            }
        }
        let buckets: Arc<[f64]> = cfg.histogram_buckets.clone().into();
        let mut fam = |on: bool, name: &str, kind: Kind, names: &[String]| {
            on.then(|| reg.family(name, kind, names))
        };
        Self {
            calls: fam(
                parts.count,
                "traces_spanmetrics_calls_total",
                Kind::Counter,
                &names,
            ),
            latency: fam(
                parts.latency,
                "traces_spanmetrics_latency",
                Kind::Histogram(buckets),
                &names,
            ),
            size: fam(
                parts.size,
                "traces_spanmetrics_size_total",
                Kind::Counter,
                &names,
            ),
            target_info: fam(
                cfg.enable_target_info,
                "traces_target_info",
                Kind::Gauge,
                &[],
            ),
            cfg,
            filtered: 0,
        }
    }

    /// Counts the spans of a request whose `mask` entry (one per span, in order) is set;
    /// `sizes`, when given, are their encoded sizes in the same order. Spans are first summed
    /// per label set, then each label set updates the registry once.
    pub fn consume(
        &mut self,
        reg: &mut Registry,
        batches: &[ResourceSpans],
        mask: &[bool],
        sizes: Option<&[u32]>,
        now_ms: i64,
    ) {
        #[derive(Default)]
        struct Acc {
            calls: f64,
            size: f64,
            latency: Option<Observations>,
        }
        let cfg = self.cfg.clone();
        let i = &cfg.intrinsic_dimensions;
        // The latency family was declared with these bounds.
        let bounds: &[f64] = &cfg.histogram_buckets;
        let mut acc: HashMap<Vec<Cow<str>>, Acc, foldhash::fast::RandomState> = HashMap::default();
        let mut key: Vec<Cow<str>> = Vec::new();
        let mut m = mask.iter();
        let mut position = 0usize;
        for rs in batches {
            let resource: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
            let service = find_str("service.name", resource).unwrap_or("");
            let (job, instance) = if cfg.enable_target_info {
                let job = match find_str("service.namespace", resource) {
                    Some(ns) if !service.is_empty() => format!("{ns}/{service}"),
                    _ => service.to_string(),
                };
                let instance = find_string("service.instance.id", &[resource]).unwrap_or_default();
                self.target_info(reg, resource, &job, &instance);
                (job, instance)
            } else {
                Default::default()
            };
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let at = position;
                position += 1;
                if !m.next().copied().unwrap_or(false) {
                    continue;
                }
                if !keep(&cfg.filter_policies, resource, span) {
                    self.filtered += 1;
                    continue;
                }
                let lists: [&[KeyValue]; 2] = [resource, &span.attributes];
                let status = span.status.as_ref();
                key.clear();
                if i.service {
                    key.push(Cow::Borrowed(service));
                }
                if i.span_name {
                    key.push(Cow::Borrowed(&span.name));
                }
                if i.span_kind {
                    key.push(Cow::Borrowed(kind_label(span.kind)));
                }
                if i.status_code {
                    key.push(Cow::Borrowed(status_label(status.map_or(0, |s| s.code))));
                }
                if i.status_message {
                    key.push(Cow::Borrowed(status.map_or("", |s| s.message.as_str())));
                }
                for d in &cfg.dimensions {
                    key.push(label_value(find(d, &lists)));
                }
                for m in &cfg.dimension_mappings {
                    let joined: Vec<Cow<str>> = m
                        .source_labels
                        .iter()
                        .filter_map(|l| find(l, &lists))
                        .map(|v| label_value(Some(v)))
                        .collect();
                    key.push(Cow::Owned(joined.join(&m.join)));
                }
                if cfg.enable_target_info {
                    key.push(Cow::Owned(job.clone()));
                    if cfg.enable_instance_label {
                        key.push(Cow::Owned(instance.clone()));
                    }
                }
                let a = match acc.get_mut(key.as_slice()) {
                    Some(a) => a,
                    None => acc.entry(key.clone()).or_default(),
                };
                let n = multiplier(cfg.span_multiplier_key.as_deref(), resource, span);
                a.calls += n;
                if self.latency.is_some() {
                    let secs = span
                        .end_time_unix_nano
                        .saturating_sub(span.start_time_unix_nano)
                        as f64
                        / 1e9;
                    a.latency
                        .get_or_insert_with(|| Observations::new(bounds))
                        .add(bounds, secs, n, Some(&span.trace_id));
                }
                if self.size.is_some() {
                    let size = sizes
                        .and_then(|s| s.get(at))
                        .map_or_else(|| span.encoded_len() as f64, |s| f64::from(*s));
                    a.size += size * n;
                }
            }
        }
        for (key, a) in acc {
            let values: Vec<&str> = key.iter().map(|v| v.as_ref()).collect();
            if let Some(f) = self.calls {
                reg.inc(f, &values, a.calls);
            }
            if let (Some(f), Some(o)) = (self.latency, &a.latency) {
                reg.observe_all(f, &values, o, now_ms);
            }
            if let Some(f) = self.size {
                reg.inc(f, &values, a.size);
            }
        }
    }

    fn target_info(&self, reg: &mut Registry, resource: &[KeyValue], job: &str, instance: &str) {
        let Some(f) = self.target_info else {
            return;
        };
        let skip = ["service.name", "service.namespace", "service.instance.id"];
        let mut pairs: Vec<(String, String)> = resource
            .iter()
            .filter(|kv| {
                !skip.contains(&kv.key.as_str())
                    && !self.cfg.target_info_excluded_dimensions.contains(&kv.key)
            })
            .filter_map(|kv| {
                let v = crate::generator::attrs::stringify(kv.value.as_ref()?)?;
                Some((sanitize_label_name(&kv.key), v))
            })
            .collect();
        // Like Tempo, a resource with nothing but its identity has no target info.
        if pairs.is_empty() {
            return;
        }
        pairs.push(("job".into(), job.to_string()));
        if self.cfg.enable_instance_label {
            pairs.push(("instance".into(), instance.to_string()));
        }
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        let names: Names = pairs.iter().map(|(n, _)| n.clone()).collect();
        let values: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
        reg.set_dynamic(f, &names, &values, 1.0);
    }
}
