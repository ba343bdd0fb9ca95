//! The YAML config file. Keys follow Tempo's where the concept is the same; an empty block
//! (`server:` with nothing under it) means that block's defaults, never zeros.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use allegro_engine::block::writer::{BlockCompression, BlockWriteOptions};
use allegro_engine::hot::HotPolicy;
use allegro_engine::query::metrics::MetricsLimits;
use allegro_engine::query::{QueryLimits, TenantQueryLimits};
use allegro_engine::schema::{AttrScope, HotColumn, HotType};
use allegro_engine::storage::StorageBackend;
use allegro_ingest::IngesterConfig;
use allegro_ingest::generator::Processors;
use allegro_ingest::limits::{Limits, Overrides};
use serde::{Deserialize, Deserializer};

pub mod generator;
pub mod show;
pub mod tempo_keys;

/// A config problem, naming the key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or a value has the wrong type or an unknown key.
    #[error("config file {path}: {key}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// Dotted path of the key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("config: {key}: {message}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// `null` (an empty YAML block or value) means the default.
fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Durations as Go writes them (`30s`, `1m30s`, `500ms`).
fn go_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse_duration(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Parses a Go-style duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m or 1h30m: {e}"))
}

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Require `X-Scope-OrgID` on every request (Tempo's `multitenancy_enabled`).
    #[serde(default, deserialize_with = "null_default")]
    pub multitenancy_enabled: bool,
    /// HTTP server.
    #[serde(default, deserialize_with = "null_default")]
    pub server: ServerConfig,
    /// Block storage.
    #[serde(default, deserialize_with = "null_default")]
    pub storage: StorageConfig,
    /// Receivers (`distributor.receivers`).
    #[serde(default, deserialize_with = "null_default")]
    pub distributor: DistributorConfig,
    /// Live head, trace completion and block cutting.
    #[serde(default, deserialize_with = "null_default")]
    pub ingester: IngesterSection,
    /// Per-tenant limits.
    #[serde(default, deserialize_with = "null_default")]
    pub overrides: OverridesConfig,
    /// Query limits (Tempo's `query_frontend`).
    #[serde(default, deserialize_with = "null_default")]
    pub query_frontend: QueryFrontendConfig,
    /// How queries run (Tempo's `querier`).
    #[serde(default, deserialize_with = "null_default")]
    pub querier: QuerierConfig,
    /// The metrics generator; present (even as an empty block) = on.
    #[serde(default, deserialize_with = "present")]
    pub metrics_generator: Option<generator::GeneratorSection>,
    /// Compaction and retention (Tempo's `compactor`), run inside `serve`.
    #[serde(default, deserialize_with = "null_default")]
    pub compactor: CompactorSection,
    /// SQL over the span tables (`sql:`, Allegro's own section).
    #[serde(default, deserialize_with = "null_default")]
    pub sql: SqlSection,
    /// Where queries run (`query:`, Allegro's own section): in this process, or on a Ballista
    /// cluster.
    #[serde(default, deserialize_with = "null_default")]
    pub query: QuerySection,
    /// Serve Grafana's streaming gRPC API (`tempopb.StreamingQuerier`) on the HTTP port;
    /// default on (Tempo's default is off, but Grafana's streaming toggles need it).
    #[serde(default)]
    pub stream_over_http_enabled: Option<bool>,
    /// Tempo 3.x's Kafka connection (`ingest:`): accepted with a warning; Allegro ingests
    /// in-process.
    #[serde(default)]
    pub ingest: Option<serde_yaml::Value>,
    /// Tempo 3.x's `block_builder:` (Kafka path): accepted with a warning.
    #[serde(default)]
    pub block_builder: Option<serde_yaml::Value>,
    /// Tempo 3.x's `backend_scheduler:`: accepted with a warning.
    #[serde(default)]
    pub backend_scheduler: Option<serde_yaml::Value>,
    /// Tempo 3.x's `backend_worker:`: accepted with a warning.
    #[serde(default)]
    pub backend_worker: Option<serde_yaml::Value>,
    /// Warnings found while reading the file (legacy keys mapped, keys without effect).
    #[serde(skip)]
    pub read_warnings: Vec<String>,
}

/// `sql:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlSection {
    /// Where the Arrow Flight SQL server listens (`host:port`); unset: [`DEFAULT_FLIGHT_SQL`]
    /// (skipped with a warning when that port is taken); empty: off.
    pub flight_listen_address: Option<String>,
}

/// `query:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySection {
    /// `query.ballista`: a Ballista cluster SQL runs on (docs/scale-out.md).
    #[serde(deserialize_with = "null_default")]
    pub ballista: BallistaSection,
}

/// `query.ballista:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BallistaSection {
    /// The scheduler's `host:port` (`allegro scheduler` listens on 50050); unset: queries run
    /// in this process.
    pub scheduler: Option<String>,
    /// The `host:port` executors fetch this process's in-memory rows (the live head) from
    /// (docs/scale-out.md); unset: the address this host reaches the scheduler from, any free
    /// port. A host that is not an IP address is advertised, and every interface listens.
    pub rows_address: Option<String>,
}

impl BallistaSection {
    /// The scheduler's host and port, when one is configured.
    pub fn scheduler(&self) -> Result<Option<(String, u16)>, ConfigError> {
        host_port(
            "query.ballista.scheduler",
            self.scheduler.as_deref(),
            "scheduler.internal:50050",
            false,
        )
    }

    /// Where to listen for executors fetching rows, and the host to tell them, when set.
    pub fn rows_address(&self) -> Result<Option<(SocketAddr, String)>, ConfigError> {
        let Some((host, port)) = host_port(
            "query.ballista.rows_address",
            self.rows_address.as_deref(),
            "serve-1.internal:50060",
            true,
        )?
        else {
            return Ok(None);
        };
        let ip = host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Ok(Some((SocketAddr::new(ip, port), host)))
    }
}

/// `value` of `key` as a host and a port, when set (blank: unset); port 0 (any free one) only
/// when `any_port`. A value that is not `host:port` is named with `example`.
fn host_port(
    key: &str,
    value: Option<&str>,
    example: &str,
    any_port: bool,
) -> Result<Option<(String, u16)>, ConfigError> {
    let Some(s) = value.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let bad = || ConfigError::Invalid {
        key: key.into(),
        message: format!("{s:?} is not host:port (e.g. {example})"),
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || (port == 0 && !any_port) {
        return Err(bad());
    }
    Ok(Some((host.to_string(), port)))
}

/// The Flight SQL server's default address: loopback only, Dremio's Flight port, which Flight
/// SQL tools try first.
pub const DEFAULT_FLIGHT_SQL: &str = "127.0.0.1:32010";

/// `compactor:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactorSection {
    /// `compactor.compaction`.
    #[serde(deserialize_with = "null_default")]
    pub compaction: CompactionSection,
    /// Tempo's compactor ring: one process compacts here, so it is accepted and ignored.
    pub ring: Option<serde_yaml::Value>,
}

/// `compactor.compaction:` (Tempo's keys and defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionSection {
    /// Blocks whose newest span is older are deleted (default 336h; `0s` keeps everything).
    #[serde(deserialize_with = "go_duration")]
    pub block_retention: Option<Duration>,
    /// Inputs of a merged block are deleted this long after it appeared (default 1h).
    #[serde(deserialize_with = "go_duration")]
    pub compacted_block_retention: Option<Duration>,
    /// Blocks are merged within windows of this length (default 1h).
    #[serde(deserialize_with = "go_duration")]
    pub compaction_window: Option<Duration>,
    /// Most traces in a merged block (default 6,000,000).
    pub max_compaction_objects: Option<u64>,
    /// Most input bytes per merged block (default 100 GB).
    pub max_block_bytes: Option<u64>,
    /// How often compaction and retention run (default 30s).
    #[serde(deserialize_with = "go_duration")]
    pub compaction_cycle: Option<Duration>,
    /// Longest a cycle compacts one tenant (default 5m).
    #[serde(deserialize_with = "go_duration")]
    pub max_time_per_tenant: Option<Duration>,
    /// Accepted for Tempo configs; deletions run one at a time here.
    pub retention_concurrency: Option<u64>,
}

impl CompactionSection {
    /// The engine's settings, Tempo's defaults where unset; no per-tenant retention.
    pub fn lifecycle(&self) -> allegro_engine::block::lifecycle::LifecycleConfig {
        let d = allegro_engine::block::lifecycle::LifecycleConfig::default();
        allegro_engine::block::lifecycle::LifecycleConfig {
            window: self.compaction_window.unwrap_or(d.window),
            max_objects: self.max_compaction_objects.unwrap_or(d.max_objects),
            max_block_bytes: self.max_block_bytes.unwrap_or(d.max_block_bytes),
            block_retention: self.block_retention.unwrap_or(d.block_retention),
            compacted_block_retention: self
                .compacted_block_retention
                .unwrap_or(d.compacted_block_retention),
            ..d
        }
    }

