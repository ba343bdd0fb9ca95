//! `metrics_group(ts, first, step [, type0, … type4])`: the metrics grid's interval of a span
//! start time, `(ts - first) / step` (NULL before `first`), with the `by()` keys' type codes
//! packed above it, as one UInt64 group key.
//!
//! Metrics aggregations group by interval, each `by()` key's text and each key's type code.
//! DataFusion groups several columns column by column (hashing and comparing each per row), so
//! the interval and the type codes travel as one integer: a 6h `rate() by(...)` over 10M spans
//! spent half its time grouping. The division uses the step's reciprocal (exact after a
//! one-step correction) instead of a 64-bit integer division per row.
//!
//! Layout: bits 0–31 the interval (saturated), then 5 bits per key type, `code + 1`, 0 for a
//! NULL type (the key is absent).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, UInt8Array, UInt64Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// Most `by()` keys (Tempo's limit).
pub const MAX_KEYS: usize = 5;
const INTERVAL_BITS: u32 = 32;
const TYPE_BITS: u32 = 5;

/// `(ts - first) / step` rounded down, `None` before `first`.
#[inline]
pub fn interval(ts: u64, first: u64, step: u64, inv: f64) -> Option<u64> {
    let off = ts.checked_sub(first)?;
    if step == 0 {
        return None;
    }
    // Below 2^52 (offset and step) the float quotient is off by at most one and the products
    // below cannot overflow; beyond, divide. The correction is branch-free: this runs per span.
    if (off | step) >= 1 << 52 {
        return Some(off / step);
    }
    let q = (off as i64 as f64 * inv) as i64 as u64;
    let q = q - u64::from(q * step > off);
    Some(q + u64::from((q + 1) * step <= off))
}

/// The interval of a packed group key.
pub fn unpack_interval(g: u64) -> u64 {
    g & ((1 << INTERVAL_BITS) - 1)
}

/// The type code of key `k` in a packed group key, `None` when the key is absent.
pub fn unpack_type(g: u64, k: usize) -> Option<u8> {
    let code = (g >> (INTERVAL_BITS + TYPE_BITS * k as u32)) & ((1 << TYPE_BITS) - 1);
    code.checked_sub(1).map(|c| c as u8)
}

/// The `metrics_group` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MetricsGroup {
    signature: Signature,
}

