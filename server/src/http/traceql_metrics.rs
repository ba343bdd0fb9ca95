//! `GET /api/metrics/query_range` and `GET /api/metrics/query`: TraceQL metrics, answered as
//! Tempo's `QueryRangeResponse` / `QueryInstantResponse` in jsonpb (64-bit integers as
//! strings, zero values omitted, NaN as `"NaN"`) or protobuf on `Accept: application/protobuf`.

use std::collections::HashMap;
use std::time::Duration;

use allegro_engine::otlp_json::{Dialect, attrs};
use allegro_engine::query::metrics::{MetricsRequest, Mode};
use allegro_engine::tempopb::{
    PartialStatus, QueryInstantResponse, QueryRangeResponse, TimeSeries,
};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value as J, json};

use super::AppState;
use super::error::ApiError;
use super::search::metrics_json;
use super::traces::negotiated;
use crate::tenant::request_tenants;

/// What Drilldown's detector looks for when TraceQL metrics are off for a tenant.
pub const NOT_CONFIGURED: &str = "localblocks processor not found";

/// Tempo's `parseTimestamp`: float seconds, integer seconds (≤ 10 digits), integer
/// nanoseconds, or RFC3339.
pub fn timestamp(key: &str, v: &str) -> Result<u64, ApiError> {
    let v = v.trim();
    let bad = |why: &str| ApiError::bad_request(format!("invalid {key} {v:?}: {why}"));
    if v.contains('.') && !v.contains('T') {
        let secs: f64 = v
            .parse()
            .map_err(|_| bad("expected unix seconds, nanoseconds or RFC3339"))?;
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(bad("must be a non-negative time"));
        }
        return Ok(((secs * 1000.0).round() as u64).saturating_mul(1_000_000));
    }
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let n: u64 = v.parse().map_err(|_| bad("number out of range"))?;
        return Ok(if v.len() <= 10 {
            n.saturating_mul(1_000_000_000)
        } else {
            n
        });
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| bad("expected unix seconds, nanoseconds or RFC3339"))
}

/// A step: float seconds (`30`, `1.5`) or a Go/Prometheus duration (`30s`, `1m`, `1h30m`).
pub fn step(v: &str) -> Result<u64, ApiError> {
    let v = v.trim();
    let ns = if let Ok(secs) = v.parse::<f64>() {
        if !(secs.is_finite() && secs > 0.0) {
            0
        } else {
            (secs * 1e9) as u64
        }
    } else {
        humantime::parse_duration(v)
            .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid step {v:?}: expected seconds or a duration like 30s: {e}"
                ))
            })?
    };
    if ns == 0 {
        return Err(ApiError::bad_request(format!(
            "invalid step {v:?}: must be positive"
        )));
    }
    Ok(ns)
}

fn non_empty<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key)
        .map(|s| s.as_str())
        .filter(|s| !s.trim().is_empty())
}

fn count(q: &HashMap<String, String>, key: &str) -> Result<Option<u32>, ApiError> {
    non_empty(q, key)
        .map(|v| {
            v.trim().parse::<u32>().map_err(|_| {
                ApiError::bad_request(format!("invalid {key} {v:?}: expected a whole number"))
            })
        })
        .transpose()
}

/// Parses the parameters common to range and instant queries.
pub fn metrics_request(q: &HashMap<String, String>) -> Result<MetricsRequest, ApiError> {
    let query = non_empty(q, "q")
        .or_else(|| non_empty(q, "query"))
        .ok_or_else(|| ApiError::bad_request("missing q: a TraceQL metrics query is required"))?
        .to_string();
    let end = match non_empty(q, "end") {
        Some(v) => timestamp("end", v)?,
        None => allegro_engine::now_unix_nanos(),
    };
    let start = match non_empty(q, "start") {
        Some(v) => timestamp("start", v)?,
        None => {
            let since = match non_empty(q, "since") {
                Some(v) => humantime::parse_duration(v.trim())
                    .map_err(|e| ApiError::bad_request(format!("invalid since {v:?}: {e}")))?,
                None => Duration::from_secs(3600),
            };
            end.min(allegro_engine::now_unix_nanos())
                .saturating_sub(since.as_nanos().min(u64::MAX as u128) as u64)
        }
    };
    if end <= start {
        return Err(ApiError::bad_request(format!(
            "invalid range: end ({end}) must be after start ({start})"
        )));
    }
    let mode_text = non_empty(q, "mode").or_else(|| non_empty(q, "queryMode"));
    let mode = match mode_text {
        None => Mode::All,
        Some(m) => Mode::parse(m.trim()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid mode {m:?}: expected recent, blocks or all"
            ))
        })?,
    };
    Ok(MetricsRequest {
        query,
        start,
        end,
        step: non_empty(q, "step").map(step).transpose()?,
        exemplars: count(q, "exemplars")?,
        max_series: count(q, "maxSeries")?,
        mode,
    })
}