    /// How often a cycle runs.
    pub fn cycle(&self) -> Duration {
        self.compaction_cycle.unwrap_or(Duration::from_secs(30))
    }

    /// Longest a cycle spends on one tenant.
    pub fn per_tenant(&self) -> Duration {
        self.max_time_per_tenant.unwrap_or(Duration::from_secs(300))
    }
}

/// `query_frontend:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryFrontendConfig {
    /// `metrics:` (TraceQL metrics).
    #[serde(deserialize_with = "null_default")]
    pub metrics: FrontendMetricsConfig,
    /// `search:` (result limits and the longest range).
    #[serde(deserialize_with = "null_default")]
    pub search: FrontendSearchConfig,
}

/// `query_frontend.search:` (Tempo's keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontendSearchConfig {
    /// Traces returned when a search sets no `limit` (20).
    pub default_result_limit: Option<usize>,
    /// Largest `limit` a search may ask for (0: Tempo's cap, 262144).
    pub max_result_limit: Option<usize>,
    /// Spans per spanset when a search sets no `spss` (3).
    pub default_spans_per_span_set: Option<usize>,
    /// Largest `spss` (0: 100).
    pub max_spans_per_span_set: Option<usize>,
    /// Longest `start`–`end` range of a search (0 or unset: no limit).
    #[serde(deserialize_with = "go_duration")]
    pub max_duration: Option<Duration>,
}

/// `querier:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuerierConfig {
    /// `search:`.
    #[serde(deserialize_with = "null_default")]
    pub search: QuerierSearchConfig,
    /// Threads queries run on, at a lower OS priority than ingest (0: one per core).
    pub query_threads: Option<usize>,
}

/// `querier.search:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuerierSearchConfig {
    /// Longest any query (search, metrics, tags) may run, waiting for a slot included (2m).
    #[serde(deserialize_with = "go_duration")]
    pub query_timeout: Option<Duration>,
}

/// `query_frontend.metrics:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontendMetricsConfig {
    /// Longest range of a metrics query (24h).
    #[serde(deserialize_with = "go_duration")]
    pub max_duration: Option<Duration>,
    /// Most intervals of a range query (10000).
    pub max_intervals: Option<u64>,
    /// Exemplars per series, default and cap (100).
    pub max_exemplars: Option<u32>,
    /// Most series in a response (1000); more gives a partial response.
    pub max_response_series: Option<u32>,
    /// How far back `mode=recent` reaches (15m, Tempo's `query_backend_after`).
    #[serde(deserialize_with = "go_duration")]
    pub query_backend_after: Option<Duration>,
    /// Spans a `with(sample=true)` query aims to read when each counts toward its one series
    /// (500000; four times as many with a filter, `by()` or buckets).
    pub sample_target_spans: Option<u64>,
}

/// A present key with an empty value (`grpc:`) means "on, with defaults"; only an absent key
/// means off.
fn present<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `distributor:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributorConfig {
    /// `distributor.receivers`; absent means OTLP gRPC and HTTP on their standard ports.
    #[serde(deserialize_with = "present")]
    pub receivers: Option<ReceiversConfig>,
    /// Tempo 3.x's switch for the ingester path; Allegro always writes in-process.
    pub ingester_write_path_enabled: Option<bool>,
    /// Tempo 3.x's switch for the Kafka path; accepted with a warning.
    pub kafka_write_path_enabled: Option<bool>,
}

impl DistributorConfig {
    /// The receivers in effect, those listening on the default all-interfaces address moved to
    /// `host` (the HTTP API's); endpoints configured otherwise stay.
    pub fn receivers_on(&self, host: &str) -> ReceiversConfig {
        let mut r = self.effective_receivers();
        let moved = |endpoint: &mut String| {
            if let Some(port) = endpoint.strip_prefix("0.0.0.0:") {
                *endpoint = if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                };
            }
        };
        for (_, _, e) in Self::endpoints_mut(&mut r) {
            moved(e);
        }
        r
    }

    /// The receivers in effect, each present one without an endpoint on its standard port.
    pub fn effective_receivers(&self) -> ReceiversConfig {
        let mut r = self.receivers.clone().unwrap_or_else(|| ReceiversConfig {
            otlp: Some(OtlpReceiver {
                protocols: OtlpProtocols {
                    grpc: Some(GrpcReceiver::default()),
                    http: Some(HttpReceiver::default()),
                },
            }),
            zipkin: None,
            jaeger: None,
        });
        for (_, default, e) in Self::endpoints_mut(&mut r) {
            if e.is_empty() {
                *e = default.to_string();
            }
        }
        r
    }

    /// Every listening receiver's endpoint with its config key and standard address.
    fn endpoints_mut(r: &mut ReceiversConfig) -> Vec<(&'static str, &'static str, &mut String)> {
        let mut out = Vec::new();
        if let Some(o) = r.otlp.as_mut() {
            if let Some(g) = o.protocols.grpc.as_mut() {
                out.push((
                    "distributor.receivers.otlp.protocols.grpc.endpoint",
                    "0.0.0.0:4317",
                    &mut g.endpoint,
                ));
            }
            if let Some(h) = o.protocols.http.as_mut() {
                out.push((
                    "distributor.receivers.otlp.protocols.http.endpoint",
                    "0.0.0.0:4318",
                    &mut h.endpoint,
                ));
            }
        }
        if let Some(z) = r.zipkin.as_mut() {
            out.push((
                "distributor.receivers.zipkin.endpoint",
                "0.0.0.0:9411",
                &mut z.endpoint,
            ));
        }
        if let Some(j) = r.jaeger.as_mut() {
            let p = &mut j.protocols;
            if let Some(g) = p.grpc.as_mut() {
                out.push((
                    "distributor.receivers.jaeger.protocols.grpc.endpoint",
                    "0.0.0.0:14250",
                    &mut g.endpoint,
                ));
            }
            if let Some(h) = p.thrift_http.as_mut() {
                out.push((
                    "distributor.receivers.jaeger.protocols.thrift_http.endpoint",
                    "0.0.0.0:14268",
                    &mut h.endpoint,
                ));
            }
            if let Some(u) = p.thrift_compact.as_mut() {
                out.push((
                    "distributor.receivers.jaeger.protocols.thrift_compact.endpoint",
                    "0.0.0.0:6831",
                    &mut u.endpoint,
                ));
            }
            if let Some(u) = p.thrift_binary.as_mut() {
                out.push((
                    "distributor.receivers.jaeger.protocols.thrift_binary.endpoint",
                    "0.0.0.0:6832",
                    &mut u.endpoint,
                ));
            }
        }
        out
    }
}

/// `distributor.receivers:` (the OpenTelemetry Collector's receiver keys, as in Tempo).
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiversConfig {
    /// `otlp:`.
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpReceiver>,
    /// `zipkin:` (Zipkin v2 JSON on `/api/v2/spans`).
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinReceiver>,
    /// `jaeger:` (Jaeger's gRPC, Thrift-over-HTTP and agent UDP protocols).
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jaeger: Option<JaegerReceiver>,
}

/// `jaeger:`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerReceiver {
    /// `jaeger.protocols`: only those present listen.
    #[serde(deserialize_with = "null_default")]
    pub protocols: JaegerProtocols,
}

/// `jaeger.protocols:`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JaegerProtocols {
    /// `grpc:` (`jaeger.api_v2.CollectorService/PostSpans`, default `0.0.0.0:14250`).
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcReceiver>,
    /// `thrift_http:` (`POST /api/traces`, default `0.0.0.0:14268`).
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thrift_http: Option<HttpReceiver>,
    /// `thrift_compact:` (agent UDP, compact protocol, default `0.0.0.0:6831`).
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thrift_compact: Option<UdpReceiver>,
    /// `thrift_binary:` (agent UDP, binary protocol, default `0.0.0.0:6832`).
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thrift_binary: Option<UdpReceiver>,
}

/// `thrift_compact:` / `thrift_binary:` (the Jaeger agent's UDP listeners).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpReceiver {
    /// `host:port` to listen on.
    #[serde(deserialize_with = "null_default")]
    pub endpoint: String,
    /// Largest datagram read; longer ones are cut and refused (bytes).
    #[serde(deserialize_with = "null_default")]
    pub max_packet_size: usize,
    /// Tuning of the Collector's agent server; packets here are read by one task.
    #[serde(deserialize_with = "null_default")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// As `workers`: accepted, no effect.
    #[serde(deserialize_with = "null_default")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<usize>,
    /// As `workers`: accepted, no effect.
    #[serde(deserialize_with = "null_default")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_buffer_size: Option<usize>,
}

impl Default for UdpReceiver {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            max_packet_size: 65_000,
            workers: None,
            queue_size: None,
            socket_buffer_size: None,
        }
    }
}

/// `otlp:`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiver {
    /// `otlp.protocols`.
    #[serde(deserialize_with = "null_default")]
    pub protocols: OtlpProtocols,
}

/// `otlp.protocols:`.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpProtocols {
    /// `grpc:` (TraceService/Export).
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcReceiver>,
    /// `http:` (`POST /v1/traces`).
    #[serde(deserialize_with = "present")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpReceiver>,
}

/// `otlp.protocols.grpc:`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcReceiver {
    /// `host:port` to listen on.
    #[serde(deserialize_with = "null_default")]
    pub endpoint: String,
    /// Largest message accepted, in MiB.
    #[serde(deserialize_with = "null_default")]
    pub max_recv_msg_size_mib: usize,
}

impl Default for GrpcReceiver {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            max_recv_msg_size_mib: 16,
        }
    }
}

/// `otlp.protocols.http:`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpReceiver {
    /// `host:port` to listen on.
    #[serde(deserialize_with = "null_default")]
    pub endpoint: String,
    /// Largest request body accepted (bytes, after decompression).
    #[serde(deserialize_with = "null_default")]
    pub max_request_body_size: usize,
}

impl Default for HttpReceiver {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            max_request_body_size: 20 << 20,
        }
    }
}

/// `zipkin:`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ZipkinReceiver {
    /// `host:port` to listen on.
    #[serde(deserialize_with = "null_default")]
    pub endpoint: String,
    /// Largest request body accepted (bytes, after decompression).
    #[serde(deserialize_with = "null_default")]
    pub max_request_body_size: usize,
}

impl Default for ZipkinReceiver {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            max_request_body_size: 20 << 20,
        }
    }
}

/// `ingester:` (Tempo's live-store/ingester keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngesterSection {
    /// A trace without new spans for this long is complete.
    #[serde(deserialize_with = "go_duration", alias = "max_trace_idle")]
    pub trace_idle_period: Option<Duration>,
    /// A trace is complete after this long even if spans keep coming.
    #[serde(deserialize_with = "go_duration", alias = "trace_live_period")]
    pub max_trace_live: Option<Duration>,
    /// How often traces and blocks are checked.
    #[serde(deserialize_with = "go_duration")]
    pub flush_check_period: Option<Duration>,
    /// The head block is cut after this long.
    #[serde(deserialize_with = "go_duration")]
    pub max_block_duration: Option<Duration>,
    /// The head block is cut at this many bytes.
    #[serde(deserialize_with = "null_default")]
    pub max_block_bytes: u64,
    /// Bytes the heads of all tenants together may hold before pushes are refused (503,
    /// retryable) until flushing catches up; 0 = unbounded. Tenants' shares under it are
    /// `overrides.*.ingestion.max_head_bytes`.
    #[serde(deserialize_with = "null_default")]
    pub max_head_bytes: u64,
    /// `ingester.ring` (Allegro's): the serving processes that share the bucket and split
    /// ingest by trace ID (docs/scale-out.md); unset: this process ingests every span it
    /// receives.
    #[serde(deserialize_with = "present")]
    pub ring: Option<RingSection>,
}

/// `ingester.ring:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingSection {
    /// This process's ID among `members`.
    pub instance_id: String,
    /// Every member, the same list in every process.
    pub members: Vec<RingMember>,
}

