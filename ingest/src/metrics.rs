//! Ingest self-metrics, rendered in the Prometheus text format on the server's `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

use crate::sanitize::Fixes;

/// A cumulative histogram over fixed bucket bounds (seconds).
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (c, b) in self.counts.iter_mut().zip(self.bounds) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(self.bounds) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", self.sum, self.count);
    }
}

const FSYNC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const FLUSH_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Why spans were refused (the `reason` label, Tempo's spellings where it has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefuseReason {
    /// Over the tenant's rate or burst.
    RateLimited,
    /// The trace would exceed `max_bytes_per_trace`.
    TraceTooLarge,
    /// The tenant has `max_traces_per_user` live traces.
    LiveTracesExceeded,
    /// Malformed IDs.
    InvalidSpan,
    /// A start time outside `max_span_age` / `max_span_future`.
    OutsideTimeWindow,
    /// The request could not be decoded at all.
    MalformedRequest,
    /// The WAL could not take it.
    WalFailure,
    /// The head held `max_head_bytes`: flushing is behind.
    HeadFull,
}

impl RefuseReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::TraceTooLarge => "trace_too_large",
            Self::LiveTracesExceeded => "live_traces_exceeded",
            Self::InvalidSpan => "invalid_span",
            Self::OutsideTimeWindow => "outside_time_window",
            Self::MalformedRequest => "malformed_request",
            Self::WalFailure => "wal_failure",
            Self::HeadFull => "head_full",
        }
    }
}

/// (spans, bytes) per (tenant, label).
type Counts<L> = Mutex<BTreeMap<(String, L), (u64, u64)>>;

/// Counters and histograms of the ingest path.
#[derive(Debug)]
pub struct IngestMetrics {
    received: Counts<&'static str>,
    refused: Counts<RefuseReason>,
    fixes: Mutex<BTreeMap<String, Fixes>>,
    wal_bytes: AtomicU64,
    wal_segments: AtomicU64,
    fsync: Mutex<Histogram>,
    flushed: Mutex<BTreeMap<String, (u64, u64)>>,
    flush_failures: AtomicU64,
    flush_duration: Mutex<Histogram>,
    replayed_spans: AtomicU64,
    torn_tails: AtomicU64,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            received: Mutex::default(),
            refused: Mutex::default(),
            fixes: Mutex::default(),
            wal_bytes: AtomicU64::new(0),
            wal_segments: AtomicU64::new(0),
            fsync: Mutex::new(Histogram::new(FSYNC_BUCKETS)),
            flushed: Mutex::default(),
            flush_failures: AtomicU64::new(0),
            flush_duration: Mutex::new(Histogram::new(FLUSH_BUCKETS)),
            replayed_spans: AtomicU64::new(0),
            torn_tails: AtomicU64::new(0),
        }
    }
}

/// Per-tenant head sizes, read when metrics are rendered.
#[derive(Debug, Clone, Default)]
pub struct HeadGauges {
    /// Tenant.
    pub tenant: String,
    /// Live traces.
    pub live_traces: usize,
    /// Spans held in memory (live, complete and flushing).
    pub spans: u64,
    /// Bytes held in memory.
    pub bytes: u64,
    /// Bytes of the head's Arrow copies kept for queries.
    pub snapshot_bytes: u64,
}

/// A per-tenant head gauge: its name, help and value.
type HeadGauge = (&'static str, &'static str, fn(&HeadGauges) -> u64);

impl IngestMetrics {
    /// Spans and bytes accepted from `protocol`.
    pub fn received(&self, tenant: &str, protocol: &'static str, spans: u64, bytes: u64) {
        let mut m = self.received.lock();
        let e = m.entry((tenant.to_string(), protocol)).or_default();
        e.0 += spans;
        e.1 += bytes;
    }

    /// Spans and bytes refused.
    pub fn refused(&self, tenant: &str, reason: RefuseReason, spans: u64, bytes: u64) {
        if spans == 0 && bytes == 0 {
            return;
        }
        let mut m = self.refused.lock();
        let e = m.entry((tenant.to_string(), reason)).or_default();
        e.0 += spans;
        e.1 += bytes;
    }

