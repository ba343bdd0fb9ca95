//! One tenant's live head: traces still receiving spans, complete traces waiting to be cut into a
//! block (the head block), and cut blocks being written. Everything here is queryable.
//!
//! Queries see the head as Arrow batches, and converting OTLP to Arrow is what a query over
//! the head costs: under a 60k spans/s soak, four fifths of query CPU went to converting every
//! live trace again at every query. So the head is handed out in immutable parts, each
//! converted once and kept by key (see [`SnapshotParts`]): complete traces by the sweep that
//! completed them, cut blocks by those same parts, and live traces by when they arrived: new
//! traces join an open part, sealed by the next sweep (each second) or query snapshot, so a
//! part is never converted while it can still change. A live part's rows stay valid for a trace
//! while the part holds all of the trace; a trace that completes leaves the part (its rows are
//! left out, the part goes when nothing is left), and a trace with spans after its part was
//! sealed leaves it and is converted whole at each query, as it still changes, so its
//! nested-set numbers are always computed over every span it has. One part per request (512
//! spans in the soak) kept some 600 small conversions per tenant, each with its builders'
//! fixed capacity, and the soak's RSS rose to 4.4 GiB; a part per second amortises that.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_engine::ids::TraceId;

use crate::prepare::TraceChunk;

type Map<V> = HashMap<TraceId, V, foldhash::fast::RandomState>;

/// A trace's data in memory: its chunks concatenated (a valid OTLP `TracesData`).
#[derive(Debug, Clone)]
pub struct HeldTrace {
    /// Concatenated chunks.
    pub data: Vec<u8>,
    /// Spans in `data`.
    pub spans: u32,
    /// Smallest WAL sequence number of its chunks (what the WAL must keep).
    pub first_seq: u64,
    /// Largest WAL sequence number of its chunks (what a `Flushed` record names).
    pub last_seq: u64,
}

impl HeldTrace {
    fn new(seq: u64) -> Self {
        Self {
            data: Vec::new(),
            spans: 0,
            first_seq: seq,
            last_seq: seq,
        }
    }

    fn absorb(&mut self, other: HeldTrace) {
        self.data.extend_from_slice(&other.data);
        self.spans += other.spans;
        self.first_seq = self.first_seq.min(other.first_seq);
        self.last_seq = self.last_seq.max(other.last_seq);
    }
}

#[derive(Debug)]
struct Live {
    held: HeldTrace,
    created: Instant,
    last_seen: Instant,
    /// The live part holding all of the trace; `None` once spans came after it was sealed.
    part: Option<u64>,
}

/// Live traces that arrived between two seals (sweeps, each second, or query snapshots), as
/// a query converts them once.
#[derive(Debug)]
struct LivePart {
    /// Traces that joined the part.
    ids: Vec<TraceId>,
    /// Of those, the ones the part still holds whole (its rows for the others are stale).
    whole: usize,
}

/// Traces cut from the head, being written as one block.
#[derive(Debug)]
pub struct CutBlock {
    /// Tenant.
    pub tenant: String,
    /// The traces.
    pub traces: Map<HeldTrace>,
    /// Spans in the block.
    pub spans: u64,
    /// Bytes of trace data.
    pub bytes: u64,
    /// Its traces by the sweep that completed them, under the keys they had in the head: a
    /// query snapshot's parts converted before the cut stay valid through it.
    pub chunks: Vec<(u64, Vec<TraceId>)>,
}

/// When traces are complete and when the head block is cut.
#[derive(Debug, Clone)]
pub struct CutPolicy {
    /// A trace without new spans for this long is complete.
    pub trace_idle_period: Duration,
    /// A trace live for this long is complete even if spans keep coming.
    pub max_trace_live: Duration,
    /// The head block is cut when its oldest complete trace is this old.
    pub max_block_duration: Duration,
    /// The head block is cut when it holds this many bytes.
    pub max_block_bytes: u64,
}

