//! The aggregation's rows, merged across sources and tenants, and turned into series by
//! function (Tempo's "final" mode: rates, averages, quantiles, histograms, exemplars).

use std::collections::{BTreeMap, HashMap, HashSet};

use allegro_udfs::exemplars::{Candidate, unpack};
use allegro_udfs::metrics_group::{unpack_interval, unpack_type};
use allegro_udfs::spansets::key::{KeyType, encode};
use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};

use super::compile::{FirstStage, Func};
use super::grid::Grid;
use super::plan::out;
use super::series::{Exemplar, LabelValue, Labels, Series, SeriesSet, insert, log2_quantile};
use crate::error::{EngineError, Result};

/// One interval of one group.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Spans (weighted).
    pub n: f64,
    /// Sum of values (weighted).
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Spans with a value (weighted).
    pub nv: f64,
    /// Exemplar candidates.
    pub ex: Vec<Candidate>,
}

impl Default for Cell {
    fn default() -> Self {
        Self {
            n: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nv: 0.0,
            ex: Vec::new(),
        }
    }
}

impl Cell {
    fn merge(&mut self, o: Cell) {
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.nv += o.nv;
        self.ex.extend(o.ex);
    }
}

/// `(bucket bound, count)` pairs of one interval.
type Buckets = Vec<(f64, f64)>;

/// `(by() keys, log2 bucket)`.
pub type GroupKey = (Vec<Option<String>>, Option<i64>);

/// Partial results: cells per group and interval. Adding two `Raw`s is exact.
#[derive(Debug, Clone, Default)]
pub struct Raw {
    /// Groups.
    pub groups: HashMap<GroupKey, Vec<Cell>>,
}

/// Key `r` as type-tagged text (the form `by()` labels are made from); nil: `None`.
fn tagged_key(text: &StringArray, ty: Option<u8>, r: usize) -> Result<Option<String>> {
    if text.is_null(r) {
        return Ok(None);
    }
    let t = ty
        .and_then(KeyType::from_code)
        .ok_or_else(|| EngineError::Internal("metrics key without a type".into()))?;
    Ok(Some(encode(t, text.value(r))))
}

/// Column `name` as Float64 values, `missing` where the column is absent, null or NaN.
fn f64s(b: &RecordBatch, name: &str, missing: f64) -> Result<Vec<f64>> {
    let Some(a) = b.column_by_name(name) else {
        return Ok(vec![missing; b.num_rows()]);
    };
    let a = cast(a, &DataType::Float64)
        .map_err(|e| EngineError::Internal(format!("metrics column {name}: {e}")))?;
    let a = a.as_primitive::<Float64Type>();
    Ok((0..a.len())
        .map(|i| match a.is_null(i) {
            false if !a.value(i).is_nan() => a.value(i),
            _ => missing,
        })
        .collect())
}

impl Raw {
    /// Adds the aggregation's output batches (only their exemplar candidates when
    /// `exemplars_only`: that pass saw a sample of the spans).
    pub fn add_batches(
        &mut self,
        batches: &[RecordBatch],
        keys: usize,
        intervals: usize,
        exemplars_only: bool,
    ) -> Result<()> {
        for b in batches {
            let lost = |c: &str| EngineError::Internal(format!("metrics plan lost column {c}"));
            let i = b
                .column_by_name(out::I)
                .and_then(|a| a.as_primitive_opt::<UInt64Type>())
                .ok_or_else(|| lost(out::I))?;
            // Keys arrive as views (see `Typed::key_parts`); as plain strings for the few
            // aggregated rows.
            let texts = (0..keys)
                .map(|k| {
                    b.column_by_name(&out::key(k))
                        .and_then(|a| cast(a, &DataType::Utf8).ok())
                        .ok_or_else(|| lost("key"))
                })
                .collect::<Result<Vec<_>>>()?;
            let ks = texts
                .iter()
                .map(|text| text.as_string_opt::<i32>().ok_or_else(|| lost("key")))
                .collect::<Result<Vec<_>>>()?;
            let bucket = b
                .column_by_name(out::B)
                .and_then(|a| a.as_primitive_opt::<Int64Type>());
            if b.column_by_name(out::N).is_none() {
                return Err(lost(out::N));
            }
            let n = f64s(b, out::N, 0.0)?;
            let sum = f64s(b, out::SUM, 0.0)?;
            let min = f64s(b, out::MIN, f64::INFINITY)?;
            let max = f64s(b, out::MAX, f64::NEG_INFINITY)?;
            let nv = f64s(b, out::NV, 0.0)?;
            let ex = b
                .column_by_name(out::EX)
                .and_then(|a| a.as_binary_opt::<i32>());
            for r in 0..b.num_rows() {
                // The interval with the keys' types above it (`metrics_group`); NULL before
                // the range.
                if i.is_null(r) {
                    continue;
                }
                let g = i.value(r);
                let at = unpack_interval(g) as usize;
                if at >= intervals {
                    continue;
                }
                let key: Vec<Option<String>> = ks
                    .iter()
                    .enumerate()
                    .map(|(k, text)| tagged_key(text, unpack_type(g, k), r))
                    .collect::<Result<_>>()?;
                let bk = bucket.and_then(|a| (!a.is_null(r)).then(|| a.value(r)));
                let cell = Cell {
                    n: n[r],
                    sum: sum[r],
                    min: min[r],
                    max: max[r],
                    nv: nv[r],
                    ex: match ex {
                        Some(e) if !e.is_null(r) => unpack(e.value(r)).ok_or_else(|| {
                            EngineError::Internal("corrupt exemplar candidates".into())
                        })?,
                        _ => Vec::new(),
                    },
                };
                if exemplars_only {
                    // Candidates only join series the exact pass found.
                    if let Some(cells) = self.groups.get_mut(&(key, bk)) {
                        cells[at].ex.extend(cell.ex);
                    }
                    continue;
                }
                let cells = self
                    .groups
                    .entry((key, bk))
                    .or_insert_with(|| vec![Cell::default(); intervals]);
                cells[at].merge(cell);
            }
        }
        Ok(())
    }
}

