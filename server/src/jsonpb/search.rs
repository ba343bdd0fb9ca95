//! `SearchResponse` and `SearchMetrics` in jsonpb (only the fields Grafana's pinned tempopb
//! knows).

use allegro_engine::otlp_json::{Dialect, attrs};
use allegro_engine::tempopb::{SearchMetrics, SearchResponse, SpanSet};
use serde_json::{Map, Value as J};

use super::Obj;

fn spanset_json(s: &SpanSet) -> J {
    let spans = s
        .spans
        .iter()
        .map(|sp| {
            Obj::default()
                .str("spanID", &sp.span_id)
                .str("name", &sp.name)
                .u64s("startTimeUnixNano", sp.start_time_unix_nano)
                .u64s("durationNanos", sp.duration_nanos)
                .arr("attributes", attrs(&sp.attributes, Dialect::Tempo))
                .done()
        })
        .collect();
    Obj::default()
        .arr("spans", spans)
        .u32("matched", s.matched)
        .arr("attributes", attrs(&s.attributes, Dialect::Tempo))
        .done()
}

/// `SearchMetrics` as Grafana's pinned tempopb knows it.
pub fn metrics_json(m: &SearchMetrics) -> J {
    Obj::default()
        .u32("inspectedTraces", m.inspected_traces)
        .u64s("inspectedBytes", m.inspected_bytes)
        .u32("totalBlocks", m.total_blocks)
        .u32("completedJobs", m.completed_jobs)
        .u32("totalJobs", m.total_jobs)
        .u64s("totalBlockBytes", m.total_block_bytes)
        .u64s("inspectedSpans", m.inspected_spans)
        .done()
}

/// The whole response in Tempo's jsonpb.
pub fn search_json(r: &SearchResponse) -> J {
    let traces = r
        .traces
        .iter()
        .map(|t| {
            let stats: Map<String, J> = t
                .service_stats
                .iter()
                .map(|(k, s)| {
                    let o = Obj::default()
                        .u32("spanCount", s.span_count)
                        .u32("errorCount", s.error_count);
                    (k.clone(), o.done())
                })
                .collect();
            let mut o = Obj::default()
                .str("traceID", &t.trace_id)
                .str("rootServiceName", &t.root_service_name)
                .str("rootTraceName", &t.root_trace_name)
                .u64s("startTimeUnixNano", t.start_time_unix_nano)
                .u32("durationMs", t.duration_ms)
                .arr("spanSets", t.span_sets.iter().map(spanset_json).collect());
            if let Some(first) = &t.span_set {
                // The deprecated single spanset, still read by older clients.
                o = o.set("spanSet", spanset_json(first));
            }
            if !stats.is_empty() {
                o = o.set("serviceStats", J::Object(stats));
            }
            o.done()
        })
        .collect::<Vec<_>>();
    let mut o = Obj::default().set("traces", J::Array(traces));
    if let Some(m) = &r.metrics {
        o = o.set("metrics", metrics_json(m));
    }
    o.done()
}
