//! Time parameters as Tempo's API takes them.

use allegro_engine::query::plan::Range;

use super::error::ApiError;

/// A search or tags range from unix seconds; 0 means unset as in Tempo (both 0: no range;
/// only `end` 0: open-ended).
pub fn seconds_range(start: u64, end: u64) -> Result<Range, ApiError> {
    if start == 0 && end == 0 {
        return Ok(None);
    }
    let end = if end == 0 {
        u64::MAX / 1_000_000_000
    } else {
        end
    };
    if end < start {
        return Err(ApiError::bad_request(format!(
            "invalid start/end: end {end} is before start {start}"
        )));
    }
    Ok(Some((
        start.saturating_mul(1_000_000_000),
        end.saturating_mul(1_000_000_000)
            .saturating_add(999_999_999),
    )))
}

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

/// A Go duration (`100ms`, `1.5s`, `2m`) in nanoseconds.
pub fn go_duration(key: &str, v: &str) -> Result<i64, ApiError> {
    humantime::parse_duration(v)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .map_err(|e| ApiError::bad_request(format!("invalid {key} {v:?}: {e}")))
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
    fn seconds_ranges() {
        assert_eq!(seconds_range(0, 0).unwrap(), None);
        assert_eq!(
            seconds_range(10, 20).unwrap(),
            Some((10_000_000_000, 20_999_999_999))
        );
        assert!(seconds_range(20, 10).is_err());
    }
}