/// The `by()` labels of a group: nils dropped; all nil → the first label as `nil`;
/// ungrouped → `__name__`.
fn group_labels(st: &FirstStage, keys: &[Option<String>], ungrouped_name: bool) -> Labels {
    let mut l: Labels = st
        .by
        .iter()
        .zip(keys)
        .filter_map(|(f, k)| k.as_ref().map(|k| (f.to_string(), LabelValue::from_key(k))))
        .collect();
    if l.is_empty() {
        if let Some(first) = st.by.first() {
            l.push((first.to_string(), LabelValue::Nil));
        } else if ungrouped_name {
            l.push(("__name__".into(), LabelValue::Str(st.name.into())));
        }
    }
    l
}

/// Exemplar limits of one query (Tempo: N/2 time slices of at most 2, N in all, one per trace).
pub struct ExemplarPicker {
    max: usize,
    slices: u64,
    seen: HashSet<[u8; 16]>,
}

impl ExemplarPicker {
    /// Up to `max` exemplars per series.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            slices: (max / 2).max(1) as u64,
            seen: HashSet::new(),
        }
    }

    /// The per-series limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The time slices the range is cut into (at most two exemplars each).
    pub fn slices(&self) -> u64 {
        self.slices
    }

    fn pick(
        &mut self,
        grid: &Grid,
        cands: impl Iterator<Item = Candidate>,
        labels: &Labels,
        value_is_span_value: bool,
    ) -> Vec<Exemplar> {
        let mut out = Vec::new();
        if self.max == 0 || grid.instant {
            return out;
        }
        let mut per_slice: HashMap<u64, usize> = HashMap::new();
        let width = (grid.end - grid.start).max(1);
        for c in cands {
            if out.len() >= self.max {
                break;
            }
            let slice = (c.start.saturating_sub(grid.start) as u128 * self.slices as u128
                / width as u128) as u64;
            let used = per_slice.entry(slice).or_default();
            if *used >= 2 || self.seen.contains(&c.trace_id) {
                continue;
            }
            *used += 1;
            self.seen.insert(c.trace_id);
            let mut l: Labels = vec![
                ("trace:id".into(), LabelValue::Str(hex::encode(c.trace_id))),
                ("span:id".into(), LabelValue::Str(hex::encode(c.span_id))),
            ];
            l.extend(
                labels
                    .iter()
                    .filter(|(k, _)| k != "__name__" && k != "p" && k != "__bucket")
                    .cloned(),
            );
            out.push(Exemplar {
                labels: l,
                value: if value_is_span_value {
                    c.value
                } else {
                    f64::NAN
                },
                timestamp_ms: (c.start / 1_000_000) as i64,
            });
        }
        out
    }
}

