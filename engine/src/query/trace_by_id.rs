//! Trace by ID over blocks and the live head, for every door.

use super::QueryEngine;
use super::plan::Range;
use crate::convert::normalize::normalize;
use crate::error::Result;
use crate::ids::TraceId;
use crate::otlp::trace::v1::ResourceSpans;

/// A trace found by ID.
#[derive(Debug, Clone, Default)]
pub struct FoundTrace {
    /// Its spans, grouped by resource and scope; a span held twice (in the head and in a
    /// block being written) appears once.
    pub resource_spans: Vec<ResourceSpans>,
    /// Bytes read from storage.
    pub inspected_bytes: u64,
    /// Set when damaged blocks were skipped, saying which: the trace may lack their spans.
    pub damage: Option<String>,
}

impl QueryEngine {
    /// Every span of trace `id` in `tenants`' blocks overlapping `range` (pruned by time,
    /// min/max trace ID and blooms) and in their live heads (not cut to the range: recent by
    /// definition). `None` when no span is found.
    pub async fn trace_by_id(
        &self,
        tenants: &[String],
        id: &TraceId,
        range: Range,
    ) -> Result<Option<FoundTrace>> {
        let mut all = Vec::new();
        let mut inspected_bytes = 0;
        let mut from_head = false;
        for t in tenants {
            let found = self.catalog.find_trace(t, id, range).await?;
            inspected_bytes += found.inspected_bytes;
            all.extend(found.resource_spans);
            if let Some(live) = &self.live {
                let spans = live.live_trace(t, id).await?;
                from_head |= !spans.is_empty();
                all.extend(spans);
            }
        }
        if all.is_empty() {
            return Ok(None);
        }
        // Head and blocks may both hold a span while a block is being written: merge exactly.
        // Block results come normalised from the catalog already.
        let resource_spans = if from_head { normalize(all) } else { all };
        Ok(Some(FoundTrace {
            resource_spans,
            inspected_bytes,
            damage: self.damage_notice(tenants),
        }))
    }
}