/// One of `ingester.ring.members`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingMember {
    /// Its `instance_id`.
    pub id: String,
    /// Its HTTP API, `http://host:port`, reachable from every other member.
    pub address: String,
}

impl RingSection {
    /// The ring, checked: IDs unique and this instance among them, addresses HTTP URLs.
    pub fn ring(&self) -> Result<allegro_engine::ring::Ring, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        let mut members = Vec::with_capacity(self.members.len());
        for (i, m) in self.members.iter().enumerate() {
            let a = m.address.trim().trim_end_matches('/');
            let host = a
                .strip_prefix("http://")
                .or_else(|| a.strip_prefix("https://"))
                .filter(|h| !h.is_empty() && !h.contains('/'));
            if host.is_none() {
                return Err(invalid(
                    &format!("ingester.ring.members[{i}].address"),
                    format!(
                        "{:?} is not an HTTP API address (e.g. http://ingester-a:3200)",
                        m.address
                    ),
                ));
            }
            members.push(allegro_engine::ring::Member {
                id: m.id.trim().to_string(),
                address: a.to_string(),
            });
        }
        allegro_engine::ring::Ring::new(members, self.instance_id.trim())
            .map_err(|m| invalid("ingester.ring", m))
    }
}

impl Default for IngesterSection {
    fn default() -> Self {
        Self {
            trace_idle_period: None,
            max_trace_live: None,
            flush_check_period: None,
            max_block_duration: None,
            max_block_bytes: 64 << 20,
            max_head_bytes: 512 << 20,
            ring: None,
        }
    }
}

/// `overrides:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverridesConfig {
    /// Limits of every tenant without its own.
    #[serde(deserialize_with = "null_default")]
    pub defaults: TenantLimits,
    /// Tenants with their own limits; unset keys take the defaults' values.
    #[serde(deserialize_with = "null_default")]
    pub per_tenant: std::collections::BTreeMap<String, TenantLimits>,
    /// Tempo's file of per-tenant overrides (`overrides: {tenant: {...}}`), read at start and
    /// merged into `per_tenant` (this file's entries win).
    pub per_tenant_override_config: Option<PathBuf>,
    // Tempo's legacy flat form (before 2.3), applied to `defaults` where it sets nothing
    // itself, each with a warning naming the new key (`OverridesConfig::apply_legacy`).
    /// Legacy: `defaults.metrics_generator.processors`.
    pub metrics_generator_processors: Option<Vec<String>>,
    /// Legacy: `defaults.ingestion.rate_strategy`.
    pub ingestion_rate_strategy: Option<String>,
    /// Legacy: `defaults.ingestion.rate_limit_bytes`.
    pub ingestion_rate_limit_bytes: Option<u64>,
    /// Legacy: `defaults.ingestion.burst_size_bytes`.
    pub ingestion_burst_size_bytes: Option<u64>,
    /// Legacy: `defaults.ingestion.max_traces_per_user`.
    pub max_traces_per_user: Option<usize>,
    /// Legacy: `defaults.global.max_bytes_per_trace`.
    pub max_bytes_per_trace: Option<usize>,
    /// Legacy: `defaults.compaction.block_retention`.
    #[serde(deserialize_with = "go_duration")]
    pub block_retention: Option<Duration>,
}

impl OverridesConfig {
    /// Moves the legacy flat keys into `defaults` (where it sets nothing itself); returns the
    /// warning for each, naming the key to use instead.
    fn apply_legacy(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut note = |old: &str, new: &str| {
            warnings.push(format!(
                "overrides.{old} is Tempo's legacy flat form: applied as overrides.defaults.{new}; \
                 write it there"
            ));
        };
        macro_rules! moved {
            ($field:ident, $old:literal, $new:literal, $target:expr) => {
                if let Some(v) = self.$field.take() {
                    note($old, $new);
                    if $target.is_none() {
                        $target = Some(v);
                    }
                }
            };
        }
        moved!(
            metrics_generator_processors,
            "metrics_generator_processors",
            "metrics_generator.processors",
            self.defaults.metrics_generator.processors
        );
        moved!(
            ingestion_rate_strategy,
            "ingestion_rate_strategy",
            "ingestion.rate_strategy",
            self.defaults.ingestion.rate_strategy
        );
        moved!(
            ingestion_rate_limit_bytes,
            "ingestion_rate_limit_bytes",
            "ingestion.rate_limit_bytes",
            self.defaults.ingestion.rate_limit_bytes
        );
        moved!(
            ingestion_burst_size_bytes,
            "ingestion_burst_size_bytes",
            "ingestion.burst_size_bytes",
            self.defaults.ingestion.burst_size_bytes
        );
        moved!(
            max_traces_per_user,
            "max_traces_per_user",
            "ingestion.max_traces_per_user",
            self.defaults.ingestion.max_traces_per_user
        );
        moved!(
            max_bytes_per_trace,
            "max_bytes_per_trace",
            "global.max_bytes_per_trace",
            self.defaults.global.max_bytes_per_trace
        );
        moved!(
            block_retention,
            "block_retention",
            "compaction.block_retention",
            self.defaults.compaction.block_retention
        );
        warnings
    }
}

/// One set of limits, in Tempo's layout.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// `ingestion:`.
    #[serde(deserialize_with = "null_default")]
    pub ingestion: IngestionLimits,
    /// `global:`.
    #[serde(deserialize_with = "null_default")]
    pub global: GlobalLimits,
    /// `metrics_generator:` (which processors run for the tenant).
    #[serde(deserialize_with = "null_default")]
    pub metrics_generator: GeneratorOverrides,
    /// `read:` (query budgets).
    #[serde(deserialize_with = "null_default")]
    pub read: ReadLimits,
    /// `compaction:` (how long the tenant's blocks are kept).
    #[serde(deserialize_with = "null_default")]
    pub compaction: CompactionLimits,
}

/// `overrides.*.compaction:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompactionLimits {
    /// The tenant's `block_retention` (unset: `compactor.compaction.block_retention`; `0s`:
    /// keep everything).
    #[serde(deserialize_with = "go_duration")]
    pub block_retention: Option<Duration>,
}

