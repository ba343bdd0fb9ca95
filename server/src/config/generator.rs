//! `metrics_generator:` — Tempo's keys, with Allegro's rules: an empty block means its
//! defaults, never zeros (Tempo zeroes `registry:` and panics on the zero interval), and every
//! setting that would silently produce nothing is refused at start with the key and the fix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use allegro_ingest::generator::filter::{
    AttrMatch, Expected, FilterPolicy, Key as FilterKey, PolicyMatch,
};
use allegro_ingest::generator::registry::RegistryConfig;
use allegro_ingest::generator::remote_write::{Endpoint, RemoteWriteConfig};
use allegro_ingest::generator::servicegraphs::ServiceGraphsConfig;
use allegro_ingest::generator::spanmetrics::{
    DimensionMapping, IntrinsicDimensions, SpanMetricsConfig,
};
use allegro_ingest::generator::{GeneratorConfig, Processors, TenantSettings};
use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, go_duration, null_default};

/// `metrics_generator:`; present (even empty) = the generator runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorSection {
    /// Tempo's hash ring; one process needs none (accepted and ignored).
    pub ring: Option<serde_yaml::Value>,
    /// `registry:`.
    #[serde(deserialize_with = "null_default")]
    pub registry: RegistrySection,
    /// `storage:` (queue path and remote write).
    #[serde(deserialize_with = "null_default")]
    pub storage: GeneratorStorage,
    /// `processor:` settings.
    #[serde(deserialize_with = "null_default")]
    pub processor: ProcessorSection,
    /// Spans ending further than this from now are not counted (30s).
    #[serde(deserialize_with = "go_duration")]
    pub metrics_ingestion_time_range_slack: Option<Duration>,
    /// Tempo's store of recent traces for its local-blocks processor; Allegro's TraceQL
    /// metrics read the live head and the blocks, so it is accepted with a warning.
    pub traces_storage: Option<serde_yaml::Value>,
}

/// `metrics_generator.registry:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// 15s.
    #[serde(deserialize_with = "go_duration")]
    pub collection_interval: Option<Duration>,
    /// 15m.
    #[serde(deserialize_with = "go_duration")]
    pub stale_duration: Option<Duration>,
    /// 1024; ≤ 0 = no truncation.
    pub max_label_name_length: Option<i64>,
    /// 2048; ≤ 0 = no truncation.
    pub max_label_value_length: Option<i64>,
    /// Labels on every series.
    #[serde(deserialize_with = "null_default")]
    pub external_labels: BTreeMap<String, String>,
    /// Label receiving the tenant ID.
    pub inject_tenant_id_as: Option<String>,
}

/// `metrics_generator.storage:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorStorage {
    /// Directory of the remote-write queue.
    pub path: Option<PathBuf>,
    /// Tempo's Prometheus-agent WAL options (accepted and ignored: the queue replaces it).
    pub wal: Option<serde_yaml::Value>,
    /// Receivers.
    #[serde(deserialize_with = "null_default")]
    pub remote_write: Vec<RemoteWriteEntry>,
    /// How long shutdown keeps sending (1m).
    #[serde(deserialize_with = "go_duration")]
    pub remote_write_flush_deadline: Option<Duration>,
    /// `X-Scope-OrgID` on remote write (default true).
    pub remote_write_add_org_id_header: Option<bool>,
    /// Bound of each endpoint's on-disk queue in bytes (512 MiB).
    pub max_queue_bytes: Option<u64>,
}

/// One `remote_write:` entry (Prometheus's `RemoteWriteConfig` keys that apply).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteWriteEntry {
    /// Required.
    pub url: Option<String>,
    /// Name in logs and metrics.
    pub name: Option<String>,
    /// Send exemplars.
    pub send_exemplars: bool,
    /// Extra headers.
    #[serde(deserialize_with = "null_default")]
    pub headers: BTreeMap<String, String>,
    /// Request timeout (30s).
    #[serde(deserialize_with = "go_duration")]
    pub remote_timeout: Option<Duration>,
}

/// `metrics_generator.processor:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorSection {
    /// `span_metrics:`.
    #[serde(deserialize_with = "null_default")]
    pub span_metrics: SpanMetricsSection,
    /// `service_graphs:`.
    #[serde(deserialize_with = "null_default")]
    pub service_graphs: ServiceGraphsSection,
    /// `local_blocks:` (Tempo 2.x; the live head and recent blocks play this part).
    pub local_blocks: Option<serde_yaml::Value>,
}