    /// Spans refused so far for `reason` (all tenants).
    pub fn refused_spans(&self, reason: RefuseReason) -> u64 {
        self.refused
            .lock()
            .iter()
            .filter(|((_, r), _)| *r == reason)
            .map(|(_, v)| v.0)
            .sum()
    }

    /// What sanitizing a request changed.
    pub fn fixed(&self, tenant: &str, f: &Fixes) {
        if !f.any() {
            return;
        }
        let mut m = self.fixes.lock();
        let e = m.entry(tenant.to_string()).or_default();
        e.values_cut += f.values_cut;
        e.keys_cut += f.keys_cut;
        e.names_cut += f.names_cut;
        e.attributes_dropped += f.attributes_dropped;
        e.end_before_start += f.end_before_start;
    }

    pub(crate) fn observe_fsync(&self, took: Duration, bytes: usize) {
        self.wal_bytes.fetch_add(bytes as u64, Relaxed);
        self.fsync.lock().observe(took.as_secs_f64());
    }

    pub(crate) fn set_wal_segments(&self, n: usize) {
        self.wal_segments.store(n as u64, Relaxed);
    }

    pub(crate) fn flushed(&self, tenant: &str, spans: u64, took: Duration) {
        let mut m = self.flushed.lock();
        let e = m.entry(tenant.to_string()).or_default();
        e.0 += 1;
        e.1 += spans;
        self.flush_duration.lock().observe(took.as_secs_f64());
    }

    pub(crate) fn flush_failed(&self) {
        self.flush_failures.fetch_add(1, Relaxed);
    }

    pub(crate) fn replayed(&self, spans: u64, torn: usize) {
        self.replayed_spans.fetch_add(spans, Relaxed);
        self.torn_tails.fetch_add(torn as u64, Relaxed);
    }