/// `overrides.*.read:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadLimits {
    /// Bytes of one tags or tag-values answer (Tempo's key; 5000000; 0: unlimited).
    pub max_bytes_per_tag_values_query: Option<usize>,
    /// Queries of the tenant running at once (8).
    pub max_concurrent_queries: Option<usize>,
    /// Queries of the tenant waiting for a slot; more get 429 (100).
    pub max_queued_queries: Option<usize>,
    /// Memory one query's operators may hold (1073741824).
    pub max_memory_per_query_bytes: Option<usize>,
    /// TraceQL metrics (`/api/metrics/*`, Traces Drilldown) for the tenant; on unless `false`.
    pub traceql_metrics_enabled: Option<bool>,
}

/// `overrides.*.metrics_generator:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorOverrides {
    /// `service-graphs`, `span-metrics`, `local-blocks` (and Tempo's sub-names); unset = all.
    /// `local-blocks` is accepted and changes nothing: TraceQL metrics are on regardless
    /// (`read.traceql_metrics_enabled` turns them off).
    pub processors: Option<Vec<String>>,
    /// Most generated series of the tenant; 0 = no limit.
    pub max_active_series: Option<usize>,
    /// The tenant's collection interval; 0 = `metrics_generator.registry.collection_interval`.
    #[serde(deserialize_with = "go_duration")]
    pub collection_interval: Option<Duration>,
}

/// TraceQL metrics settings in effect.
#[derive(Debug, Clone)]
pub struct MetricsSettings {
    /// Query limits.
    pub limits: MetricsLimits,
    defaults: bool,
    per_tenant: std::collections::HashMap<String, bool>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            limits: MetricsLimits::default(),
            defaults: true,
            per_tenant: Default::default(),
        }
    }
}

impl MetricsSettings {
    /// True unless `tenant` (or the defaults, when it sets nothing) has
    /// `read.traceql_metrics_enabled: false`. Which generator processors run does not matter:
    /// the recent store is always kept (Tempo 3.x semantics, where `local-blocks` is gone), so
    /// Drilldown never goes dark because a processors list was copied from a Tempo 2.x config.
    pub fn enabled(&self, tenant: &str) -> bool {
        self.per_tenant
            .get(tenant)
            .copied()
            .unwrap_or(self.defaults)
    }

    /// Whether tenants without settings of their own have TraceQL metrics.
    pub fn enabled_by_default(&self) -> bool {
        self.defaults
    }
}

/// `overrides.*.ingestion:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestionLimits {
    /// Only `local` is supported (one process).
    pub rate_strategy: Option<String>,
    /// Bytes per second.
    pub rate_limit_bytes: Option<u64>,
    /// Burst bytes.
    pub burst_size_bytes: Option<u64>,
    /// Live traces per tenant.
    pub max_traces_per_user: Option<usize>,
    /// Attribute values are cut to this many bytes.
    pub max_attribute_bytes: Option<usize>,
    /// Attribute keys are cut to this many bytes (256; 0: keep).
    pub max_attribute_key_bytes: Option<usize>,
    /// Span names are cut to this many bytes (2048; 0: keep).
    pub max_span_name_bytes: Option<usize>,
    /// Attributes kept per list; the rest are dropped and counted (256; 0: keep all).
    pub max_attributes_per_span: Option<usize>,
    /// The tenant's share of `ingester.max_head_bytes` (0: up to all of it).
    pub max_head_bytes: Option<u64>,
    /// Spans that started longer ago are refused (336h; 0: accept any).
    #[serde(deserialize_with = "go_duration")]
    pub max_span_age: Option<Duration>,
    /// Spans starting further ahead of the server's clock are refused (1h; 0: accept any).
    #[serde(deserialize_with = "go_duration")]
    pub max_span_future: Option<Duration>,
}

/// `overrides.*.global:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalLimits {
    /// Bytes one trace may hold in the live head.
    pub max_bytes_per_trace: Option<usize>,
}

/// `server:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(deserialize_with = "null_default")]
    pub http_listen_address: String,
    /// Port to listen on (Tempo's default 3200; 0 picks a free port).
    #[serde(deserialize_with = "null_default_port")]
    pub http_listen_port: u16,
    /// Prefix before every API path (`/tempo` → `/tempo/api/...`).
    #[serde(deserialize_with = "null_default")]
    pub http_api_prefix: String,
    /// How long in-flight requests get on shutdown.
    #[serde(deserialize_with = "go_duration")]
    pub graceful_shutdown_timeout: Option<Duration>,
    /// `debug`, `info` (default), `warn` or `error`; `RUST_LOG`, when set, wins.
    pub log_level: Option<String>,
}

fn null_default_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    Ok(Option::<u16>::deserialize(d)?.unwrap_or(DEFAULT_PORT))
}

/// Tempo's HTTP port.
pub const DEFAULT_PORT: u16 = 3200;

/// `server.log_level` values (Tempo's).
pub const LOG_LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_listen_address: "0.0.0.0".into(),
            http_listen_port: DEFAULT_PORT,
            http_api_prefix: String::new(),
            graceful_shutdown_timeout: None,
            log_level: None,
        }
    }
}

/// `storage:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `storage.trace`.
    #[serde(deserialize_with = "null_default")]
    pub trace: TraceStorageConfig,
}

/// `storage.trace:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceStorageConfig {
    /// `local`, `s3`, `gcs` or `azure`.
    #[serde(deserialize_with = "null_default")]
    pub backend: String,
    /// `storage.trace.local`.
    #[serde(deserialize_with = "null_default")]
    pub local: LocalConfig,
    /// `storage.trace.s3`.
    #[serde(deserialize_with = "null_default")]
    pub s3: S3Config,
    /// `storage.trace.gcs`.
    #[serde(deserialize_with = "null_default")]
    pub gcs: GcsConfig,
    /// `storage.trace.azure`.
    #[serde(deserialize_with = "null_default")]
    pub azure: AzureConfig,
    /// How often block lists are re-read from storage.
    #[serde(deserialize_with = "go_duration")]
    pub blocklist_poll: Option<Duration>,
    /// A tenant index older than this is not trusted and storage is listed instead (default
    /// 5m; `0s` trusts any age, as in Tempo).
    #[serde(deserialize_with = "go_duration")]
    pub blocklist_poll_stale_tenant_index: Option<Duration>,
    /// Tempo's choice of which compactors write tenant indexes: here every compactor writes
    /// the index of what it merged, so it is accepted and ignored.
    pub blocklist_poll_tenant_index_builders: Option<u64>,
    /// `storage.trace.cache` (Allegro's caches).
    #[serde(deserialize_with = "null_default")]
    pub cache: CacheConfig,
    /// `storage.trace.block` (how blocks are written).
    #[serde(deserialize_with = "null_default")]
    pub block: BlockConfig,
    /// `storage.trace.wal`.
    #[serde(deserialize_with = "null_default")]
    pub wal: WalConfig,
}

/// `storage.trace.wal:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Directory of the WAL; default `<storage.trace.local.path>/@wal` for the local backend,
    /// `./allegro-wal` otherwise.
    #[serde(deserialize_with = "null_default")]
    pub path: PathBuf,
    /// Segment size in bytes before a new segment starts (default 64 MiB).
    #[serde(deserialize_with = "null_default")]
    pub segment_bytes: u64,
}

impl Default for TraceStorageConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            local: LocalConfig::default(),
            s3: S3Config::default(),
            gcs: GcsConfig::default(),
            azure: AzureConfig::default(),
            blocklist_poll: None,
            blocklist_poll_stale_tenant_index: None,
            blocklist_poll_tenant_index_builders: None,
            cache: CacheConfig::default(),
            block: BlockConfig::default(),
            wal: WalConfig::default(),
        }
    }
}

/// `storage.trace.local:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Root directory of the blocks.
    #[serde(deserialize_with = "null_default")]
    pub path: PathBuf,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("./allegro-data"),
        }
    }
}

/// `storage.trace.s3:` (Tempo's keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct S3Config {
    #[serde(deserialize_with = "null_default")]
    pub bucket: String,
    #[serde(deserialize_with = "null_default")]
    pub endpoint: String,
    #[serde(deserialize_with = "null_default")]
    pub region: String,
    #[serde(deserialize_with = "null_default")]
    pub access_key: String,
    #[serde(deserialize_with = "null_default")]
    pub secret_key: String,
    #[serde(deserialize_with = "null_default")]
    pub insecure: bool,
    #[serde(deserialize_with = "null_default")]
    pub forcepathstyle: bool,
}

/// `storage.trace.gcs:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct GcsConfig {
    #[serde(deserialize_with = "null_default")]
    pub bucket_name: String,
}

/// `storage.trace.azure:`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(missing_docs)]
pub struct AzureConfig {
    #[serde(deserialize_with = "null_default")]
    pub container_name: String,
    #[serde(deserialize_with = "null_default")]
    pub storage_account_name: String,
    #[serde(deserialize_with = "null_default")]
    pub storage_account_key: String,
}