/// `metrics_generator.processor.span_metrics:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsSection {
    /// Latency buckets in seconds.
    pub histogram_buckets: Option<Vec<f64>>,
    /// Which intrinsic labels.
    #[serde(deserialize_with = "null_default")]
    pub intrinsic_dimensions: IntrinsicSection,
    /// Extra labels.
    #[serde(deserialize_with = "null_default")]
    pub dimensions: Vec<String>,
    /// Joined labels.
    #[serde(deserialize_with = "null_default")]
    pub dimension_mappings: Vec<MappingSection>,
    /// `traces_target_info`.
    pub enable_target_info: bool,
    /// `instance` label (default true).
    pub enable_instance_label: Option<bool>,
    /// Left out of target info.
    #[serde(deserialize_with = "null_default")]
    pub target_info_excluded_dimensions: Vec<String>,
    /// Span filters.
    #[serde(deserialize_with = "null_default")]
    pub filter_policies: Vec<PolicySection>,
    /// Multiplier attribute.
    pub span_multiplier_key: Option<String>,
    /// Only classic histograms are produced.
    pub histogram_type: Option<String>,
}

/// `intrinsic_dimensions:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntrinsicSection {
    /// `service`.
    pub service: Option<bool>,
    /// `span_name`.
    pub span_name: Option<bool>,
    /// `span_kind`.
    pub span_kind: Option<bool>,
    /// `status_code`.
    pub status_code: Option<bool>,
    /// `status_message`.
    pub status_message: Option<bool>,
}

/// One `dimension_mappings:` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingSection {
    /// Label name.
    pub name: String,
    /// Attributes joined.
    #[serde(deserialize_with = "null_default")]
    pub source_labels: Vec<String>,
    /// Separator.
    pub join: String,
}

/// One `filter_policies:` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// All must match.
    pub include: Option<MatchSection>,
    /// One must match.
    pub include_any: Option<MatchSection>,
    /// Dropped when all match.
    pub exclude: Option<MatchSection>,
}

/// `include:` / `exclude:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchSection {
    /// `strict` (default) or `regex`.
    pub match_type: Option<String>,
    /// `{key, value}` pairs.
    #[serde(deserialize_with = "null_default")]
    pub attributes: Vec<AttributeSection>,
}

/// `{key, value}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttributeSection {
    /// `span.x`, `resource.x`, `name`, `kind`, `status`.
    pub key: String,
    /// Expected value.
    pub value: serde_yaml::Value,
}

/// `metrics_generator.processor.service_graphs:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceGraphsSection {
    /// 10s.
    #[serde(deserialize_with = "go_duration")]
    pub wait: Option<Duration>,
    /// 10000.
    pub max_items: Option<usize>,
    /// Tempo's worker count (accepted; pairing runs on the ingest path).
    pub workers: Option<usize>,
    /// Latency buckets.
    pub histogram_buckets: Option<Vec<f64>>,
    /// Extra labels.
    #[serde(deserialize_with = "null_default")]
    pub dimensions: Vec<String>,
    /// `client_`/`server_` prefixes.
    pub enable_client_server_prefix: bool,
    /// Messaging latency histogram.
    pub enable_messaging_system_latency_histogram: bool,
    /// `virtual_node` label.
    pub enable_virtual_node_label: bool,
    /// Peer attributes.
    pub peer_attributes: Option<Vec<String>>,
    /// Database name attributes.
    pub database_name_attributes: Option<Vec<String>>,
    /// Multiplier attribute.
    pub span_multiplier_key: Option<String>,
    /// Only classic histograms are produced.
    pub histogram_type: Option<String>,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Shortest and longest collection interval: below 1s every series is resent constantly;
/// above 5m Prometheus marks series stale between samples (its 5m lookback), so instant
/// queries and the service graph see nothing.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const MAX_INTERVAL: Duration = Duration::from_secs(300);

fn check_interval(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(invalid(
            key,
            "must be positive, e.g. 15s (leave it out, or leave registry: empty, for the 15s default)",
        ));
    }
    if d < MIN_INTERVAL {
        return Err(invalid(
            key,
            format!("{d:?} is too short; use at least 1s (default 15s)"),
        ));
    }
    if d > MAX_INTERVAL {
        return Err(invalid(
            key,
            format!(
                "{d:?} is longer than Prometheus's 5m staleness window, so series would vanish between samples; use 15s to 5m"
            ),
        ));
    }
    Ok(())
}