/// One tenant's head.
#[derive(Debug)]
pub struct TenantHead {
    tenant: String,
    live: Map<Live>,
    live_bytes: u64,
    live_spans: u64,
    done: Map<HeldTrace>,
    done_bytes: u64,
    done_spans: u64,
    done_since: Option<Instant>,
    cutting: Vec<Arc<CutBlock>>,
    /// Traces moved to `done` by one sweep, under an ID that changes when their data does:
    /// the immutable parts a query snapshot can convert once and reuse.
    done_chunks: Vec<(u64, Vec<TraceId>)>,
    /// Live traces by when they arrived, under keys from the same sequence.
    live_parts: HashMap<u64, LivePart>,
    /// The live part new traces join until the next sweep or snapshot seals it.
    open: Option<u64>,
    /// Completed parts by key, to the live parts their traces were whole in (see
    /// [`FreshPart::from`]).
    derive: HashMap<u64, Vec<u64>>,
    chunk_seq: u64,
    /// Blocks whose spans left this head lately, and when: other members of a ring learn of
    /// a block by polling the bucket, so a live answer names them until they surely have.
    flushed: std::collections::VecDeque<(uuid::Uuid, Instant)>,
}

/// How long a flushed block is named in live answers: longer than any sensible
/// `blocklist_poll` (30 s by default, Tempo's 5 m) plus a query's time.
pub const FLUSHED_NAMED_FOR: Duration = Duration::from_secs(600);

/// A part of the head a query snapshot has not converted yet.
#[derive(Debug, Default)]
pub struct FreshPart {
    /// Its key.
    pub key: u64,
    /// Its traces.
    pub ids: Vec<TraceId>,
    /// Their data, one `TracesData` each.
    pub data: Vec<Vec<u8>>,
    /// Live parts that held each of its traces whole when they completed: their conversions,
    /// where kept, hold its rows already (empty when some trace was in none).
    pub from: Vec<u64>,
}

/// The head's data for a query snapshot.
#[derive(Debug, Default)]
pub struct SnapshotParts {
    /// Live traces with spans after their part was sealed (still changing: converted every
    /// time).
    pub live: Vec<Vec<u8>>,
    /// Parts the caller did not have.
    pub fresh: Vec<FreshPart>,
    /// Keys of every part now in the head.
    pub keys: Vec<u64>,
    /// Traces whose rows in a live part the caller had are stale, by part key: they completed
    /// or got spans after the part was sealed.
    pub stale: Vec<(u64, Vec<TraceId>)>,
    /// The newest key given out so far: a key up to it and not in `keys` has left for good.
    pub newest: u64,
    /// Blocks whose spans left the head in the last [`FLUSHED_NAMED_FOR`]: none of their
    /// spans is in this snapshot.
    pub flushed: Vec<uuid::Uuid>,
}