/// `storage.trace.cache:` sizes in MiB.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Parquet footers and page indexes (trace-by-ID, search and metrics scans).
    #[serde(deserialize_with = "null_default")]
    pub footer_mb: u64,
    /// Trace-ID bloom filters.
    #[serde(deserialize_with = "null_default")]
    pub bloom_mb: u64,
    /// Block metas.
    #[serde(deserialize_with = "null_default")]
    pub meta_mb: u64,
    /// Blocks' span counts per minute (`rollup.parquet`), read by counting metrics queries.
    #[serde(deserialize_with = "null_default")]
    pub rollup_mb: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            footer_mb: 256,
            bloom_mb: 256,
            meta_mb: 64,
            rollup_mb: 128,
        }
    }
}

/// `storage.trace.block:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockConfig {
    /// Rows per Parquet row group.
    #[serde(deserialize_with = "null_default")]
    pub row_group_rows: usize,
    /// Rows per data page.
    #[serde(deserialize_with = "null_default")]
    pub page_rows: usize,
    /// Page compression: `lz4` (default, fastest lookups), `zstd`, `zstd:LEVEL`, `snappy`, `none`.
    #[serde(deserialize_with = "null_default")]
    pub compression: String,
    /// Attributes that always get a column of their own (Tempo's dedicated columns).
    #[serde(deserialize_with = "null_default")]
    pub dedicated_columns: Vec<DedicatedColumn>,
}

impl Default for BlockConfig {
    fn default() -> Self {
        let d = allegro_engine::block::writer::BlockWriteOptions::default();
        Self {
            row_group_rows: d.row_group_rows,
            page_rows: d.page_rows,
            compression: String::new(),
            dedicated_columns: Vec::new(),
        }
    }
}

