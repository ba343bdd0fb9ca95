//! `hex_id(bytes)`: lowercase hex of a trace or span ID, as the SQL tables show IDs.
//!
//! DataFusion's `encode(x, 'hex')` formats each value into a fresh `String` and appends it;
//! over the 10M trace and span IDs a join of `traceql()` with `spans` hashes, that was 27% of
//! the query (perf, `allegro-bench sql`). Here the output buffer is sized once and filled from
//! a byte-pair table: one pass, no allocation per value.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, FixedSizeBinaryArray, StringArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// Each byte's two hex digits.
const PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [DIGITS[i >> 4], DIGITS[i & 15]];
        i += 1;
    }
    t
};

/// Lowercase hex of the `len` values `value(i)` (`bytes` in all), empty where `nulls` says
/// null. The output is sized once and written pair by pair: no capacity check per byte.
fn encode<'a>(
    len: usize,
    bytes: usize,
    value: impl Fn(usize) -> &'a [u8],
    nulls: Option<&datafusion::arrow::buffer::NullBuffer>,
) -> Result<StringArray> {
    if i32::try_from(bytes.saturating_mul(2)).is_err() {
        return exec_err!("hex_id: more than 2 GiB of hex in one batch");
    }
    let mut out = vec![0u8; bytes * 2];
    let mut offsets = Vec::with_capacity(len + 1);
    offsets.push(0i32);
    let mut pos = 0;
    for i in 0..len {
        if nulls.is_none_or(|n| n.is_valid(i)) {
            let v = value(i);
            let dst = &mut out[pos..pos + v.len() * 2];
            for (d, b) in dst.chunks_exact_mut(2).zip(v) {
                d.copy_from_slice(&PAIRS[*b as usize]);
            }
            pos += v.len() * 2;
        }
        // Checked above: pos never passes 2 × bytes.
        offsets.push(pos as i32);
    }
    out.truncate(pos);
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    Ok(StringArray::try_new(
        offsets,
        Buffer::from_vec(out),
        nulls.cloned(),
    )?)
}

/// Hex of an array of IDs: FixedSizeBinary (as stored) or Binary.
pub fn hex_array(a: &dyn Array) -> Result<StringArray> {
    match a.data_type() {
        DataType::FixedSizeBinary(w) => {
            let f: &FixedSizeBinaryArray = a.as_fixed_size_binary();
            let w = usize::try_from(*w).unwrap_or(0);
            encode(f.len(), f.len() * w, |i| f.value(i), f.nulls())
        }
        DataType::Binary => {
            let b: &BinaryArray = a.as_binary();
            encode(b.len(), b.values().len(), |i| b.value(i), b.nulls())
        }
        DataType::Null => Ok(StringArray::new_null(a.len())),
        DataType::LargeBinary | DataType::BinaryView => {
            let b = datafusion::arrow::compute::cast(a, &DataType::Binary)?;
            hex_array(&b)
        }
        other => exec_err!("hex_id takes IDs as bytes, not {other}"),
    }
}

/// The `hex_id` scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HexId {
    signature: Signature,
}

impl Default for HexId {
    fn default() -> Self {
        Self {
            signature: Signature::one_of(vec![TypeSignature::Any(1)], Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HexId {
    fn name(&self) -> &str {
        "hex_id"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        match args.args.first() {
            Some(ColumnarValue::Array(a)) => {
                Ok(ColumnarValue::Array(Arc::new(hex_array(a)?) as ArrayRef))
            }
            Some(ColumnarValue::Scalar(s)) => {
                let a = s.to_array()?;
                let h = hex_array(&a)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&h, 0)?))
            }
            None => exec_err!("hex_id takes one argument"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_of_fixed_and_variable_ids_with_nulls_and_empty_values() {
        let f = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            [
                Some(vec![0x00u8, 0x1f, 0xa0, 0xff]),
                None,
                Some(vec![0xde, 0xad, 0xbe, 0xef]),
            ]
            .into_iter(),
            4,
        )
        .expect("fixed");
        let h = hex_array(&f).expect("hex");
        assert_eq!(h.value(0), "001fa0ff");
        assert!(h.is_null(1));
        assert_eq!(h.value(2), "deadbeef");

        // A root's parent ID is empty bytes: empty text, not NULL.
        let b = BinaryArray::from(vec![Some(&b""[..]), None, Some(&[0x0a, 0xb0][..])]);
        let h = hex_array(&b).expect("hex");
        assert_eq!((h.value(0), h.is_null(0)), ("", false));
        assert!(h.is_null(1));
        assert_eq!(h.value(2), "0ab0");
    }
}
