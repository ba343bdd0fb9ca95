//! Reading Tempo's query-string parameters into the doors' shared parameter types.

use std::collections::HashMap;

use allegro_engine::query::plan::Range;

use crate::api::error::ApiError;
use crate::api::time::seconds_range;

/// The query string.
pub type Params = HashMap<String, String>;

/// `key`'s value when present and not blank.
pub fn non_empty<'a>(q: &'a Params, key: &str) -> Option<&'a str> {
    q.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// `key` as a number of type `T`, when present; `expected` says what it should be.
fn number<T: std::str::FromStr>(
    q: &Params,
    key: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    non_empty(q, key)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::bad_request(format!("invalid {key} {v:?}: expected {expected}"))
            })
        })
        .transpose()
}

/// `key` as a whole number, when present.
pub fn count(q: &Params, key: &str) -> Result<Option<u32>, ApiError> {
    number(q, key, "a whole number")
}

/// `key` as a count, when present (0 is left to the caller's bounds check).
pub fn size(q: &Params, key: &str) -> Result<Option<usize>, ApiError> {
    number(q, key, "a positive integer")
}

/// `key` in unix seconds; 0 when absent, as in Tempo.
pub fn seconds(q: &Params, key: &str) -> Result<u64, ApiError> {
    Ok(number(q, key, "unix seconds")?.unwrap_or(0))
}

/// `start`/`end` in unix seconds, both optional.
pub fn time_range(q: &Params) -> Result<Range, ApiError> {
    seconds_range(seconds(q, "start")?, seconds(q, "end")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn time_ranges_are_seconds_and_checked() {
        assert_eq!(time_range(&q(&[])).unwrap(), None);
        assert_eq!(
            time_range(&q(&[("start", "0"), ("end", "0")])).unwrap(),
            None
        );
        assert_eq!(
            time_range(&q(&[("start", "10"), ("end", "20")])).unwrap(),
            Some((10_000_000_000, 20_999_999_999))
        );
        assert!(
            time_range(&q(&[("start", "x")]))
                .unwrap_err()
                .message
                .contains("invalid start")
        );
        assert!(time_range(&q(&[("start", "20"), ("end", "10")])).is_err());
    }
}