/// One configured hot column, as Tempo spells dedicated columns.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct DedicatedColumn {
    /// `span`, `resource` or `instrumentation` (default `span`).
    #[serde(default)]
    pub scope: Option<String>,
    /// Attribute name.
    pub name: String,
    /// `string`, `int`, `float` or `bool` (default `string`).
    #[serde(default, rename = "type")]
    pub ty: Option<String>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg = Self::parse(&path.display().to_string(), &text)?;
        cfg.read_tenant_file()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Merges `overrides.per_tenant_override_config` into `overrides.per_tenant`, as Tempo
    /// reads that file (its `"*"` entry is every tenant's, so it becomes the defaults).
    fn read_tenant_file(&mut self) -> Result<(), ConfigError> {
        let Some(file) = self.overrides.per_tenant_override_config.clone() else {
            return Ok(());
        };
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TenantFile {
            #[serde(default)]
            overrides: std::collections::BTreeMap<String, TenantLimits>,
        }
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
            path: file.clone(),
            source,
        })?;
        let tenants: TenantFile = serde_path_to_error::deserialize(
            serde_yaml::Deserializer::from_str(&text),
        )
        .map_err(|e| ConfigError::Parse {
            path: file.display().to_string(),
            key: e.path().to_string(),
            message: tempo_keys::with_hint(&e.into_inner().to_string()),
        })?;
        let n = tenants.overrides.len();
        for (tenant, limits) in tenants.overrides {
            if tenant == "*" {
                self.overrides.defaults = limits;
                self.read_warnings.push(format!(
                    "overrides.per_tenant_override_config: the \"*\" entry of {} replaces overrides.defaults",
                    file.display()
                ));
            } else {
                match self.overrides.per_tenant.entry(tenant) {
                    std::collections::btree_map::Entry::Occupied(e) => {
                        self.read_warnings.push(format!(
                            "overrides.per_tenant.{} is set in the main config and in {}: the main config's entry is used",
                            e.key(),
                            file.display()
                        ));
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(limits);
                    }
                }
            }
        }
        self.read_warnings.push(format!(
            "overrides.per_tenant_override_config: {n} tenant(s) read from {} once at start \
             (Tempo re-reads it every per_tenant_override_period; restart Allegro to apply changes)",
            file.display()
        ));
        Ok(())
    }

    /// Parses YAML text (without semantic validation).
    pub fn parse(name: &str, text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let located = |key: String, message: String| ConfigError::Parse {
            path: name.to_string(),
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            message: tempo_keys::with_hint(&message),
        };
        // Tempo's keys without effect here are taken out first (one warning each). When none
        // is, the text itself is read, so errors keep their line and column.
        let mut tree: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| located(".".into(), e.to_string()))?;
        let tempo_only = tempo_keys::prepare(&mut tree);
        let parsed: Result<Self, _> = if tempo_only.is_empty() {
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
        } else {
            serde_path_to_error::deserialize(tree)
        };
        let mut c = parsed.map_err(|e| {
            let key = e.path().to_string();
            located(key, e.into_inner().to_string())
        })?;
        c.read_warnings = tempo_only;
        c.read_warnings.extend(c.overrides.apply_legacy());
        if c.distributor.kafka_write_path_enabled == Some(true)
            || c.distributor.ingester_write_path_enabled == Some(false)
            || c.ingest.is_some()
            || c.block_builder.is_some()
            || c.backend_scheduler.is_some()
            || c.backend_worker.is_some()
        {
            c.read_warnings.push(
                "Tempo's Kafka write path (distributor.kafka_write_path_enabled, ingest, block_builder, \
                 backend_scheduler, backend_worker) has no effect: Allegro receives, stores and compacts \
                 in one process, as Tempo's single binary does without Kafka"
                    .into(),
            );
        }
        Ok(c)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: key.into(),
                message,
            })
        };
        self.query.ballista.scheduler()?;
        self.query.ballista.rows_address()?;
        if let Some(r) = &self.ingester.ring {
            r.ring()?;
        }
        let c = &self.compactor.compaction;
        if c.compaction_window.is_some_and(|w| w.is_zero()) {
            return bad(
                "compactor.compaction.compaction_window",
                "must be longer than 0s".into(),
            );
        }
        if c.compaction_cycle.is_some_and(|w| w.is_zero()) {
            return bad(
                "compactor.compaction.compaction_cycle",
                "must be longer than 0s".into(),
            );
        }
        let t = &self.storage.trace;
        match t.backend.as_str() {
            "local" => {
                if t.local.path.as_os_str().is_empty() {
                    return bad("storage.trace.local.path", "must name a directory".into());
                }
            }
            "s3" if t.s3.bucket.is_empty() => {
                return bad(
                    "storage.trace.s3.bucket",
                    "is required when storage.trace.backend is s3".into(),
                );
            }
            "gcs" if t.gcs.bucket_name.is_empty() => {
                return bad(
                    "storage.trace.gcs.bucket_name",
                    "is required when storage.trace.backend is gcs".into(),
                );
            }
            "azure"
                if t.azure.container_name.is_empty() || t.azure.storage_account_name.is_empty() =>
            {
                return bad(
                    "storage.trace.azure",
                    "container_name and storage_account_name are required when storage.trace.backend is azure".into(),
                );
            }
            "s3" | "gcs" | "azure" => {}
            other => {
                return bad(
                    "storage.trace.backend",
                    format!("{other:?} is not one of local, s3, gcs, azure"),
                );
            }
        }
        if let Some(d) = t.blocklist_poll
            && d.is_zero()
        {
            return bad(
                "storage.trace.blocklist_poll",
                "must be positive, e.g. 30s".into(),
            );
        }
        if t.block.row_group_rows == 0 {
            return bad(
                "storage.trace.block.row_group_rows",
                "must be positive (default 65536)".into(),
            );
        }
        if t.block.page_rows == 0 || t.block.page_rows > t.block.row_group_rows {
            return bad(
                "storage.trace.block.page_rows",
                "must be positive and at most row_group_rows (default 4096)".into(),
            );
        }
        self.block_compression()?;
        for (i, c) in t.block.dedicated_columns.iter().enumerate() {
            dedicated(c).map_err(|message| ConfigError::Invalid {
                key: format!("storage.trace.block.dedicated_columns[{i}]"),
                message,
            })?;
        }
        let mut r = self.distributor.effective_receivers();
        if let Some(j) = &r.jaeger {
            for (name, u) in [
                ("thrift_compact", &j.protocols.thrift_compact),
                ("thrift_binary", &j.protocols.thrift_binary),
            ] {
                if let Some(u) = u
                    && !(1..=65_535).contains(&u.max_packet_size)
                {
                    return bad(
                        &format!("distributor.receivers.jaeger.protocols.{name}.max_packet_size"),
                        format!(
                            "{} is not a UDP datagram size (1 to 65535; default 65000)",
                            u.max_packet_size
                        ),
                    );
                }
            }
        }
        for (key, example, ep) in DistributorConfig::endpoints_mut(&mut r) {
            if ep
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return bad(key, format!("{ep:?} is not host:port, e.g. {example}"));
            }
        }
        self.ingester_config()?;
        self.query_limits()?;
        self.search_limits()?;
        self.traceql_metrics()?;
        self.generator()?;
        if let Some(l) = &self.server.log_level
            && !LOG_LEVELS.contains(&l.as_str())
        {
            return bad(
                "server.log_level",
                format!("{l:?} is not one of {}", LOG_LEVELS.join(", ")),
            );
        }
        if !self.server.http_api_prefix.is_empty() && !self.server.http_api_prefix.starts_with('/')
        {
            return bad(
                "server.http_api_prefix",
                format!("{:?} must start with /", self.server.http_api_prefix),
            );
        }
        Ok(())
    }

    /// The storage backend as the engine wants it.
    pub fn backend(&self) -> StorageBackend {
        let t = &self.storage.trace;
        match t.backend.as_str() {
            "s3" => StorageBackend::S3 {
                bucket: t.s3.bucket.clone(),
                endpoint: t.s3.endpoint.clone(),
                region: t.s3.region.clone(),
                access_key: t.s3.access_key.clone(),
                secret_key: t.s3.secret_key.clone(),
                insecure: t.s3.insecure,
                forcepathstyle: t.s3.forcepathstyle,
            },
            "gcs" => StorageBackend::Gcs {
                bucket_name: t.gcs.bucket_name.clone(),
            },
            "azure" => StorageBackend::Azure {
                container_name: t.azure.container_name.clone(),
                storage_account_name: t.azure.storage_account_name.clone(),
                storage_account_key: t.azure.storage_account_key.clone(),
            },
            _ => StorageBackend::Local {
                path: t.local.path.clone(),
            },
        }
    }

    /// Block compression (empty means the default, lz4).
    pub fn block_compression(&self) -> Result<BlockCompression, ConfigError> {
        match self.storage.trace.block.compression.as_str() {
            "" => Ok(BlockCompression::Lz4),
            s => BlockCompression::parse(s).map_err(|e| ConfigError::Invalid {
                key: "storage.trace.block.compression".into(),
                message: e
                    .to_string()
                    .trim_start_matches("invalid input: ")
                    .to_string(),
            }),
        }
    }

    /// How blocks are written (from `storage.trace.block`).
    pub fn block_write_options(&self) -> Result<BlockWriteOptions, ConfigError> {
        Ok(BlockWriteOptions {
            hot: HotPolicy {
                configured: self.hot_columns(),
                ..Default::default()
            },
            row_group_rows: self.storage.trace.block.row_group_rows,
            page_rows: self.storage.trace.block.page_rows,
            compression: self.block_compression()?,
            // Local disk by definition; merges write their output there before uploading it.
            spill_dir: Some(self.wal_dir()),
            ..Default::default()
        })
    }

    /// The WAL directory in effect.
    pub fn wal_dir(&self) -> PathBuf {
        let t = &self.storage.trace;
        if !t.wal.path.as_os_str().is_empty() {
            t.wal.path.clone()
        } else if t.backend == "local" {
            t.local.path.join(crate::data_dir::WAL_DIR)
        } else {
            PathBuf::from("./allegro-wal")
        }
    }

    /// Compaction and retention settings, with each tenant's `block_retention` from
    /// `overrides` (a tenant's own, else `overrides.defaults`', else the compactor's), and
    /// this process's name in compaction claims (host and WAL directory).
    pub fn lifecycle(&self) -> allegro_engine::block::lifecycle::LifecycleConfig {
        let mut l = self.compactor.compaction.lifecycle();
        // The WAL directory is this process's alone and stays the same across restarts.
        let wal = std::path::absolute(self.wal_dir()).unwrap_or_else(|_| self.wal_dir());
        l.owner = format!(
            "{}:{}",
            allegro_engine::block::claim::host_name(),
            wal.display()
        );
        if let Some(d) = self.overrides.defaults.compaction.block_retention {
            l.block_retention = d;
        }
        for (tenant, o) in &self.overrides.per_tenant {
            if let Some(r) = o.compaction.block_retention {
                l.tenant_retention.insert(tenant.clone(), r);
            }
        }
        // With sharded ingest each tenant is compacted by one member (validated at start).
        l.ring = self
            .ingester
            .ring
            .as_ref()
            .and_then(|r| r.ring().ok())
            .map(std::sync::Arc::new);
        l
    }

    /// Per-tenant limits: Allegro's defaults, then `overrides.defaults`, then each tenant's.
    pub fn overrides(&self) -> Result<Overrides, ConfigError> {
        let defaults = apply_limits(
            Limits::default(),
            &self.overrides.defaults,
            "overrides.defaults",
        )?;
        let mut per_tenant = std::collections::HashMap::new();
        for (t, l) in &self.overrides.per_tenant {
            crate::tenant::validate_tenant(t).map_err(|message| ConfigError::Invalid {
                key: format!("overrides.per_tenant.{t}"),
                message,
            })?;
            per_tenant.insert(
                t.clone(),
                apply_limits(defaults.clone(), l, &format!("overrides.per_tenant.{t}"))?,
            );
        }
        Ok(Overrides {
            defaults,
            per_tenant,
        })
    }

    /// TraceQL metrics limits and which tenants have them turned off.
    pub fn traceql_metrics(&self) -> Result<MetricsSettings, ConfigError> {
        let m = &self.query_frontend.metrics;
        let mut limits = MetricsLimits::default();
        let positive = |key: &str, zero: bool| -> Result<(), ConfigError> {
            if zero {
                return Err(ConfigError::Invalid {
                    key: format!("query_frontend.metrics.{key}"),
                    message: "must be positive".into(),
                });
            }
            Ok(())
        };
        if let Some(d) = m.max_duration {
            positive("max_duration", d.is_zero())?;
            limits.max_duration = d;
        }
        if let Some(n) = m.max_intervals {
            positive("max_intervals", n == 0)?;
            limits.max_intervals = n;
        }
        if let Some(n) = m.max_exemplars {
            limits.max_exemplars = n;
        }
        if let Some(n) = m.max_response_series {
            positive("max_response_series", n == 0)?;
            limits.max_series = n;
        }
        if let Some(d) = m.query_backend_after {
            limits.recent_window = d;
        }
        if let Some(n) = m.sample_target_spans {
            positive("sample_target_spans", n == 0)?;
            limits.sample_target_spans = n;
        }
        let check = |key: &str, p: &Option<Vec<String>>| -> Result<(), ConfigError> {
            if let Some(p) = p {
                Processors::from_names(p).map_err(|message| ConfigError::Invalid {
                    key: format!("{key}.metrics_generator.processors"),
                    message,
                })?;
            }
            Ok(())
        };
        check(
            "overrides.defaults",
            &self.overrides.defaults.metrics_generator.processors,
        )?;
        let defaults = self
            .overrides
            .defaults
            .read
            .traceql_metrics_enabled
            .unwrap_or(true);
        let mut per_tenant = std::collections::HashMap::new();
        for (t, l) in &self.overrides.per_tenant {
            check(
                &format!("overrides.per_tenant.{t}"),
                &l.metrics_generator.processors,
            )?;
            if let Some(on) = l.read.traceql_metrics_enabled {
                per_tenant.insert(t.clone(), on);
            }
        }
        Ok(MetricsSettings {
            limits,
            defaults,
            per_tenant,
        })
    }

    /// The ingester's settings.
    pub fn ingester_config(&self) -> Result<IngesterConfig, ConfigError> {
        let mut c = IngesterConfig::new(self.wal_dir());
        let i = &self.ingester;
        let positive = |key: &str, d: Option<Duration>, slot: &mut Duration| match d {
            Some(d) if d.is_zero() => Err(ConfigError::Invalid {
                key: format!("ingester.{key}"),
                message: "must be positive".into(),
            }),
            Some(d) => {
                *slot = d;
                Ok(())
            }
            None => Ok(()),
        };
        positive(
            "trace_idle_period",
            i.trace_idle_period,
            &mut c.cut.trace_idle_period,
        )?;
        positive(
            "max_trace_live",
            i.max_trace_live,
            &mut c.cut.max_trace_live,
        )?;
        positive(
            "max_block_duration",
            i.max_block_duration,
            &mut c.cut.max_block_duration,
        )?;
        positive(
            "flush_check_period",
            i.flush_check_period,
            &mut c.flush_check_period,
        )?;
        if i.max_block_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "ingester.max_block_bytes".into(),
                message: "must be positive (default 67108864)".into(),
            });
        }
        c.cut.max_block_bytes = i.max_block_bytes;
        c.max_head_bytes = i.max_head_bytes;
        if self.storage.trace.wal.segment_bytes > 0 {
            c.wal.segment_bytes = self.storage.trace.wal.segment_bytes;
        }
        c.block = self.block_write_options()?;
        c.overrides = self.overrides()?;
        // A head smaller than two blocks refuses every write until the next cut by age: the
        // head block fills it before it is big enough to be cut by size.
        let block = c.cut.max_block_bytes;
        let fits = |key: String, bytes: u64| {
            if bytes > 0 && bytes < 2 * block {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "{bytes} is less than twice ingester.max_block_bytes ({block}): the head \
                         would fill before a block is big enough to be cut, and every write \
                         would be refused until the next cut by age; raise it or lower \
                         max_block_bytes"
                    ),
                });
            }
            if c.max_head_bytes > 0 && bytes > c.max_head_bytes {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "{bytes} is more than ingester.max_head_bytes ({}), the budget of all \
                         tenants together",
                        c.max_head_bytes
                    ),
                });
            }
            Ok(())
        };
        fits("ingester.max_head_bytes".into(), c.max_head_bytes)?;
        fits(
            "overrides.defaults.ingestion.max_head_bytes".into(),
            c.overrides.defaults.max_head_bytes,
        )?;
        for (t, l) in &c.overrides.per_tenant {
            fits(
                format!("overrides.per_tenant.{t}.ingestion.max_head_bytes"),
                l.max_head_bytes,
            )?;
        }
        Ok(c)
    }

    /// Query budgets: `querier` and every tenant's `overrides.*.read`.
    pub fn query_limits(&self) -> Result<QueryLimits, ConfigError> {
        let mut q = QueryLimits::default();
        if let Some(d) = self.querier.search.query_timeout {
            if d.is_zero() {
                return Err(ConfigError::Invalid {
                    key: "querier.search.query_timeout".into(),
                    message: "must be positive, e.g. 2m".into(),
                });
            }
            q.timeout = d;
        }
        if let Some(n) = self.querier.query_threads {
            q.threads = n;
        }
        let apply = |mut l: TenantQueryLimits, r: &ReadLimits, key: &str| {
            if let Some(v) = r.max_bytes_per_tag_values_query {
                l.max_bytes_per_tag_values_query = v;
            }
            let positive = |v: Option<usize>, name: &str, slot: &mut usize| match v {
                Some(0) => Err(ConfigError::Invalid {
                    key: format!("{key}.read.{name}"),
                    message: "must be positive".into(),
                }),
                Some(v) => {
                    *slot = v;
                    Ok(())
                }
                None => Ok(()),
            };
            positive(
                r.max_concurrent_queries,
                "max_concurrent_queries",
                &mut l.max_concurrent_queries,
            )?;
            positive(
                r.max_queued_queries,
                "max_queued_queries",
                &mut l.max_queued_queries,
            )?;
            positive(
                r.max_memory_per_query_bytes,
                "max_memory_per_query_bytes",
                &mut l.max_memory_per_query_bytes,
            )?;
            Ok(l)
        };
        q.defaults = apply(
            q.defaults,
            &self.overrides.defaults.read,
            "overrides.defaults",
        )?;
        for (t, l) in &self.overrides.per_tenant {
            let tl = apply(
                q.defaults.clone(),
                &l.read,
                &format!("overrides.per_tenant.{t}"),
            )?;
            q.per_tenant.insert(t.clone(), tl);
        }
        Ok(q)
    }

    /// Search limits from `query_frontend.search`, Tempo's defaults where unset.
    pub fn search_limits(&self) -> Result<crate::api::search::SearchLimits, ConfigError> {
        let f = &self.query_frontend.search;
        let mut l = crate::api::search::SearchLimits::default();
        if let Some(n) = f.max_result_limit.filter(|&n| n > 0) {
            l.max_limit = n.min(crate::api::search::MAX_LIMIT);
        }
        if let Some(n) = f.max_spans_per_span_set.filter(|&n| n > 0) {
            l.max_spss = n.min(crate::api::search::MAX_SPSS);
        }
        if let Some(n) = f.default_result_limit.filter(|&n| n > 0) {
            l.default_limit = n;
        }
        if let Some(n) = f.default_spans_per_span_set.filter(|&n| n > 0) {
            l.default_spss = n;
        }
        l.max_duration = f.max_duration.filter(|d| !d.is_zero());
        let over = |key: &str, v: usize, max_key: &str, max: usize| {
            if v > max {
                Err(ConfigError::Invalid {
                    key: format!("query_frontend.search.{key}"),
                    message: format!("{v} is above {max_key} ({max})"),
                })
            } else {
                Ok(())
            }
        };
        over(
            "default_result_limit",
            l.default_limit,
            "max_result_limit",
            l.max_limit,
        )?;
        over(
            "default_spans_per_span_set",
            l.default_spss,
            "max_spans_per_span_set",
            l.max_spss,
        )?;
        Ok(l)
    }

    /// Configured hot columns (validated).
    pub fn hot_columns(&self) -> Vec<HotColumn> {
        self.storage
            .trace
            .block
            .dedicated_columns
            .iter()
            .filter_map(|c| dedicated(c).ok())
            .collect()
    }
}