impl TenantHead {
    /// An empty head.
    pub fn new(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_string(),
            live: Map::default(),
            live_bytes: 0,
            live_spans: 0,
            done: Map::default(),
            done_bytes: 0,
            done_spans: 0,
            done_since: None,
            cutting: Vec::new(),
            done_chunks: Vec::new(),
            live_parts: HashMap::new(),
            open: None,
            derive: HashMap::new(),
            chunk_seq: 0,
            flushed: std::collections::VecDeque::new(),
        }
    }

    fn next_chunk(&mut self) -> u64 {
        self.chunk_seq += 1;
        self.chunk_seq
    }

    /// The head's data for a query: live traces of several parts always, parts (live traces
    /// by arrival, complete traces by sweep, blocks being written) only where `have(key)` is
    /// false. Seals the open live part.
    pub fn snapshot_parts(&mut self, have: impl Fn(u64) -> bool) -> SnapshotParts {
        // What is converted now must not change: later traces go to a new part.
        self.open = None;
        let mut out = SnapshotParts {
            newest: self.chunk_seq,
            live: self
                .live
                .values()
                .filter(|l| l.part.is_none())
                .map(|l| l.held.data.clone())
                .collect(),
            ..Default::default()
        };
        for (key, p) in &self.live_parts {
            out.keys.push(*key);
            let holds = |id: &&TraceId| self.live.get(*id).is_some_and(|l| l.part == Some(*key));
            if !have(*key) {
                let ids: Vec<TraceId> = p.ids.iter().filter(holds).copied().collect();
                let data = ids
                    .iter()
                    .filter_map(|id| self.live.get(id).map(|l| l.held.data.clone()))
                    .collect();
                out.fresh.push(FreshPart {
                    key: *key,
                    ids,
                    data,
                    from: Vec::new(),
                });
            } else if p.whole < p.ids.len() {
                let stale = p.ids.iter().filter(|id| !holds(id)).copied().collect();
                out.stale.push((*key, stale));
            }
        }
        // A cut block keeps its chunks' keys: converting the whole block again at the first
        // query after each cut (up to `max_block_bytes` of traces, seconds of CPU) stalled
        // queries and held a second copy of the block in memory.
        let parts = std::iter::once((&self.done_chunks, &self.done))
            .chain(self.cutting.iter().map(|b| (&b.chunks, &b.traces)));
        for (chunks, traces) in parts {
            for (key, ids) in chunks {
                out.keys.push(*key);
                if !have(*key) {
                    let data = ids
                        .iter()
                        .filter_map(|id| traces.get(id).map(|d| d.data.clone()))
                        .collect();
                    out.fresh.push(FreshPart {
                        key: *key,
                        ids: ids.clone(),
                        data,
                        from: self.derive.get(key).cloned().unwrap_or_default(),
                    });
                }
            }
        }
        let now = Instant::now();
        out.flushed = self
            .flushed
            .iter()
            .filter(|(_, at)| now.duration_since(*at) <= FLUSHED_NAMED_FOR)
            .map(|(id, _)| *id)
            .collect();
        out
    }

    /// Bytes of a live trace (0 when not live).
    pub fn live_trace_bytes(&self, id: &TraceId) -> Option<usize> {
        self.live.get(id).map(|l| l.held.data.len())
    }

    /// Number of live traces.
    pub fn live_traces(&self) -> usize {
        self.live.len()
    }

    /// The live part new traces join, opened when there is none.
    fn open_part(&mut self) -> u64 {
        if let Some(k) = self.open.filter(|k| self.live_parts.contains_key(k)) {
            return k;
        }
        let k = self.next_chunk();
        self.live_parts.insert(
            k,
            LivePart {
                ids: Vec::new(),
                whole: 0,
            },
        );
        self.open = Some(k);
        k
    }

    /// Drops the open part if no trace joined it.
    fn close_if_empty(&mut self, key: u64) {
        if self.live_parts.get(&key).is_some_and(|p| p.whole == 0) {
            self.live_parts.remove(&key);
            self.open = None;
        }
    }

    /// Appends chunks that were written to the WAL with sequence number `seq`; new traces
    /// join the open live part.
    pub fn apply(&mut self, seq: u64, chunks: &[TraceChunk], now: Instant) {
        let key = self.open_part();
        for c in chunks {
            let l = match self.live.entry(c.id) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    if let Some(p) = self.live_parts.get_mut(&key) {
                        p.ids.push(c.id);
                        p.whole += 1;
                    }
                    v.insert(Live {
                        held: HeldTrace::new(seq),
                        created: now,
                        last_seen: now,
                        part: Some(key),
                    })
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    let l = o.into_mut();
                    // A trace coming again after its part was sealed leaves it: its rows there
                    // would miss these spans.
                    if l.part != Some(key) {
                        leave(&mut self.live_parts, l.part.take());
                    }
                    l
                }
            };
            l.held.data.extend_from_slice(&c.data);
            l.held.spans += c.spans;
            l.held.last_seq = seq;
            l.last_seen = now;
            self.live_bytes += c.data.len() as u64;
            self.live_spans += u64::from(c.spans);
        }
        self.close_if_empty(key);
    }

    /// Puts a trace rebuilt by WAL replay back as live, in the open part.
    pub fn restore(&mut self, id: TraceId, held: HeldTrace, now: Instant) {
        self.live_bytes += held.data.len() as u64;
        self.live_spans += u64::from(held.spans);
        if let Some(l) = self.live.get_mut(&id) {
            leave(&mut self.live_parts, l.part.take());
            l.held.absorb(held);
            return;
        }
        let key = self.open_part();
        if let Some(p) = self.live_parts.get_mut(&key) {
            p.ids.push(id);
            p.whole += 1;
        }
        self.live.insert(
            id,
            Live {
                held,
                created: now,
                last_seen: now,
                part: Some(key),
            },
        );
    }

    /// Moves idle and over-age traces (all of them with `force`) to the head block, and seals
    /// the open live part.
    pub fn sweep(&mut self, now: Instant, p: &CutPolicy, force: bool) {
        self.open = None;
        let due: Vec<TraceId> = self
            .live
            .iter()
            .filter(|(_, l)| {
                force
                    || now.saturating_duration_since(l.last_seen) >= p.trace_idle_period
                    || now.saturating_duration_since(l.created) >= p.max_trace_live
            })
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return;
        }
        let chunk = self.next_chunk();
        let mut moved = Vec::with_capacity(due.len());
        // The live parts the completed traces were whole in, if every one was in one.
        let mut from = Some(std::collections::BTreeSet::new());
        for id in due {
            let Some(mut l) = self.live.remove(&id) else {
                continue;
            };
            match (l.part, from.as_mut()) {
                (Some(k), Some(f)) => {
                    f.insert(k);
                }
                _ => from = None,
            }
            leave(&mut self.live_parts, l.part.take());
            let bytes = l.held.data.len() as u64;
            let spans = u64::from(l.held.spans);
            self.live_bytes -= bytes;
            self.live_spans -= spans;
            self.done_bytes += bytes;
            self.done_spans += spans;
            self.done_since.get_or_insert(now);
            // A trace that completes again before its first part is cut stays one trace.
            match self.done.get_mut(&id) {
                Some(d) => {
                    d.absorb(l.held);
                    // Its earlier chunk's data changed: give that chunk a new key.
                    let fresh = self.next_chunk();
                    if let Some(c) = self.done_chunks.iter_mut().find(|c| c.1.contains(&id)) {
                        self.derive.remove(&c.0);
                        c.0 = fresh;
                    }
                }
                None => {
                    self.done.insert(id, l.held);
                    moved.push(id);
                }
            }
        }
        if !moved.is_empty() {
            self.done_chunks.push((chunk, moved));
            if let Some(f) = from {
                self.derive.insert(chunk, f.into_iter().collect());
            }
        }
        let chunks =
            std::iter::once(&self.done_chunks).chain(self.cutting.iter().map(|b| &b.chunks));
        let present: HashSet<u64> = chunks.flatten().map(|(k, _)| *k).collect();
        self.derive.retain(|k, _| present.contains(k));
        self.repack_live_parts();
    }

    /// Gives a live part that holds less than half of its traces whole a new key holding only
    /// those: one long trace would otherwise keep a whole second of stale rows converted for
    /// as long as it lives (`max_trace_live`).
    fn repack_live_parts(&mut self) {
        let thin: Vec<u64> = self
            .live_parts
            .iter()
            .filter(|(_, p)| p.whole * 2 < p.ids.len())
            .map(|(k, _)| *k)
            .collect();
        for old in thin {
            let Some(p) = self.live_parts.remove(&old) else {
                continue;
            };
            let key = self.next_chunk();
            let mut ids = Vec::with_capacity(p.whole);
            for id in p.ids {
                if let Some(l) = self.live.get_mut(&id).filter(|l| l.part == Some(old)) {
                    l.part = Some(key);
                    ids.push(id);
                }
            }
            let whole = ids.len();
            self.live_parts.insert(key, LivePart { ids, whole });
        }
    }

    /// Cuts the head block when it is old or big enough (or whenever non-empty with `force`).
    pub fn cut(&mut self, now: Instant, p: &CutPolicy, force: bool) -> Option<Arc<CutBlock>> {
        let since = self.done_since?;
        let due = force
            || self.done_bytes >= p.max_block_bytes
            || now.saturating_duration_since(since) >= p.max_block_duration;
        if !due || self.done.is_empty() {
            return None;
        }
        let block = Arc::new(CutBlock {
            tenant: self.tenant.clone(),
            traces: std::mem::take(&mut self.done),
            spans: std::mem::take(&mut self.done_spans),
            bytes: std::mem::take(&mut self.done_bytes),
            chunks: std::mem::take(&mut self.done_chunks),
        });
        self.done_since = None;
        self.cutting.push(block.clone());
        Some(block)
    }

    /// Forgets a cut block once it is durable and in the catalog as block `id` (`None`: it
    /// held nothing worth naming, as in tests).
    pub fn cut_done(&mut self, block: &Arc<CutBlock>, id: Option<uuid::Uuid>) {
        self.cutting.retain(|b| !Arc::ptr_eq(b, block));
        let now = Instant::now();
        while self
            .flushed
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) > FLUSHED_NAMED_FOR)
        {
            self.flushed.pop_front();
        }
        if let Some(id) = id {
            self.flushed.push_back((id, now));
        }
    }

    /// The data of trace `id` held anywhere in the head (each part a `TracesData`).
    pub fn find(&self, id: &TraceId) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(l) = self.live.get(id) {
            out.push(l.held.data.clone());
        }
        if let Some(d) = self.done.get(id) {
            out.push(d.data.clone());
        }
        for b in &self.cutting {
            if let Some(d) = b.traces.get(id) {
                out.push(d.data.clone());
            }
        }
        out
    }

    /// The oldest WAL sequence number whose data is still only in memory.
    pub fn oldest_needed_seq(&self) -> Option<u64> {
        let live = self.live.values().map(|l| l.held.first_seq);
        let done = self.done.values().map(|d| d.first_seq);
        let cutting = self
            .cutting
            .iter()
            .flat_map(|b| b.traces.values().map(|d| d.first_seq));
        live.chain(done).chain(cutting).min()
    }

    /// (live traces, spans in memory, bytes in memory).
    pub fn sizes(&self) -> (usize, u64, u64) {
        let (cs, cb) = self
            .cutting
            .iter()
            .fold((0, 0), |(s, b), c| (s + c.spans, b + c.bytes));
        (
            self.live.len(),
            self.live_spans + self.done_spans + cs,
            self.live_bytes + self.done_bytes + cb,
        )
    }
}