impl Default for MetricsGroup {
    fn default() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

fn scalar_u64(v: &ColumnarValue, what: &str) -> Result<u64> {
    match v {
        ColumnarValue::Scalar(ScalarValue::UInt64(Some(x))) => Ok(*x),
        _ => exec_err!("metrics_group: {what} must be a UInt64 literal"),
    }
}

impl ScalarUDFImpl for MetricsGroup {
    fn name(&self) -> &str {
        "metrics_group"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.args.len();
        if !(3..=3 + MAX_KEYS).contains(&n) {
            return exec_err!("metrics_group takes ts, first, step and up to {MAX_KEYS} types");
        }
        let first = scalar_u64(&args.args[1], "first")?;
        let step = scalar_u64(&args.args[2], "step")?;
        let inv = 1.0 / step as f64;
        let ts = args.args[0].to_array(args.number_rows)?;
        let ts = cast(&ts, &DataType::UInt64)?;
        let Some(ts) = ts.as_any().downcast_ref::<UInt64Array>() else {
            return exec_err!("metrics_group: ts must be an integer");
        };
        let types = args.args[3..]
            .iter()
            .map(|t| {
                let a = cast(&t.to_array(args.number_rows)?, &DataType::UInt8)?;
                match a.as_any().downcast_ref::<UInt8Array>() {
                    Some(u) => Ok(u.clone()),
                    None => exec_err!("metrics_group: types must be UInt8"),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let max_interval = (1u64 << INTERVAL_BITS) - 1;
        // Values and validity in separate tight loops: collecting `Option`s per row (the
        // obvious way) cost a tenth of a sampled 6h `rate()`.
        let mut before_first = false;
        let mut keys: Vec<u64> = ts
            .values()
            .iter()
            .map(|&t| match interval(t, first, step, inv) {
                Some(i) => i.min(max_interval),
                None => {
                    before_first = true;
                    0
                }
            })
            .collect();
        for (k, t) in types.iter().enumerate() {
            let shift = INTERVAL_BITS + TYPE_BITS * k as u32;
            for (r, (g, &code)) in keys.iter_mut().zip(t.values().iter()).enumerate() {
                if t.is_valid(r) {
                    *g |= (u64::from(code.min(30)) + 1) << shift;
                }
            }
        }
        let in_range = before_first.then(|| {
            NullBuffer::from_iter(
                ts.values()
                    .iter()
                    .map(|&t| interval(t, first, step, inv).is_some()),
            )
        });
        let nulls = NullBuffer::union(ts.nulls(), in_range.as_ref());
        let out = UInt64Array::new(keys.into(), nulls);
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reciprocal_division_equals_integer_division() {
        // A small xorshift: offsets and steps over many magnitudes, plus the edges.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let first = 1_767_225_600_000_000_001u64;
        let mut cases: Vec<(u64, u64)> = (0..200_000)
            .map(|_| {
                let step = 1 + next() % (1 << (next() % 50));
                let off = next() % (1 << (next() % 60));
                (off, step)
            })
            .collect();
        for step in [1u64, 7, 1_000_000_000, 337_000_000_000, 3_600_000_000_000] {
            for q in [0u64, 1, 63, 64, 10_000] {
                for d in [0i64, -1, 1] {
                    let off = (q * step).saturating_add_signed(d);
                    cases.push((off, step));
                }
            }
        }
        cases.push((u64::MAX - first, 3));
        for (off, step) in cases {
            let Some(ts) = first.checked_add(off) else {
                continue;
            };
            assert_eq!(
                interval(ts, first, step, 1.0 / step as f64),
                Some(off / step),
                "off {off} step {step}"
            );
        }
        assert_eq!(interval(first - 1, first, 10, 0.1), None);
        // An instant query's single interval: a step longer than any offset.
        assert_eq!(
            interval(first + 5, first, u64::MAX, 1.0 / u64::MAX as f64),
            Some(0)
        );
    }

    #[test]
    fn packs_interval_and_types() {
        // Interval 63; key 0 of type 2, key 1 absent, key 2 of type 0.
        let g = 63 | (3 << 32) | (1 << 42);
        assert_eq!(unpack_interval(g), 63);
        assert_eq!(unpack_type(g, 0), Some(2));
        assert_eq!(unpack_type(g, 1), None);
        assert_eq!(unpack_type(g, 2), Some(0));
        assert_eq!(unpack_type(g, 3), None);
    }

    #[test]
    fn invoking_packs_keys_per_row_with_nulls_where_ts_is_null_or_early() {
        use datafusion::arrow::datatypes::Field;
        use datafusion::config::ConfigOptions;
        // Grid from 100 in steps of 10. Rows: 125 → 2; NULL → NULL; 99 → NULL (before the
        // grid); 100 → 0 with key 0 absent; 219 → 11.
        let ts = UInt64Array::from(vec![Some(125), None, Some(99), Some(100), Some(219)]);
        let types = UInt8Array::from(vec![Some(2), Some(1), Some(0), None, Some(40)]);
        let args = vec![
            ColumnarValue::Array(Arc::new(ts)),
            ColumnarValue::Scalar(ScalarValue::UInt64(Some(100))),
            ColumnarValue::Scalar(ScalarValue::UInt64(Some(10))),
            ColumnarValue::Array(Arc::new(types)),
        ];
        let arg_fields = args
            .iter()
            .map(|a| Arc::new(Field::new("a", a.data_type(), true)))
            .collect();
        let out = MetricsGroup::default()
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: 5,
                return_field: Arc::new(Field::new("g", DataType::UInt64, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap();
        let ColumnarValue::Array(out) = out else {
            panic!("an array")
        };
        let out = out.as_any().downcast_ref::<UInt64Array>().unwrap();
        let got: Vec<Option<u64>> = out.iter().collect();
        // Type 2 → code 3, type 40 saturates at 30 → code 31.
        assert_eq!(
            got,
            [
                Some(2 | (3 << 32)),
                None,
                None,
                Some(0),
                Some(11 | (31 << 32))
            ]
        );
    }
}