fn apply_limits(mut l: Limits, t: &TenantLimits, key: &str) -> Result<Limits, ConfigError> {
    match t.ingestion.rate_strategy.as_deref() {
        None | Some("local") => {}
        Some(other) => {
            return Err(ConfigError::Invalid {
                key: format!("{key}.ingestion.rate_strategy"),
                message: format!(
                    "{other:?} is not supported: Allegro runs one distributor, so only \"local\" applies"
                ),
            });
        }
    }
    let i = &t.ingestion;
    if let Some(v) = i.rate_limit_bytes {
        l.rate_limit_bytes = v;
    }
    if let Some(v) = i.burst_size_bytes {
        l.burst_size_bytes = v;
    }
    if let Some(v) = i.max_traces_per_user {
        l.max_traces_per_user = v;
    }
    if let Some(v) = i.max_attribute_bytes {
        l.max_attribute_bytes = v;
    }
    if let Some(v) = i.max_attribute_key_bytes {
        l.max_attribute_key_bytes = v;
    }
    if let Some(v) = i.max_span_name_bytes {
        l.max_span_name_bytes = v;
    }
    if let Some(v) = i.max_attributes_per_span {
        l.max_attributes_per_span = v;
    }
    if let Some(v) = i.max_head_bytes {
        l.max_head_bytes = v;
    }
    if let Some(v) = i.max_span_age {
        l.max_span_age = v;
    }
    if let Some(v) = i.max_span_future {
        l.max_span_future = v;
    }
    if let Some(v) = t.global.max_bytes_per_trace {
        l.max_bytes_per_trace = v;
    }
    if l.rate_limit_bytes > 0 && l.burst_size_bytes < l.rate_limit_bytes {
        return Err(ConfigError::Invalid {
            key: format!("{key}.ingestion.burst_size_bytes"),
            message: format!(
                "{} is below rate_limit_bytes ({}): no second's worth of data could ever pass",
                l.burst_size_bytes, l.rate_limit_bytes
            ),
        });
    }
    Ok(l)
}

