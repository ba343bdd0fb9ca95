//! The service-graphs processor: client and server spans of one call are paired into an edge
//! (Tempo's `servicegraphs`); completed edges become request counts and latency histograms,
//! edges left unpaired for `wait` become virtual-node edges or are counted as expired.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

use crate::generator::attrs::{find, find_str, find_string, stringify};
use crate::generator::registry::{FamilyId, Kind, Observations, Registry, sanitize_label_name};
use crate::generator::{Parts, multiplier};

/// `metrics_generator.processor.service_graphs`.
#[derive(Debug, Clone)]
pub struct ServiceGraphsConfig {
    /// How long an edge waits for its other side (10s).
    pub wait: Duration,
    /// Most edges waiting at once (10000); spans past it are dropped and counted.
    pub max_items: usize,
    /// Latency histogram bounds in seconds.
    pub histogram_buckets: Vec<f64>,
    /// Extra labels from attributes (resource first, then span).
    pub dimensions: Vec<String>,
    /// Dimensions as `client_<d>` and `server_<d>`.
    pub enable_client_server_prefix: bool,
    /// `traces_service_graph_request_messaging_system_seconds`.
    pub enable_messaging_system_latency_histogram: bool,
    /// `virtual_node` label (`client` or `server`) on virtual-node edges.
    pub enable_virtual_node_label: bool,
    /// Attributes naming an uninstrumented peer.
    pub peer_attributes: Vec<String>,
    /// Attributes that mark a client span as a database call and name the database.
    pub database_name_attributes: Vec<String>,
    /// Attribute whose numeric value multiplies counts.
    pub span_multiplier_key: Option<String>,
}

/// Tempo's default service-graph buckets: 0.1 s doubling 8 times, to 12.8 s.
pub fn default_edge_buckets() -> Vec<f64> {
    (0..8).map(|i| 0.1 * f64::from(1u32 << i)).collect()
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

impl Default for ServiceGraphsConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(10),
            max_items: 10_000,
            histogram_buckets: default_edge_buckets(),
            dimensions: Vec::new(),
            enable_client_server_prefix: false,
            enable_messaging_system_latency_histogram: false,
            enable_virtual_node_label: false,
            peer_attributes: strings(&["peer.service", "db.name", "db.system", "db.system.name"]),
            database_name_attributes: strings(&[
                "db.namespace",
                "db.name",
                "db.system",
                "db.system.name",
            ]),
            span_multiplier_key: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Connection {
    Direct,
    Messaging,
    Database,
    Virtual,
}

impl Connection {
    fn label(self) -> &'static str {
        match self {
            Connection::Direct => "",
            Connection::Messaging => "messaging_system",
            Connection::Database => "database",
            Connection::Virtual => "virtual_node",
        }
    }
}

#[derive(Debug)]
struct Edge {
    trace: [u8; 16],
    /// Keyed by an empty parent: the server side is a root span.
    root: bool,
    client: Option<Arc<str>>,
    server: Option<Arc<str>>,
    connection: Connection,
    client_secs: f64,
    server_secs: f64,
    failed: bool,
    dims: Vec<String>,
    virtual_node: &'static str,
    peer: Option<Arc<str>>,
    multiplier: f64,
    client_end: u64,
    server_start: u64,
    expires: Instant,
}

/// Counts for the processor's self-metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct EdgeStats {
    /// Edges completed (paired, database or virtual node).
    pub edges: u64,
    /// Edges that expired before their other side arrived.
    pub expired: u64,
    /// Spans dropped because `max_items` edges were waiting.
    pub dropped_spans: u64,
}

type Key = ([u8; 16], [u8; 8]);

/// Adds the half of an edge seen in this request to the half that was waiting.
fn merge(into: &mut Edge, half: Edge) {
    if half.client.is_some() {
        into.client = half.client;
        into.client_secs = half.client_secs;
        into.client_end = half.client_end;
    }
    if half.server.is_some() {
        into.server = half.server;
        into.server_secs = half.server_secs;
        into.server_start = half.server_start;
    }
    if half.connection != Connection::Direct {
        into.connection = half.connection;
    }
    into.failed |= half.failed;
    into.root |= half.root;
    into.multiplier = half.multiplier;
    for (d, h) in into.dims.iter_mut().zip(half.dims) {
        if !h.is_empty() {
            *d = h;
        }
    }
    if half.peer.is_some() {
        into.peer = half.peer;
    }
}

