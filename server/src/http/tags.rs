//! Tag discovery for Grafana's query builder and autocomplete:
//! `/api/search/tags`, `/api/v2/search/tags`, `/api/search/tag/{tag}/values`,
//! `/api/v2/search/tag/{tag}/values` (the extra `tag=` parameter Grafana sends is ignored).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use allegro_engine::query::tags::{TagMetrics, TagValue, intrinsic_tags, parse_tag};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde_json::{Value as J, json};

use super::AppState;
use super::error::ApiError;
use super::traces::time_range;
use crate::tenant::request_tenants;

/// Scopes in the order `/api/v2/search/tags` lists them.
const SCOPES: [&str; 6] = [
    "resource",
    "span",
    "event",
    "link",
    "instrumentation",
    "intrinsic",
];
/// Values returned when the request sets no `limit`.
const DEFAULT_VALUES: usize = 1000;

fn scope_param(q: &HashMap<String, String>) -> Result<Option<&'static str>, ApiError> {
    match q
        .get("scope")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty() && *s != "all")
    {
        None => Ok(None),
        Some(s) => SCOPES
            .iter()
            .find(|x| **x == s)
            .map(|x| Some(*x))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid scope {s:?}: expected one of {}",
                    SCOPES.join(", ")
                ))
            }),
    }
}

fn limit_param(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    match q.get("limit").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(DEFAULT_VALUES),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::bad_request(format!("invalid limit {v:?}: expected a positive integer"))
        }),
    }
}

fn metrics_json(m: &TagMetrics, jobs: u32) -> J {
    let mut o = serde_json::Map::new();
    if m.inspected_bytes > 0 {
        o.insert(
            "inspectedBytes".into(),
            J::String(m.inspected_bytes.to_string()),
        );
    }
    o.insert("totalJobs".into(), json!(jobs));
    o.insert("completedJobs".into(), json!(jobs));
    if m.total_blocks > 0 {
        o.insert("totalBlocks".into(), json!(m.total_blocks));
    }
    J::Object(o)
}

async fn names(
    state: &AppState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<(BTreeMap<&'static str, BTreeSet<String>>, TagMetrics, u32), ApiError> {
    let tenants = request_tenants(state.multitenancy, headers)?;
    let range = time_range(q)?;
    let mut all: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut metrics = TagMetrics::default();
    for t in &tenants {
        let (n, m) = state.query.tag_names(t, range).await?;
        for (scope, keys) in n {
            all.entry(scope).or_default().extend(keys);
        }
        metrics.inspected_bytes += m.inspected_bytes;
        metrics.total_blocks += m.total_blocks;
    }
    Ok((all, metrics, tenants.len() as u32))
}

/// `GET /api/search/tags`: attribute names (without scope), or the intrinsics.
pub async fn tags_v1(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<J>, ApiError> {
    let scope = scope_param(&q)?;
    let (all, metrics, jobs) = names(&state, &headers, &q).await?;
    let mut out: BTreeSet<String> = BTreeSet::new();
    match scope {
        Some("intrinsic") => out.extend(intrinsic_tags().into_iter().map(String::from)),
        Some(s) => out.extend(all.get(s).cloned().unwrap_or_default()),
        None => out.extend(all.into_values().flatten()),
    }
    Ok(Json(
        json!({"tagNames": out, "metrics": metrics_json(&metrics, jobs)}),
    ))
}

/// `GET /api/v2/search/tags`: names grouped by scope, intrinsics included.
pub async fn tags_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<J>, ApiError> {
    let scope = scope_param(&q)?;
    let (mut all, metrics, jobs) = names(&state, &headers, &q).await?;
    let mut scopes = Vec::new();
    for s in SCOPES {
        if scope.is_some_and(|x| x != s) {
            continue;
        }
        let tags: Vec<String> = if s == "intrinsic" {
            intrinsic_tags().into_iter().map(String::from).collect()
        } else {
            all.remove(s).unwrap_or_default().into_iter().collect()
        };
        if !tags.is_empty() {
            scopes.push(json!({"name": s, "tags": tags}));
        }
    }
    Ok(Json(
        json!({"scopes": scopes, "metrics": metrics_json(&metrics, jobs)}),
    ))
}

async fn values(
    state: &AppState,
    headers: &HeaderMap,
    tag: &str,
    bare: bool,
    q: &HashMap<String, String>,
) -> Result<(Vec<TagValue>, TagMetrics, u32), ApiError> {
    let tenants = request_tenants(state.multitenancy, headers)?;
    let field = parse_tag(tag, bare)?;
    let range = time_range(q)?;
    let limit = limit_param(q)?;
    let filter = q
        .get("q")
        .map(|s| s.as_str())
        .filter(|s| !s.trim().is_empty());
    let mut all: BTreeSet<TagValue> = BTreeSet::new();
    let mut metrics = TagMetrics::default();
    for t in &tenants {
        let (v, m) = state
            .query
            .tag_values(t, &field, filter, range, limit)
            .await?;
        all.extend(v);
        metrics.inspected_bytes += m.inspected_bytes;
        metrics.total_blocks += m.total_blocks;
    }
    let mut v: Vec<TagValue> = all.into_iter().collect();
    v.truncate(limit);
    Ok((v, metrics, tenants.len() as u32))
}

/// `GET /api/search/tag/{tag}/values`: values as strings.
pub async fn values_v1(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<J>, ApiError> {
    let (v, metrics, jobs) = values(&state, &headers, &tag, true, &q).await?;
    let mut names: Vec<String> = v.into_iter().map(|t| t.value).collect();
    names.dedup();
    Ok(Json(
        json!({"tagValues": names, "metrics": metrics_json(&metrics, jobs)}),
    ))
}

/// `GET /api/v2/search/tag/{tag}/values`: typed values.
pub async fn values_v2(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(tag): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<J>, ApiError> {
    let (v, metrics, jobs) = values(&state, &headers, &tag, false, &q).await?;
    let typed: Vec<J> = v
        .into_iter()
        .map(|t| json!({"type": t.kind, "value": t.value}))
        .collect();
    Ok(Json(
        json!({"tagValues": typed, "metrics": metrics_json(&metrics, jobs)}),
    ))
}