fn buckets(key: &str, b: &Option<Vec<f64>>, default: Vec<f64>) -> Result<Vec<f64>, ConfigError> {
    let Some(b) = b else { return Ok(default) };
    if b.is_empty() {
        return Err(invalid(key, "needs at least one bucket bound (in seconds)"));
    }
    if b.iter().any(|v| !v.is_finite()) || b.windows(2).any(|w| w[0] >= w[1]) {
        return Err(invalid(
            key,
            "bounds must be finite and strictly increasing, e.g. [0.1, 0.2, 0.4]",
        ));
    }
    Ok(b.clone())
}

fn histogram_type(key: &str, t: &Option<String>) -> Result<(), ConfigError> {
    match t.as_deref() {
        None | Some("classic") => Ok(()),
        Some(other) => Err(invalid(
            key,
            format!(
                "{other:?} is not supported; Allegro produces classic histograms (\"classic\")"
            ),
        )),
    }
}

fn policies(key: &str, p: &[PolicySection]) -> Result<Vec<FilterPolicy>, ConfigError> {
    let side = |k: &str, m: &Option<MatchSection>| -> Result<Option<PolicyMatch>, ConfigError> {
        let Some(m) = m else { return Ok(None) };
        let regex = match m.match_type.as_deref() {
            None | Some("strict") => false,
            Some("regex") => true,
            Some(other) => {
                return Err(invalid(
                    format!("{k}.match_type"),
                    format!("{other:?} is not strict or regex"),
                ));
            }
        };
        if m.attributes.is_empty() {
            return Err(invalid(
                format!("{k}.attributes"),
                "needs at least one {key, value}",
            ));
        }
        let mut attributes = Vec::new();
        for (i, a) in m.attributes.iter().enumerate() {
            let ak = format!("{k}.attributes[{i}]");
            let fk = FilterKey::parse(&a.key).map_err(|e| invalid(format!("{ak}.key"), e))?;
            use serde_yaml::Value as Y;
            let value = match (&a.value, regex) {
                (Y::String(s), true) => Expected::Regex(
                    regex::Regex::new(s)
                        .map_err(|e| invalid(format!("{ak}.value"), e.to_string()))?,
                ),
                (_, true) => {
                    return Err(invalid(format!("{ak}.value"), "a regex must be a string"));
                }
                (Y::String(s), false) => Expected::Str(s.clone()),
                (Y::Bool(b), false) => Expected::Bool(*b),
                (Y::Number(n), false) => match n.as_i64() {
                    Some(i) => Expected::Int(i),
                    None => Expected::Float(n.as_f64().unwrap_or(f64::NAN)),
                },
                _ => {
                    return Err(invalid(
                        format!("{ak}.value"),
                        "must be a string, number or boolean",
                    ));
                }
            };
            attributes.push(AttrMatch { key: fk, value });
        }
        Ok(Some(PolicyMatch { attributes }))
    };
    p.iter()
        .enumerate()
        .map(|(i, p)| {
            let k = format!("{key}[{i}]");
            let out = FilterPolicy {
                include: side(&format!("{k}.include"), &p.include)?,
                include_any: side(&format!("{k}.include_any"), &p.include_any)?,
                exclude: side(&format!("{k}.exclude"), &p.exclude)?,
            };
            if out.include.is_none() && out.include_any.is_none() && out.exclude.is_none() {
                return Err(invalid(k, "needs include, include_any or exclude"));
            }
            Ok(out)
        })
        .collect()
}

/// The label that tells series of different generators apart (Tempo's name).
pub const GENERATOR_INSTANCE_LABEL: &str = "__metrics_gen_instance";

/// Everything the generator needs, validated.
#[derive(Debug, Clone)]
pub struct GeneratorSettings {
    /// Processors and registry.
    pub generator: GeneratorConfig,
    /// Remote write (no endpoints = scrape endpoint only).
    pub remote_write: RemoteWriteConfig,
}

