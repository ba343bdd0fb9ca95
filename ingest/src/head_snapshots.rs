//! The heads as queries see them: each part of a tenant's head (see [`crate::head`]) converted
//! to span-table batches once and kept while the part is in the head, with the bytes they hold
//! and what its spans record as a block's `meta.json` would (keys, types, distinct values), so
//! queries read the head as they read blocks (docs/query-execution.md).
//!
//! The Arrow copies are larger than the OTLP bytes they come from (about 1.6 KB a span against
//! 470 bytes in the soak: each row repeats its resource attributes), so they count against
//! `ingester.max_head_bytes` beside them: a budget that left them out let the soak's RSS sit a
//! gigabyte above what the configuration promised. A tenant nobody has queried for
//! [`KEEP_FOR`] holds none: its copies go, and its next query converts its head afresh.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use allegro_engine::block::recorded::RecordedKeys;
use allegro_engine::convert::to_arrow::resource_spans_to_recorded_batches;
use allegro_engine::ids::TraceId;
use allegro_engine::query::head_traces::GroupTraces;
use arrow::array::{Array, BooleanArray, FixedSizeBinaryArray};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

use crate::error::{IngestError, Result};
use crate::prepare::decode_chunks;

/// How long after its last query a tenant's head parts are kept converted (and converted
/// ahead of its queries).
pub const KEEP_FOR: Duration = Duration::from_secs(300);

/// One converted part and the bytes it holds (a part's lists are up to 256 KiB of values, as
/// a block's).
type Converted = (Part, u64);

/// A converted part: its batches, what its spans record (keys, types, values), and its
/// traces (listed once here, not by every query: `allegro_engine::query::head_traces`).
#[derive(Debug, Clone)]
pub struct Part {
    /// Its span-table rows.
    pub batches: Arc<Vec<RecordBatch>>,
    /// What its spans record, as a block's `meta.json` would.
    pub recorded: Arc<RecordedKeys>,
    /// Its traces, and those it could not number whole.
    pub traces: Arc<GroupTraces>,
}

impl Part {
    /// A part of `batches`, which record `recorded`; lists its traces.
    pub fn new(batches: Vec<RecordBatch>, recorded: RecordedKeys) -> Self {
        let traces = GroupTraces::of(&batches);
        Self {
            batches: Arc::new(batches),
            recorded: Arc::new(recorded),
            traces: Arc::new(traces),
        }
    }

    /// Bytes its rows and lists hold.
    fn bytes(&self) -> u64 {
        self.batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum::<u64>()
            + self.recorded.approx_bytes()
            + self.traces.approx_bytes()
    }
}

#[derive(Debug, Default)]
struct Inner {
    parts: HashMap<(String, u64), Converted>,
    bytes: HashMap<String, u64>,
    queried: HashMap<String, Instant>,
}

/// Converted head parts of every tenant.
#[derive(Debug, Default)]
pub struct HeadSnapshots {
    inner: Mutex<Inner>,
    total: AtomicU64,
}

impl HeadSnapshots {
    /// Notes that `tenant`'s head is being queried now.
    pub fn queried(&self, tenant: &str) {
        self.inner
            .lock()
            .queried
            .insert(tenant.to_string(), Instant::now());
    }

    /// Tenants queried within [`KEEP_FOR`]; the converted parts of the others are dropped.
    pub fn recently_queried(&self) -> Vec<String> {
        let mut g = self.inner.lock();
        g.queried.retain(|_, at| at.elapsed() < KEEP_FOR);
        let Inner {
            parts,
            bytes,
            queried,
        } = &mut *g;
        parts.retain(|(t, _), _| queried.contains_key(t));
        bytes.retain(|t, _| queried.contains_key(t));
        self.total.store(bytes.values().sum(), Ordering::Relaxed);
        queried.keys().cloned().collect()
    }

