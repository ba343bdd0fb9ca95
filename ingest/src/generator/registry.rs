//! A tenant's generated series: counters, classic histograms and gauges keyed by label values,
//! with Tempo's registry rules (label length limits, external labels, the tenant label, a series
//! limit, stale series removal, an initial zero before a new counter's first value).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::generator::prompb::{Exemplar, Label, Sample, TimeSeries};

/// Registry settings (`metrics_generator.registry` plus the tenant's overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryConfig {
    /// How often series are collected and sent (15s).
    pub collection_interval: Duration,
    /// Series not updated for this long are removed (15m).
    pub stale_duration: Duration,
    /// Longer label names are cut (1024); 0 = no limit.
    pub max_label_name_length: usize,
    /// Longer label values are cut (2048); 0 = no limit.
    pub max_label_value_length: usize,
    /// Labels added to every series.
    pub external_labels: Vec<(String, String)>,
    /// Label that receives the tenant ID, if any.
    pub inject_tenant_id_as: Option<String>,
    /// Most active series per tenant; 0 = no limit.
    pub max_active_series: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            collection_interval: Duration::from_secs(15),
            stale_duration: Duration::from_secs(15 * 60),
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            external_labels: Vec::new(),
            inject_tenant_id_as: None,
            max_active_series: 0,
        }
    }
}

/// What a family of series measures.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Monotonic sum.
    Counter,
    /// Classic histogram over these upper bounds (seconds), `+Inf` implied.
    Histogram(Arc<[f64]>),
    /// Last value set.
    Gauge,
}

/// A family handle returned by [`Registry::family`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyId(usize);

/// Label names of a family; one shared list for fixed families, or per series.
pub type Names = Arc<[String]>;

struct Series {
    names: Names,
    values: Box<[String]>,
    /// Counter or gauge value; histogram sum.
    value: f64,
    /// Histogram: observations per bucket (not cumulative), `+Inf` last.
    buckets: Box<[f64]>,
    count: f64,
    /// Latest exemplar per bucket since the last collection.
    exemplars: Box<[Option<Exemplar3>]>,
    updated: Instant,
    /// Not yet sent: remote write gets an initial zero first.
    fresh: bool,
}

struct Family {
    name: String,
    kind: Kind,
    names: Names,
    index: HashMap<u64, Vec<usize>, foldhash::fast::FixedState>,
    series: Vec<Option<Series>>,
    free: Vec<usize>,
}

