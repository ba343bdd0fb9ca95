//! Per-trace facts computed at write time: Tempo's nested-set numbers and trace-level columns.

use std::collections::HashMap;
use std::sync::Arc;

use crate::convert::flatten::{FlatSpan, NestedSet, TraceLevel};
use crate::ids::TraceId;

const SPAN_KIND_SERVER: i32 = 2;
const SPAN_KIND_CLIENT: i32 = 3;

/// Sorts spans by trace ID, then start time, then span ID, and fills in every span's nested-set
/// numbers and trace-level columns. Returns the number of traces.
pub fn prepare_traces(spans: &mut Vec<FlatSpan>) -> usize {
    // Spans are large; sort a permutation and move each span once.
    // Big-endian integers order exactly as the bytes do, and compare without memcmp.
    let mut order: Vec<(u128, u64, u64, usize)> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let TraceId(id) = s.trace_id;
            (
                u128::from_be_bytes(id),
                s.span.start_time_unix_nano,
                u64::from_be_bytes(s.span_id),
                i,
            )
        })
        .collect();
    order.sort_unstable();
    let mut slots: Vec<Option<FlatSpan>> = std::mem::take(spans).into_iter().map(Some).collect();
    // `filter_map` has no lower size bound: without the reservation the vector regrows (and
    // copies these large structs) a dozen times.
    spans.reserve_exact(slots.len());
    spans.extend(order.iter().filter_map(|o| slots[o.3].take()));
    let mut traces = 0;
    let mut start = 0;
    while start < spans.len() {
        let id = spans[start].trace_id;
        let end = start
            + spans[start..]
                .iter()
                .take_while(|s| s.trace_id == id)
                .count();
        prepare_trace(&mut spans[start..end]);
        traces += 1;
        start = end;
    }
    traces
}

/// Computes one trace's facts; `spans` are all its spans, in block order.
pub fn prepare_trace(spans: &mut [FlatSpan]) {
    let numbers = nested_set_numbers(spans);
    let level = Arc::new(trace_level(spans));
    for (s, n) in spans.iter_mut().zip(numbers) {
        s.nested = n;
        s.trace = level.clone();
    }
}

/// Trace start/duration and root names, as Tempo derives them.
pub fn trace_level(spans: &[FlatSpan]) -> TraceLevel {
    let start = spans
        .iter()
        .map(|s| s.span.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.span.end_time_unix_nano)
        .max()
        .unwrap_or(0);
    let root = spans.iter().find(|s| s.parent_span_id.is_none());
    TraceLevel {
        root_service: root
            .and_then(|r| r.resource.service_name())
            .unwrap_or_default()
            .to_string(),
        root_name: root.map(|r| r.span.name.clone()).unwrap_or_default(),
        start_unix_nano: start,
        duration_nano: end.saturating_sub(start),
    }
}

/// What nested-set numbering needs of a span.
pub trait SpanLink {
    /// The span's ID.
    fn span_id(&self) -> [u8; 8];
    /// Its parent's ID; `None` for a root.
    fn parent_span_id(&self) -> Option<[u8; 8]>;
    /// Its OTLP kind (tells apart two spans sharing an ID).
    fn kind(&self) -> i32;
}

impl SpanLink for FlatSpan {
    fn span_id(&self) -> [u8; 8] {
        self.span_id
    }
    fn parent_span_id(&self) -> Option<[u8; 8]> {
        self.parent_span_id
    }
    fn kind(&self) -> i32 {
        self.span.kind
    }
}

