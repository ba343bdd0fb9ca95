//! Series as the final stage sees them: typed labels, one value per interval, exemplars; and
//! the operations on whole series sets (second stage, arithmetic, Tempo's quantile).

use std::collections::BTreeMap;

use allegro_udfs::spansets::key::{KeyType, decode};
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};

use super::grid::Grid;

/// A typed label value (Tempo's `Static` as an OTLP `AnyValue`).
#[derive(Debug, Clone, PartialEq)]
pub enum LabelValue {
    /// Strings, and status/kind/duration as Tempo prints them.
    Str(String),
    /// Integers.
    Int(i64),
    /// Floats.
    Float(f64),
    /// Booleans.
    Bool(bool),
    /// Missing: Tempo sends the string `nil`.
    Nil,
    /// An array attribute's value as a whole (`compare()` counts arrays so, as Tempo does).
    Array(Vec<LabelValue>),
}

impl LabelValue {
    /// A `by()` key from the plan (`s:api`, `i:200`, `d:1500000`, `S:error`...).
    pub fn from_key(key: &str) -> Self {
        let Some((t, v)) = decode(key) else {
            return LabelValue::Str(key.to_string());
        };
        match t {
            KeyType::Str | KeyType::Status | KeyType::Kind => LabelValue::Str(v.to_string()),
            KeyType::Int => v
                .parse()
                .map_or_else(|_| LabelValue::Str(v.into()), LabelValue::Int),
            KeyType::Float => v
                .parse()
                .map_or_else(|_| LabelValue::Str(v.into()), LabelValue::Float),
            KeyType::Bool => LabelValue::Bool(v == "true"),
            KeyType::Duration => v.parse::<i64>().map_or_else(
                |_| LabelValue::Str(v.into()),
                |ns| LabelValue::Str(allegro_traceql::go_duration(ns)),
            ),
        }
    }

    /// As an OTLP value.
    pub fn to_any(&self) -> AnyValue {
        let v = match self {
            LabelValue::Str(s) => Value::StringValue(s.clone()),
            LabelValue::Int(i) => Value::IntValue(*i),
            LabelValue::Float(f) => Value::DoubleValue(*f),
            LabelValue::Bool(b) => Value::BoolValue(*b),
            LabelValue::Nil => Value::StringValue("nil".into()),
            LabelValue::Array(xs) => Value::ArrayValue(ArrayValue {
                values: xs.iter().map(LabelValue::to_any).collect(),
            }),
        };
        AnyValue { value: Some(v) }
    }

    /// Prometheus-style text, for ordering and display.
    pub fn text(&self) -> String {
        match self {
            LabelValue::Str(s) => s.clone(),
            LabelValue::Int(i) => i.to_string(),
            LabelValue::Float(f) => f.to_string(),
            LabelValue::Bool(b) => b.to_string(),
            LabelValue::Nil => "<nil>".into(),
            LabelValue::Array(xs) => {
                let xs: Vec<String> = xs.iter().map(LabelValue::text).collect();
                format!("[{}]", xs.join(", "))
            }
        }
    }
}

/// Ordered labels of one series.
pub type Labels = Vec<(String, LabelValue)>;

/// The identity of a label set (Prometheus text form).
pub fn labels_key(l: &Labels) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}={:?}", v.text()))
        .collect();
    parts.sort();
    format!("{{{}}}", parts.join(", "))
}

/// A span behind a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// `trace:id`, `span:id`, grouping labels.
    pub labels: Labels,
    /// The span's value (NaN for counts).
    pub value: f64,
    /// Span start, unix ms.
    pub timestamp_ms: i64,
}

/// One series: a value per interval (NaN = no sample).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Labels in Tempo's order.
    pub labels: Labels,
    /// Values, one per interval of the grid.
    pub values: Vec<f64>,
    /// Exemplars.
    pub exemplars: Vec<Exemplar>,
}

/// Series keyed by their label set.
pub type SeriesSet = BTreeMap<String, Series>;

/// Inserts `s` under its label key.
pub fn insert(set: &mut SeriesSet, s: Series) {
    set.insert(labels_key(&s.labels), s);
}

/// Tempo's `Log2Quantile` over `(bucket upper bound, count)` pairs sorted by bound.
pub fn log2_quantile(p: f64, buckets: &[(f64, f64)]) -> f64 {
    if !(0.0..=1.0).contains(&p) || buckets.is_empty() {
        return 0.0;
    }
    let total: f64 = buckets.iter().map(|b| b.1).sum();
    let max_samples = (p * total).ceil().max(1.0);
    let mut running = 0.0;
    for (i, &(max, count)) in buckets.iter().enumerate() {
        if running + count == max_samples {
            return max;
        }
        if running + count > max_samples {
            let interp = (max_samples - running) / count;
            let max_v = max.log2();
            let min_v = if i == 0 {
                max_v - 1.0
            } else {
                buckets[i - 1].0.log2()
            };
            return (min_v + (max_v - min_v) * interp).exp2();
        }
        running += count;
    }
    buckets.last().map_or(0.0, |b| b.0)
}