    /// Keys of `tenant`'s converted parts.
    pub fn keys(&self, tenant: &str) -> HashSet<u64> {
        self.inner
            .lock()
            .parts
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, k)| *k)
            .collect()
    }

    /// Keeps `fresh` conversions of `tenant`'s parts and drops those up to `newest` not in
    /// `keys` (parts that left the head; newer ones are a concurrent snapshot's).
    pub fn update(&self, tenant: &str, fresh: Vec<(u64, Part)>, keys: &[u64], newest: u64) {
        let mut g = self.inner.lock();
        for (key, part) in fresh {
            let bytes = part.bytes();
            g.parts.insert((tenant.to_string(), key), (part, bytes));
        }
        let keys: HashSet<u64> = keys.iter().copied().collect();
        g.parts
            .retain(|(t, k), _| t != tenant || keys.contains(k) || *k > newest);
        let held: u64 = g
            .parts
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(_, (_, b))| *b)
            .sum();
        g.bytes.insert(tenant.to_string(), held);
        self.total.store(g.bytes.values().sum(), Ordering::Relaxed);
    }

    /// The converted parts `keys` of `tenant`; `None` when one is not converted.
    pub fn get(&self, tenant: &str, keys: &[u64]) -> Option<Vec<Part>> {
        let g = self.inner.lock();
        keys.iter()
            .map(|k| {
                g.parts
                    .get(&(tenant.to_string(), *k))
                    .map(|(b, _)| b.clone())
            })
            .collect()
    }

    /// Bytes the converted parts of `tenant` hold.
    pub fn bytes(&self, tenant: &str) -> u64 {
        self.inner.lock().bytes.get(tenant).copied().unwrap_or(0)
    }

    /// Bytes the converted parts of every tenant hold.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The head's OTLP `data` (each a `TracesData`) as span-table batches, with what a block of
/// its spans would record of their keys and values.
pub fn convert_head_data(
    tenant: &str,
    data: Vec<Vec<u8>>,
) -> Result<(Vec<RecordBatch>, RecordedKeys)> {
    let mut rs = Vec::new();
    for p in data {
        rs.extend(decode_chunks(&p).map_err(|e| {
            IngestError::Internal(format!("head data of tenant {tenant} does not decode: {e}"))
        })?);
    }
    Ok(resource_spans_to_recorded_batches(rs, 8192)?)
}

/// `batch` without the rows of traces `ids`.
pub fn without_traces(batch: &RecordBatch, ids: &HashSet<TraceId>) -> Result<RecordBatch> {
    filter_traces(batch, ids, false)
}

/// The rows of traces `ids` in `batches`: a completed part cut out of the live parts its
/// traces were whole in, at the cost of a filter instead of a protobuf decode and conversion.
pub fn select_traces(
    parts: &[Part],
    ids: &HashSet<TraceId>,
) -> Result<(Vec<RecordBatch>, RecordedKeys)> {
    let mut out = Vec::new();
    for b in parts.iter().flat_map(|p| p.batches.iter()) {
        let rows = filter_traces(b, ids, true)?;
        if rows.num_rows() > 0 {
            out.push(rows);
        }
    }
    // What the source parts record: it holds for their rows kept here, and more.
    let recorded = RecordedKeys::union(parts.iter().map(|p| p.recorded.as_ref()));
    Ok((out, recorded))
}

/// The rows of `batch` whose trace is in `ids` (`keep`) or is not.
fn filter_traces(batch: &RecordBatch, ids: &HashSet<TraceId>, keep: bool) -> Result<RecordBatch> {
    let trace_ids = batch
        .column_by_name(allegro_engine::schema::col::TRACE_ID)
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .ok_or_else(|| IngestError::Internal("head batch without trace IDs".into()))?;
    let mask: BooleanArray = trace_ids
        .iter()
        .map(|id| {
            let listed = id
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .is_some_and(|b| ids.contains(&TraceId(b)));
            Some(listed == keep)
        })
        .collect();
    filter_record_batch(batch, &mask)
        .map_err(|e| IngestError::Internal(format!("filtering head rows by trace: {e}")))
}
