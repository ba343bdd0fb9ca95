//! Trace by ID: `GET /api/traces/{id}` (v1) and `GET /api/v2/traces/{id}`.

use std::collections::HashMap;

use allegro_engine::convert::normalize::normalize;
use allegro_engine::error::EngineError;
use allegro_engine::ids::TraceId;
use allegro_engine::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use allegro_engine::otlp::trace::v1::ResourceSpans;
use allegro_engine::otlp_json::{Dialect, encode_resource_spans};
use allegro_engine::tempopb::{PartialStatus, Trace, TraceByIdMetrics, TraceByIdResponse};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::json;

use super::AppState;
use super::params::time_range;
use crate::api::error::ApiError;
use crate::tenant::request_tenants;

/// True when the client asked for protobuf (Tempo matches a substring of `Accept`).
pub fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/protobuf"))
}

/// Grafana drops a resource with no attributes and panics on absent resource/scope/status:
/// give every resource at least `service.name` and make the sub-messages present.
fn grafana_safe(mut rs: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
    for r in &mut rs {
        let res = r.resource.get_or_insert_with(Default::default);
        if res.attributes.is_empty() {
            res.attributes.push(KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("unknown_service".into())),
                }),
                ..Default::default()
            });
        }
        for ss in &mut r.scope_spans {
            ss.scope.get_or_insert_with(Default::default);
            for s in &mut ss.spans {
                s.status.get_or_insert_with(Default::default);
            }
        }
    }
    rs
}

struct Found {
    resource_spans: Vec<ResourceSpans>,
    inspected_bytes: u64,
}

async fn lookup(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<Found, ApiError> {
    let tenants = request_tenants(state.multitenancy, headers)?;
    let trace_id = TraceId::parse_hex(id).map_err(|e| match e {
        EngineError::InvalidInput(m) => ApiError::bad_request(format!("invalid trace id: {m}")),
        other => ApiError::from(other),
    })?;
    let range = time_range(q)?;
    let mut all = Vec::new();
    let mut inspected_bytes = 0;
    let mut from_head = false;
    for t in &tenants {
        let found = state.catalog.find_trace(t, &trace_id, range).await?;
        inspected_bytes += found.inspected_bytes;
        all.extend(found.resource_spans);
        if let Some(ing) = &state.ingester {
            let live = ing
                .find_trace(t, &trace_id)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            // Head data is not cut to the time range: it is recent by definition.
            from_head |= !live.is_empty();
            all.extend(live);
        }
    }
    // Head and blocks may both hold a span while a block is being written: merge exactly.
    // Block results come normalised from the catalog already.
    let all = if from_head { normalize(all) } else { all };
    if all.is_empty() {
        return Err(ApiError::not_found(format!(
            "trace not found: {}",
            trace_id.to_hex()
        )));
    }
    Ok(Found {
        resource_spans: grafana_safe(all),
        inspected_bytes,
    })
}

/// `msg` as protobuf when the client asked for it, else the jsonpb `json` builds.
pub fn negotiated(
    headers: &HeaderMap,
    msg: &impl Message,
    json: impl FnOnce() -> serde_json::Value,
) -> Response {
    if wants_protobuf(headers) {
        (
            [(CONTENT_TYPE, "application/protobuf")],
            msg.encode_to_vec(),
        )
            .into_response()
    } else {
        ([(CONTENT_TYPE, "application/json")], json().to_string()).into_response()
    }
}

/// `GET /api/traces/{id}`: `tempopb.Trace`, JSON with top-level `batches`.
pub async fn trace_v1(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let found = lookup(&state, &headers, &id, &q).await?;
    let trace = Trace {
        resource_spans: found.resource_spans,
    };
    Ok(negotiated(
        &headers,
        &trace,
        || json!({ "batches": encode_resource_spans(&trace.resource_spans, Dialect::Tempo) }),
    ))
}

/// `GET /api/v2/traces/{id}`: `tempopb.TraceByIDResponse`.
pub async fn trace_v2(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let found = lookup(&state, &headers, &id, &q).await?;
    let resp = TraceByIdResponse {
        trace: Some(Trace {
            resource_spans: found.resource_spans,
        }),
        metrics: Some(TraceByIdMetrics {
            inspected_bytes: found.inspected_bytes,
        }),
        status: PartialStatus::Complete as i32,
        message: String::new(),
    };
    Ok(negotiated(&headers, &resp, || {
        let mut metrics = serde_json::Map::new();
        if found.inspected_bytes > 0 {
            metrics.insert(
                "inspectedBytes".into(),
                json!(found.inspected_bytes.to_string()),
            );
        }
        let spans = resp
            .trace
            .as_ref()
            .map_or(&[][..], |t| &t.resource_spans[..]);
        json!({
            "trace": { "resourceSpans": encode_resource_spans(spans, Dialect::Tempo) },
            "metrics": metrics,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn time_ranges_are_seconds_and_checked() {
        assert_eq!(time_range(&q(&[])).unwrap(), None);
        assert_eq!(
            time_range(&q(&[("start", "0"), ("end", "0")])).unwrap(),
            None
        );
        assert_eq!(
            time_range(&q(&[("start", "10"), ("end", "20")])).unwrap(),
            Some((10_000_000_000, 20_999_999_999))
        );
        assert!(
            time_range(&q(&[("start", "x")]))
                .unwrap_err()
                .message
                .contains("invalid start")
        );
        assert!(time_range(&q(&[("start", "20"), ("end", "10")])).is_err());
    }

    #[test]
    fn resources_always_have_attributes_and_messages_are_present() {
        use allegro_engine::otlp::trace::v1::{ScopeSpans, Span};
        let rs = vec![ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![Span::default()],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }];
        let out = grafana_safe(rs);
        assert_eq!(
            out[0].resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        assert!(out[0].scope_spans[0].scope.is_some());
        assert!(out[0].scope_spans[0].spans[0].status.is_some());
    }
}
