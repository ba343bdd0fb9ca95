//! Attribute sets ⇄ the five typed overflow maps (plus hot columns, handled by the callers).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Float64Array,
    Float64Builder, Int64Array, Int64Builder, MapArray, MapBuilder, StringArray, StringBuilder,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;

use crate::error::{EngineError, Result};

/// Appends attribute sets row by row into the five overflow maps.
pub struct OverflowBuilder {
    str: MapBuilder<StringBuilder, StringBuilder>,
    int: MapBuilder<StringBuilder, Int64Builder>,
    float: MapBuilder<StringBuilder, Float64Builder>,
    bool: MapBuilder<StringBuilder, BooleanBuilder>,
    other: MapBuilder<StringBuilder, BinaryBuilder>,
}

impl Default for OverflowBuilder {
    fn default() -> Self {
        Self {
            str: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            int: MapBuilder::new(None, StringBuilder::new(), Int64Builder::new()),
            float: MapBuilder::new(None, StringBuilder::new(), Float64Builder::new()),
            bool: MapBuilder::new(None, StringBuilder::new(), BooleanBuilder::new()),
            other: MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new()),
        }
    }
}

impl OverflowBuilder {
    /// Adds one attribute to the current row's maps.
    pub fn push(&mut self, kv: &KeyValue) {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::StringValue(s)) => {
                self.str.keys().append_value(&kv.key);
                self.str.values().append_value(s);
            }
            Some(Value::IntValue(i)) => {
                self.int.keys().append_value(&kv.key);
                self.int.values().append_value(*i);
            }
            Some(Value::DoubleValue(f)) => {
                self.float.keys().append_value(&kv.key);
                self.float.values().append_value(*f);
            }
            Some(Value::BoolValue(b)) => {
                self.bool.keys().append_value(&kv.key);
                self.bool.values().append_value(*b);
            }
            _ => {
                // Null means the KeyValue had no AnyValue at all; empty bytes an empty AnyValue.
                self.other.keys().append_value(&kv.key);
                match &kv.value {
                    None => self.other.values().append_null(),
                    Some(v) => self.other.values().append_value(v.encode_to_vec()),
                }
            }
        }
    }

    /// Closes the current row.
    pub fn finish_row(&mut self) {
        // MapBuilder::append only fails when keys and values got out of step, which push prevents.
        let ok = self.str.append(true).is_ok()
            && self.int.append(true).is_ok()
            && self.float.append(true).is_ok()
            && self.bool.append(true).is_ok()
            && self.other.append(true).is_ok();
        debug_assert!(ok, "overflow map keys and values out of step");
    }

    /// The five map arrays, in [`crate::schema::OVERFLOW_KINDS`] order.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.str.finish()),
            Arc::new(self.int.finish()),
            Arc::new(self.float.finish()),
            Arc::new(self.bool.finish()),
            Arc::new(self.other.finish()),
        ]
    }
}

/// Reads attribute sets back out of the five overflow maps.
pub struct OverflowReader<'a> {
    maps: [&'a MapArray; 5],
    str: &'a StringArray,
    int: &'a Int64Array,
    float: &'a Float64Array,
    bool: &'a BooleanArray,
    other: &'a BinaryArray,
    keys: [&'a StringArray; 5],
}

fn as_map(a: &ArrayRef) -> Result<&MapArray> {
    a.as_any().downcast_ref::<MapArray>().ok_or_else(|| {
        EngineError::Internal(format!("expected a map column, got {}", a.data_type()))
    })
}

fn child<T: 'static>(a: &ArrayRef) -> Result<&T> {
    a.as_any().downcast_ref::<T>().ok_or_else(|| {
        EngineError::Internal(format!("unexpected map child type {}", a.data_type()))
    })
}

impl<'a> OverflowReader<'a> {
    /// Wraps the five map columns (in schema order).
    pub fn new(cols: &'a [ArrayRef]) -> Result<Self> {
        if cols.len() != 5 {
            return Err(EngineError::Internal(
                "overflow maps must be five columns".into(),
            ));
        }
        let maps = [
            as_map(&cols[0])?,
            as_map(&cols[1])?,
            as_map(&cols[2])?,
            as_map(&cols[3])?,
            as_map(&cols[4])?,
        ];
        let keys = [
            child::<StringArray>(maps[0].keys())?,
            child::<StringArray>(maps[1].keys())?,
            child::<StringArray>(maps[2].keys())?,
            child::<StringArray>(maps[3].keys())?,
            child::<StringArray>(maps[4].keys())?,
        ];
        Ok(Self {
            str: child(maps[0].values())?,
            int: child(maps[1].values())?,
            float: child(maps[2].values())?,
            bool: child(maps[3].values())?,
            other: child(maps[4].values())?,
            maps,
            keys,
        })
    }

    /// Appends the attributes of `row` to `out`.
    pub fn read_row(&self, row: usize, out: &mut Vec<KeyValue>) -> Result<()> {
        for (m, map) in self.maps.iter().enumerate() {
            let offsets = map.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            for i in start..end {
                let key = self.keys[m].value(i).to_string();
                let value = match m {
                    0 => Some(scalar(Value::StringValue(self.str.value(i).to_string()))),
                    1 => Some(scalar(Value::IntValue(self.int.value(i)))),
                    2 => Some(scalar(Value::DoubleValue(self.float.value(i)))),
                    3 => Some(scalar(Value::BoolValue(self.bool.value(i)))),
                    _ if self.other.is_null(i) => None,
                    _ => Some(AnyValue::decode(self.other.value(i)).map_err(|e| {
                        EngineError::corrupt("attrs_other", format!("attribute {key:?}: {e}"))
                    })?),
                };
                out.push(KeyValue {
                    key,
                    value,
                    ..Default::default()
                });
            }
        }
        Ok(())
    }
}

/// Wraps a scalar into an `AnyValue`.
pub fn scalar(v: Value) -> AnyValue {
    AnyValue { value: Some(v) }
}
