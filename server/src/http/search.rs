//! `GET /api/search`: TraceQL search (`q`) and Tempo's legacy tag search (`tags`,
//! `minDuration`, `maxDuration`), answered as Tempo's `SearchResponse` in jsonpb or protobuf
//! on `Accept: application/protobuf`.

use allegro_engine::query::search::SearchRequest;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::AppState;
use super::params::{Params, non_empty, seconds, size};
use super::traces::negotiated;
use crate::api::error::ApiError;
use crate::api::search::{SearchLimits, SearchParams, search_request as validated};
use crate::api::time::go_duration;
use crate::jsonpb::search::search_json;
use crate::tenant::request_tenants;

/// Parameters that are never tags in legacy search.
const NOT_TAGS: [&str; 8] = [
    "q",
    "tags",
    "limit",
    "spss",
    "start",
    "end",
    "minDuration",
    "maxDuration",
];

/// Splits logfmt (`a=b c="d e"`) into pairs.
fn logfmt(s: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(|| {
            ApiError::bad_request(format!("invalid tags {s:?}: expected key=value pairs"))
        })?;
        let key = rest[..eq].trim().to_string();
        rest = &rest[eq + 1..];
        let value;
        if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').ok_or_else(|| {
                ApiError::bad_request(format!("invalid tags {s:?}: unterminated quote"))
            })?;
            value = r[..end].to_string();
            rest = r[end + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = rest[..end].to_string();
            rest = rest[end..].trim_start();
        }
        if key.is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid tags {s:?}: empty key"
            )));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Parses the search parameters, within `limits`.
pub fn search_request(q: &Params, limits: &SearchLimits) -> Result<SearchRequest, ApiError> {
    let query = non_empty(q, "q").unwrap_or_default().to_string();
    let mut tags = match non_empty(q, "tags") {
        Some(t) => logfmt(t)?,
        None => Vec::new(),
    };
    // Legacy mode: with no query, no `tags` and no range, every other parameter is a tag.
    if query.is_empty() && !["tags", "start", "end"].iter().any(|k| q.contains_key(*k)) {
        let mut extra: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| !NOT_TAGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        extra.sort();
        tags.extend(extra);
    }
    let duration = |key: &str| non_empty(q, key).map(|v| go_duration(key, v)).transpose();
    validated(
        &SearchParams {
            query,
            tags,
            min_duration: duration("minDuration")?,
            max_duration: duration("maxDuration")?,
            limit: size(q, "limit")?,
            spss: size(q, "spss")?,
            start: seconds(q, "start")?,
            end: seconds(q, "end")?,
        },
        limits,
    )
}

/// `GET /api/search`.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    let req = search_request(&q, &state.search_limits)?;
    let resp = state.query.search(&tenants, &req).await?;
    Ok(negotiated(&headers, &resp, || search_json(&resp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> Params {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn legacy_tags_become_traceql() {
        let q = params(&[
            ("tags", "service.name=shop http.url=\"/a b\""),
            ("minDuration", "100ms"),
        ]);
        assert_eq!(
            search_request(&q, &SearchLimits::default()).unwrap().query,
            "{ .service.name = \"shop\" && .http.url = \"/a b\" && traceDuration >= 100000000ns }"
        );
        // Bare parameters are tags when nothing else says what to search.
        let q = params(&[("service.name", "shop"), ("limit", "5")]);
        let r = search_request(&q, &SearchLimits::default()).unwrap();
        assert_eq!(r.query, "{ .service.name = \"shop\" }");
        assert_eq!(r.limit, 5);
        assert_eq!(r.spss, 3);
    }

    #[test]
    fn bad_parameters_are_400s() {
        for p in [
            vec![("q", "{}"), ("tags", "a=b")],
            vec![("limit", "0")],
            vec![("limit", "x")],
            vec![("spss", "101")],
            vec![("tags", "novalue")],
            vec![("minDuration", "fast")],
            vec![("start", "20"), ("end", "10")],
        ] {
            let e = search_request(&params(&p), &SearchLimits::default()).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{p:?}");
        }
    }
}