fn dedicated(c: &DedicatedColumn) -> Result<HotColumn, String> {
    let scope = match c.scope.as_deref().unwrap_or("span") {
        "span" => AttrScope::Span,
        "resource" => AttrScope::Resource,
        "instrumentation" => AttrScope::Instrumentation,
        other => {
            return Err(format!(
                "scope {other:?} is not one of span, resource, instrumentation"
            ));
        }
    };
    let ty = match c.ty.as_deref().unwrap_or("string") {
        "string" => HotType::String,
        "int" => HotType::Int,
        "float" => HotType::Float,
        "bool" => HotType::Bool,
        other => {
            return Err(format!(
                "type {other:?} is not one of string, int, float, bool"
            ));
        }
    };
    if c.name.is_empty() {
        return Err("name must not be empty".into());
    }
    Ok(HotColumn {
        scope,
        key: c.name.clone(),
        ty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(y: &str) -> Result<Config, ConfigError> {
        let c = Config::parse("test.yaml", y)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn empty_blocks_mean_defaults_not_zeros() {
        let c = parse("server:\nstorage:\n  trace:\n    local:\n    cache:\n").unwrap();
        assert_eq!(c.server.http_listen_port, 3200);
        assert_eq!(c.server.http_listen_address, "0.0.0.0");
        assert_eq!(c.storage.trace.backend, "local");
        assert_eq!(c.storage.trace.local.path, PathBuf::from("./allegro-data"));
        assert_eq!(c.storage.trace.cache.footer_mb, 256);
        let c = parse("server:\n  http_listen_port:\n").unwrap();
        assert_eq!(c.server.http_listen_port, 3200);
        assert_eq!(parse("").unwrap().server.http_listen_port, 3200);
    }

    #[test]
    fn a_rows_address_listens_on_its_ip_or_every_interface_for_a_name() {
        let rows = |v: &str| {
            parse(&format!("query:\n  ballista:\n    rows_address: {v:?}\n"))
                .map(|c| c.query.ballista.rows_address().unwrap())
        };
        assert_eq!(
            rows("10.0.0.5:50060").unwrap(),
            Some(("10.0.0.5:50060".parse().unwrap(), "10.0.0.5".into()))
        );
        assert_eq!(
            rows("serve-1.internal:0").unwrap(),
            Some(("0.0.0.0:0".parse().unwrap(), "serve-1.internal".into()))
        );
        assert_eq!(rows("").unwrap(), None);
        for bad in ["serve-1", ":50060", "serve-1:http"] {
            let e = rows(bad).unwrap_err().to_string();
            assert!(e.contains("query.ballista.rows_address"), "{bad}: {e}");
        }
    }

    #[test]
    fn tempo_keys_are_read() {
        let c = parse(
            "multitenancy_enabled: true\nserver:\n  http_listen_port: 3300\n  graceful_shutdown_timeout: 1m30s\nstorage:\n  trace:\n    backend: s3\n    s3:\n      bucket: traces\n      endpoint: localhost:9000\n      insecure: true\n    blocklist_poll: 5m\n",
        )
        .unwrap();
        assert!(c.multitenancy_enabled);
        assert_eq!(c.server.http_listen_port, 3300);
        // Grafana's streaming API: on unless turned off.
        assert_eq!(c.stream_over_http_enabled, None);
        let off = parse("stream_over_http_enabled: false\n").unwrap();
        assert_eq!(off.stream_over_http_enabled, Some(false));
        assert_eq!(
            c.server.graceful_shutdown_timeout,
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            c.storage.trace.blocklist_poll,
            Some(Duration::from_secs(300))
        );
        assert!(
            matches!(c.backend(), StorageBackend::S3 { ref bucket, insecure: true, .. } if bucket == "traces")
        );
    }

    #[test]
    fn receivers_follow_the_http_listen_address_unless_configured() {
        let c = parse("").unwrap();
        let r = c.distributor.receivers_on("127.0.0.1");
        let otlp = r.otlp.unwrap().protocols;
        assert_eq!(otlp.grpc.unwrap().endpoint, "127.0.0.1:4317");
        assert_eq!(otlp.http.unwrap().endpoint, "127.0.0.1:4318");
        let c = parse(
            "distributor:\n  receivers:\n    otlp:\n      protocols:\n        grpc:\n          endpoint: 10.0.0.5:4317\n        http:\n",
        )
        .unwrap();
        let otlp = c.distributor.receivers_on("::1").otlp.unwrap().protocols;
        assert_eq!(otlp.grpc.unwrap().endpoint, "10.0.0.5:4317");
        assert_eq!(otlp.http.unwrap().endpoint, "[::1]:4318");
    }

    #[test]
    fn jaeger_udp_packets_are_datagram_sized() {
        let m = parse(
            "distributor:\n  receivers:\n    jaeger:\n      protocols:\n        thrift_compact:\n          max_packet_size: 10000000\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            m.contains("thrift_compact.max_packet_size") && m.contains("65535"),
            "{m}"
        );
        let c = parse(
            "distributor:\n  receivers:\n    jaeger:\n      protocols:\n        thrift_binary:\n",
        )
        .unwrap();
        let r = c.distributor.effective_receivers();
        assert_eq!(
            r.jaeger.unwrap().protocols.thrift_binary.unwrap().endpoint,
            "0.0.0.0:6832"
        );
    }

    #[test]
    fn receivers_follow_tempo_presence_rules() {
        let c = parse("").unwrap();
        let r = c.distributor.effective_receivers();
        let otlp = r.otlp.unwrap();
        assert_eq!(otlp.protocols.grpc.unwrap().endpoint, "0.0.0.0:4317");
        assert_eq!(otlp.protocols.http.unwrap().endpoint, "0.0.0.0:4318");
        assert!(r.zipkin.is_none());
        // Present-but-empty blocks are on with defaults; absent ones are off.
        let c = parse(
            "distributor:\n  receivers:\n    otlp:\n      protocols:\n        http:\n    zipkin:\n",
        )
        .unwrap();
        let r = c.distributor.effective_receivers();
        let otlp = r.otlp.unwrap();
        assert!(otlp.protocols.grpc.is_none());
        assert_eq!(otlp.protocols.http.unwrap().max_request_body_size, 20 << 20);
        assert_eq!(r.zipkin.unwrap().endpoint, "0.0.0.0:9411");
        let m = parse("distributor:\n  receivers:\n    zipkin:\n      endpoint: nowhere\n")
            .unwrap_err()
            .to_string();
        assert!(
            m.contains("distributor.receivers.zipkin.endpoint") && m.contains("host:port"),
            "{m}"
        );
    }

    #[test]
    fn overrides_layer_defaults_then_tenants() {
        let c = parse("overrides:\n  defaults:\n    ingestion:\n      rate_limit_bytes: 1000\n      burst_size_bytes: 5000\n    global:\n      max_bytes_per_trace: 77\n  per_tenant:\n    big:\n      ingestion:\n        max_traces_per_user: 9\n").unwrap();
        let o = c.overrides().unwrap();
        assert_eq!(o.limits("anyone").rate_limit_bytes, 1000);
        assert_eq!(o.limits("anyone").max_traces_per_user, 10_000);
        assert_eq!(o.limits("big").max_traces_per_user, 9);
        assert_eq!(o.limits("big").max_bytes_per_trace, 77);
        assert_eq!(o.limits("big").burst_size_bytes, 5000);
        let m = parse("overrides:\n  defaults:\n    ingestion:\n      rate_strategy: global\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("rate_strategy") && m.contains("local"), "{m}");
        let m = parse("overrides:\n  defaults:\n    ingestion:\n      rate_limit_bytes: 10\n      burst_size_bytes: 5\n").unwrap_err().to_string();
        assert!(m.contains("burst_size_bytes"), "{m}");
        let m = parse("overrides:\n  per_tenant:\n    \"a/b\":\n      global:\n")
            .unwrap_err()
            .to_string();
        assert!(m.contains("overrides.per_tenant.a/b"), "{m}");
        let c = parse("ingester:\n  trace_idle_period: 2s\n  max_trace_live: 1m\n").unwrap();
        let i = c.ingester_config().unwrap();
        assert_eq!(i.cut.trace_idle_period, Duration::from_secs(2));
        assert_eq!(i.cut.max_trace_live, Duration::from_secs(60));
        assert_eq!(i.cut.max_block_duration, Duration::from_secs(300));
        assert!(
            parse("ingester:\n  max_trace_live: 0s\n")
                .unwrap_err()
                .to_string()
                .contains("ingester.max_trace_live")
        );
        assert_eq!(c.wal_dir(), PathBuf::from("./allegro-data/@wal"));
    }

    #[test]
    fn the_ingest_ring_is_read_and_checked() {
        let ring = |me: &str, b: &str| {
            format!(
                "ingester:\n  ring:\n    instance_id: {me}\n    members:\n      - id: a\n        address: http://10.0.0.1:3200/\n      - id: b\n        address: {b}\n"
            )
        };
        let c = parse(&ring("b", "http://10.0.0.2:3200")).unwrap();
        let r = c.ingester.ring.as_ref().unwrap().ring().unwrap();
        assert_eq!(r.members()[r.me()].id, "b");
        assert_eq!(r.members()[0].address, "http://10.0.0.1:3200");
        assert!(c.lifecycle().ring.is_some());
        assert!(parse("").unwrap().lifecycle().ring.is_none());
        let msg = |y: &str| parse(y).unwrap_err().to_string();
        let m = msg(&ring("c", "http://10.0.0.2:3200"));
        assert!(
            m.contains("ingester.ring") && m.contains("\"c\", is not among the members"),
            "{m}"
        );
        let m = msg(&ring("a", "10.0.0.2:3200"));
        assert!(
            m.contains("ingester.ring.members[1].address") && m.contains("http://"),
            "{m}"
        );
    }

    #[test]
    fn mistakes_name_the_key() {
        let msg = |y: &str| parse(y).unwrap_err().to_string();
        let m = msg("server:\n  http_listen_port: abc\n");
        assert!(
            m.contains("server.http_listen_port") && m.contains("line 2"),
            "{m}"
        );
        let m = msg("server:\n  htp_listen_port: 1\n");
        assert!(m.contains("unknown field `htp_listen_port`"), "{m}");
        let m = msg("storage:\n  trace:\n    backend: s4\n");
        assert!(
            m.contains("storage.trace.backend") && m.contains("s4"),
            "{m}"
        );
        let m = msg("storage:\n  trace:\n    backend: s3\n");
        assert!(m.contains("storage.trace.s3.bucket"), "{m}");
        let m = msg("storage:\n  trace:\n    blocklist_poll: soon\n");
        assert!(
            m.contains("storage.trace.blocklist_poll") && m.contains("not a duration"),
            "{m}"
        );
        let m = msg(
            "storage:\n  trace:\n    block:\n      dedicated_columns:\n        - {name: x, type: blob}\n",
        );
        assert!(
            m.contains("dedicated_columns[0]") && m.contains("blob"),
            "{m}"
        );
        let m = msg("storage:\n  trace:\n    block:\n      compression: brotli\n");
        assert!(
            m.contains("storage.trace.block.compression") && m.contains("brotli"),
            "{m}"
        );
        let m = msg("server: [1, 2]\n");
        assert!(m.contains("server"), "{m}");
    }
}