/// A trace leaves the live part it was whole in; the part goes when it holds nothing whole.
fn leave(parts: &mut HashMap<u64, LivePart>, key: Option<u64>) {
    let Some(key) = key else { return };
    if let Some(p) = parts.get_mut(&key) {
        p.whole -= 1;
        if p.whole == 0 {
            parts.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;

    fn chunk(id: u8, data: &'static [u8]) -> TraceChunk {
        TraceChunk {
            id: TraceId([id; 16]),
            spans: 1,
            data: Bytes::from_static(data),
        }
    }

    fn policy() -> CutPolicy {
        CutPolicy {
            trace_idle_period: Duration::from_secs(5),
            max_trace_live: Duration::from_secs(30),
            max_block_duration: Duration::from_secs(60),
            max_block_bytes: 10,
        }
    }

    /// The fresh parts of a snapshot by their data (sorted), to their keys.
    fn fresh(parts: &SnapshotParts) -> BTreeMap<Vec<Vec<u8>>, u64> {
        parts
            .fresh
            .iter()
            .map(|f| {
                let mut d = f.data.clone();
                d.sort();
                (d, f.key)
            })
            .collect()
    }

    fn data(d: &[&[u8]]) -> Vec<Vec<u8>> {
        d.iter().map(|d| d.to_vec()).collect()
    }

    #[test]
    fn query_snapshots_reuse_immutable_parts() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let p = CutPolicy {
            max_block_bytes: 1 << 20,
            ..policy()
        };
        let mut h = TenantHead::new("t");
        h.apply(1, &[chunk(1, b"a"), chunk(2, b"b")], s(0));
        h.sweep(s(6), &p, false);
        h.apply(2, &[chunk(3, b"c")], s(6));
        let first = h.snapshot_parts(|_| false);
        assert!(first.live.is_empty());
        let parts = fresh(&first);
        assert_eq!(parts.len(), 2, "{parts:?}");
        // The completed traces are one part, the live one another.
        let key = parts[&data(&[b"a", b"b"])];
        assert!(parts.contains_key(&data(&[b"c"])));
        // A caller that has a part gets only its key.
        let again = h.snapshot_parts(|k| k == key);
        assert_eq!(
            fresh(&again).into_keys().collect::<Vec<_>>(),
            [data(&[b"c"])]
        );
        assert!(again.keys.contains(&key));
        // Trace 1 completes again before the cut: its chunk changed, so its key did.
        h.apply(3, &[chunk(1, b"z")], s(7));
        h.sweep(s(13), &p, false);
        let after = h.snapshot_parts(|k| k == key);
        assert!(!after.keys.contains(&key));
        assert_eq!(after.keys.len(), 2);
        // Cut: the block's parts keep their keys, so a caller that has them converts nothing.
        let block = h.cut(s(100), &p, true).unwrap();
        let cut = h.snapshot_parts(|k| after.keys.contains(&k));
        assert_eq!(cut.keys, after.keys);
        assert!(cut.fresh.is_empty());
        let whole = h.snapshot_parts(|_| false);
        let mut all: Vec<Vec<u8>> = whole.fresh.into_iter().flat_map(|f| f.data).collect();
        all.sort();
        assert_eq!(all, data(&[b"az", b"b", b"c"]));
        h.cut_done(&block, None);
        assert!(h.snapshot_parts(|_| false).keys.is_empty());
    }

    #[test]
    fn live_traces_are_parts_sealed_by_snapshots_until_they_complete_or_come_again() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut h = TenantHead::new("t");
        // Two requests before any snapshot: one open part, trace 1 whole in it.
        h.apply(1, &[chunk(1, b"a"), chunk(2, b"b")], s(0));
        h.apply(2, &[chunk(1, b"x")], s(0));
        let first = h.snapshot_parts(|_| false);
        assert!(first.live.is_empty() && first.stale.is_empty());
        assert_eq!(
            fresh(&first).into_keys().collect::<Vec<_>>(),
            [data(&[b"ax", b"b"])]
        );
        let ab = first.keys[0];
        // The snapshot sealed that part: a new trace starts another.
        h.apply(3, &[chunk(3, b"c")], s(1));
        let second = h.snapshot_parts(|k| k == ab);
        assert_eq!(
            fresh(&second).into_keys().collect::<Vec<_>>(),
            [data(&[b"c"])]
        );
        let c = second.fresh[0].key;
        // Nothing changed: a caller with both parts converts nothing.
        let have = |k: u64| k == ab || k == c;
        let again = h.snapshot_parts(have);
        assert!(again.fresh.is_empty() && again.live.is_empty() && again.stale.is_empty());
        // Trace 1 comes again after its part was sealed: its rows there are stale, and it is
        // converted whole at every snapshot (the request brings no new trace, so no part).
        h.apply(4, &[chunk(1, b"z")], s(2));
        let next = h.snapshot_parts(have);
        assert_eq!(next.live, data(&[b"axz"]));
        assert!(next.fresh.is_empty());
        assert_eq!(next.stale, vec![(ab, vec![TraceId([1; 16])])]);
        assert_eq!(next.keys.len(), 2);
        // A caller converting the first part now gets trace 2 alone.
        let late = h.snapshot_parts(|k| k == c);
        assert_eq!(
            fresh(&late).into_keys().collect::<Vec<_>>(),
            [data(&[b"b"])]
        );
        // Traces 2 and 3 complete (idle 5 s at t=6), trace 1 does not: both parts hold
        // nothing whole any more and are gone; the completed traces are one new part.
        h.sweep(s(6), &policy(), false);
        let swept = h.snapshot_parts(have);
        assert!(!swept.keys.contains(&ab) && !swept.keys.contains(&c));
        assert_eq!(swept.live, data(&[b"axz"]));
        assert_eq!(
            fresh(&swept).into_keys().collect::<Vec<_>>(),
            [data(&[b"b", b"c"])]
        );
        assert!(swept.stale.is_empty());
        // Each was whole in a live part: the completed part's rows are in theirs.
        assert_eq!(swept.fresh[0].from, vec![ab, c]);
        // A part left holding under half of its traces whole is repacked under a new key.
        h.apply(7, &[chunk(6, b"f"), chunk(7, b"g"), chunk(8, b"h")], s(6));
        let packed = h.snapshot_parts(|_| false);
        let fgh = fresh(&packed)[&data(&[b"f", b"g", b"h"])];
        h.apply(8, &[chunk(6, b"F"), chunk(7, b"G")], s(7));
        h.sweep(s(7), &policy(), false);
        let repacked = h.snapshot_parts(|k| k != fgh && packed.keys.contains(&k));
        assert!(!repacked.keys.contains(&fgh));
        assert!(repacked.stale.is_empty());
        assert!(fresh(&repacked).contains_key(&data(&[b"h"])));
        // A sweep seals the open part too.
        h.apply(5, &[chunk(4, b"d")], s(7));
        h.sweep(s(7), &policy(), false);
        h.apply(6, &[chunk(5, b"e")], s(7));
        let sealed = fresh(&h.snapshot_parts(|_| false));
        assert!(sealed.contains_key(&data(&[b"d"])) && sealed.contains_key(&data(&[b"e"])));
        // Trace 1 was whole in no part: the part it completes in is converted from its data.
        h.sweep(s(100), &policy(), true);
        let last = h.snapshot_parts(|_| false);
        let with_1 = last
            .fresh
            .iter()
            .find(|f| f.ids.contains(&TraceId([1; 16])));
        assert_eq!(with_1.map(|f| f.from.len()), Some(0));
    }

    #[test]
    fn replayed_traces_share_one_part() {
        let now = Instant::now();
        let mut h = TenantHead::new("t");
        for (id, d) in [(1, b"a"), (2, b"b")] {
            let held = HeldTrace {
                data: d.to_vec(),
                spans: 1,
                first_seq: 1,
                last_seq: 1,
            };
            h.restore(TraceId([id; 16]), held, now);
        }
        let parts = h.snapshot_parts(|_| false);
        assert_eq!(
            fresh(&parts).into_keys().collect::<Vec<_>>(),
            [data(&[b"a", b"b"])]
        );
        assert!(parts.live.is_empty());
    }

    #[test]
    fn traces_complete_when_idle_or_old_and_blocks_cut_by_size_or_age() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let p = policy();
        let mut h = TenantHead::new("t");
        h.apply(1, &[chunk(1, b"ab"), chunk(2, b"c")], s(0));
        h.apply(2, &[chunk(1, b"d")], s(3));
        assert_eq!(h.oldest_needed_seq(), Some(1));
        // Trace 2 has been idle 5 s at t=5; trace 1 only 2 s.
        h.sweep(s(5), &p, false);
        assert_eq!(h.live_traces(), 1);
        assert_eq!(h.find(&TraceId([2; 16])), vec![b"c".to_vec()]);
        // Trace 1 keeps receiving spans but is complete after 30 s of life.
        for t in 6..30 {
            h.apply(2 + t, &[chunk(1, b"x")], s(t));
            h.sweep(s(t), &p, false);
            assert_eq!(h.live_traces(), 1, "t={t}");
        }
        h.sweep(s(30), &p, false);
        assert_eq!(h.live_traces(), 0);
        // 3 + 24 bytes ≥ 10: cut by size.
        let b = h.cut(s(30), &p, false).unwrap();
        assert_eq!(b.traces.len(), 2);
        assert_eq!(b.traces[&TraceId([1; 16])].last_seq, 31);
        assert_eq!(b.spans, 27);
        // Still queryable while being written; a late span starts a new live trace.
        h.apply(40, &[chunk(1, b"late")], s(31));
        assert_eq!(h.find(&TraceId([1; 16])).len(), 2);
        assert_eq!(h.oldest_needed_seq(), Some(1));
        h.cut_done(&b, None);
        assert_eq!(h.oldest_needed_seq(), Some(40));
        // Cut by age: a small block waits for max_block_duration.
        h.sweep(s(40), &p, false);
        assert!(h.cut(s(41), &p, false).is_none());
        assert!(h.cut(s(100), &p, false).is_some());
        assert_eq!(h.sizes().0, 0);
    }
}