/// One tenant's series.
pub struct Registry {
    tenant: String,
    cfg: RegistryConfig,
    families: Vec<Family>,
    active: usize,
    /// The time updates are stamped with; set once per batch (a clock read per update costs
    /// more than the update).
    now: Instant,
    /// New series refused because of `max_active_series`.
    pub limited: u64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tenant", &self.tenant)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary (0 = no limit).
fn cut(s: &str, max: usize) -> &str {
    if max == 0 || s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn hash_values(names: &Names, values: &[&str], dynamic: bool) -> u64 {
    let mut h = foldhash::fast::FixedState::default().build_hasher();
    if dynamic {
        names.hash(&mut h);
    }
    values.hash(&mut h);
    h.finish()
}

impl Registry {
    /// An empty registry for `tenant`.
    pub fn new(tenant: &str, cfg: RegistryConfig) -> Self {
        Self {
            tenant: tenant.to_string(),
            cfg,
            families: Vec::new(),
            active: 0,
            now: Instant::now(),
            limited: 0,
        }
    }

    /// Sets the time the following updates are stamped with (for staleness).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The settings.
    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// Series currently held.
    pub fn active_series(&self) -> usize {
        self.active
    }

    /// Declares a family; `label_names` are the fixed label names of its series (empty for a
    /// family whose series bring their own, see [`Registry::set_dynamic`]).
    pub fn family(&mut self, name: &str, kind: Kind, label_names: &[String]) -> FamilyId {
        let max = self.cfg.max_label_name_length;
        let names: Names = label_names
            .iter()
            .map(|n| cut(n, max).to_string())
            .collect();
        self.families.push(Family {
            name: name.to_string(),
            kind,
            names,
            index: HashMap::default(),
            series: Vec::new(),
            free: Vec::new(),
        });
        FamilyId(self.families.len() - 1)
    }

    /// The label names of a family, as cut to the name length limit.
    pub fn names(&self, f: FamilyId) -> &Names {
        &self.families[f.0].names
    }

    fn slot(&mut self, f: FamilyId, names: Option<&Names>, values: &[&str]) -> Option<usize> {
        let max_value = self.cfg.max_label_value_length;
        let limit = self.cfg.max_active_series;
        let fam = &mut self.families[f.0];
        let names = names.unwrap_or(&fam.names);
        let dynamic = !Arc::ptr_eq(names, &fam.names);
        let cut_values: Vec<&str>;
        let values = if max_value > 0 && values.iter().any(|v| v.len() > max_value) {
            cut_values = values.iter().map(|v| cut(v, max_value)).collect();
            &cut_values[..]
        } else {
            values
        };
        let h = hash_values(names, values, dynamic);
        if let Some(ids) = fam.index.get(&h) {
            for &i in ids {
                if let Some(s) = &fam.series[i]
                    && s.values.len() == values.len()
                    && s.values.iter().zip(values).all(|(a, b)| a == b)
                    && (Arc::ptr_eq(&s.names, names) || s.names == *names)
                {
                    return Some(i);
                }
            }
        }
        if limit > 0 && self.active >= limit {
            self.limited += 1;
            return None;
        }
        let buckets = match &fam.kind {
            Kind::Histogram(b) => b.len() + 1,
            _ => 0,
        };
        let s = Series {
            names: names.clone(),
            values: values.iter().map(|v| v.to_string()).collect(),
            value: 0.0,
            buckets: vec![0.0; buckets].into(),
            count: 0.0,
            exemplars: vec![None; buckets].into(),
            updated: self.now,
            fresh: true,
        };
        let i = match fam.free.pop() {
            Some(i) => {
                fam.series[i] = Some(s);
                i
            }
            None => {
                fam.series.push(Some(s));
                fam.series.len() - 1
            }
        };
        fam.index.entry(h).or_default().push(i);
        self.active += 1;
        Some(i)
    }

    fn series(&mut self, f: FamilyId, i: usize) -> Option<&mut Series> {
        let s = self.families[f.0].series[i].as_mut()?;
        s.updated = self.now;
        Some(s)
    }

    /// Adds `by` to a counter.
    pub fn inc(&mut self, f: FamilyId, values: &[&str], by: f64) {
        if let Some(i) = self.slot(f, None, values)
            && let Some(s) = self.series(f, i)
        {
            s.value += by;
        }
    }

    /// Sets a gauge.
    pub fn set(&mut self, f: FamilyId, values: &[&str], v: f64) {
        if let Some(i) = self.slot(f, None, values)
            && let Some(s) = self.series(f, i)
        {
            s.value = v;
        }
    }

    /// Sets a gauge of a family whose series bring their own label names.
    pub fn set_dynamic(&mut self, f: FamilyId, names: &Names, values: &[&str], v: f64) {
        if let Some(i) = self.slot(f, Some(names), values)
            && let Some(s) = self.series(f, i)
        {
            s.value = v;
        }
    }

    /// Adds observations gathered for one series of a histogram; their exemplars (stamped
    /// `ms`) replace the buckets' previous ones.
    pub fn observe_all(&mut self, f: FamilyId, values: &[&str], o: &Observations, ms: i64) {
        let Some(i) = self.slot(f, None, values) else {
            return;
        };
        if let Some(s) = self.series(f, i)
            && s.buckets.len() == o.buckets.len()
        {
            for (b, n) in s.buckets.iter_mut().zip(&o.buckets) {
                *b += n;
            }
            s.value += o.sum;
            s.count += o.count;
            for (e, x) in s.exemplars.iter_mut().zip(&o.exemplars) {
                if let Some((id, v)) = x {
                    *e = Some((*id, *v, ms));
                }
            }
        }
    }

    /// Removes series not updated within the stale duration; returns how many.
    pub fn remove_stale(&mut self) -> usize {
        let stale = self.cfg.stale_duration;
        let now = Instant::now();
        let mut removed = 0;
        for fam in &mut self.families {
            let Family {
                index,
                series,
                free,
                ..
            } = fam;
            index.retain(|_, ids| {
                ids.retain(|&i| {
                    let gone = series[i]
                        .as_ref()
                        .is_none_or(|s| now.saturating_duration_since(s.updated) >= stale);
                    if gone && series[i].take().is_some() {
                        free.push(i);
                        removed += 1;
                    }
                    !gone
                });
                !ids.is_empty()
            });
        }
        self.active -= removed;
        removed
    }

    fn common_labels(&self) -> Vec<(String, String)> {
        let mut l = self.cfg.external_labels.clone();
        if let Some(name) = &self.cfg.inject_tenant_id_as {
            l.retain(|(n, _)| n != name);
            l.push((name.clone(), self.tenant.clone()));
        }
        l
    }

    /// Every series as remote-write time series at `ts_ms`: counters and histograms seen for the
    /// first time get an initial zero at the end of the previous minute (as Tempo does) so
    /// `rate()` counts their first increase; exemplars are handed out once.
    pub fn collect(&mut self, ts_ms: i64) -> Vec<TimeSeries> {
        let common = self.common_labels();
        let zero_ts = ts_ms - ts_ms.rem_euclid(60_000) - 1;
        let mut out = Vec::new();
        for fam in &mut self.families {
            let counter_like = !matches!(fam.kind, Kind::Gauge);
            for s in fam.series.iter_mut().flatten() {
                let initial = counter_like && std::mem::replace(&mut s.fresh, false);
                visit(&fam.name, &fam.kind, s, &common, |name, labels, v, ex| {
                    let mut samples = Vec::with_capacity(2);
                    if initial {
                        samples.push(Sample {
                            value: 0.0,
                            timestamp: zero_ts,
                        });
                    }
                    samples.push(Sample {
                        value: v,
                        timestamp: ts_ms,
                    });
                    out.push(TimeSeries {
                        labels: to_labels(name, labels),
                        samples,
                        exemplars: ex
                            .map(|(t, v, ts)| Exemplar {
                                labels: vec![Label {
                                    name: "traceID".into(),
                                    value: hex::encode(t),
                                }],
                                value: *v,
                                timestamp: *ts,
                            })
                            .into_iter()
                            .collect(),
                    });
                });
                s.exemplars.iter_mut().for_each(|e| *e = None);
            }
        }
        out
    }

    /// Renders the series in the Prometheus text format, with `extra` labels on each.
    pub fn render(&self, out: &mut String, extra: &[(String, String)]) {
        use std::fmt::Write as _;
        let mut common = self.common_labels();
        common.extend(extra.iter().cloned());
        for fam in &self.families {
            if fam.series.iter().all(Option::is_none) {
                continue;
            }
            let ty = match fam.kind {
                Kind::Counter => "counter",
                Kind::Histogram(_) => "histogram",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# TYPE {} {ty}", fam.name);
            for s in fam.series.iter().flatten() {
                visit(&fam.name, &fam.kind, s, &common, |name, labels, v, _| {
                    out.push_str(name);
                    let mut first = true;
                    for (n, v) in labels {
                        out.push(if first { '{' } else { ',' });
                        first = false;
                        let _ = write!(out, "{n}=\"{}\"", escape(v));
                    }
                    if !first {
                        out.push('}');
                    }
                    let _ = writeln!(out, " {}", format_value(v));
                });
            }
        }
    }
}

/// Observations of one histogram series, gathered over a batch of spans before they reach the
/// registry (one series lookup per batch instead of one per span).
#[derive(Debug, Clone, PartialEq)]
pub struct Observations {
    /// Weight per bucket (not cumulative), `+Inf` last.
    pub buckets: Vec<f64>,
    /// Sum of value × weight.
    pub sum: f64,
    /// Sum of weights.
    pub count: f64,
    /// Latest trace ID and value per bucket.
    pub exemplars: Vec<Option<([u8; 16], f64)>>,
}

impl Observations {
    /// Nothing observed yet, for `bounds.len()` bounds.
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            buckets: vec![0.0; bounds.len() + 1],
            sum: 0.0,
            count: 0.0,
            exemplars: vec![None; bounds.len() + 1],
        }
    }

    /// Observes `v` with weight `n`; `trace` becomes the bucket's exemplar.
    pub fn add(&mut self, bounds: &[f64], v: f64, n: f64, trace: Option<&[u8]>) {
        let b = bounds.partition_point(|&le| le < v);
        self.buckets[b] += n;
        self.sum += v * n;
        self.count += n;
        if let Some(id) = trace.and_then(|t| <[u8; 16]>::try_from(t).ok()) {
            self.exemplars[b] = Some((id, v));
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Trace ID, value, time in ms.
type Exemplar3 = ([u8; 16], f64, i64);

/// Calls `emit(metric name, labels, value, exemplar)` for each sample of a series; empty label
/// values are left out, as Prometheus treats them as absent.
fn visit(
    name: &str,
    kind: &Kind,
    s: &Series,
    common: &[(String, String)],
    mut emit: impl FnMut(&str, &[(&str, &str)], f64, Option<&Exemplar3>),
) {
    let mut labels: Vec<(&str, &str)> = s
        .names
        .iter()
        .zip(s.values.iter())
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    for (n, v) in common {
        if !v.is_empty() && !labels.iter().any(|(m, _)| m == n) {
            labels.push((n, v));
        }
    }
    match kind {
        Kind::Counter | Kind::Gauge => emit(name, &labels, s.value, None),
        Kind::Histogram(bounds) => {
            let bucket = format!("{name}_bucket");
            let les: Vec<String> = bounds
                .iter()
                .map(|b| format_value(*b))
                .chain(["+Inf".to_string()])
                .collect();
            let mut cumulative = 0.0;
            for (i, le) in les.iter().enumerate() {
                cumulative += s.buckets[i];
                let mut l = labels.clone();
                l.push(("le", le));
                emit(&bucket, &l, cumulative, s.exemplars[i].as_ref());
            }
            emit(&format!("{name}_sum"), &labels, s.value, None);
            emit(&format!("{name}_count"), &labels, s.count, None);
        }
    }
}

fn to_labels(name: &str, labels: &[(&str, &str)]) -> Vec<Label> {
    let mut l: Vec<Label> = labels
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    l.push(Label {
        name: "__name__".into(),
        value: name.to_string(),
    });
    l.sort_by(|a, b| a.name.cmp(&b.name));
    l
}

/// A float as Prometheus prints it (`1`, `0.002`, `+Inf`).
pub fn format_value(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A Prometheus label name for an attribute: characters outside `[a-zA-Z0-9_]` become `_`, and
/// a leading digit gets a `_` prefix.
pub fn sanitize_label_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn find<'a>(ts: &'a [TimeSeries], name: &str, label: (&str, &str)) -> &'a TimeSeries {
        ts.iter()
            .find(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == name)
                    && t.labels
                        .iter()
                        .any(|l| l.name == label.0 && l.value == label.1)
            })
            .unwrap_or_else(|| panic!("no {name} with {label:?}"))
    }

