//! Tag discovery for Grafana's query builder and autocomplete:
//! `/api/search/tags`, `/api/v2/search/tags`, `/api/search/tag/{tag}/values`,
//! `/api/v2/search/tag/{tag}/values` (the extra `tag=` parameter Grafana sends is ignored).

use allegro_engine::query::tag_requests::{TagValuesRequest, TagsRequest};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde_json::Value as J;

use super::AppState;
use super::params::{Params, non_empty, size, time_range};
use crate::api::error::ApiError;
use crate::jsonpb::tags::{tags_json, tags_v2_json, values_json, values_v2_json};
use crate::tenant::request_tenants;

fn tags_request(q: &Params) -> Result<TagsRequest, ApiError> {
    Ok(TagsRequest::new(
        non_empty(q, "scope").unwrap_or_default(),
        time_range(q)?,
    )?)
}

fn values_request(tag: String, q: &Params) -> Result<TagValuesRequest, ApiError> {
    let limit = match size(q, "limit")? {
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid limit \"0\": expected a positive integer",
            ));
        }
        l => l,
    };
    Ok(TagValuesRequest {
        tag,
        query: non_empty(q, "q").map(str::to_string),
        range: time_range(q)?,
        limit,
    })
}

/// `GET /api/search/tags`: attribute names (without scope), or the intrinsics.
pub async fn tags_v1(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Json<J>, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    let r = state
        .query
        .search_tags(&tenants, &tags_request(&q)?)
        .await?;
    Ok(Json(tags_json(&r)))
}

/// `GET /api/v2/search/tags`: names grouped by scope, intrinsics included.
pub async fn tags_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Json<J>, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    let r = state
        .query
        .search_tags_v2(&tenants, &tags_request(&q)?)
        .await?;
    Ok(Json(tags_v2_json(&r)))
}

/// `GET /api/search/tag/{tag}/values`: values as strings.
pub async fn values_v1(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<J>, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    let r = state
        .query
        .search_tag_values(&tenants, &values_request(tag, &q)?)
        .await?;
    Ok(Json(values_json(&r)))
}

/// `GET /api/v2/search/tag/{tag}/values`: typed values.
pub async fn values_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<J>, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    let r = state
        .query
        .search_tag_values_v2(&tenants, &values_request(tag, &q)?)
        .await?;
    Ok(Json(values_v2_json(&r)))
}
