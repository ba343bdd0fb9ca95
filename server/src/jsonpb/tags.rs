//! The tag responses (v1 and v2 names and values) in jsonpb.

use allegro_engine::tempopb::{
    MetadataMetrics, SearchTagValuesResponse, SearchTagValuesV2Response, SearchTagsResponse,
    SearchTagsV2Response,
};
use serde_json::{Value as J, json};

use super::Obj;

/// `MetadataMetrics`; jobs are always written (Grafana shows them).
fn metadata_json(m: &Option<MetadataMetrics>) -> J {
    let m = m.unwrap_or_default();
    Obj::default()
        .u64s("inspectedBytes", m.inspected_bytes)
        .set("totalJobs", json!(m.total_jobs))
        .set("completedJobs", json!(m.completed_jobs))
        .u32("totalBlocks", m.total_blocks)
        .u64s("totalBlockBytes", m.total_block_bytes)
        .done()
}

/// `SearchTagsResponse`.
pub fn tags_json(r: &SearchTagsResponse) -> J {
    json!({"tagNames": r.tag_names, "metrics": metadata_json(&r.metrics)})
}

/// `SearchTagsV2Response`.
pub fn tags_v2_json(r: &SearchTagsV2Response) -> J {
    let scopes: Vec<J> = r
        .scopes
        .iter()
        .map(|s| json!({"name": s.name, "tags": s.tags}))
        .collect();
    json!({"scopes": scopes, "metrics": metadata_json(&r.metrics)})
}

/// `SearchTagValuesResponse`.
pub fn values_json(r: &SearchTagValuesResponse) -> J {
    json!({"tagValues": r.tag_values, "metrics": metadata_json(&r.metrics)})
}

/// `SearchTagValuesV2Response`.
pub fn values_v2_json(r: &SearchTagValuesV2Response) -> J {
    let values: Vec<J> = r
        .tag_values
        .iter()
        .map(|t| json!({"type": t.r#type, "value": t.value}))
        .collect();
    json!({"tagValues": values, "metrics": metadata_json(&r.metrics)})
}
