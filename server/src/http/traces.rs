//! Trace by ID: `GET /api/traces/{id}` (v1) and `GET /api/v2/traces/{id}`.

use allegro_engine::error::EngineError;
use allegro_engine::ids::TraceId;
use allegro_engine::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use allegro_engine::otlp::trace::v1::ResourceSpans;
use allegro_engine::otlp_json::{Dialect, encode_resource_spans};
use allegro_engine::query::trace_by_id::FoundTrace;
use allegro_engine::tempopb::{PartialStatus, Trace, TraceByIdMetrics, TraceByIdResponse};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::json;

use super::AppState;
use super::params::{Params, time_range};
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

async fn lookup(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    q: &Params,
) -> Result<FoundTrace, ApiError> {
    let tenants = request_tenants(state.multitenancy, headers)?;
    let trace_id = TraceId::parse_hex(id).map_err(|e| match e {
        EngineError::InvalidInput(m) => ApiError::bad_request(format!("invalid trace id: {m}")),
        other => ApiError::from(other),
    })?;
    let found = state
        .query
        .trace_by_id(&tenants, &trace_id, time_range(q)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("trace not found: {}", trace_id.to_hex())))?;
    Ok(FoundTrace {
        resource_spans: grafana_safe(found.resource_spans),
        ..found
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
    Query(q): Query<Params>,
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
    Query(q): Query<Params>,
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
        status: match found.damage {
            Some(_) => PartialStatus::Partial as i32,
            None => PartialStatus::Complete as i32,
        },
        message: found.damage.clone().unwrap_or_default(),
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
        let mut out = json!({
            "trace": { "resourceSpans": encode_resource_spans(spans, Dialect::Tempo) },
            "metrics": metrics,
        });
        if let Some(damage) = &found.damage {
            out["status"] = json!("PARTIAL");
            out["message"] = json!(damage);
        }
        out
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
