//! TraceQL metrics parameters, validated once for every door.

use std::time::Duration;

use allegro_engine::query::metrics::{MetricsRequest, Mode};

use super::error::ApiError;
use crate::config::MetricsSettings;

/// What Drilldown's detector looks for when TraceQL metrics are off for a tenant.
pub const NOT_CONFIGURED: &str = "localblocks processor not found";

/// A metrics query as a door received it.
#[derive(Debug, Clone, Default)]
pub struct MetricsParams {
    /// The TraceQL metrics query.
    pub query: String,
    /// Range start, unix nanoseconds (`None`: `since` before the end).
    pub start: Option<u64>,
    /// Range end, unix nanoseconds (`None`: now).
    pub end: Option<u64>,
    /// How far back from the end the range starts without a start (`None`: 1h).
    pub since: Option<Duration>,
    /// Step, nanoseconds (`None`: the default step).
    pub step: Option<u64>,
    /// Most exemplars.
    pub exemplars: Option<u32>,
    /// Most series.
    pub max_series: Option<u32>,
    /// `recent`, `blocks` (`backend`) or `all`.
    pub mode: Option<String>,
}

/// The engine's request for `p`.
pub fn metrics_request(p: &MetricsParams) -> Result<MetricsRequest, ApiError> {
    let query = p.query.trim();
    if query.is_empty() {
        return Err(ApiError::bad_request(
            "missing q: a TraceQL metrics query is required",
        ));
    }
    let now = allegro_engine::now_unix_nanos();
    let end = p.end.unwrap_or(now);
    let start = match p.start {
        Some(s) => s,
        None => end.min(now).saturating_sub(
            p.since
                .unwrap_or(Duration::from_secs(3600))
                .as_nanos()
                .min(u64::MAX as u128) as u64,
        ),
    };
    if end <= start {
        return Err(ApiError::bad_request(format!(
            "invalid range: end ({end}) must be after start ({start})"
        )));
    }
    let mode = match p.mode.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        None => Mode::All,
        Some(m) => Mode::parse(m).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid mode {m:?}: expected recent, blocks or all"
            ))
        })?,
    };
    Ok(MetricsRequest {
        query: query.to_string(),
        start,
        end,
        step: p.step,
        exemplars: p.exemplars,
        max_series: p.max_series,
        mode,
    })
}

/// Fails with the text Drilldown recognises when a tenant has TraceQL metrics off.
pub fn check_enabled(settings: &MetricsSettings, tenants: &[String]) -> Result<(), ApiError> {
    for t in tenants {
        if !settings.enabled(t) {
            return Err(ApiError::bad_request(format!(
                "{NOT_CONFIGURED}: TraceQL metrics are off for tenant {t:?} \
                 (overrides read.traceql_metrics_enabled is false)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_defaults_to_an_hour() {
        let p = MetricsParams {
            query: "{} | rate()".into(),
            end: Some(1_700_003_600_000_000_000),
            ..Default::default()
        };
        let r = metrics_request(&p).unwrap();
        assert_eq!(r.end - r.start, 3600 * 1_000_000_000);
        assert_eq!(r.step, None);
    }

    #[test]
    fn bad_parameters_are_400s() {
        let empty = MetricsParams::default();
        let backwards = MetricsParams {
            query: "{} | rate()".into(),
            start: Some(20),
            end: Some(10),
            ..Default::default()
        };
        let mode = MetricsParams {
            query: "{} | rate()".into(),
            mode: Some("sometimes".into()),
            ..Default::default()
        };
        for p in [empty, backwards, mode] {
            assert_eq!(
                metrics_request(&p).unwrap_err().status.as_u16(),
                400,
                "{p:?}"
            );
        }
    }
}