    /// Appends the exposition text, with head gauges read by the caller.
    pub fn render(&self, out: &mut String, heads: &[HeadGauges]) {
        let header = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let received = self.received.lock().clone();
        header(
            out,
            "allegro_ingest_spans_received_total",
            "counter",
            "Spans accepted, by tenant and protocol.",
        );
        for ((t, p), (s, _)) in &received {
            let _ = writeln!(
                out,
                "allegro_ingest_spans_received_total{{tenant=\"{}\",protocol=\"{p}\"}} {s}",
                esc(t)
            );
        }
        header(
            out,
            "allegro_ingest_bytes_received_total",
            "counter",
            "Request bytes accepted, by tenant and protocol.",
        );
        for ((t, p), (_, b)) in &received {
            let _ = writeln!(
                out,
                "allegro_ingest_bytes_received_total{{tenant=\"{}\",protocol=\"{p}\"}} {b}",
                esc(t)
            );
        }
        let refused = self.refused.lock().clone();
        header(
            out,
            "allegro_ingest_spans_refused_total",
            "counter",
            "Spans refused, by tenant and reason.",
        );
        for ((t, r), (s, _)) in &refused {
            let _ = writeln!(
                out,
                "allegro_ingest_spans_refused_total{{tenant=\"{}\",reason=\"{}\"}} {s}",
                esc(t),
                r.as_str()
            );
        }
        header(
            out,
            "allegro_ingest_bytes_refused_total",
            "counter",
            "Request bytes refused, by tenant and reason.",
        );
        for ((t, r), (_, b)) in &refused {
            let _ = writeln!(
                out,
                "allegro_ingest_bytes_refused_total{{tenant=\"{}\",reason=\"{}\"}} {b}",
                esc(t),
                r.as_str()
            );
        }
        header(
            out,
            "allegro_ingest_attributes_truncated_total",
            "counter",
            "Attribute values cut to max_attribute_bytes.",
        );
        let fixes = self.fixes.lock();
        for (t, f) in fixes.iter() {
            let _ = writeln!(
                out,
                "allegro_ingest_attributes_truncated_total{{tenant=\"{}\"}} {}",
                esc(t),
                f.values_cut
            );
        }
        header(
            out,
            "allegro_ingest_span_fixes_total",
            "counter",
            "Changes made to spans on arrival: key_truncated (max_attribute_key_bytes), \
             name_truncated (max_span_name_bytes), attribute_dropped (max_attributes_per_span), \
             end_before_start (stored with duration 0).",
        );
        for (t, f) in fixes.iter() {
            for (fix, n) in [
                ("key_truncated", f.keys_cut),
                ("name_truncated", f.names_cut),
                ("attribute_dropped", f.attributes_dropped),
                ("end_before_start", f.end_before_start),
            ] {
                let _ = writeln!(
                    out,
                    "allegro_ingest_span_fixes_total{{tenant=\"{}\",fix=\"{fix}\"}} {n}",
                    esc(t)
                );
            }
        }
        drop(fixes);
        header(
            out,
            "allegro_wal_bytes_written_total",
            "counter",
            "Bytes written to the WAL.",
        );
        let _ = writeln!(
            out,
            "allegro_wal_bytes_written_total {}",
            self.wal_bytes.load(Relaxed)
        );
        header(
            out,
            "allegro_wal_segments",
            "gauge",
            "WAL segment files on disk.",
        );
        let _ = writeln!(
            out,
            "allegro_wal_segments {}",
            self.wal_segments.load(Relaxed)
        );
        self.fsync.lock().render(
            out,
            "allegro_wal_fsync_duration_seconds",
            "Time of one WAL group commit (write + fdatasync).",
        );
        header(
            out,
            "allegro_wal_replayed_spans_total",
            "counter",
            "Spans read back from the WAL at start.",
        );
        let _ = writeln!(
            out,
            "allegro_wal_replayed_spans_total {}",
            self.replayed_spans.load(Relaxed)
        );
        header(
            out,
            "allegro_wal_torn_tails_total",
            "counter",
            "Stretches of the WAL with no readable record (torn tails, damage) skipped and kept aside at start.",
        );
        let _ = writeln!(
            out,
            "allegro_wal_torn_tails_total {}",
            self.torn_tails.load(Relaxed)
        );
        let gauges: [HeadGauge; 4] = [
            (
                "allegro_head_live_traces",
                "Traces still receiving spans.",
                |h| h.live_traces as u64,
            ),
            (
                "allegro_head_spans",
                "Spans held in memory, not yet in a durable block.",
                |h| h.spans,
            ),
            (
                "allegro_head_bytes",
                "Encoded span bytes held in memory.",
                |h| h.bytes,
            ),
            (
                "allegro_head_snapshot_bytes",
                "Bytes of the head's Arrow copies kept for queries (counted in max_head_bytes).",
                |h| h.snapshot_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            header(out, name, "gauge", help);
            for h in heads {
                let _ = writeln!(out, "{name}{{tenant=\"{}\"}} {}", esc(&h.tenant), value(h));
            }
        }
        let flushed = self.flushed.lock().clone();
        header(
            out,
            "allegro_blocks_flushed_total",
            "counter",
            "Blocks written from the head.",
        );
        for (t, (n, _)) in &flushed {
            let _ = writeln!(
                out,
                "allegro_blocks_flushed_total{{tenant=\"{}\"}} {n}",
                esc(t)
            );
        }
        header(
            out,
            "allegro_spans_flushed_total",
            "counter",
            "Spans written to blocks from the head.",
        );
        for (t, (_, s)) in &flushed {
            let _ = writeln!(
                out,
                "allegro_spans_flushed_total{{tenant=\"{}\"}} {s}",
                esc(t)
            );
        }
        header(
            out,
            "allegro_block_flush_failures_total",
            "counter",
            "Block flushes that failed (retried).",
        );
        let _ = writeln!(
            out,
            "allegro_block_flush_failures_total {}",
            self.flush_failures.load(Relaxed)
        );
        self.flush_duration.lock().render(
            out,
            "allegro_block_flush_duration_seconds",
            "Time to encode and store one block.",
        );
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
