//! The `limit` newest matching traces found so far, and the bound that lets search stop.
//!
//! Order is by trace start, newest first, then by trace ID: an exact, deterministic answer
//! (Tempo returns "the first N found"). Once `limit` traces are held, the worst of them is the
//! bar: a trace starting before it cannot enter, and a block whose spans all start before it
//! (its `end` is the latest any of its traces can start) need not be read at all.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use allegro_udfs::spansets::typed::FoundSet;

use crate::ids::TraceId;

/// A matching trace.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its start (the earliest start of its spans read).
    pub start: u64,
    /// Its ID.
    pub id: TraceId,
    /// Which of the query's tenants it belongs to.
    pub tenant: usize,
    /// Its spansets.
    pub sets: Vec<FoundSet>,
}

impl Found {
    /// Ranking key: larger is better (newer, then smaller ID).
    fn rank(&self) -> (u64, std::cmp::Reverse<TraceId>) {
        (self.start, std::cmp::Reverse(self.id))
    }
}

/// Heap entry ordered so that the heap's top is the worst trace held.
struct Worst(Found);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.0.rank() == other.0.rank()
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the max-heap's top is the lowest rank.
        other.0.rank().cmp(&self.0.rank())
    }
}

/// The newest `limit` traces found.
pub struct Newest {
    limit: usize,
    heap: BinaryHeap<Worst>,
}

impl Newest {
    /// Holds at most `limit` (at least one) traces.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            heap: BinaryHeap::new(),
        }
    }

    /// Most traces held.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The worst trace held once `limit` are: `(start, id)`.
    pub fn bar(&self) -> Option<(u64, TraceId)> {
        (self.heap.len() >= self.limit)
            .then(|| self.heap.peek().map(|w| (w.0.start, w.0.id)))
            .flatten()
    }

    /// Whether a trace starting at `start` with ID `id` would be kept.
    pub fn could_enter(&self, start: u64, id: &TraceId) -> bool {
        self.bar()
            .is_none_or(|(s, i)| (start, std::cmp::Reverse(*id)) > (s, std::cmp::Reverse(i)))
    }

    /// Whether nothing starting at or before `latest` can enter: a block whose spans all start
    /// by `latest` has nothing to offer.
    pub fn beyond(&self, latest: u64) -> bool {
        self.bar().is_some_and(|(s, _)| s > latest)
    }

    /// Offers a trace.
    pub fn offer(&mut self, f: Found) {
        if !self.could_enter(f.start, &f.id) {
            return;
        }
        self.heap.push(Worst(f));
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    /// A copy of the traces held, in no particular order.
    pub fn snapshot(&self) -> Vec<Found> {
        self.heap.iter().map(|w| w.0.clone()).collect()
    }

    /// The traces held, best first.
    pub fn into_sorted(self) -> Vec<Found> {
        let mut v: Vec<Found> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by_key(|f| std::cmp::Reverse(f.rank()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(start: u64, id: u8) -> Found {
        Found {
            start,
            id: TraceId([id; 16]),
            tenant: 0,
            sets: Vec::new(),
        }
    }

    #[test]
    fn keeps_the_newest_and_breaks_ties_by_smaller_id() {
        let mut n = Newest::new(3);
        assert_eq!(n.bar(), None);
        assert!(!n.beyond(0));
        for (s, id) in [(10, 1), (30, 9), (20, 5), (30, 2), (5, 7), (20, 3)] {
            n.offer(found(s, id));
        }
        let got: Vec<(u64, u8)> = n
            .into_sorted()
            .iter()
            .map(|f| (f.start, f.id.0[0]))
            .collect();
        assert_eq!(got, [(30, 2), (30, 9), (20, 3)]);
    }

    #[test]
    fn the_bar_rules_out_older_traces_and_blocks() {
        let mut n = Newest::new(2);
        n.offer(found(50, 4));
        n.offer(found(40, 4));
        assert_eq!(n.bar(), Some((40, TraceId([4; 16]))));
        assert!(
            n.could_enter(40, &TraceId([3; 16])),
            "same start, smaller ID"
        );
        assert!(!n.could_enter(40, &TraceId([5; 16])));
        assert!(!n.could_enter(39, &TraceId([0; 16])));
        // A block whose traces start by 39 cannot help; one reaching 40 still can.
        assert!(n.beyond(39));
        assert!(!n.beyond(40));
    }
}