/// Tempo's nested-set model (`vparquet4/nested_set_model.go`): roots in span order, a depth-first
/// walk over children in span order, one counter from 1 assigned on descent (left) and ascent
/// (right), parent = parent's left, −1 for roots. Spans whose parent is missing keep 0s; if more
/// than two spans share an ID the whole trace keeps 0s; two spans sharing an ID (Zipkin
/// client/server) are told apart by kind.
pub fn nested_set_numbers<S: SpanLink>(spans: &[S]) -> Vec<NestedSet> {
    let n = spans.len();
    let mut out = vec![NestedSet::default(); n];
    let mut by_id: HashMap<[u8; 8], Vec<usize>, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(n, Default::default());
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        if s.parent_span_id().is_none() {
            roots.push(i);
        }
        by_id.entry(s.span_id()).or_default().push(i);
    }
    if roots.is_empty() || by_id.values().any(|v| v.len() > 2) {
        return out;
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut parent_of: Vec<Option<usize>> = vec![None; n];
    for (i, s) in spans.iter().enumerate() {
        let Some(pid) = s.parent_span_id() else {
            continue;
        };
        let cands = by_id.get(&pid).map(Vec::as_slice).unwrap_or(&[]);
        let parent = match cands {
            [one] => Some(*one),
            [a, b] => {
                let want = if s.kind() == SPAN_KIND_SERVER {
                    SPAN_KIND_CLIENT
                } else {
                    SPAN_KIND_SERVER
                };
                [*a, *b].into_iter().find(|&c| spans[c].kind() == want)
            }
            _ => None,
        };
        if let Some(p) = parent {
            parent_of[i] = Some(p);
            children[p].push(i);
        }
    }
    let mut counter: i32 = 1;
    let mut next_child = vec![0usize; n];
    for &root in &roots {
        out[root].left = counter;
        out[root].parent = -1;
        counter += 1;
        let mut node = Some(root);
        while let Some(cur) = node {
            if next_child[cur] < children[cur].len() {
                let c = children[cur][next_child[cur]];
                next_child[cur] += 1;
                // A cycle through a shared ID would revisit a node; Tempo would loop, we stop.
                if out[c].left != 0 {
                    continue;
                }
                out[c].left = counter;
                out[c].parent = out[cur].left;
                counter += 1;
                node = Some(c);
            } else {
                out[cur].right = counter;
                counter += 1;
                node = if cur == root { None } else { parent_of[cur] };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::flatten::{ResourceInfo, ScopeInfo};
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn span(id: u8, parent: Option<u8>, start: u64, kind: i32) -> FlatSpan {
        FlatSpan {
            trace_id: TraceId([7; 16]),
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            resource: Arc::new(ResourceInfo::default()),
            scope: Arc::new(ScopeInfo::default()),
            span: Span {
                start_time_unix_nano: start,
                end_time_unix_nano: start + 10,
                kind,
                ..Default::default()
            },
            nested: NestedSet::default(),
            trace: Arc::default(),
        }
    }

    fn ns(v: &[NestedSet]) -> Vec<(i32, i32, i32)> {
        v.iter().map(|n| (n.left, n.right, n.parent)).collect()
    }

    /// The worked example of tempo-compat.md §7.4: A{B{D}, C}.
    #[test]
    fn worked_example_from_tempo() {
        let spans = [
            span(1, None, 0, 2),
            span(2, Some(1), 1, 2),
            span(4, Some(2), 2, 2),
            span(3, Some(1), 3, 2),
        ];
        assert_eq!(
            ns(&nested_set_numbers(&spans)),
            vec![(1, 8, -1), (2, 5, 1), (3, 4, 2), (6, 7, 1)]
        );
    }

    #[test]
    fn orphans_keep_zero_and_second_root_continues_the_counter() {
        let spans = [
            span(1, None, 0, 1),
            span(2, Some(9), 1, 1),
            span(3, None, 2, 1),
            span(4, Some(3), 3, 1),
        ];
        assert_eq!(
            ns(&nested_set_numbers(&spans)),
            vec![(1, 2, -1), (0, 0, 0), (3, 6, -1), (4, 5, 3)]
        );
    }

    #[test]
    fn zipkin_shared_ids_pair_by_kind_and_three_way_sharing_resets() {
        // client 5 (child of root 1) and server 5 share an ID; 6 is the server's child.
        let spans = [
            span(1, None, 0, 2),
            span(5, Some(1), 1, 3),
            span(5, Some(5), 2, 2),
            span(6, Some(5), 3, 3),
        ];
        let got = ns(&nested_set_numbers(&spans));
        // The server span's parent is the client span (kind pairing); 6 (a client) hangs off the server.
        assert_eq!(got, vec![(1, 8, -1), (2, 7, 1), (3, 6, 2), (4, 5, 3)]);
        let three = [
            span(1, None, 0, 2),
            span(5, Some(1), 1, 3),
            span(5, Some(1), 2, 2),
            span(5, Some(1), 3, 1),
        ];
        assert!(
            nested_set_numbers(&three)
                .iter()
                .all(|n| *n == NestedSet::default())
        );
    }

    #[test]
    fn no_root_means_no_numbers_and_trace_level_is_computed() {
        let mut spans = vec![span(2, Some(1), 5, 1), span(3, Some(2), 9, 1)];
        assert!(nested_set_numbers(&spans).iter().all(|n| n.left == 0));
        prepare_traces(&mut spans);
        assert_eq!(spans[0].trace.start_unix_nano, 5);
        assert_eq!(spans[0].trace.duration_nano, 14);
        assert_eq!(spans[0].trace.root_name, "");
    }
}
