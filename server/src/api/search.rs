//! Search parameters, validated once for every door: TraceQL or Tempo's legacy tag search,
//! `limit` and `spss` within Tempo's bounds, the time range.

use allegro_engine::query::search::SearchRequest;

use super::error::ApiError;
use super::time::seconds_range;

/// Largest `limit` Tempo accepts.
pub const MAX_LIMIT: usize = 262_144;
/// Largest `spss` Tempo accepts.
pub const MAX_SPSS: usize = 100;
/// `limit` when the request sets none.
pub const DEFAULT_LIMIT: usize = 20;
/// `spss` when the request sets none.
pub const DEFAULT_SPSS: usize = 3;

/// Tempo's `query_frontend.search` limits, as every door applies them.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchLimits {
    /// `limit` when the request sets none (`default_result_limit`, 20).
    pub default_limit: usize,
    /// Largest `limit` (`max_result_limit`; Tempo's cap when unset).
    pub max_limit: usize,
    /// `spss` when the request sets none (`default_spans_per_span_set`, 3).
    pub default_spss: usize,
    /// Largest `spss` (`max_spans_per_span_set`, 100).
    pub max_spss: usize,
    /// Longest `start`–`end` range (`max_duration`; unlimited when unset).
    pub max_duration: Option<std::time::Duration>,
}

impl Default for SearchLimits {
    fn default() -> Self {
        Self {
            default_limit: DEFAULT_LIMIT,
            max_limit: MAX_LIMIT,
            default_spss: DEFAULT_SPSS,
            max_spss: MAX_SPSS,
            max_duration: None,
        }
    }
}

/// A search as a door received it.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    /// The TraceQL query (empty: legacy tag search).
    pub query: String,
    /// Legacy tag search: attribute equalities (`name`, `status` are intrinsics).
    pub tags: Vec<(String, String)>,
    /// Legacy: shortest trace duration, nanoseconds.
    pub min_duration: Option<i64>,
    /// Legacy: longest trace duration, nanoseconds.
    pub max_duration: Option<i64>,
    /// Most traces (`None`: 20).
    pub limit: Option<usize>,
    /// Most spans per spanset (`None`: 3).
    pub spss: Option<usize>,
    /// Range start, unix seconds (0: unset).
    pub start: u64,
    /// Range end, unix seconds (0: unset).
    pub end: u64,
}

fn bounded(key: &str, v: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(0) => Err(ApiError::bad_request(format!(
            "invalid {key}: must be a positive integer"
        ))),
        Some(n) if n > max => Err(ApiError::bad_request(format!(
            "invalid {key} {n}: at most {max}"
        ))),
        Some(n) => Ok(n),
    }
}

/// Quotes a value as a TraceQL string literal.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An attribute name as TraceQL accepts it (quoted when it has unusual characters).
fn quote_attr(k: &str) -> String {
    if k.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        k.to_string()
    } else {
        quote(k)
    }
}

/// Tempo's legacy tag search as the TraceQL it means: every tag an attribute equality (span
/// or resource, as an unscoped attribute), duration bounds on the trace duration.
fn legacy_query(p: &SearchParams) -> String {
    let mut conds: Vec<String> = p
        .tags
        .iter()
        .map(|(k, v)| match k.as_str() {
            "name" => format!("name = {}", quote(v)),
            "status.code" | "status" => format!(
                "status = {}",
                if v == "error" || v == "2" {
                    "error"
                } else if v == "ok" || v == "1" {
                    "ok"
                } else {
                    "unset"
                }
            ),
            _ => format!(".{} = {}", quote_attr(k), quote(v)),
        })
        .collect();
    for (d, op) in [(p.min_duration, ">="), (p.max_duration, "<=")] {
        if let Some(ns) = d {
            conds.push(format!("traceDuration {op} {ns}ns"));
        }
    }
    if conds.is_empty() {
        "{ }".to_string()
    } else {
        format!("{{ {} }}", conds.join(" && "))
    }
}

/// The engine's request for `p`, within `limits`.
pub fn search_request(p: &SearchParams, limits: &SearchLimits) -> Result<SearchRequest, ApiError> {
    let q = p.query.trim();
    let query = if q.is_empty() {
        legacy_query(p)
    } else if !p.tags.is_empty() {
        return Err(ApiError::bad_request(
            "invalid request: q and tags are mutually exclusive",
        ));
    } else {
        q.to_string()
    };
    let range = seconds_range(p.start, p.end)?;
    if let (Some(max), Some((s, e))) = (limits.max_duration, range)
        && e.saturating_sub(s) > max.as_nanos() as u64
    {
        return Err(ApiError::bad_request(format!(
            "range specified by start and end exceeds {}. received start={} end={} \
             (query_frontend.search.max_duration)",
            crate::config::show::go_dur(max),
            p.start,
            p.end
        )));
    }
    Ok(SearchRequest {
        query,
        limit: bounded("limit", p.limit, limits.default_limit, limits.max_limit)?,
        spss: bounded("spss", p.spss, limits.default_spss, limits.max_spss)?,
        range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_tags_become_traceql() {
        let p = SearchParams {
            tags: vec![
                ("service.name".into(), "shop".into()),
                ("http.url".into(), "/a b".into()),
            ],
            min_duration: Some(100_000_000),
            ..Default::default()
        };
        assert_eq!(
            search_request(&p, &SearchLimits::default()).unwrap().query,
            "{ .service.name = \"shop\" && .http.url = \"/a b\" && traceDuration >= 100000000ns }"
        );
        let r = search_request(&SearchParams::default(), &SearchLimits::default()).unwrap();
        assert_eq!((r.query.as_str(), r.limit, r.spss), ("{ }", 20, 3));
    }

    #[test]
    fn bounds_are_checked() {
        for p in [
            SearchParams {
                query: "{}".into(),
                tags: vec![("a".into(), "b".into())],
                ..Default::default()
            },
            SearchParams {
                limit: Some(0),
                ..Default::default()
            },
            SearchParams {
                spss: Some(101),
                ..Default::default()
            },
            SearchParams {
                start: 20,
                end: 10,
                ..Default::default()
            },
        ] {
            let e = search_request(&p, &SearchLimits::default()).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{p:?}");
        }
    }
}