/// `topk(n)` (`top = true`) or `bottomk(n)`: at each timestamp keep the n highest (lowest)
/// series, among equal values the later label key first (as Tempo); other points become NaN;
/// emptied series go.
// Indexing by interval reads across every series at once, which an iterator cannot.
#[allow(clippy::needless_range_loop)]
pub fn top_bottom(set: SeriesSet, n: usize, top: bool, intervals: usize) -> SeriesSet {
    let mut keep: Vec<Vec<bool>> = set.values().map(|s| vec![false; s.values.len()]).collect();
    let series: Vec<&Series> = set.values().collect();
    for i in 0..intervals {
        let mut at: Vec<(usize, f64)> = series
            .iter()
            .enumerate()
            .filter_map(|(j, s)| s.values.get(i).map(|v| (j, *v)))
            .filter(|(_, v)| !v.is_nan())
            .rev()
            .collect();
        // Stable sort on value keeps the reversed label-key order among ties.
        at.sort_by(|a, b| {
            let o = a.1.total_cmp(&b.1);
            if top { o.reverse() } else { o }
        });
        for (j, _) in at.into_iter().take(n) {
            keep[j][i] = true;
        }
    }
    let mut out = SeriesSet::new();
    for ((k, mut s), keep) in set.into_iter().zip(keep) {
        for (v, k) in s.values.iter_mut().zip(&keep) {
            if !k {
                *v = f64::NAN;
            }
        }
        if s.values.iter().any(|v| !v.is_nan()) {
            out.insert(k, s);
        }
    }
    out
}

/// A comparison second stage (`> 10`): samples failing it become NaN; emptied series go.
pub fn filter(set: SeriesSet, keep: impl Fn(f64) -> bool) -> SeriesSet {
    set.into_iter()
        .filter_map(|(k, mut s)| {
            for v in s.values.iter_mut() {
                if !v.is_nan() && !keep(*v) {
                    *v = f64::NAN;
                }
            }
            s.values.iter().any(|v| !v.is_nan()).then_some((k, s))
        })
        .collect()
}

/// Labels that only name the function (`__name__`): such a series broadcasts in arithmetic.
fn unlabeled(s: &Series) -> bool {
    s.labels.iter().all(|(k, _)| k == "__name__")
}

/// Metrics arithmetic, elementwise: series pair up by labels; a side with a single unlabeled
/// series broadcasts; an interval missing on either side, or a division by zero, gives NaN.
pub fn combine(lhs: SeriesSet, rhs: SeriesSet, op: impl Fn(f64, f64) -> f64) -> SeriesSet {
    let apply = |a: &[f64], b: &[f64]| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(x, y)| {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    let r = op(*x, *y);
                    if r.is_finite() { r } else { f64::NAN }
                }
            })
            .collect()
    };
    let single = |s: &SeriesSet| -> Option<Series> {
        (s.len() == 1)
            .then(|| s.values().next().cloned())
            .flatten()
            .filter(unlabeled)
    };
    let mut out = SeriesSet::new();
    if let Some(r) = single(&rhs) {
        for (k, l) in lhs {
            let values = apply(&l.values, &r.values);
            out.insert(k, Series { values, ..l });
        }
    } else if let Some(l) = single(&lhs) {
        for (k, r) in rhs {
            let values = apply(&l.values, &r.values);
            out.insert(k, Series { values, ..r });
        }
    } else {
        for (k, l) in lhs {
            if let Some(r) = rhs.get(&k) {
                let values = apply(&l.values, &r.values);
                out.insert(k, Series { values, ..l });
            }
        }
    }
    out
}

/// A number against every series (`(q) * 2`, `100 / (q)`).
pub fn with_scalar(
    set: SeriesSet,
    n: f64,
    scalar_left: bool,
    op: impl Fn(f64, f64) -> f64,
) -> SeriesSet {
    set.into_iter()
        .map(|(k, mut s)| {
            for v in s.values.iter_mut() {
                if !v.is_nan() {
                    let r = if scalar_left { op(n, *v) } else { op(*v, n) };
                    *v = if r.is_finite() { r } else { f64::NAN };
                }
            }
            (k, s)
        })
        .collect()
}