/// The service-graphs processor of one tenant.
#[derive(Debug)]
pub struct ServiceGraphs {
    cfg: Arc<ServiceGraphsConfig>,
    total: Option<FamilyId>,
    failed: Option<FamilyId>,
    server: Option<FamilyId>,
    client: Option<FamilyId>,
    messaging: Option<FamilyId>,
    info: Option<FamilyId>,
    dim_labels: usize,
    edges: HashMap<Key, Edge, foldhash::fast::RandomState>,
    order: VecDeque<(Instant, Key)>,
    /// Self-metrics.
    pub stats: EdgeStats,
}

impl ServiceGraphs {
    /// Declares the families the enabled parts (`request`, `latency`, `connection_info`) write.
    pub fn new(cfg: Arc<ServiceGraphsConfig>, reg: &mut Registry, parts: Parts) -> Self {
        let mut names = strings(&["client", "server", "connection_type"]);
        for d in &cfg.dimensions {
            let d = sanitize_label_name(d);
            if cfg.enable_client_server_prefix {
                names.push(format!("client_{d}"));
                names.push(format!("server_{d}"));
            } else {
                names.push(d);
            }
        }
        let dim_labels = names.len() - 3;
        if cfg.enable_virtual_node_label {
            names.push("virtual_node".into());
        }
        let buckets: Arc<[f64]> = cfg.histogram_buckets.clone().into();
        let mut fam = |on: bool, name: &str, kind: Kind| on.then(|| reg.family(name, kind, &names));
        let hist = Kind::Histogram(buckets);
        Self {
            total: fam(
                parts.count,
                "traces_service_graph_request_total",
                Kind::Counter,
            ),
            failed: fam(
                parts.count,
                "traces_service_graph_request_failed_total",
                Kind::Counter,
            ),
            server: fam(
                parts.latency,
                "traces_service_graph_request_server_seconds",
                hist.clone(),
            ),
            client: fam(
                parts.latency,
                "traces_service_graph_request_client_seconds",
                hist.clone(),
            ),
            messaging: fam(
                parts.latency && cfg.enable_messaging_system_latency_histogram,
                "traces_service_graph_request_messaging_system_seconds",
                hist,
            ),
            info: fam(
                parts.size,
                "traces_service_graph_connection_info",
                Kind::Gauge,
            ),
            cfg,
            dim_labels,
            edges: HashMap::default(),
            order: VecDeque::new(),
            stats: EdgeStats::default(),
        }
    }

    /// Edges waiting for their other side.
    pub fn waiting(&self) -> usize {
        self.edges.len()
    }

