//! `GET /api/metrics/query_range` and `GET /api/metrics/query`: TraceQL metrics, answered as
//! Tempo's `QueryRangeResponse` / `QueryInstantResponse` in jsonpb or protobuf on
//! `Accept: application/protobuf`.

use allegro_engine::query::metrics::MetricsRequest;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::AppState;
use super::params::{Params, count, non_empty};
use super::traces::negotiated;
use crate::api::error::ApiError;
use crate::api::metrics::{MetricsParams, check_enabled, metrics_request as validated};
use crate::api::time::{step, timestamp};
use crate::jsonpb::metrics::{instant_json, range_json};
use crate::tenant::request_tenants;

/// Parses the parameters common to range and instant queries.
pub fn metrics_request(q: &Params) -> Result<MetricsRequest, ApiError> {
    let time = |key: &str| non_empty(q, key).map(|v| timestamp(key, v)).transpose();
    let since = non_empty(q, "since")
        .map(|v| {
            humantime::parse_duration(v)
                .map_err(|e| ApiError::bad_request(format!("invalid since {v:?}: {e}")))
        })
        .transpose()?;
    validated(&MetricsParams {
        query: non_empty(q, "q")
            .or_else(|| non_empty(q, "query"))
            .unwrap_or_default()
            .to_string(),
        start: time("start")?,
        end: time("end")?,
        since,
        step: non_empty(q, "step").map(step).transpose()?,
        exemplars: count(q, "exemplars")?,
        max_series: count(q, "maxSeries")?,
        mode: non_empty(q, "mode")
            .or_else(|| non_empty(q, "queryMode"))
            .map(str::to_string),
    })
}

/// `GET /api/metrics/query_range` (`instant=true` answers as an instant query).
pub async fn query_range(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    if q.get("instant").is_some_and(|v| v == "true") {
        return query_instant(State(state), headers, Query(q)).await;
    }
    let tenants = request_tenants(state.multitenancy, &headers)?;
    check_enabled(&state.traceql_metrics, &tenants)?;
    let req = metrics_request(&q)?;
    let resp = state
        .query
        .query_range(&tenants, &req, &state.traceql_metrics.limits)
        .await?;
    Ok(negotiated(&headers, &resp, || range_json(&resp)))
}

/// `GET /api/metrics/query`.
pub async fn query_instant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    check_enabled(&state.traceql_metrics, &tenants)?;
    let req = metrics_request(&q)?;
    let resp = state
        .query
        .query_instant(&tenants, &req, &state.traceql_metrics.limits)
        .await?;
    Ok(negotiated(&headers, &resp, || instant_json(&resp)))
}