/// Series as Tempo's protobuf: NaN samples and sample-less series left out; exemplars on NaN
/// samples dropped.
pub fn to_proto(set: &SeriesSet, grid: &Grid) -> Vec<crate::tempopb::TimeSeries> {
    set.values()
        .filter_map(|s| {
            let samples: Vec<crate::tempopb::Sample> = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, v)| crate::tempopb::Sample {
                    value: *v,
                    timestamp_ms: grid.timestamp_ms(i),
                })
                .collect();
            if samples.is_empty() {
                return None;
            }
            let exemplars = s
                .exemplars
                .iter()
                .filter(|e| {
                    grid.interval_of_ms(e.timestamp_ms)
                        .and_then(|i| s.values.get(i))
                        .is_some_and(|v| !v.is_nan())
                })
                .map(|e| crate::tempopb::Exemplar {
                    labels: key_values(&e.labels),
                    value: e.value,
                    timestamp_ms: e.timestamp_ms,
                })
                .collect();
            Some(crate::tempopb::TimeSeries {
                labels: key_values(&s.labels),
                samples,
                exemplars,
            })
        })
        .collect()
}

/// Labels as OTLP key-values.
pub fn key_values(l: &Labels) -> Vec<KeyValue> {
    l.iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(v.to_any()),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_tempos_worked_example() {
        // tempo-compat.md §3.8: buckets 2, 4, 8 with counts 1, 1, 4; p = 0.75 → 2^2.75.
        let b = [(2.0, 1.0), (4.0, 1.0), (8.0, 4.0)];
        assert!((log2_quantile(0.75, &b) - 2f64.powf(2.75)).abs() < 1e-12);
        // Exactly on a bucket's running total → its bound.
        assert_eq!(log2_quantile(2.0 / 6.0, &b), 4.0);
        // First bucket interpolates from half its bound: p=0.5 of one bucket (max 8, count 2)
        // → maxSamples 1, interp 0.5 → 2^(2 + 0.5) .
        assert!((log2_quantile(0.5, &[(8.0, 2.0)]) - 2f64.powf(2.5)).abs() < 1e-12);
        assert_eq!(log2_quantile(1.5, &b), 0.0);
        assert_eq!(log2_quantile(0.5, &[]), 0.0);
    }

    fn series(name: &str, values: &[f64]) -> Series {
        Series {
            labels: vec![("x".into(), LabelValue::Str(name.into()))],
            values: values.to_vec(),
            exemplars: vec![],
        }
    }

    #[test]
    fn topk_works_per_timestamp() {
        let mut set = SeriesSet::new();
        insert(&mut set, series("a", &[1.0, 5.0, 1.0]));
        insert(&mut set, series("b", &[2.0, 1.0, f64::NAN]));
        insert(&mut set, series("c", &[3.0, 0.5, 0.0]));
        let top = top_bottom(set.clone(), 1, true, 3);
        let got: Vec<(String, Vec<String>)> = top
            .values()
            .map(|s| {
                (
                    s.labels[0].1.text(),
                    s.values.iter().map(|v| v.to_string()).collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), vec!["NaN".into(), "5".into(), "1".into()]),
                ("c".into(), vec!["3".into(), "NaN".into(), "NaN".into()]),
            ]
        );
        let bottom = top_bottom(set, 1, false, 3);
        // a is lowest at t0, c at t1 and t2; b never.
        let names: Vec<String> = bottom.values().map(|s| s.labels[0].1.text()).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn ties_keep_the_later_label_as_tempo_does() {
        let mut set = SeriesSet::new();
        insert(&mut set, series("a", &[1.0]));
        insert(&mut set, series("b", &[1.0]));
        insert(&mut set, series("c", &[0.0]));
        let names =
            |s: SeriesSet| -> Vec<String> { s.values().map(|s| s.labels[0].1.text()).collect() };
        assert_eq!(names(top_bottom(set.clone(), 1, true, 1)), ["b"]);
        assert_eq!(names(top_bottom(set.clone(), 2, false, 1)), ["b", "c"]);
    }

    #[test]
    fn arithmetic_pairs_by_labels_and_broadcasts() {
        let mut l = SeriesSet::new();
        insert(&mut l, series("a", &[4.0, 1.0]));
        insert(&mut l, series("b", &[6.0, f64::NAN]));
        let mut total = SeriesSet::new();
        insert(
            &mut total,
            Series {
                labels: vec![("__name__".into(), LabelValue::Str("rate".into()))],
                values: vec![2.0, 0.0],
                exemplars: vec![],
            },
        );
        let out = combine(l, total, |a, b| a / b);
        let vals: Vec<Vec<f64>> = out.values().map(|s| s.values.clone()).collect();
        assert_eq!(vals[0][0], 2.0);
        assert!(vals[0][1].is_nan(), "division by zero is NaN");
        assert_eq!(vals[1][0], 3.0);
        assert!(vals[1][1].is_nan(), "a missing sample stays missing");
    }
}
