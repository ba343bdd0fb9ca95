//! The traces of the head's groups: how many there are, and which are incomplete there.
//!
//! A search counts the traces it inspected, and whole-trace evaluation (structural operators,
//! nested-set intrinsics, Drilldown's `nestedSetParent<0` panels) must know which of the
//! head's traces are split: a span without nested-set numbers (no root, or a parent not in the
//! head), or a trace in more than one group. Listing that from the rows hashes every span's
//! trace ID at every query: 7–23 ms under the 60k spans/s soak, for 150–230k head spans. A
//! head part does not change once converted, so what it holds of traces is listed once, when
//! it is converted ([`GroupTraces::of`]), and a query only joins the lists: one hash per trace
//! and group instead of one per span.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::Int32Type;

use crate::catalog::IncompleteTraces;
use crate::ids::TraceId;
use crate::schema::col as c;

/// What one group of the head's rows holds of traces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupTraces {
    /// Every trace with a row in the group, once.
    ids: Vec<TraceId>,
    /// Those with a span the group could not number (no root, or a parent not in it).
    unnumbered: Vec<TraceId>,
}

impl GroupTraces {
    /// Lists the traces of `batches` (span-table rows, nested sets numbered over the group).
    pub fn of(batches: &[RecordBatch]) -> Self {
        let mut seen: HashMap<TraceId, bool, foldhash::fast::RandomState> = HashMap::default();
        for b in batches {
            let id = b
                .column_by_name(c::TRACE_ID)
                .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>());
            let left = b
                .column_by_name(c::NESTED_SET_LEFT)
                .and_then(|a| a.as_primitive_opt::<Int32Type>());
            let (Some(id), Some(left)) = (id, left) else {
                continue;
            };
            for i in 0..id.len() {
                let Ok(t) = TraceId::from_bytes(id.value(i)) else {
                    continue;
                };
                *seen.entry(t).or_default() |= left.value(i) == 0;
            }
        }
        let unnumbered = seen.iter().filter(|(_, u)| **u).map(|(t, _)| *t).collect();
        Self {
            ids: seen.into_keys().collect(),
            unnumbered,
        }
    }

    /// The same without the traces `gone` (rows a query leaves out of the group).
    pub fn without(&self, gone: &HashSet<TraceId>) -> Self {
        let keep = |ids: &[TraceId]| ids.iter().filter(|t| !gone.contains(t)).copied().collect();
        Self {
            ids: keep(&self.ids),
            unnumbered: keep(&self.unnumbered),
        }
    }

    /// Bytes the lists hold.
    pub fn approx_bytes(&self) -> u64 {
        ((self.ids.capacity() + self.unnumbered.capacity()) * std::mem::size_of::<TraceId>()) as u64
    }
}

/// How many traces the head's `groups` hold, and those whose part there is incomplete: a
/// span without nested-set numbers, or a trace in more than one group (each group's rows are
/// evaluated on their own). `listed[g]` is group `g`'s list when it was made ahead; the
/// groups without one are listed here.
pub(crate) fn head_traces(
    groups: &[Vec<RecordBatch>],
    listed: &[Option<Arc<GroupTraces>>],
) -> (u64, IncompleteTraces) {
    let mut first: HashMap<TraceId, usize, foldhash::fast::RandomState> = HashMap::default();
    let mut split = IncompleteTraces::default();
    for (g, rows) in groups.iter().enumerate() {
        let made;
        let traces = match listed.get(g).and_then(Option::as_deref) {
            Some(t) => t,
            None => {
                made = GroupTraces::of(rows);
                &made
            }
        };
        split.extend(traces.unnumbered.iter().copied());
        for t in &traces.ids {
            if *first.entry(*t).or_insert(g) != g {
                split.insert(*t);
            }
        }
    }
    (first.len() as u64, split)
}

/// A head group holding one span of trace `trace`: `span`, child of `parent` (0: a root),
/// starting at `start`.
#[cfg(test)]
pub(crate) fn one_span_group(trace: u8, span: u8, parent: u8, start: u64) -> Vec<RecordBatch> {
    use crate::convert::to_arrow::resource_spans_to_batches;
    use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let s = Span {
        trace_id: [trace; 16].to_vec(),
        span_id: [span; 8].to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            [parent; 8].to_vec()
        },
        name: "op".into(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + 10,
        ..Default::default()
    };
    let rs = ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![s],
            ..Default::default()
        }],
        ..Default::default()
    };
    resource_spans_to_batches(vec![rs], 1024).expect("one span converts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(trace: u8, span: u8, parent: u8) -> Vec<RecordBatch> {
        one_span_group(trace, span, parent, 100)
    }

    fn sorted(split: IncompleteTraces) -> Vec<u8> {
        let mut v: Vec<u8> = split.iter().map(|t| t.0[0]).collect();
        v.sort();
        v
    }

    #[test]
    fn a_trace_in_two_groups_of_the_head_is_split_even_when_each_part_looks_whole() {
        // One group: whole.
        let (traces, split) = head_traces(&[group(7, 1, 0)], &[]);
        assert_eq!((traces, sorted(split)), (1, vec![]));
        // A child whose parent is in another group: incomplete there.
        let (_, split) = head_traces(&[group(7, 1, 0), group(7, 2, 1)], &[]);
        assert_eq!(sorted(split), [7]);
        // Two roots in two groups: each part numbers whole, yet neither holds the trace.
        let (traces, split) = head_traces(&[group(7, 1, 0), group(7, 2, 0)], &[]);
        assert_eq!((traces, sorted(split)), (1, vec![7]));
    }

    #[test]
    fn lists_made_ahead_answer_as_the_rows_do_and_are_what_is_read() {
        let groups = [
            [group(1, 1, 0), group(2, 1, 9)].concat(),
            [group(3, 1, 0), group(1, 2, 0)].concat(),
            group(4, 1, 0),
        ];
        let from_rows = head_traces(&groups, &[]);
        assert_eq!((from_rows.0, sorted(from_rows.1.clone())), (4, vec![1, 2]));
        let listed: Vec<_> = groups
            .iter()
            .map(|g| Some(Arc::new(GroupTraces::of(g))))
            .collect();
        assert_eq!(head_traces(&groups, &listed), from_rows);
        // Some groups listed, others not.
        let partly = [listed[0].clone(), None, listed[2].clone()];
        assert_eq!(head_traces(&groups, &partly), from_rows);
        // A list is what is read, not the rows: group 2 listed as empty hides trace 4.
        let hidden = [None, None, Some(Arc::new(GroupTraces::default()))];
        assert_eq!(head_traces(&groups, &hidden).0, 3);
        // A group without some traces: those leave the count and the split.
        let gone: HashSet<TraceId> = [TraceId([2; 16])].into();
        let less = [
            Some(Arc::new(listed[0].as_deref().unwrap().without(&gone))),
            None,
            None,
        ];
        let (traces, split) = head_traces(&groups, &less);
        assert_eq!((traces, sorted(split)), (3, vec![1]));
    }
}
