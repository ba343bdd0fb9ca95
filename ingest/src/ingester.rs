//! The ingester: limits → WAL → live head → blocks, and trace lookup in the head.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use allegro_engine::block::writer::{BlockEncoder, BlockWriteOptions, EncodedBlock};
use allegro_engine::catalog::Catalog;
use allegro_engine::convert::flatten::{FlatSpan, flatten};
use allegro_engine::convert::normalize::normalize;
use allegro_engine::ids::TraceId;
use allegro_engine::priority::{BACKGROUND_NICE, QUERY_NICE, at_nice};
use allegro_engine::query::{LiveBatches, LiveSpans};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use parking_lot::{Mutex, RwLock};
use prost::Message;

use crate::error::{IngestError, Result};
use crate::head::{CutBlock, CutPolicy, HeldTrace, SnapshotParts, TenantHead};
use crate::head_snapshots::{
    HeadSnapshots, Part, convert_head_data, select_traces, without_traces,
};
use crate::limits::{Overrides, RateLimiter};
use crate::metrics::{HeadGauges, IngestMetrics, RefuseReason};
use crate::prepare::BadKind;
use crate::prepare::{Prepared, decode_chunks, prepare};
use crate::sanitize::{SpanRules, sanitize};
use crate::wal::{self, Record, Wal, WalOptions, WalSink};
use crate::wire;

/// Everything the ingester is configured with.
#[derive(Debug, Clone)]
pub struct IngesterConfig {
    /// The WAL.
    pub wal: WalOptions,
    /// When traces complete and blocks are cut.
    pub cut: CutPolicy,
    /// How often the head is checked for complete traces and due blocks.
    pub flush_check_period: Duration,
    /// How blocks are encoded.
    pub block: BlockWriteOptions,
    /// Per-tenant limits.
    pub overrides: Overrides,
    /// Bytes the heads of all tenants together may hold (live, complete and being written);
    /// past it pushes get a retryable refusal until flushing catches up. Each tenant's share
    /// under it is its `max_head_bytes` limit.
    pub max_head_bytes: u64,
}

impl IngesterConfig {
    /// Defaults with the WAL in `wal_dir`.
    pub fn new(wal_dir: impl Into<std::path::PathBuf>) -> Self {
        Self {
            wal: WalOptions::new(wal_dir),
            cut: CutPolicy {
                trace_idle_period: Duration::from_secs(5),
                max_trace_live: Duration::from_secs(30),
                max_block_duration: Duration::from_secs(300),
                max_block_bytes: 64 << 20,
            },
            flush_check_period: Duration::from_secs(1),
            block: BlockWriteOptions::default(),
            overrides: Overrides::default(),
            max_head_bytes: 512 << 20,
        }
    }
}

/// Sees every accepted request after it is durable (the metrics generator).
pub trait SpanTap: Send + Sync {
    /// `batches` as received, with each span's encoded size in request order; with
    /// `accepted`, only spans of those traces were stored.
    fn spans(
        &self,
        tenant: &str,
        batches: &[ResourceSpans],
        sizes: &[u32],
        accepted: Option<&std::collections::HashSet<TraceId>>,
    );
}

/// What happened to a pushed request that was not refused as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushOutcome {
    /// Spans stored.
    pub accepted: u64,
    /// Spans refused (OTLP partial success).
    pub rejected: u64,
    /// Why, when some were refused.
    pub message: String,
}

#[derive(Default)]
struct Heads {
    tenants: RwLock<HashMap<String, Arc<Mutex<TenantHead>>>>,
    /// Bytes held by every tenant's head together (what `max_head_bytes` bounds). Heads grow
    /// only when the WAL applies a record (or replay restores a trace) and shrink only when a
    /// cut block is durable, so those are the only places that move it.
    total: std::sync::atomic::AtomicU64,
}

impl Heads {
    fn get(&self, tenant: &str) -> Option<Arc<Mutex<TenantHead>>> {
        self.tenants.read().get(tenant).cloned()
    }