    #[test]
    fn counters_histograms_and_initial_zero() {
        let mut r = Registry::new("t1", RegistryConfig::default());
        let c = r.family("calls_total", Kind::Counter, &names(&["service"]));
        let h = r.family(
            "latency",
            Kind::Histogram(vec![0.1, 0.2].into()),
            &names(&["service"]),
        );
        r.inc(c, &["a"], 2.0);
        r.inc(c, &["a"], 1.0);
        r.inc(c, &["b"], 5.0);
        let mut o = Observations::new(&[0.1, 0.2]);
        o.add(&[0.1, 0.2], 0.1, 1.0, Some(&[0xab; 16])); // le=0.1 is inclusive
        o.add(&[0.1, 0.2], 0.15, 2.0, None);
        r.observe_all(h, &["a"], &o, 7);
        let mut o = Observations::new(&[0.1, 0.2]);
        o.add(&[0.1, 0.2], 7.0, 1.0, None);
        r.observe_all(h, &["a"], &o, 8);
        let ts = r.collect(120_500);
        let a = find(&ts, "calls_total", ("service", "a"));
        assert_eq!(
            a.samples,
            vec![
                Sample {
                    value: 0.0,
                    timestamp: 119_999
                },
                Sample {
                    value: 3.0,
                    timestamp: 120_500
                }
            ]
        );
        let b01 = find(&ts, "latency_bucket", ("le", "0.1"));
        assert_eq!(b01.samples[1].value, 1.0);
        assert_eq!(b01.exemplars.len(), 1);
        assert_eq!(b01.exemplars[0].labels[0].value, "ab".repeat(16));
        assert_eq!(
            (b01.exemplars[0].value, b01.exemplars[0].timestamp),
            (0.1, 7)
        );
        assert_eq!(
            find(&ts, "latency_bucket", ("le", "0.2")).samples[1].value,
            3.0
        );
        assert_eq!(
            find(&ts, "latency_bucket", ("le", "+Inf")).samples[1].value,
            4.0
        );
        assert_eq!(
            find(&ts, "latency_count", ("service", "a")).samples[1].value,
            4.0
        );
        assert!((find(&ts, "latency_sum", ("service", "a")).samples[1].value - 7.4).abs() < 1e-9);
        // Second collection: no initial zero, exemplars already handed out.
        let ts = r.collect(135_500);
        assert_eq!(find(&ts, "calls_total", ("service", "a")).samples.len(), 1);
        assert!(
            find(&ts, "latency_bucket", ("le", "0.1"))
                .exemplars
                .is_empty()
        );
        // Labels are sorted by name, __name__ included.
        let l: Vec<&str> = ts[0].labels.iter().map(|l| l.name.as_str()).collect();
        let mut sorted = l.clone();
        sorted.sort();
        assert_eq!(l, sorted);
    }