impl Config {
    /// The generator's settings, or `None` when `metrics_generator:` is absent. Refuses
    /// processors enabled in `overrides` while the generator is off.
    pub fn generator(&self) -> Result<Option<GeneratorSettings>, ConfigError> {
        let tenants = self.generator_tenants()?;
        let Some(g) = &self.metrics_generator else {
            let lists = std::iter::once(("overrides.defaults".to_string(), &tenants.0)).chain(
                tenants
                    .1
                    .iter()
                    .map(|(t, s)| (format!("overrides.per_tenant.{t}"), s)),
            );
            for (key, s) in lists {
                if self.overrides_list_processors(&key) && s.processors.generates() {
                    return Err(invalid(
                        format!("{key}.metrics_generator.processors"),
                        "enables span-metrics or service-graphs, but the metrics generator is off \
                         (there is no top-level metrics_generator: block), so nothing would be generated; \
                         add `metrics_generator:` (an empty block runs it with defaults) or remove them from the list",
                    ));
                }
            }
            return Ok(None);
        };
        let r = &g.registry;
        let mut registry = RegistryConfig::default();
        if let Some(d) = r.collection_interval {
            check_interval("metrics_generator.registry.collection_interval", d)?;
            registry.collection_interval = d;
        }
        if let Some(d) = r.stale_duration {
            if d.is_zero() {
                return Err(invalid(
                    "metrics_generator.registry.stale_duration",
                    "must be positive, e.g. 15m (leave it out for the 15m default)",
                ));
            }
            registry.stale_duration = d;
        }
        if registry.stale_duration < registry.collection_interval {
            return Err(invalid(
                "metrics_generator.registry.stale_duration",
                format!(
                    "{:?} is shorter than collection_interval ({:?}): series would be removed before they are sent",
                    registry.stale_duration, registry.collection_interval
                ),
            ));
        }
        // As in Tempo, ≤ 0 means no truncation.
        let len = |v: Option<i64>, d: usize| v.map_or(d, |v| usize::try_from(v).unwrap_or(0));
        registry.max_label_name_length = len(r.max_label_name_length, 1024);
        registry.max_label_value_length = len(r.max_label_value_length, 2048);
        registry.external_labels = r
            .external_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for k in r.external_labels.keys() {
            if !valid_label_name(k) {
                return Err(invalid(
                    format!("metrics_generator.registry.external_labels.{k}"),
                    "is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                ));
            }
        }
        // With sharded ingest every member generates series from its share of the spans: the
        // same series from two members must not collide in Prometheus, so each carries its
        // member, under the label Tempo's generators use for their instances.
        if let Some(ring) = &self.ingester.ring
            && !r.external_labels.contains_key(GENERATOR_INSTANCE_LABEL)
        {
            registry.external_labels.push((
                GENERATOR_INSTANCE_LABEL.to_string(),
                ring.instance_id.trim().to_string(),
            ));
        }
        registry.inject_tenant_id_as = r.inject_tenant_id_as.clone().filter(|s| !s.is_empty());
        if let Some(n) = &registry.inject_tenant_id_as
            && !valid_label_name(n)
        {
            return Err(invalid(
                "metrics_generator.registry.inject_tenant_id_as",
                format!("{n:?} is not a Prometheus label name"),
            ));
        }
        let sm = &g.processor.span_metrics;
        let smk = "metrics_generator.processor.span_metrics";
        histogram_type(&format!("{smk}.histogram_type"), &sm.histogram_type)?;
        let i = &sm.intrinsic_dimensions;
        let d = IntrinsicDimensions::default();
        let span_metrics = SpanMetricsConfig {
            histogram_buckets: buckets(
                &format!("{smk}.histogram_buckets"),
                &sm.histogram_buckets,
                allegro_ingest::generator::spanmetrics::default_latency_buckets(),
            )?,
            intrinsic_dimensions: IntrinsicDimensions {
                service: i.service.unwrap_or(d.service),
                span_name: i.span_name.unwrap_or(d.span_name),
                span_kind: i.span_kind.unwrap_or(d.span_kind),
                status_code: i.status_code.unwrap_or(d.status_code),
                status_message: i.status_message.unwrap_or(d.status_message),
            },
            dimensions: sm.dimensions.clone(),
            dimension_mappings: sm
                .dimension_mappings
                .iter()
                .enumerate()
                .map(|(n, m)| {
                    if m.name.is_empty() || m.source_labels.is_empty() {
                        return Err(invalid(
                            format!("{smk}.dimension_mappings[{n}]"),
                            "needs a name and at least one source_labels entry",
                        ));
                    }
                    Ok(DimensionMapping {
                        name: m.name.clone(),
                        source_labels: m.source_labels.clone(),
                        join: m.join.clone(),
                    })
                })
                .collect::<Result<_, _>>()?,
            enable_target_info: sm.enable_target_info,
            enable_instance_label: sm.enable_instance_label.unwrap_or(true),
            target_info_excluded_dimensions: sm.target_info_excluded_dimensions.clone(),
            filter_policies: policies(&format!("{smk}.filter_policies"), &sm.filter_policies)?,
            span_multiplier_key: sm.span_multiplier_key.clone().filter(|s| !s.is_empty()),
        };
        let sg = &g.processor.service_graphs;
        let sgk = "metrics_generator.processor.service_graphs";
        histogram_type(&format!("{sgk}.histogram_type"), &sg.histogram_type)?;
        let dflt = ServiceGraphsConfig::default();
        let wait = sg.wait.unwrap_or(dflt.wait);
        if wait.is_zero() {
            return Err(invalid(format!("{sgk}.wait"), "must be positive, e.g. 10s"));
        }
        let max_items = sg.max_items.unwrap_or(dflt.max_items);
        if max_items == 0 {
            return Err(invalid(
                format!("{sgk}.max_items"),
                "must be positive (default 10000): with 0 no edge could ever be paired",
            ));
        }
        let service_graphs = ServiceGraphsConfig {
            wait,
            max_items,
            histogram_buckets: buckets(
                &format!("{sgk}.histogram_buckets"),
                &sg.histogram_buckets,
                dflt.histogram_buckets.clone(),
            )?,
            dimensions: sg.dimensions.clone(),
            enable_client_server_prefix: sg.enable_client_server_prefix,
            enable_messaging_system_latency_histogram: sg.enable_messaging_system_latency_histogram,
            enable_virtual_node_label: sg.enable_virtual_node_label,
            peer_attributes: sg.peer_attributes.clone().unwrap_or(dflt.peer_attributes),
            database_name_attributes: sg
                .database_name_attributes
                .clone()
                .unwrap_or(dflt.database_name_attributes),
            span_multiplier_key: sg.span_multiplier_key.clone().filter(|s| !s.is_empty()),
        };
        let s = &g.storage;
        let dir = s
            .path
            .clone()
            .unwrap_or_else(|| self.wal_dir().join("generator"));
        let mut remote_write = RemoteWriteConfig::new(dir);
        if let Some(b) = s.remote_write_add_org_id_header {
            remote_write.add_org_id_header = b;
        }
        if let Some(d) = s.remote_write_flush_deadline {
            remote_write.flush_deadline = d;
        }
        if let Some(b) = s.max_queue_bytes {
            if b == 0 {
                return Err(invalid(
                    "metrics_generator.storage.max_queue_bytes",
                    "must be positive (default 536870912)",
                ));
            }
            remote_write.max_queue_bytes = b;
        }
        for (n, e) in s.remote_write.iter().enumerate() {
            let key = format!("metrics_generator.storage.remote_write[{n}]");
            let url = e.url.clone().unwrap_or_default();
            if url.trim().is_empty() {
                return Err(invalid(
                    format!("{key}.url"),
                    "is required: where Prometheus (started with --web.enable-remote-write-receiver) receives, e.g. http://prometheus:9090/api/v1/write",
                ));
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    format!("{key}.url"),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            let timeout = e.remote_timeout.unwrap_or(Duration::from_secs(30));
            if timeout.is_zero() {
                return Err(invalid(format!("{key}.remote_timeout"), "must be positive"));
            }
            remote_write.endpoints.push(Endpoint {
                name: e
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("remote_write_{n}")),
                url,
                send_exemplars: e.send_exemplars,
                headers: e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                timeout,
            });
        }
        let (defaults, per_tenant) = tenants;
        Ok(Some(GeneratorSettings {
            generator: GeneratorConfig {
                registry,
                span_metrics: Arc::new(span_metrics),
                service_graphs: Arc::new(service_graphs),
                ingestion_slack: g
                    .metrics_ingestion_time_range_slack
                    .unwrap_or(Duration::from_secs(30)),
                defaults,
                per_tenant,
            },
            remote_write,
        }))
    }

    fn overrides_list_processors(&self, key: &str) -> bool {
        match key.strip_prefix("overrides.per_tenant.") {
            Some(t) => self
                .overrides
                .per_tenant
                .get(t)
                .is_some_and(|l| l.metrics_generator.processors.is_some()),
            None => self
                .overrides
                .defaults
                .metrics_generator
                .processors
                .is_some(),
        }
    }

    /// Generator settings of `overrides.defaults` and of each tenant (unset keys inherit).
    fn generator_tenants(
        &self,
    ) -> Result<
        (
            TenantSettings,
            std::collections::HashMap<String, TenantSettings>,
        ),
        ConfigError,
    > {
        let apply = |base: &TenantSettings,
                     o: &super::GeneratorOverrides,
                     key: &str|
         -> Result<TenantSettings, ConfigError> {
            let mut s = base.clone();
            if let Some(p) = &o.processors {
                s.processors = Processors::from_names(p)
                    .map_err(|m| invalid(format!("{key}.metrics_generator.processors"), m))?;
            }
            if let Some(n) = o.max_active_series {
                s.max_active_series = n;
            }
            // As in Tempo, 0 falls back to the registry's interval.
            match o.collection_interval {
                Some(d) if !d.is_zero() => {
                    check_interval(&format!("{key}.metrics_generator.collection_interval"), d)?;
                    s.collection_interval = Some(d);
                }
                Some(_) => s.collection_interval = None,
                None => {}
            }
            Ok(s)
        };
        let defaults = apply(
            &TenantSettings::default(),
            &self.overrides.defaults.metrics_generator,
            "overrides.defaults",
        )?;
        let mut per = std::collections::HashMap::new();
        for (t, l) in &self.overrides.per_tenant {
            per.insert(
                t.clone(),
                apply(
                    &defaults,
                    &l.metrics_generator,
                    &format!("overrides.per_tenant.{t}"),
                )?,
            );
        }
        Ok((defaults, per))
    }

    /// Settings that are valid but probably not what was meant, each naming the key.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.read_warnings.clone();
        if self
            .metrics_generator
            .as_ref()
            .is_some_and(|g| g.traces_storage.is_some())
        {
            w.push(
                "metrics_generator.traces_storage has no effect: TraceQL metrics read the live head \
                 and the blocks, not a store of their own"
                    .into(),
            );
        }
        // A Tempo 2.x processors list without local-blocks turned TraceQL metrics off there;
        // here they stay on (Tempo 3.x semantics), and the operator is told how to turn them off.
        let tenants = std::iter::once(("defaults".to_string(), &self.overrides.defaults)).chain(
            self.overrides
                .per_tenant
                .iter()
                .map(|(t, l)| (format!("per_tenant.{t}"), l)),
        );
        for (at, limits) in tenants {
            if let Some(p) = &limits.metrics_generator.processors
                && !p.iter().any(|x| x == "local-blocks")
            {
                w.push(format!(
                    "overrides.{at}.metrics_generator.processors does not list local-blocks: TraceQL \
                     metrics (Traces Drilldown) stay on, Allegro needs no local-blocks processor (as \
                     Tempo 3.x); set overrides.{at}.read.traceql_metrics_enabled: false to turn them off"
                ));
            }
        }
        let Ok(Some(g)) = self.generator() else {
            return w;
        };
        let gen_cfg = &g.generator;
        let any = gen_cfg.defaults.processors.generates()
            || gen_cfg
                .per_tenant
                .values()
                .any(|s| s.processors.generates());
        if !any {
            w.push(
                "metrics_generator: the generator is configured but no tenant runs span-metrics or service-graphs \
                 (overrides.*.metrics_generator.processors); nothing will be generated"
                    .into(),
            );
        }
        if g.remote_write.endpoints.is_empty() {
            w.push(
                "metrics_generator.storage.remote_write: no receiver configured; generated series are only \
                 served for scraping at /api/metrics-generator/metrics"
                    .into(),
            );
        }
        let ri = gen_cfg.registry.collection_interval;
        if ri < Duration::from_secs(15) {
            w.push(format!(
                "metrics_generator.registry.collection_interval: {ri:?} is below Tempo's 15s minimum; every series is sent that often"
            ));
        }
        if let Some(m) = &self.metrics_generator
            && m.processor.local_blocks.is_some()
        {
            w.push(
                "metrics_generator.processor.local_blocks: ignored; TraceQL metrics read the live head and recent blocks directly"
                    .into(),
            );
        }
        w
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
fn valid_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(y: &str) -> Result<Option<GeneratorSettings>, ConfigError> {
        let c = Config::parse("test.yaml", y)?;
        c.validate()?;
        c.generator()
    }

    fn err(y: &str) -> String {
        load(y).expect_err("should be refused").to_string()
    }

    #[test]
    fn empty_registry_block_means_defaults_not_zeros() {
        // The seed: Tempo zeroes the struct and panics with "non-positive interval for NewTicker".
        let g = load("metrics_generator:\n  registry:\n")
            .expect("valid")
            .expect("generator on");
        let r = &g.generator.registry;
        assert_eq!(r.collection_interval, Duration::from_secs(15));
        assert_eq!(r.stale_duration, Duration::from_secs(900));
        assert_eq!(
            (r.max_label_name_length, r.max_label_value_length),
            (1024, 2048)
        );
        // An empty top-level block runs the generator with every default.
        let g = load("metrics_generator:\n").expect("valid").expect("on");
        assert_eq!(g.generator.registry, RegistryConfig::default());
        assert_eq!(g.generator.ingestion_slack, Duration::from_secs(30));
        assert_eq!(g.generator.service_graphs.wait, Duration::from_secs(10));
        assert_eq!(g.generator.service_graphs.max_items, 10_000);
        assert!(g.generator.defaults.processors.generates());
        assert!(g.remote_write.add_org_id_header);
        assert!(load("storage:\n").expect("valid").is_none());
    }

    #[test]
    fn members_of_an_ingest_ring_label_their_series_with_their_instance() {
        let ring = "ingester:\n  ring:\n    instance_id: b\n    members:\n      - id: a\n        address: http://a:3200\n      - id: b\n        address: http://b:3200\n";
        let labels = |y: &str| load(y).unwrap().unwrap().generator.registry.external_labels;
        assert_eq!(
            labels(&format!("{ring}metrics_generator:\n")),
            vec![(GENERATOR_INSTANCE_LABEL.to_string(), "b".to_string())]
        );
        // One the operator set stays theirs; without a ring there is none.
        assert_eq!(
            labels(&format!(
                "{ring}metrics_generator:\n  registry:\n    external_labels:\n      __metrics_gen_instance: pod-7\n"
            )),
            vec![(GENERATOR_INSTANCE_LABEL.to_string(), "pod-7".to_string())]
        );
        assert!(labels("metrics_generator:\n").is_empty());
    }

    #[test]
    fn intervals_that_would_break_are_refused_with_the_key() {
        let e = err("metrics_generator:\n  registry:\n    collection_interval: 0s\n");
        assert!(
            e.contains("metrics_generator.registry.collection_interval")
                && e.contains("must be positive"),
            "{e}"
        );
        let e = err("metrics_generator:\n  registry:\n    collection_interval: 1h\n");
        assert!(e.contains("staleness"), "{e}");
        let e = err("metrics_generator:\n  registry:\n    stale_duration: 5s\n");
        assert!(e.contains("stale_duration") && e.contains("shorter"), "{e}");
        let e = err("metrics_generator:\n  registry:\n    collection_interval: soon\n");
        assert!(e.contains("collection_interval"), "{e}");
        // Tempo's meaning of ≤ 0 label lengths: no truncation.
        let g = load("metrics_generator:\n  registry:\n    max_label_value_length: 0\n")
            .expect("valid")
            .expect("on");
        assert_eq!(g.generator.registry.max_label_value_length, 0);
        // A tenant override of 0 falls back to the registry's interval.
        let g = load(
            "metrics_generator:\noverrides:\n  per_tenant:\n    a:\n      metrics_generator:\n        collection_interval: 0s\n    b:\n      metrics_generator:\n        collection_interval: 30s\n",
        )
        .expect("valid")
        .expect("on");
        assert_eq!(g.generator.tenant("a").collection_interval, None);
        assert_eq!(
            g.generator.tenant("b").collection_interval,
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn remote_write_needs_a_url() {
        let e = err(
            "metrics_generator:\n  storage:\n    remote_write:\n      - send_exemplars: true\n",
        );
        assert!(
            e.contains("metrics_generator.storage.remote_write[0].url") && e.contains("required"),
            "{e}"
        );
        let e = err(
            "metrics_generator:\n  storage:\n    remote_write:\n      - url: prometheus:9090\n",
        );
        assert!(e.contains("not an http"), "{e}");
        let g = load(
            "metrics_generator:\n  storage:\n    path: /tmp/q\n    remote_write_add_org_id_header: false\n    remote_write:\n      - url: http://p:9090/api/v1/write\n        headers:\n          Authorization: Bearer x\n",
        )
        .expect("valid")
        .expect("on");
        let rw = &g.remote_write;
        assert!(!rw.add_org_id_header);
        assert_eq!(rw.dir, PathBuf::from("/tmp/q"));
        assert_eq!(rw.endpoints[0].url, "http://p:9090/api/v1/write");
        assert_eq!(rw.endpoints[0].headers[0].0, "Authorization");
    }

    #[test]
    fn processors_enabled_while_the_generator_is_off_are_refused() {
        let e = err(
            "overrides:\n  defaults:\n    metrics_generator:\n      processors: [service-graphs, span-metrics]\n",
        );
        assert!(
            e.contains("overrides.defaults.metrics_generator.processors")
                && e.contains("add `metrics_generator:`"),
            "{e}"
        );
        let e = err(
            "overrides:\n  per_tenant:\n    acme:\n      metrics_generator:\n        processors: [span-metrics-latency]\n",
        );
        assert!(e.contains("overrides.per_tenant.acme"), "{e}");
        // local-blocks alone needs no generator.
        assert!(
            load("overrides:\n  defaults:\n    metrics_generator:\n      processors: [local-blocks]\n")
                .expect("valid")
                .is_none()
        );
        let e = err(
            "metrics_generator:\noverrides:\n  defaults:\n    metrics_generator:\n      processors: [span-metric]\n",
        );
        assert!(e.contains("unknown processor \"span-metric\""), "{e}");
        // With the generator on, listing only local-blocks warns that nothing is generated.
        let c = Config::parse(
            "t",
            "metrics_generator:\noverrides:\n  defaults:\n    metrics_generator:\n      processors: [local-blocks]\n",
        )
        .expect("parse");
        let w = c.warnings();
        assert!(
            w.iter().any(|w| w.contains("nothing will be generated")),
            "{w:?}"
        );
    }

    #[test]
    fn processor_settings_are_read_and_checked() {
        let g = load(
            r#"
metrics_generator:
  processor:
    span_metrics:
      dimensions: [http.method, service]
      intrinsic_dimensions:
        status_message: true
      dimension_mappings:
        - name: endpoint
          source_labels: [http.method, http.route]
          join: " "
      filter_policies:
        - include:
            match_type: regex
            attributes:
              - key: kind
                value: SPAN_KIND_(SERVER|CONSUMER)
        - exclude:
            attributes:
              - key: span.http.status_code
                value: 404
    service_graphs:
      wait: 3s
      max_items: 5
      dimensions: [k8s.cluster.name]
      enable_client_server_prefix: true
"#,
        )
        .expect("valid")
        .expect("on");
        let sm = &g.generator.span_metrics;
        assert!(sm.intrinsic_dimensions.status_message);
        assert_eq!(sm.dimension_mappings[0].source_labels.len(), 2);
        assert_eq!(sm.filter_policies.len(), 2);
        assert_eq!(g.generator.service_graphs.max_items, 5);
        let e = err(
            "metrics_generator:\n  processor:\n    span_metrics:\n      filter_policies:\n        - include:\n            attributes:\n              - key: http.method\n                value: GET\n",
        );
        assert!(
            e.contains("filter_policies[0].include.attributes[0].key"),
            "{e}"
        );
        let e = err(
            "metrics_generator:\n  processor:\n    span_metrics:\n      histogram_buckets: [1, 0.5]\n",
        );
        assert!(e.contains("strictly increasing"), "{e}");
        let e = err("metrics_generator:\n  processor:\n    service_graphs:\n      max_items: 0\n");
        assert!(e.contains("max_items"), "{e}");
        let e = err(
            "metrics_generator:\n  processor:\n    span_metrics:\n      histogram_type: native\n",
        );
        assert!(e.contains("classic"), "{e}");
    }
}
