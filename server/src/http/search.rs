//! `GET /api/search`: TraceQL search (`q`) and Tempo's legacy tag search (`tags`,
//! `minDuration`, `maxDuration`), answered as Tempo's `SearchResponse` in jsonpb JSON (only the
//! fields Grafana's pinned tempopb knows; 64-bit integers as strings; zero values omitted) or
//! protobuf on `Accept: application/protobuf`.

use std::collections::HashMap;

use allegro_engine::otlp_json::{Dialect, attrs};
use allegro_engine::query::search::SearchRequest;
use allegro_engine::tempopb::{SearchMetrics, SearchResponse, SpanSet};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value as J, json};

use super::AppState;
use super::error::ApiError;
use super::traces::{negotiated, time_range};
use crate::tenant::request_tenants;

/// Largest `limit` Tempo accepts.
const MAX_LIMIT: usize = 262_144;
/// Largest `spss` Tempo accepts.
const MAX_SPSS: usize = 100;
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

fn number(
    q: &HashMap<String, String>,
    key: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match q.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Err(ApiError::bad_request(format!(
                "invalid {key}: must be a positive integer"
            ))),
            Ok(n) if n > max => Err(ApiError::bad_request(format!(
                "invalid {key} {n}: at most {max}"
            ))),
            Ok(n) => Ok(n),
            Err(_) => Err(ApiError::bad_request(format!(
                "invalid {key} {v:?}: expected a positive integer"
            ))),
        },
    }
}

/// Quotes a value as a TraceQL string literal.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

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

/// A Go duration (`100ms`, `1.5s`, `2m`) in nanoseconds.
fn go_duration(key: &str, v: &str) -> Result<i64, ApiError> {
    humantime::parse_duration(v)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .map_err(|e| ApiError::bad_request(format!("invalid {key} {v:?}: {e}")))
}

/// Tempo's legacy tag search as the TraceQL it means: every tag an attribute equality (span
/// or resource, as an unscoped attribute), durations bounds on the trace duration.
fn legacy_query(q: &HashMap<String, String>) -> Result<String, ApiError> {
    let mut pairs = match q.get("tags") {
        Some(t) => logfmt(t)?,
        None => Vec::new(),
    };
    if !q.contains_key("tags") && !q.contains_key("start") && !q.contains_key("end") {
        let mut extra: Vec<(String, String)> = q
            .iter()
            .filter(|(k, _)| !NOT_TAGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        extra.sort();
        pairs.extend(extra);
    }
    let mut conds: Vec<String> = pairs
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
    for (key, op) in [("minDuration", ">="), ("maxDuration", "<=")] {
        if let Some(v) = q.get(key).filter(|v| !v.is_empty()) {
            conds.push(format!("traceDuration {op} {}ns", go_duration(key, v)?));
        }
    }
    Ok(if conds.is_empty() {
        "{ }".to_string()
    } else {
        format!("{{ {} }}", conds.join(" && "))
    })
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

/// Parses the search parameters.
pub fn search_request(q: &HashMap<String, String>) -> Result<SearchRequest, ApiError> {
    let query = match q.get("q").map(|s| s.trim()).filter(|s| !s.is_empty()) {
        Some(t) => {
            if q.get("tags").is_some_and(|t| !t.trim().is_empty()) {
                return Err(ApiError::bad_request(
                    "invalid request: q and tags are mutually exclusive",
                ));
            }
            t.to_string()
        }
        None => legacy_query(q)?,
    };
    Ok(SearchRequest {
        query,
        limit: number(q, "limit", 20, MAX_LIMIT)?,
        spss: number(q, "spss", 3, MAX_SPSS)?,
        range: time_range(q)?,
    })
}

/// `GET /api/search`.
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    let req = search_request(&q)?;
    let resp = state.query.search(&tenants, &req).await?;
    Ok(negotiated(&headers, &resp, || search_json(&resp)))
}

/// A jsonpb object builder that leaves out zero values.
#[derive(Default)]
struct Obj(Map<String, J>);

impl Obj {
    fn str(mut self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), J::String(v.into()));
        }
        self
    }
    fn u64s(mut self, k: &str, v: u64) -> Self {
        if v != 0 {
            self.0.insert(k.into(), J::String(v.to_string()));
        }
        self
    }
    fn u32(mut self, k: &str, v: u32) -> Self {
        if v != 0 {
            self.0.insert(k.into(), json!(v));
        }
        self
    }
    fn arr(mut self, k: &str, v: Vec<J>) -> Self {
        if !v.is_empty() {
            self.0.insert(k.into(), J::Array(v));
        }
        self
    }
    fn set(mut self, k: &str, v: J) -> Self {
        self.0.insert(k.into(), v);
        self
    }
    fn done(self) -> J {
        J::Object(self.0)
    }
}

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
            if let Some(first) = t.span_sets.first() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> HashMap<String, String> {
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
            search_request(&q).unwrap().query,
            "{ .service.name = \"shop\" && .http.url = \"/a b\" && traceDuration >= 100000000ns }"
        );
        // Bare parameters are tags when nothing else says what to search.
        let q = params(&[("service.name", "shop"), ("limit", "5")]);
        let r = search_request(&q).unwrap();
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
            let e = search_request(&params(&p)).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{p:?}");
        }
    }
}
