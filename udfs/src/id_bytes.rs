//! `id_bytes(text, width)`: the bytes behind an ID's hex text, the inverse of `hex_id`.
//!
//! Strict on purpose: only what `hex_id` writes (lowercase hex, `2 × width` digits; any even
//! length for `width` 0) decodes, anything else is NULL. So `id_bytes(x, w) = id` holds exactly
//! when `hex_id(id) = x` does, which lets the SQL layer join on stored bytes where the query
//! joined on hex text (`engine/src/sql/id_joins.rs`). The result is `FixedSizeBinary(width)`,
//! or `Binary` for width 0.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, FixedSizeBinaryBuilder, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// The bytes of `s` when it is lowercase hex of `width` bytes (any length for 0).
pub fn decode_strict(s: &str, width: usize) -> Option<Vec<u8>> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) || (width > 0 && b.len() != width * 2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// The `id_bytes` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IdBytes {
    signature: Signature,
}

impl Default for IdBytes {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// The width argument: a non-negative integer literal.
fn width_of(v: Option<&ScalarValue>) -> Result<usize> {
    let w = match v {
        Some(ScalarValue::Int64(Some(w))) => *w,
        Some(ScalarValue::Int32(Some(w))) => i64::from(*w),
        Some(ScalarValue::UInt64(Some(w))) => i64::try_from(*w).unwrap_or(-1),
        _ => -1,
    };
    match usize::try_from(w) {
        Ok(w) if w <= 64 => Ok(w),
        _ => exec_err!("id_bytes takes the width as an integer literal from 0 to 64"),
    }
}

fn output_type(width: usize) -> DataType {
    match width {
        0 => DataType::Binary,
        // At most 64 (checked), so the cast holds.
        w => DataType::FixedSizeBinary(w as i32),
    }
}

impl ScalarUDFImpl for IdBytes {
    fn name(&self) -> &str {
        "id_bytes"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        exec_err!("id_bytes: return_field_from_args is used")
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let width = width_of(args.scalar_arguments.get(1).copied().flatten())?;
        Ok(Arc::new(Field::new(self.name(), output_type(width), true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let width = match args.args.get(1) {
            Some(ColumnarValue::Scalar(s)) => width_of(Some(s))?,
            _ => width_of(None)?,
        };
        let (text, scalar) = match args.args.first() {
            Some(ColumnarValue::Array(a)) => (Arc::clone(a), false),
            Some(ColumnarValue::Scalar(s)) => (s.to_array()?, true),
            None => return exec_err!("id_bytes takes the ID text and a width"),
        };
        let text = cast(&text, &DataType::Utf8)?;
        let text: &StringArray = text.as_string();
        let out: ArrayRef = if width == 0 {
            let mut b = BinaryBuilder::with_capacity(text.len(), text.values().len() / 2);
            for v in text.iter() {
                b.append_option(v.and_then(|s| decode_strict(s, 0)));
            }
            Arc::new(b.finish())
        } else {
            let mut b = FixedSizeBinaryBuilder::with_capacity(text.len(), width as i32);
            for v in text.iter() {
                match v.and_then(|s| decode_strict(s, width)) {
                    Some(bytes) => b.append_value(bytes)?,
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        };
        if scalar {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_hex_id_writes_decodes() {
        assert_eq!(decode_strict("00ff1a", 3), Some(vec![0, 255, 26]));
        assert_eq!(decode_strict("00ff1a", 0), Some(vec![0, 255, 26]));
        assert_eq!(decode_strict("", 0), Some(vec![]));
        // Uppercase, odd lengths, other widths and non-hex never equal a hex_id output.
        assert_eq!(decode_strict("00FF1A", 3), None);
        assert_eq!(decode_strict("00ff1", 0), None);
        assert_eq!(decode_strict("00ff1a", 4), None);
        assert_eq!(decode_strict("zz", 1), None);
        // The inverse of hex_id.
        let ids = datafusion::arrow::array::FixedSizeBinaryArray::try_from_iter(
            [vec![0xa1u8, 0x1e, 0, 7]].into_iter(),
        )
        .expect("ids");
        let text = crate::hex_id::hex_array(&ids).expect("hex");
        assert_eq!(
            decode_strict(text.value(0), 4),
            Some(vec![0xa1, 0x1e, 0, 7])
        );
    }
}