    #[test]
    fn limits_truncation_external_and_tenant_labels() {
        let cfg = RegistryConfig {
            max_label_name_length: 3,
            max_label_value_length: 4,
            external_labels: vec![("cluster".into(), "eu".into())],
            inject_tenant_id_as: Some("tenant".into()),
            max_active_series: 2,
            ..Default::default()
        };
        let mut r = Registry::new("acme", cfg);
        let c = r.family("x_total", Kind::Counter, &names(&["service"]));
        r.inc(c, &["abcdefg"], 1.0);
        r.inc(c, &["abcdxyz"], 1.0); // same series once cut
        r.inc(c, &[""], 1.0);
        r.inc(c, &["third"], 1.0); // over the limit
        assert_eq!(r.active_series(), 2);
        assert_eq!(r.limited, 1);
        let mut text = String::new();
        r.render(&mut text, &[]);
        assert!(
            text.contains("x_total{ser=\"abcd\",cluster=\"eu\",tenant=\"acme\"} 2"),
            "{text}"
        );
        // An empty value is no label at all.
        assert!(
            text.contains("x_total{cluster=\"eu\",tenant=\"acme\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn stale_series_are_removed_and_slots_reused() {
        let cfg = RegistryConfig {
            stale_duration: Duration::from_millis(30),
            ..Default::default()
        };
        let mut r = Registry::new("t", cfg);
        let c = r.family("x_total", Kind::Counter, &names(&["k"]));
        r.inc(c, &["old"], 1.0);
        std::thread::sleep(Duration::from_millis(40));
        r.set_now(Instant::now());
        r.inc(c, &["new"], 1.0);
        assert_eq!(r.remove_stale(), 1);
        assert_eq!(r.active_series(), 1);
        r.inc(c, &["old"], 1.0);
        let ts = r.collect(0);
        assert_eq!(ts.len(), 2);
        // A returning series starts again from zero.
        assert_eq!(find(&ts, "x_total", ("k", "old")).samples[1].value, 1.0);
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(sanitize_label_name("http.method"), "http_method");
        assert_eq!(sanitize_label_name("k8s-pod/name"), "k8s_pod_name");
        assert_eq!(sanitize_label_name("2xx"), "_2xx");
    }
}