    fn get_or_create(&self, tenant: &str) -> Arc<Mutex<TenantHead>> {
        if let Some(h) = self.get(tenant) {
            return h;
        }
        self.tenants
            .write()
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(TenantHead::new(tenant))))
            .clone()
    }

    fn all(&self) -> Vec<(String, Arc<Mutex<TenantHead>>)> {
        let mut v: Vec<_> = self
            .tenants
            .read()
            .iter()
            .map(|(t, h)| (t.clone(), h.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl WalSink for Heads {
    fn apply(&self, seq: u64, record: &Record) {
        if let Record::Append { tenant, chunks } = record {
            let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
            self.total.fetch_add(bytes as u64, Ordering::Relaxed);
            self.get_or_create(tenant)
                .lock()
                .apply(seq, chunks, Instant::now());
        }
    }
}

/// Receives spans, keeps them durable and queryable, and turns them into blocks.
pub struct Ingester {
    cfg: IngesterConfig,
    catalog: Arc<Catalog>,
    heads: Arc<Heads>,
    wal: Mutex<Option<Arc<Wal>>>,
    /// Why the WAL's storage takes no writes, when it does not: the ingester then serves what
    /// the WAL held and refuses data.
    read_only: Option<String>,
    limiter: RateLimiter,
    metrics: Arc<IngestMetrics>,
    closing: AtomicBool,
    /// Cut blocks whose write failed, retried by the flush loop.
    retry: Mutex<Vec<Arc<CutBlock>>>,
    /// Cut blocks waiting for the writer, oldest first.
    pending: Mutex<std::collections::VecDeque<Arc<CutBlock>>>,
    /// Wakes the writer when blocks are pending.
    wake: tokio::sync::Notify,
    flush_lock: tokio::sync::Mutex<()>,
    /// The heads' parts as queries see them.
    snapshots: HeadSnapshots,
    tap: std::sync::OnceLock<Arc<dyn SpanTap>>,
    /// With sharded ingest, where spans of traces other ingesters own go.
    distributor: std::sync::OnceLock<Arc<crate::distributor::Distributor>>,
}

impl std::fmt::Debug for Ingester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingester").finish_non_exhaustive()
    }
}

/// What opening the ingester found in the WAL.
#[derive(Debug, Default)]
pub struct OpenSummary {
    /// Spans replayed into the head.
    pub replayed_spans: u64,
    /// Traces replayed.
    pub replayed_traces: usize,
    /// WAL records read.
    pub records: usize,
    /// Stretches of the WAL with no readable record (torn tails, damage), and what became of
    /// each.
    pub damage: Vec<String>,
    /// Why the WAL's storage takes no writes, when it does not (see [`Ingester::open`]).
    pub read_only: Option<String>,
}

impl Ingester {
    /// Replays the WAL into the head, then starts the WAL writer.
    ///
    /// When the WAL's storage takes no writes (a read-only filesystem, no permission), the
    /// ingester opens read-only: the WAL is replayed without repairs, its spans are served, no
    /// block is written and every push is refused as unavailable, saying why. A server on
    /// read-only storage thus still answers queries.
    pub async fn open(
        cfg: IngesterConfig,
        catalog: Arc<Catalog>,
        metrics: Arc<IngestMetrics>,
    ) -> Result<(Arc<Self>, OpenSummary)> {
        let mut records = Vec::new();
        let dir = cfg.wal.dir.clone();
        let read_only = match wal::probe_writable(&dir) {
            Ok(()) => None,
            Err(e) if wal::refuses_writes(&e) => {
                let why = format!("the WAL directory {} takes no writes: {e}", dir.display());
                tracing::error!("{why}; serving reads only");
                Some(why)
            }
            Err(e) => {
                return Err(IngestError::Wal(format!(
                    "cannot use {}: {e}",
                    dir.display()
                )));
            }
        };
        let repair = read_only.is_none();
        let summary = tokio::task::spawn_blocking(move || {
            wal::replay(&dir, repair, |seq, rec| records.push((seq, rec))).map(|s| (s, records))
        })
        .await
        .map_err(|e| IngestError::Internal(format!("WAL replay panicked: {e}")))?;
        let (summary, records) = summary?;
        // A `Flushed` record counts only if its block was published before the crash.
        let mut published: HashMap<(String, [u8; 16]), bool> = HashMap::new();
        for (_, r) in &records {
            if let Record::Flushed { tenant, block, .. } = r
                && !published.contains_key(&(tenant.clone(), *block))
            {
                let id = uuid::Uuid::from_bytes(*block);
                let p = catalog.block_is_published(tenant, &id).await?;
                if !p {
                    tracing::warn!(%tenant, block = %id, "block was not published before the crash; its spans are replayed");
                }
                published.insert((tenant.clone(), *block), p);
            }
        }
        type Parts = Vec<(u64, u32, bytes::Bytes)>;
        let mut rebuilt: HashMap<String, HashMap<TraceId, Parts>> = HashMap::new();
        for (seq, rec) in records {
            match rec {
                Record::Append { tenant, chunks } => {
                    let t = rebuilt.entry(tenant).or_default();
                    for c in chunks {
                        t.entry(c.id).or_default().push((seq, c.spans, c.data));
                    }
                }
                Record::Flushed {
                    tenant,
                    block,
                    traces,
                } => {
                    if !published
                        .get(&(tenant.clone(), block))
                        .copied()
                        .unwrap_or(false)
                    {
                        continue;
                    }
                    if let Some(t) = rebuilt.get_mut(&tenant) {
                        for (id, upto) in traces {
                            if let Some(parts) = t.get_mut(&id) {
                                parts.retain(|(s, _, _)| *s > upto);
                                if parts.is_empty() {
                                    t.remove(&id);
                                }
                            }
                        }
                    }
                }
            }
        }
        let heads = Arc::new(Heads::default());
        let now = Instant::now();
        let mut out = OpenSummary {
            records: summary.records,
            damage: summary.damage.clone(),
            read_only: read_only.clone(),
            ..Default::default()
        };
        for (tenant, traces) in rebuilt {
            let head = heads.get_or_create(&tenant);
            let mut head = head.lock();
            for (id, parts) in traces {
                let mut held = HeldTrace {
                    data: Vec::new(),
                    spans: 0,
                    first_seq: u64::MAX,
                    last_seq: 0,
                };
                for (seq, spans, data) in parts {
                    held.data.extend_from_slice(&data);
                    held.spans += spans;
                    held.first_seq = held.first_seq.min(seq);
                    held.last_seq = held.last_seq.max(seq);
                }
                out.replayed_spans += u64::from(held.spans);
                out.replayed_traces += 1;
                heads
                    .total
                    .fetch_add(held.data.len() as u64, Ordering::Relaxed);
                head.restore(id, held, now);
            }
        }
        metrics.replayed(out.replayed_spans, out.damage.len());
        let wal = match read_only {
            Some(_) => None,
            None => Some(Arc::new(Wal::start(
                cfg.wal.clone(),
                summary.next_seq,
                heads.clone(),
                metrics.clone(),
            )?)),
        };
        let ing = Arc::new(Self {
            cfg,
            catalog,
            heads,
            wal: Mutex::new(wal),
            read_only,
            limiter: RateLimiter::default(),
            metrics,
            closing: AtomicBool::new(false),
            retry: Mutex::default(),
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            flush_lock: tokio::sync::Mutex::new(()),
            snapshots: HeadSnapshots::default(),
            tap: std::sync::OnceLock::new(),
            distributor: std::sync::OnceLock::new(),
        });
        Ok((ing, out))
    }

    /// The metrics of the ingest path.
    pub fn metrics(&self) -> &Arc<IngestMetrics> {
        &self.metrics
    }

    /// Sends every span of a trace this process does not own to the ingester that does
    /// ([`crate::distributor`]); set once, before the receivers start.
    pub fn set_distributor(&self, d: Arc<crate::distributor::Distributor>) {
        let _ = self.distributor.set(d);
    }

    /// Installs the tap that sees accepted spans (once; later calls are ignored).
    pub fn set_tap(&self, tap: Arc<dyn SpanTap>) {
        let _ = self.tap.set(tap);
    }

    /// Why the ingester takes no data, when its storage refuses writes.
    pub fn read_only(&self) -> Option<&str> {
        self.read_only.as_deref()
    }

    /// The configuration.
    pub fn config(&self) -> &IngesterConfig {
        &self.cfg
    }

    fn wal(&self) -> Result<Arc<Wal>> {
        if let Some(why) = &self.read_only {
            return Err(IngestError::ReadOnly(why.clone()));
        }
        self.wal.lock().clone().ok_or(IngestError::ShuttingDown)
    }

    /// Accepts an encoded `ExportTraceServiceRequest` (OTLP protobuf) for `tenant`: with
    /// sharded ingest, split among the ingesters owning its traces; otherwise stored here
    /// ([`Ingester::push_encoded_here`]). Malformed protobuf is `InvalidInput`.
    pub async fn push_encoded(
        &self,
        tenant: &str,
        protocol: &'static str,
        body: &[u8],
    ) -> Result<PushOutcome> {
        if let Some(d) = self.distributor.get() {
            let req = ExportTraceServiceRequest::decode(body)
                .map_err(|e| IngestError::InvalidInput(format!("malformed OTLP protobuf: {e}")))?;
            return self
                .distribute(d, tenant, protocol, req.resource_spans, body.len())
                .await;
        }
        self.push_encoded_here(tenant, protocol, body).await
    }

    /// Stores an encoded `ExportTraceServiceRequest` here, whichever ingester owns its traces
    /// (a share another ingester sent, or every write without a ring). Requests are regrouped
    /// by trace straight from their bytes ([`crate::wire`]); only those that need more
    /// (attribute truncation, bad IDs, a metrics-generator tap, anything unusual) are decoded
    /// first. Malformed protobuf is `InvalidInput`.
    pub async fn push_encoded_here(
        &self,
        tenant: &str,
        protocol: &'static str,
        body: &[u8],
    ) -> Result<PushOutcome> {
        let limits = self.cfg.overrides.limits(tenant);
        let rules = SpanRules::new(limits, allegro_engine::now_unix_nanos());
        let fast = match self.tap.get() {
            None => wire::prepare_encoded(body, &rules),
            Some(_) => None,
        };
        let Some(prepared) = fast else {
            let req = ExportTraceServiceRequest::decode(body)
                .map_err(|e| IngestError::InvalidInput(format!("malformed OTLP protobuf: {e}")))?;
            return self
                .push_here(tenant, protocol, req.resource_spans, body.len())
                .await;
        };
        let total = prepared.sizes.len() as u64;
        self.admit_rate(tenant, total, body.len())?;
        self.admit(tenant, protocol, prepared, total, body.len(), None)
            .await
    }

    /// `batches` split by owner: this process's share stored here, the others sent to their
    /// owners, all at once; the outcomes summed, or the first refusal
    /// ([`crate::distributor`]).
    async fn distribute(
        &self,
        d: &crate::distributor::Distributor,
        tenant: &str,
        protocol: &'static str,
        batches: Vec<ResourceSpans>,
        request_bytes: usize,
    ) -> Result<PushOutcome> {
        let total = crate::distributor::span_count(&batches).max(1);
        let me = d.ring().me();
        let sends = d
            .split(batches)
            .into_iter()
            .enumerate()
            .filter(|(_, share)| !share.is_empty())
            .map(|(m, share)| async move {
                let spans = crate::distributor::span_count(&share);
                if m == me {
                    // The rate limit counts this share's part of the request's bytes.
                    let bytes = (request_bytes as u64 * spans / total) as usize;
                    return self.push_here(tenant, protocol, share, bytes).await;
                }
                let mut o = d
                    .peers()
                    .push(&d.ring().members()[m], tenant, share)
                    .await?;
                o.accepted = spans.saturating_sub(o.rejected);
                Ok(o)
            });
        let mut outcome = PushOutcome::default();
        let mut reasons = Vec::new();
        for o in futures::future::join_all(sends).await {
            let o = o?;
            outcome.accepted += o.accepted;
            outcome.rejected += o.rejected;
            if !o.message.is_empty() {
                reasons.push(o.message);
            }
        }
        outcome.message = reasons.join("; ");
        Ok(outcome)
    }

    /// Refuses when shutting down or when `tenant` is over its ingestion rate.
    fn admit_rate(&self, tenant: &str, spans: u64, request_bytes: usize) -> Result<()> {
        if self.closing.load(Ordering::Relaxed) {
            return Err(IngestError::ShuttingDown);
        }
        let limits = self.cfg.overrides.limits(tenant);
        if let Err(m) = self.limiter.take(tenant, limits, request_bytes as u64) {
            self.metrics.refused(
                tenant,
                RefuseReason::RateLimited,
                spans,
                request_bytes as u64,
            );
            return Err(IngestError::RateLimited(m));
        }
        Ok(())
    }

    /// Accepts a decoded request of `request_bytes` bytes for `tenant` from `protocol`: with
    /// sharded ingest, split among the ingesters owning its traces; otherwise stored here
    /// ([`Ingester::push_here`]).
    pub async fn push(
        &self,
        tenant: &str,
        protocol: &'static str,
        batches: Vec<ResourceSpans>,
        request_bytes: usize,
    ) -> Result<PushOutcome> {
        match self.distributor.get() {
            Some(d) => {
                self.distribute(d, tenant, protocol, batches, request_bytes)
                    .await
            }
            None => {
                self.push_here(tenant, protocol, batches, request_bytes)
                    .await
            }
        }
    }

    /// Stores a decoded request of `request_bytes` bytes for `tenant` from `protocol` here:
    /// rate limit, attribute truncation, ID checks and trace limits, then the WAL. Returns
    /// once the spans are durable and queryable.
    pub async fn push_here(
        &self,
        tenant: &str,
        protocol: &'static str,
        mut batches: Vec<ResourceSpans>,
        request_bytes: usize,
    ) -> Result<PushOutcome> {
        let total: u64 = batches
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum();
        self.admit_rate(tenant, total, request_bytes)?;
        let limits = self.cfg.overrides.limits(tenant);
        let rules = SpanRules::new(limits, allegro_engine::now_unix_nanos());
        let fixes = sanitize(&mut batches, &rules);
        self.metrics.fixed(tenant, &fixes);
        let prepared = prepare(&batches, &rules);
        // The decoded request is kept past the WAL only for the tap.
        let tap = self.tap.get().map(|t| (t.clone(), batches));
        self.admit(tenant, protocol, prepared, total, request_bytes, tap)
            .await
    }

    /// Trace limits, the WAL, then the tap: the common tail of both push paths.
    async fn admit(
        &self,
        tenant: &str,
        protocol: &'static str,
        mut prepared: Prepared,
        total: u64,
        request_bytes: usize,
        tap: Option<(Arc<dyn SpanTap>, Vec<ResourceSpans>)>,
    ) -> Result<PushOutcome> {
        let limits = self.cfg.overrides.limits(tenant);
        let mut outcome = PushOutcome::default();
        let mut reasons: Vec<String> = Vec::new();
        for (kind, reason, what) in [
            (BadKind::Ids, RefuseReason::InvalidSpan, "with invalid IDs"),
            (
                BadKind::Time,
                RefuseReason::OutsideTimeWindow,
                "starting outside the accepted time range",
            ),
        ] {
            let mut bad = prepared.bad.iter().filter(|b| b.kind == kind);
            let Some(b) = bad.next() else { continue };
            let n = 1 + bad.count() as u64;
            self.metrics.refused(tenant, reason, n, 0);
            outcome.rejected += n;
            reasons.push(format!(
                "{n} span(s) {what}, e.g. resourceSpans[{}].scopeSpans[{}].spans[{}]: {}",
                b.position.0, b.position.1, b.position.2, b.reason
            ));
        }
        // Trace limits are checked against the head as it is when the request arrives.
        {
            let head = self.heads.get_or_create(tenant);
            let head = head.lock();
            // The heads' Arrow copies for queries count beside their OTLP bytes.
            let held = head.sizes().2 + self.snapshots.bytes(tenant);
            let all = self.head_bytes();
            let full = if self.cfg.max_head_bytes > 0 && all >= self.cfg.max_head_bytes {
                Some(format!(
                    "the heads of all tenants hold {all} bytes not yet in blocks (ingester.max_head_bytes {})",
                    self.cfg.max_head_bytes
                ))
            } else if limits.max_head_bytes > 0 && held >= limits.max_head_bytes {
                Some(format!(
                    "tenant {tenant} holds {held} bytes not yet in blocks (overrides.ingestion.max_head_bytes {})",
                    limits.max_head_bytes
                ))
            } else {
                None
            };
            if let Some(why) = full {
                drop(head);
                self.metrics
                    .refused(tenant, RefuseReason::HeadFull, total, request_bytes as u64);
                return Err(IngestError::Backpressure(format!(
                    "HEAD_FULL: {why}; block flushing is behind, retry shortly"
                )));
            }
            let mut live = head.live_traces();
            let (mut too_large, mut too_many) = (0u64, 0u64);
            prepared
                .chunks
                .retain(|c| match head.live_trace_bytes(&c.id) {
                    have if limits.max_bytes_per_trace > 0
                        && have.unwrap_or(0) + c.data.len() > limits.max_bytes_per_trace =>
                    {
                        too_large += u64::from(c.spans);
                        false
                    }
                    Some(_) => true,
                    None if limits.max_traces_per_user > 0
                        && live >= limits.max_traces_per_user =>
                    {
                        too_many += u64::from(c.spans);
                        false
                    }
                    None => {
                        live += 1;
                        true
                    }
                });
            let mut refuse = |reason: RefuseReason, spans: u64, why: String| {
                if spans > 0 {
                    self.metrics.refused(tenant, reason, spans, 0);
                    outcome.rejected += spans;
                    reasons.push(why);
                }
            };
            refuse(
                RefuseReason::TraceTooLarge,
                too_large,
                format!(
                    "TRACE_TOO_LARGE: {too_large} span(s) refused: their trace would exceed max_bytes_per_trace ({} bytes) for tenant {tenant}",
                    limits.max_bytes_per_trace
                ),
            );
            refuse(
                RefuseReason::LiveTracesExceeded,
                too_many,
                format!(
                    "LIVE_TRACES_EXCEEDED: {too_many} span(s) of new traces refused: tenant {tenant} has max_traces_per_user ({}) live traces",
                    limits.max_traces_per_user
                ),
            );
        }
        outcome.message = reasons.join("; ");
        let accepted: u64 = prepared.chunks.iter().map(|c| u64::from(c.spans)).sum();
        if accepted == 0 {
            if total == 0 {
                return Ok(outcome);
            }
            if outcome.rejected == 0 {
                return Err(IngestError::Internal(
                    "spans vanished while preparing".into(),
                ));
            }
            return Ok(outcome);
        }
        let wal = self.wal()?;
        // Only when something was refused does the tap need to know which traces were kept.
        let kept: Option<std::collections::HashSet<TraceId>> = (tap.is_some()
            && outcome.rejected > 0)
            .then(|| prepared.chunks.iter().map(|c| c.id).collect());
        let sizes = std::mem::take(&mut prepared.sizes);
        let rec = Record::Append {
            tenant: tenant.to_string(),
            chunks: prepared.chunks,
        };
        if let Err(e) = wal.write(rec).await {
            self.metrics.refused(
                tenant,
                RefuseReason::WalFailure,
                accepted,
                request_bytes as u64,
            );
            return Err(e);
        }
        self.metrics
            .received(tenant, protocol, accepted, request_bytes as u64);
        if let Some((tap, batches)) = tap {
            tap.spans(tenant, &batches, &sizes, kept.as_ref());
        }
        outcome.accepted = accepted;
        Ok(outcome)
    }

    /// Spans of trace `id` held in `tenant`'s head (live, complete or being written).
    pub fn find_trace(&self, tenant: &str, id: &TraceId) -> Result<Vec<ResourceSpans>> {
        let Some(head) = self.heads.get(tenant) else {
            return Ok(Vec::new());
        };
        let parts = head.lock().find(id);
        let mut out = Vec::new();
        for p in parts {
            out.extend(decode_chunks(&p).map_err(|e| {
                IngestError::Internal(format!("head data of trace {id} does not decode: {e}"))
            })?);
        }
        Ok(out)
    }

    /// `tenant`'s head as span-table batches, a group per part. Its parts (live traces by
    /// arrival, complete traces by sweep, blocks being written) are converted once and kept;
    /// only live traces with spans after their part was sealed are converted per call (the
    /// first group). Parts not converted yet (converted ahead for tenants
    /// being queried) are converted here. A trace is in one group whole, unless spans of it
    /// arrived after it was cut into a block being written. With them, the blocks whose
    /// spans left the head lately (none of which is in the groups).
    pub fn live_snapshot(&self, tenant: &str) -> Result<LiveBatches> {
        self.snapshots.queried(tenant);
        // A concurrent call for a newer head may drop a part this one still lists (cut and
        // published in between, so its spans are in a block): then look again.
        for _ in 0..3 {
            let Some(parts) = self.convert_parts(tenant)? else {
                return Ok(LiveBatches::default());
            };
            let Some(kept) = self.snapshots.get(tenant, &parts.keys) else {
                continue;
            };
            let stale: HashMap<u64, HashSet<TraceId>> = parts
                .stale
                .into_iter()
                .map(|(k, ids)| (k, ids.into_iter().collect()))
                .collect();
            let (live, recorded) = convert_head_data(tenant, parts.live)?;
            // The live group changes at every call: the query lists its traces from its rows.
            let mut out = vec![(live, Arc::new(recorded), None)];
            for (key, part) in parts.keys.iter().zip(kept) {
                let (rows, traces) = match stale.get(key) {
                    None => (part.batches.to_vec(), part.traces),
                    Some(ids) => (
                        part.batches
                            .iter()
                            .map(|b| without_traces(b, ids))
                            .collect::<Result<_>>()?,
                        Arc::new(part.traces.without(ids)),
                    ),
                };
                // A part that lost traces still records theirs: more than it holds, never
                // less (what left is in the head or a block).
                out.push((rows, part.recorded, Some(traces)));
            }
            out.retain(|(g, _, _)| g.iter().any(|b| b.num_rows() > 0));
            let mut live = LiveBatches {
                flushed: parts.flushed,
                ..Default::default()
            };
            for (rows, recorded, traces) in out {
                live.groups.push(rows);
                live.recorded.push(Some(recorded));
                live.traces.push(traces);
            }
            return Ok(live);
        }
        Err(IngestError::Internal(format!(
            "the head of tenant {tenant} changed under three snapshots in a row"
        )))
    }

    /// Converts the parts of `tenant`'s head not converted yet and forgets those gone; the
    /// parts as they stand (`None` without a head).
    fn convert_parts(&self, tenant: &str) -> Result<Option<SnapshotParts>> {
        let Some(head) = self.heads.get(tenant) else {
            return Ok(None);
        };
        let have = self.snapshots.keys(tenant);
        let mut parts = head.lock().snapshot_parts(|k| have.contains(&k));
        let mut fresh = Vec::with_capacity(parts.fresh.len());
        for f in std::mem::take(&mut parts.fresh) {
            // A completed part whose traces' live parts are converted is cut out of them.
            let kept = (!f.from.is_empty())
                .then(|| self.snapshots.get(tenant, &f.from))
                .flatten();
            let (batches, recorded) = match kept {
                Some(src) => select_traces(&src, &f.ids.into_iter().collect())?,
                None => convert_head_data(tenant, f.data)?,
            };
            fresh.push((f.key, Part::new(batches, recorded)));
        }
        self.snapshots
            .update(tenant, fresh, &parts.keys, parts.newest);
        Ok(Some(parts))
    }

    /// Converts the new head parts of tenants queried in the last
    /// [`KEEP_FOR`](crate::head_snapshots::KEEP_FOR), so their next
    /// query finds them ready; the others' conversions are dropped.
    pub fn convert_ahead(&self) {
        for tenant in self.snapshots.recently_queried() {
            if let Err(e) = self.convert_parts(&tenant) {
                tracing::warn!(%tenant, error = %e, "head not converted ahead of queries");
            }
        }
    }

    /// True while block flushing is behind: two cut blocks or more wait to be written, or the
    /// heads hold three quarters of `max_head_bytes`. Compaction waits meanwhile
    /// ([`allegro_engine::block::pace`]): the block writer is what frees the head.
    pub fn flushing_behind(&self) -> bool {
        let queued = self.pending.lock().len() + self.retry.lock().len();
        let max = self.cfg.max_head_bytes;
        queued >= BEHIND_QUEUED_BLOCKS || (max > 0 && self.head_bytes() >= max / 4 * 3)
    }

    /// Bytes every tenant's head holds together, their Arrow copies for queries included (what
    /// `max_head_bytes` bounds).
    fn head_bytes(&self) -> u64 {
        self.heads.total.load(Ordering::Relaxed) + self.snapshots.total()
    }

    /// Head sizes per tenant.
    pub fn gauges(&self) -> Vec<HeadGauges> {
        self.heads
            .all()
            .into_iter()
            .map(|(tenant, h)| {
                let (live_traces, spans, bytes) = h.lock().sizes();
                HeadGauges {
                    snapshot_bytes: self.snapshots.bytes(&tenant),
                    tenant,
                    live_traces,
                    spans,
                    bytes,
                }
            })
            .collect()
    }

    /// Renders the ingest metrics.
    pub fn render_metrics(&self, out: &mut String) {
        self.metrics.render(out, &self.gauges());
    }

    /// Completes idle traces and queues the blocks that are due (every head block with
    /// `force`); quick, so the flush loop keeps sweeping while a block is being written.
    fn cut_due(&self, force: bool) {
        let now = Instant::now();
        let mut due: Vec<Arc<CutBlock>> = std::mem::take(&mut *self.retry.lock());
        for (_, h) in self.heads.all() {
            let mut h = h.lock();
            h.sweep(now, &self.cfg.cut, force);
            if let Some(b) = h.cut(now, &self.cfg.cut, force) {
                due.push(b);
            }
        }
        self.pending.lock().extend(due);
    }

    /// Writes queued blocks one at a time, oldest first, until none is left. Returns how many
    /// were written and the first error.
    ///
    /// Blocks are published in cut order: a `Flushed` WAL record drops, on replay, every chunk
    /// of its traces up to its sequence numbers, so a later block of a trace published before an
    /// earlier one would make a crash in between lose the earlier one's spans. After a failure
    /// the failed block and everything queued behind it wait in `retry`, in order.
    async fn write_pending(&self) -> (usize, Option<IngestError>) {
        let _one_at_a_time = self.flush_lock.lock().await;
        let mut written = 0;
        let mut first_err = None;
        loop {
            let Some(b) = self.pending.lock().pop_front() else {
                break;
            };
            if let Err(e) = self.write_block(&b).await {
                tracing::error!(tenant = %b.tenant, error = %e, "block flush failed; will retry");
                self.metrics.flush_failed();
                let mut retry = self.retry.lock();
                retry.push(b);
                retry.extend(self.pending.lock().drain(..));
                first_err = Some(e);
                break;
            }
            written += 1;
        }
        if written > 0 {
            match self.wal() {
                Ok(wal) => wal.delete_before(self.oldest_needed_seq()).await,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        (written, first_err)
    }

    /// One round of flushing: completes idle traces, cuts due blocks and writes them. With
    /// `force` every live trace is completed and every head block cut (shutdown, tests).
    pub async fn flush(&self, force: bool) -> Result<usize> {
        if self.read_only.is_some() {
            // The head holds the WAL's spans, and nowhere could take them.
            return Ok(0);
        }
        self.cut_due(force);
        match self.write_pending().await {
            (_, Some(e)) if force => Err(e),
            (written, _) => Ok(written),
        }
    }

    fn oldest_needed_seq(&self) -> u64 {
        let retry = self
            .retry
            .lock()
            .iter()
            .flat_map(|b| b.traces.values().map(|t| t.first_seq))
            .min();
        self.heads
            .all()
            .iter()
            .filter_map(|(_, h)| h.lock().oldest_needed_seq())
            .chain(retry)
            .min()
            .unwrap_or(u64::MAX)
    }

    async fn write_block(&self, b: &Arc<CutBlock>) -> Result<()> {
        let started = Instant::now();
        let block = b.clone();
        let opts = self.cfg.block.clone();
        // Below queries: a block can be written a little later, a dashboard waits for its answer.
        let encoded = tokio::task::spawn_blocking(move || {
            at_nice(BACKGROUND_NICE, || encode_cut(&block, &opts))
        })
        .await
        .map_err(|e| IngestError::Internal(format!("block encoder panicked: {e}")))??;
        let encoded_in = started.elapsed();
        // Data first (invisible), then the WAL learns of the block, then it is published: a
        // crash at any point leaves each span either replayed or in a visible block, not both.
        self.catalog.stage_block(&encoded).await?;
        let traces: Vec<(TraceId, u64)> =
            b.traces.iter().map(|(id, t)| (*id, t.last_seq)).collect();
        self.wal()?
            .write(Record::Flushed {
                tenant: b.tenant.clone(),
                block: *encoded.meta.block_id.as_bytes(),
                traces,
            })
            .await?;
        self.catalog.publish_block(&encoded).await?;
        if let Some(h) = self.heads.get(&b.tenant) {
            h.lock().cut_done(b, Some(encoded.meta.block_id));
            self.heads.total.fetch_sub(b.bytes, Ordering::Relaxed);
        }
        self.metrics
            .flushed(&b.tenant, encoded.meta.total_spans, started.elapsed());
        tracing::info!(
            tenant = %b.tenant,
            block = %encoded.meta.block_id,
            spans = encoded.meta.total_spans,
            traces = encoded.meta.total_objects,
            bytes = encoded.meta.size,
            took_ms = started.elapsed().as_millis() as u64,
            encode_ms = encoded_in.as_millis() as u64,
            "flushed block"
        );
        Ok(())
    }

    /// Runs the flush loop until shutdown: sweeps and cuts every `flush_check_period` while a
    /// writer task writes the cut blocks back to back, so a long block write never delays the
    /// next cut (which would make the following block, and the head, grow).
    pub async fn run_flush_loop(self: Arc<Self>) {
        if self.read_only.is_some() {
            return;
        }
        let me = self.clone();
        let writer = tokio::spawn(async move {
            loop {
                me.wake.notified().await;
                if me.closing.load(Ordering::Relaxed) {
                    break;
                }
                if let (_, Some(e)) = me.write_pending().await {
                    tracing::error!(error = %e, "flush round failed");
                }
            }
        });
        let me = self.clone();
        let ahead = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CONVERT_AHEAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // One conversion at a time: the next tick waits for this one to end.
            while !me.closing.load(Ordering::Relaxed) {
                tick.tick().await;
                let me = me.clone();
                let _ =
                    tokio::task::spawn_blocking(move || at_nice(QUERY_NICE, || me.convert_ahead()))
                        .await;
            }
        });
        let mut tick = tokio::time::interval(self.cfg.flush_check_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !self.closing.load(Ordering::Relaxed) {
            tick.tick().await;
            self.cut_due(false);
            if !self.pending.lock().is_empty() {
                self.wake.notify_one();
            }
        }
        ahead.abort();
        self.wake.notify_one();
        let _ = writer.await;
    }

    /// Stops taking data, writes everything in memory to blocks and closes the WAL. What
    /// cannot be written stays in the WAL for the next start.
    pub async fn shutdown(&self) -> Result<()> {
        self.closing.store(true, Ordering::Relaxed);
        let r = self.flush(true).await;
        let wal = self.wal.lock().take();
        if let Some(w) = wal
            && let Ok(w) = Arc::try_unwrap(w)
        {
            tokio::task::spawn_blocking(move || w.close())
                .await
                .map_err(|e| IngestError::Internal(e.to_string()))?;
        }
        r.map(|_| ())
    }
}

/// Cut blocks waiting to be written from which flushing counts as behind: one waits whenever
/// two tenants' blocks are cut in the same sweep, two mean the writer has fallen a block back.
const BEHIND_QUEUED_BLOCKS: usize = 2;

/// How often the heads of tenants being queried are converted for queries ahead of them.
///
/// A query converts what arrived since the last conversion (a head part is sealed by each
/// conversion); measured in the 60k spans/s soak with one conversion a second, on the
/// flush loop at background priority: 1–4 parts of 1–4.5 MB a query, 12–160 ms, the most of a
/// fast query's time under load (its search itself took ~5 ms). Converting four times as
/// often, at the priority of the queries it serves, leaves a query a quarter of a second at
/// most.
const CONVERT_AHEAD_EVERY: Duration = Duration::from_millis(250);

/// Spans decoded to choose a block's hot columns from: enough to see every key carried by a
/// twentieth of the spans (the hot threshold) hundreds of times.
const HOT_SAMPLE_SPANS: u64 = 32_768;

/// Encodes a cut block trace by trace in trace-ID order, a batch at a time: memory stays
/// bounded by a batch of decoded spans instead of the whole block, and Parquet encoding runs on
/// a second core (see [`BlockEncoder`]).
fn encode_cut(block: &CutBlock, opts: &BlockWriteOptions) -> Result<EncodedBlock> {
    let mut traces: Vec<(&TraceId, &HeldTrace)> = block.traces.iter().collect();
    traces.sort_unstable_by_key(|(id, _)| **id);
    let mut traces = traces.into_iter();
    let mut next_batch = |target: u64| -> Result<Vec<FlatSpan>> {
        let mut spans = Vec::with_capacity(target as usize + 256);
        while (spans.len() as u64) < target {
            let Some((id, t)) = traces.next() else { break };
            spans.extend(trace_spans(id, t)?);
        }
        Ok(spans)
    };
    // Traces in ID order are a random sample of the block, so the first batch picks its hot
    // columns as the whole block would.
    let first = next_batch(HOT_SAMPLE_SPANS)?;
    let mut enc = BlockEncoder::start(&block.tenant, first, block.traces.len(), opts)?;
    loop {
        let batch = next_batch(opts.batch_rows.max(1) as u64)?;
        if batch.is_empty() {
            break;
        }
        enc.push(batch)?;
    }
    Ok(enc.finish()?)
}

/// One held trace's spans, exact duplicates (client retries) dropped.
fn trace_spans(id: &TraceId, t: &HeldTrace) -> Result<Vec<FlatSpan>> {
    let rs = decode_chunks(&t.data).map_err(|e| {
        IngestError::Internal(format!("head data of trace {id} does not decode: {e}"))
    })?;
    // Normalising costs, so only traces with a repeated span ID pay for it.
    let mut seen = std::collections::HashSet::new();
    let repeated = rs
        .iter()
        .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
        .any(|s| !seen.insert(s.span_id.as_slice()));
    let rs = if repeated { normalize(rs) } else { rs };
    let (flat, bad) = flatten(rs);
    if !bad.is_empty() {
        return Err(IngestError::Internal(format!(
            "trace {id}: {} span(s) failed checks they passed on arrival",
            bad.len()
        )));
    }
    Ok(flat)
}

#[async_trait::async_trait]
impl LiveSpans for Ingester {
    async fn live_batches(&self, tenant: &str) -> allegro_engine::error::Result<LiveBatches> {
        match self.live_snapshot(tenant) {
            Ok(b) => Ok(b),
            Err(e) => Err(allegro_engine::error::EngineError::Internal(e.to_string())),
        }
    }

    async fn live_trace(
        &self,
        tenant: &str,
        id: &TraceId,
    ) -> allegro_engine::error::Result<Vec<ResourceSpans>> {
        self.find_trace(tenant, id)
            .map_err(|e| allegro_engine::error::EngineError::Internal(e.to_string()))
    }
}