    /// Pairs the spans of a request whose `mask` entry (one per span, in order) is set, then
    /// records the edges completed and expired, one registry update per label set.
    pub fn consume(
        &mut self,
        reg: &mut Registry,
        batches: &[ResourceSpans],
        mask: &[bool],
        now_ms: i64,
    ) {
        let now = Instant::now();
        let cfg = self.cfg.clone();
        let mut done: Vec<Edge> = Vec::new();
        let mut local: HashMap<Key, Edge, foldhash::fast::RandomState> = HashMap::default();
        let mut m = mask.iter();
        for rs in batches {
            let resource: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
            // Spans of a resource without a service name cannot be placed on the graph; one
            // allocation per resource is shared by every edge side it opens.
            let service: Option<Arc<str>> = find_str("service.name", resource).map(Arc::from);
            // Database attributes are looked up resource first, per name; the resource half
            // is the same for all its spans.
            let res_db: Vec<Option<&AnyValue>> = cfg
                .database_name_attributes
                .iter()
                .map(|a| find(a, &[resource]))
                .collect();
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                if !m.next().copied().unwrap_or(false) {
                    continue;
                }
                let Some(service) = &service else { continue };
                let Ok(trace) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
                    continue;
                };
                let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
                let client_side = match kind {
                    SpanKind::Client | SpanKind::Producer => true,
                    SpanKind::Server | SpanKind::Consumer => false,
                    _ => continue,
                };
                let id = if client_side {
                    &span.span_id
                } else {
                    &span.parent_span_id
                };
                let root = !client_side && id.is_empty();
                let side = if root {
                    [0; 8]
                } else {
                    match <[u8; 8]>::try_from(id.as_slice()) {
                        Ok(s) => s,
                        Err(_) => continue,
                    }
                };
                let key = (trace, side);
                // Both sides of most calls come in the same request: pair them in a small map
                // first and only take what is left to the shared one.
                let e = local.entry(key).or_insert_with(|| Edge {
                    trace,
                    root,
                    client: None,
                    server: None,
                    connection: Connection::Direct,
                    client_secs: 0.0,
                    server_secs: 0.0,
                    failed: false,
                    dims: vec![String::new(); self.dim_labels],
                    virtual_node: "",
                    peer: None,
                    multiplier: 1.0,
                    client_end: 0,
                    server_start: 0,
                    expires: now + cfg.wait,
                });
                Self::upsert(&cfg, e, resource, &res_db, service, span, kind, client_side);
                if e.client.is_some()
                    && e.server.is_some()
                    && let Some(e) = local.remove(&key)
                {
                    done.push(e);
                }
            }
        }
        for (key, half) in local {
            let full = self.edges.len() >= cfg.max_items;
            match self.edges.entry(key) {
                Entry::Occupied(mut o) => {
                    merge(o.get_mut(), half);
                    let e = o.get();
                    if e.client.is_some() && e.server.is_some() {
                        done.push(o.remove());
                    }
                }
                Entry::Vacant(_) if full => {
                    self.stats.dropped_spans +=
                        u64::from(half.client.is_some()) + u64::from(half.server.is_some());
                }
                Entry::Vacant(v) => {
                    self.order.push_back((half.expires, key));
                    v.insert(half);
                }
            }
        }
        self.expire_into(now, &mut done);
        self.record(reg, done, now_ms);
    }

    #[allow(clippy::too_many_arguments)]
    fn upsert(
        cfg: &ServiceGraphsConfig,
        e: &mut Edge,
        resource: &[KeyValue],
        res_db: &[Option<&AnyValue>],
        service: &Arc<str>,
        span: &Span,
        kind: SpanKind,
        client_side: bool,
    ) {
        let lists: [&[KeyValue]; 2] = [resource, &span.attributes];
        if matches!(kind, SpanKind::Producer | SpanKind::Consumer) {
            e.connection = Connection::Messaging;
        }
        let secs = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano) as f64
            / 1e9;
        if client_side {
            e.client = Some(service.clone());
            e.client_secs = secs;
            e.client_end = span.end_time_unix_nano;
        } else {
            e.server = Some(service.clone());
            e.server_secs = secs;
            e.server_start = span.start_time_unix_nano;
        }
        e.failed |= span.status.as_ref().is_some_and(|s| s.code == 2);
        e.multiplier = multiplier(cfg.span_multiplier_key.as_deref(), resource, span);
        for (j, d) in cfg.dimensions.iter().enumerate() {
            if let Some(v) = find_string(d, &lists) {
                let slot = if cfg.enable_client_server_prefix {
                    2 * j + usize::from(!client_side)
                } else {
                    j
                };
                e.dims[slot] = v;
            }
        }
        // The peer only matters when the edge expires: for a client without its server, or a
        // root server span without a client.
        if (client_side || e.root)
            && let Some(p) = cfg
                .peer_attributes
                .iter()
                .find_map(|a| find(a, &[&span.attributes]))
                .and_then(stringify)
        {
            e.peer = Some(p.into());
        }
        if client_side
            && let Some(db) = cfg
                .database_name_attributes
                .iter()
                .zip(res_db)
                .find_map(|(a, r)| r.or_else(|| find(a, &[&span.attributes])))
                .and_then(stringify)
        {
            e.connection = Connection::Database;
            let attrs: &[KeyValue] = &span.attributes;
            let address = || {
                let a = find_string("network.peer.address", &[attrs])?;
                Some(match find_string("network.peer.port", &[attrs]) {
                    Some(p) => format!("{a}:{p}"),
                    None => a,
                })
            };
            e.server = Some(
                find_string("peer.service", &[attrs])
                    .or_else(|| find_string("server.address", &[attrs]))
                    .or_else(address)
                    .unwrap_or(db)
                    .into(),
            );
        }
    }

    /// Updates the registry with completed edges, summed per label set first.
    fn record(&mut self, reg: &mut Registry, edges: Vec<Edge>, now_ms: i64) {
        if edges.is_empty() {
            return;
        }
        struct Acc {
            total: f64,
            failed: f64,
            server: Observations,
            client: Observations,
            messaging: Observations,
        }
        type Labels = (Arc<str>, Arc<str>, Connection, Vec<String>, &'static str);
        let cfg = self.cfg.clone();
        let bounds: &[f64] = &cfg.histogram_buckets;
        let mut acc: HashMap<Labels, Acc, foldhash::fast::RandomState> = HashMap::default();
        self.stats.edges += edges.len() as u64;
        for e in edges {
            let (Some(client), Some(server)) = (e.client, e.server) else {
                continue;
            };
            let a = acc
                .entry((client, server, e.connection, e.dims, e.virtual_node))
                .or_insert_with(|| Acc {
                    total: 0.0,
                    failed: 0.0,
                    server: Observations::new(bounds),
                    client: Observations::new(bounds),
                    messaging: Observations::new(bounds),
                });
            let n = e.multiplier;
            a.total += n;
            if e.failed {
                a.failed += n;
            }
            let t = Some(e.trace.as_slice());
            a.server.add(bounds, e.server_secs, n, t);
            a.client.add(bounds, e.client_secs, n, t);
            if e.connection == Connection::Messaging {
                let secs = e.server_start.saturating_sub(e.client_end) as f64 / 1e9;
                a.messaging.add(bounds, secs, n, t);
            }
        }
        for ((client, server, connection, dims, vnode), a) in acc {
            let mut values: Vec<&str> = vec![&client, &server, connection.label()];
            values.extend(dims.iter().map(String::as_str));
            if self.cfg.enable_virtual_node_label {
                values.push(vnode);
            }
            if let Some(f) = self.total {
                reg.inc(f, &values, a.total);
            }
            if a.failed > 0.0
                && let Some(f) = self.failed
            {
                reg.inc(f, &values, a.failed);
            }
            if let Some(f) = self.server {
                reg.observe_all(f, &values, &a.server, now_ms);
            }
            if let Some(f) = self.client {
                reg.observe_all(f, &values, &a.client, now_ms);
            }
            if let Some(f) = self.messaging
                && connection == Connection::Messaging
            {
                reg.observe_all(f, &values, &a.messaging, now_ms);
            }
            if let Some(f) = self.info {
                reg.set(f, &values, 1.0);
            }
        }
    }

    /// Expires edges that waited `wait` without their other side and records those that
    /// become virtual-node edges.
    pub fn expire(&mut self, reg: &mut Registry, now: Instant, now_ms: i64) {
        let mut done = Vec::new();
        self.expire_into(now, &mut done);
        self.record(reg, done, now_ms);
    }

    fn expire_into(&mut self, now: Instant, done: &mut Vec<Edge>) {
        while let Some(&(at, key)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            // The entry may belong to an edge that completed and was re-created since.
            if self.edges.get(&key).is_none_or(|e| e.expires != at) {
                continue;
            }
            let Some(mut e) = self.edges.remove(&key) else {
                continue;
            };
            self.stats.expired += 1;
            e.connection = Connection::Virtual;
            if e.client.is_none() {
                // A root server span was called by something uninstrumented: a user or a peer.
                if e.root {
                    e.client = Some(e.peer.take().unwrap_or_else(|| "user".into()));
                    e.virtual_node = "client";
                    done.push(e);
                }
            } else if e.server.is_none()
                && let Some(p) = e.peer.take()
            {
                e.server = Some(p);
                e.virtual_node = "server";
                done.push(e);
            }
        }
    }
}
