//! `log2_bucket(v)`: the upper bound of `v`'s power-of-two bucket, as TraceQL's
//! `histogram_over_time` and `quantile_over_time` bucket values (Tempo `Log2Bucketize`):
//! the smallest power of two ≥ `v`, for `v ≥ 2`; NULL below 2 (Tempo drops those spans).
//!
//! Integer arithmetic on the bit length of `v − 1`, so exact for every Int64 (a float `log2`
//! rounds for values above 2^53).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// The bucket upper bound of `v`, `None` for `v < 2` and for `v > 2^62` (no Int64 bound).
pub fn bucket(v: i64) -> Option<i64> {
    if v < 2 {
        return None;
    }
    let bits = 64 - ((v - 1) as u64).leading_zeros();
    (bits < 63).then(|| 1i64 << bits)
}

/// The `log2_bucket` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Log2Bucket {
    signature: Signature,
}

impl Default for Log2Bucket {
    fn default() -> Self {
        Self {
            signature: Signature::uniform(
                1,
                vec![DataType::Int64, DataType::UInt64, DataType::Int32],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for Log2Bucket {
    fn name(&self) -> &str {
        "log2_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(a) = arrays.first() else {
            return exec_err!("log2_bucket takes one argument");
        };
        let a = cast(a, &DataType::Int64)?;
        let Some(ints) = a.as_any().downcast_ref::<Int64Array>() else {
            return exec_err!("log2_bucket takes an integer");
        };
        let out: Int64Array = ints.iter().map(|v| v.and_then(bucket)).collect();
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn tempo_examples() {
        // tempo-compat.md §3.7: 2 → 2; 3 → 4; 1000 → 1024; 1024 → 1024; below 2 dropped.
        assert_eq!(bucket(2), Some(2));
        assert_eq!(bucket(3), Some(4));
        assert_eq!(bucket(1000), Some(1024));
        assert_eq!(bucket(1024), Some(1024));
        assert_eq!(bucket(1025), Some(2048));
        assert_eq!(bucket(1), None);
        assert_eq!(bucket(0), None);
        assert_eq!(bucket(-5), None);
        // Exact where a float log2 is not: 2^53 + 1 → 2^54.
        assert_eq!(bucket((1 << 53) + 1), Some(1 << 54));
        assert_eq!(bucket(1 << 62), Some(1 << 62));
        assert_eq!(bucket((1 << 62) + 1), None);
    }
}