fn check_enabled(state: &AppState, tenants: &[String]) -> Result<(), ApiError> {
    for t in tenants {
        if !state.traceql_metrics.enabled(t) {
            return Err(ApiError::bad_request(format!(
                "{NOT_CONFIGURED}: TraceQL metrics are off for tenant {t:?} \
                 (overrides.metrics_generator.processors does not list local-blocks)"
            )));
        }
    }
    Ok(())
}

fn is_instant(q: &HashMap<String, String>) -> bool {
    q.get("instant").is_some_and(|v| v == "true")
}

/// `GET /api/metrics/query_range` (`instant=true` answers as an instant query).
pub async fn query_range(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if is_instant(&q) {
        return query_instant(State(state), headers, Query(q)).await;
    }
    let tenants = request_tenants(state.multitenancy, &headers)?;
    check_enabled(&state, &tenants)?;
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
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    check_enabled(&state, &tenants)?;
    let req = metrics_request(&q)?;
    let resp = state
        .query
        .query_instant(&tenants, &req, &state.traceql_metrics.limits)
        .await?;
    Ok(negotiated(&headers, &resp, || instant_json(&resp)))
}

/// A double as jsonpb writes it: NaN and infinities as strings; zero omitted by the caller.
fn double(v: f64) -> J {
    if v.is_nan() {
        J::String("NaN".into())
    } else if v.is_infinite() {
        J::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        json!(v)
    }
}

fn put_double(o: &mut Map<String, J>, k: &str, v: f64) {
    if v != 0.0 {
        o.insert(k.into(), double(v));
    }
}

fn put_i64(o: &mut Map<String, J>, k: &str, v: i64) {
    if v != 0 {
        o.insert(k.into(), J::String(v.to_string()));
    }
}

fn status(o: &mut Map<String, J>, status: i32, message: &str) {
    if status == PartialStatus::Partial as i32 {
        o.insert("status".into(), J::String("PARTIAL".into()));
    }
    if !message.is_empty() {
        o.insert("message".into(), J::String(message.into()));
    }
}

fn series_json(s: &TimeSeries) -> J {
    let mut o = Map::new();
    o.insert("labels".into(), J::Array(attrs(&s.labels, Dialect::Tempo)));
    let samples = s
        .samples
        .iter()
        .map(|x| {
            let mut m = Map::new();
            put_i64(&mut m, "timestampMs", x.timestamp_ms);
            put_double(&mut m, "value", x.value);
            J::Object(m)
        })
        .collect();
    o.insert("samples".into(), J::Array(samples));
    if !s.exemplars.is_empty() {
        let ex = s
            .exemplars
            .iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("labels".into(), J::Array(attrs(&e.labels, Dialect::Tempo)));
                put_double(&mut m, "value", e.value);
                put_i64(&mut m, "timestampMs", e.timestamp_ms);
                J::Object(m)
            })
            .collect();
        o.insert("exemplars".into(), J::Array(ex));
    }
    J::Object(o)
}

/// A range response in Tempo's jsonpb.
pub fn range_json(r: &QueryRangeResponse) -> J {
    let mut o = Map::new();
    o.insert(
        "series".into(),
        J::Array(r.series.iter().map(series_json).collect()),
    );
    if let Some(m) = &r.metrics {
        o.insert("metrics".into(), metrics_json(m));
    }
    status(&mut o, r.status, &r.message);
    J::Object(o)
}

/// An instant response in Tempo's jsonpb.
pub fn instant_json(r: &QueryInstantResponse) -> J {
    let series = r
        .series
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("labels".into(), J::Array(attrs(&s.labels, Dialect::Tempo)));
            put_double(&mut m, "value", s.value);
            J::Object(m)
        })
        .collect();
    let mut o = Map::new();
    o.insert("series".into(), J::Array(series));
    if let Some(m) = &r.metrics {
        o.insert("metrics".into(), metrics_json(m));
    }
    status(&mut o, r.status, &r.message);
    J::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_tempo_does() {
        assert_eq!(
            timestamp("start", "1700000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert_eq!(
            timestamp("start", "1700000000123456789").unwrap(),
            1_700_000_000_123_456_789
        );
        assert_eq!(
            timestamp("start", "1700000000.5").unwrap(),
            1_700_000_000_500_000_000
        );
        assert_eq!(
            timestamp("start", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000_000_000
        );
        assert!(timestamp("start", "yesterday").is_err());
    }

    #[test]
    fn steps_parse_as_seconds_or_durations() {
        assert_eq!(step("30s").unwrap(), 30_000_000_000);
        assert_eq!(step("1728s").unwrap(), 1_728_000_000_000);
        assert_eq!(step("15").unwrap(), 15_000_000_000);
        assert_eq!(step("0.5").unwrap(), 500_000_000);
        assert_eq!(step("1m").unwrap(), 60_000_000_000);
        assert!(step("0").is_err());
        assert!(step("fast").is_err());
    }

    #[test]
    fn since_defaults_to_an_hour() {
        let q: HashMap<String, String> = [("q", "{} | rate()"), ("end", "1700003600")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = metrics_request(&q).unwrap();
        assert_eq!(r.end - r.start, 3600 * 1_000_000_000);
        assert_eq!(r.step, None);
    }
}