/// The series of a first stage (before its second stages).
pub fn finish(
    st: &FirstStage,
    raw: Raw,
    grid: &Grid,
    duration: bool,
    picker: &mut ExemplarPicker,
) -> SeriesSet {
    let mut set = SeriesSet::new();
    let mut groups: Vec<(GroupKey, Vec<Cell>)> = raw.groups.into_iter().collect();
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let per_value = |cells: &[Cell], f: &dyn Fn(&Cell) -> f64| -> Vec<f64> {
        cells
            .iter()
            .map(|c| if c.nv > 0.0 { f(c) } else { f64::NAN })
            .collect()
    };
    match &st.func {
        Func::Histogram(_) => {
            for ((keys, b), cells) in groups {
                let Some(b) = b else { continue };
                let mut labels = group_labels(st, &keys, false);
                labels.push((
                    "__bucket".into(),
                    // A double for int attributes too, as Tempo labels them.
                    if duration {
                        LabelValue::Float(b as f64 / 1e9)
                    } else {
                        LabelValue::Float(b as f64)
                    },
                ));
                let ex = picker.pick(
                    grid,
                    cells.iter().flat_map(|c| c.ex.iter().copied()),
                    &labels,
                    true,
                );
                insert(
                    &mut set,
                    Series {
                        values: cells.iter().map(|c| c.n).collect(),
                        labels,
                        exemplars: ex,
                    },
                );
            }
        }
        Func::Quantile(_, qs) => {
            // Buckets per group and interval.
            let mut by_group: BTreeMap<Vec<Option<String>>, Vec<Buckets>> = BTreeMap::new();
            let mut cands: BTreeMap<Vec<Option<String>>, Vec<Candidate>> = BTreeMap::new();
            for ((keys, b), cells) in groups {
                let Some(b) = b else { continue };
                let slots = by_group
                    .entry(keys.clone())
                    .or_insert_with(|| vec![Vec::new(); cells.len()]);
                for (i, c) in cells.iter().enumerate() {
                    if c.n > 0.0 {
                        slots[i].push((b as f64, c.n));
                    }
                }
                cands
                    .entry(keys)
                    .or_default()
                    .extend(cells.iter().flat_map(|c| c.ex.iter().copied()));
            }
            let scale = if duration { 1e-9 } else { 1.0 };
            for (keys, mut slots) in by_group {
                for s in slots.iter_mut() {
                    s.sort_by(|a, b| a.0.total_cmp(&b.0));
                }
                let base = group_labels(st, &keys, false);
                // Each exemplar goes to the quantile whose overall value is nearest its own.
                let mut all: Vec<(f64, f64)> = Vec::new();
                for s in &slots {
                    for &(b, n) in s {
                        match all.iter_mut().find(|x| x.0 == b) {
                            Some(x) => x.1 += n,
                            None => all.push((b, n)),
                        }
                    }
                }
                all.sort_by(|a, b| a.0.total_cmp(&b.0));
                let overall: Vec<f64> =
                    qs.iter().map(|p| log2_quantile(*p, &all) * scale).collect();
                let mut labels_p: Vec<Labels> = Vec::new();
                for p in qs {
                    let mut l = base.clone();
                    l.push(("p".into(), LabelValue::Float(*p)));
                    labels_p.push(l);
                }
                let picked = picker.pick(
                    grid,
                    cands.remove(&keys).unwrap_or_default().into_iter(),
                    &base,
                    true,
                );
                let mut ex_p: Vec<Vec<Exemplar>> = vec![Vec::new(); qs.len()];
                for e in picked {
                    let nearest = overall
                        .iter()
                        .enumerate()
                        .min_by(|a, b| (a.1 - e.value).abs().total_cmp(&(b.1 - e.value).abs()))
                        .map_or(0, |x| x.0);
                    ex_p[nearest].push(e);
                }
                for ((p, labels), ex) in qs.iter().zip(labels_p).zip(ex_p) {
                    let values = slots.iter().map(|s| log2_quantile(*p, s) * scale).collect();
                    insert(
                        &mut set,
                        Series {
                            labels,
                            values,
                            exemplars: ex,
                        },
                    );
                }
            }
        }
        _ => {
            let step = grid.step_seconds();
            for ((keys, _), cells) in groups {
                let labels = group_labels(st, &keys, true);
                let (values, span_value): (Vec<f64>, bool) = match &st.func {
                    Func::Rate => (cells.iter().map(|c| c.n / step).collect(), false),
                    Func::Count => (cells.iter().map(|c| c.n).collect(), false),
                    Func::Min(_) => (per_value(&cells, &|c| c.min), true),
                    Func::Max(_) => (per_value(&cells, &|c| c.max), true),
                    Func::Sum(_) => (per_value(&cells, &|c| c.sum), true),
                    Func::Avg(_) => (per_value(&cells, &|c| c.sum / c.nv), true),
                    _ => continue,
                };
                let ex = picker.pick(
                    grid,
                    cells.iter().flat_map(|c| c.ex.iter().copied()),
                    &labels,
                    span_value,
                );
                insert(
                    &mut set,
                    Series {
                        labels,
                        values,
                        exemplars: ex,
                    },
                );
            }
        }
    }
    set
}
