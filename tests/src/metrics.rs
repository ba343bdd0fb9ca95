//! TraceQL metrics answers as the tests compare them, whichever door gave the answer (the
//! engine's API or a server over HTTP): golden-file lines, and series for the reference
//! evaluator's agreement, with the queries the agreement tests ask.

use allegro_engine::tempopb::{QueryInstantResponse, QueryRangeResponse};

use crate::dataset::{BASE_NANOS, parse_duration};
use crate::golden::labels_text;
use crate::reference::{RefSeries, missing_and_extra};

/// Queries whose answers the reference evaluator computes too: every function, `by()`,
/// structural operators and pipelines.
pub const AGREEMENT_QUERIES: &[&str] = &[
    "{ } | rate()",
    "{ } | count_over_time() by (resource.service.name)",
    "{ status = error } | rate() by (resource.service.name, name)",
    "{ kind = server } | count_over_time() by (span.http.response.status_code)",
    "{ nestedSetParent < 0 } | rate() by (resource.service.name)",
    "{ } | max_over_time(duration) by (resource.service.name)",
    "{ } | min_over_time(duration)",
    "{ kind = client } | sum_over_time(duration) by (kind)",
    "{ } | avg_over_time(duration) by (status)",
    "{ span.db.system != nil } | avg_over_time(duration) by (span.db.system)",
    "{ } | avg_over_time(span.http.response.status_code) by (resource.service.name)",
    "{ } | sum_over_time(span.http.response.status_code)",
    "{ } | histogram_over_time(duration)",
    "{ kind = server } | histogram_over_time(duration) by (resource.service.name)",
    "{ } | quantile_over_time(duration, 0.5, 0.9, 0.99)",
    "{ kind = server } | quantile_over_time(duration, 0.95) by (resource.service.name)",
    "{ kind = server } >> { status = error } | rate()",
    "{ resource.service.name = \"api-gateway\" } > { } | count_over_time() by (resource.service.name)",
    "{ status = error } && { kind = client } | count_over_time()",
    "{ } | count() > 20 | rate()",
    // Every value (top N above the cardinality), so the reference need not break ties as the
    // engine does.
    "{ } | compare({ status = error }, 1000)",
    "{ kind = server } | compare({ resource.service.name = \"api-gateway\" || duration > 50ms }, 1000)",
    "{ kind = server } >> { status = error } | compare({ kind = client }, 1000)",
];

/// A golden file's range line (`<start> <end> <step>|instant`, offsets from the dataset's
/// base time) as unix nanoseconds: start, end, and the step (`None`: an instant query).
pub fn golden_range(range: &str) -> (u64, u64, Option<u64>) {
    let parts: Vec<&str> = range.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "range line {range:?}: start, end, step");
    let at = |s: &str| BASE_NANOS + parse_duration(s).expect("range offset");
    let step = (parts[2] != "instant").then(|| parse_duration(parts[2]).expect("step"));
    (at(parts[0]), at(parts[1]), step)
}

/// A value as the golden files write it: at most six decimals, no trailing zeros.
fn number(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// A timestamp as seconds after the dataset's base time.
fn offset(ms: i64) -> String {
    let base_ms = (BASE_NANOS / 1_000_000) as i64;
    number((ms - base_ms) as f64 / 1000.0)
}

/// A range answer as golden lines, `{labels}: <offset s>=<value> ...`, sorted.
pub fn range_lines(r: &QueryRangeResponse) -> Vec<String> {
    let mut lines: Vec<String> = r
        .series
        .iter()
        .map(|s| {
            let samples: Vec<String> = s
                .samples
                .iter()
                .map(|x| format!("{}={}", offset(x.timestamp_ms), number(x.value)))
                .collect();
            format!("{}: {}", labels_text(&s.labels), samples.join(" "))
        })
        .collect();
    lines.sort();
    lines
}

/// An instant answer over a range ending at `end` (unix nanoseconds) as golden lines,
/// `{labels}: <offset of end>=<value>`, sorted.
pub fn instant_lines(r: &QueryInstantResponse, end: u64) -> Vec<String> {
    let at = offset((end / 1_000_000) as i64);
    let mut lines: Vec<String> = r
        .series
        .iter()
        .map(|s| format!("{}: {at}={}", labels_text(&s.labels), number(s.value)))
        .collect();
    lines.sort();
    lines
}

/// A range answer as the reference evaluator gives its own.
pub fn series(r: &QueryRangeResponse) -> RefSeries {
    r.series
        .iter()
        .map(|s| {
            let points = s.samples.iter().map(|x| (x.timestamp_ms, x.value));
            (labels_text(&s.labels), points.collect())
        })
        .collect()
}

/// Equal up to floating-point summation order.
pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Where `got` differs from `want` (series missing or extra, or the first series whose points
/// differ), or `None` when they agree.
pub fn diff(want: &RefSeries, got: &RefSeries) -> Option<String> {
    if want.keys().ne(got.keys()) {
        let (missing, extra) = missing_and_extra(want, got);
        return Some(format!(
            "{} series expected, {} returned; missing {missing:?}, extra {extra:?}",
            want.len(),
            got.len()
        ));
    }
    for (k, w) in want {
        let g = &got[k];
        if w.keys().ne(g.keys()) || w.iter().zip(g).any(|(a, b)| !close(*a.1, *b.1)) {
            return Some(format!("{k}: want {w:?}\n got {g:?}"));
        }
    }
    None
}
