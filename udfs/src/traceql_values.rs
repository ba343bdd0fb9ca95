//! `traceql_values(source, kind, key)`: every value a span holds several of — the attribute
//! `key` of each of its events or links, each event's name, or each element of an array
//! attribute — as a list of typed keys (`s:IOError`, `i:2`, `f:1.5`, `b:true`; the encoding
//! of `spansets::key`). Tag values list them one by one, as Tempo does (an array's elements,
//! typed; every event's value). The sources and kinds are `traceql_match`'s.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, AsArray, BinaryArray, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::spansets::key::{KeyType, encode};
use crate::traceql_match::{Val, array_elements, literal_text, struct_attr};

/// The UDF's name.
pub const NAME: &str = "traceql_values";

/// The UDF; see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TraceqlValues {
    signature: Signature,
}

impl Default for TraceqlValues {
    fn default() -> Self {
        Self {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

/// `v` as a typed key; durations never occur among these sources.
fn key_of(v: &Val) -> String {
    match v {
        Val::Str(s) => encode(KeyType::Str, s),
        Val::Owned(s) => encode(KeyType::Str, s),
        Val::Int(i) => encode(KeyType::Int, i),
        Val::Float(f) => encode(KeyType::Float, f),
        Val::Bool(b) => encode(KeyType::Bool, b),
        Val::Dur(d) => encode(KeyType::Duration, d),
    }
}

impl ScalarUDFImpl for TraceqlValues {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Utf8,
            true,
        ))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let kind = literal_text(&args.args[1], "kind")?;
        let key = literal_text(&args.args[2], "key")?;
        let source = args.args[0].to_array(args.number_rows)?;
        let n = args.number_rows;
        let mut out = ListBuilder::new(StringBuilder::new());
        if kind == "array" {
            let Some(bin) = source.as_any().downcast_ref::<BinaryArray>() else {
                return exec_err!("{NAME}: arrays come as Binary, got {}", source.data_type());
            };
            let mut vals = Vec::new();
            for row in 0..n {
                vals.clear();
                // Only arrays: a scalar in the overflow map is not listed here.
                let is_array = bin.is_valid(row) && array_elements(bin.value(row), &mut vals);
                if is_array {
                    for v in &vals {
                        out.values().append_value(key_of(v));
                    }
                }
                out.append(is_array);
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        let Some(list) = source.as_list_opt::<i32>() else {
            return exec_err!(
                "{NAME}: {kind} needs a list of structs, got {}",
                source.data_type()
            );
        };
        let Some(elems) = list.values().as_struct_opt() else {
            return exec_err!("{NAME}: {kind} needs a list of structs");
        };
        let names = elems
            .column_by_name("name")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>());
        let offsets = list.value_offsets();
        let mut vals: Vec<Val> = Vec::new();
        for row in 0..n {
            vals.clear();
            if list.is_valid(row) {
                for e in offsets[row] as usize..offsets[row + 1] as usize {
                    match kind.as_str() {
                        "event_attr" | "link_attr" => struct_attr(elems, e, &key, &mut vals),
                        "event_name" => {
                            if let Some(a) = names {
                                vals.push(Val::Str(a.value(e)));
                            }
                        }
                        other => return plan_err!("{NAME}: no values listed for {other}"),
                    }
                }
            }
            for v in &vals {
                out.values().append_value(key_of(v));
            }
            out.append(!vals.is_empty());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::ArrayRef;
    use datafusion::arrow::datatypes::Field;
    use datafusion::common::ScalarValue;
    use datafusion::common::config::ConfigOptions;

    use super::*;

    fn call(source: ArrayRef, kind: &str) -> Vec<Option<Vec<String>>> {
        let n = source.len();
        let text = |s: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(s.into())));
        let args = ScalarFunctionArgs {
            arg_fields: vec![
                Arc::new(Field::new("s", source.data_type().clone(), true)),
                Arc::new(Field::new("k", DataType::Utf8, false)),
                Arc::new(Field::new("key", DataType::Utf8, false)),
            ],
            args: vec![ColumnarValue::Array(source), text(kind), text("")],
            number_rows: n,
            return_field: Arc::new(Field::new("out", DataType::Utf8, true)),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let ColumnarValue::Array(a) = TraceqlValues::default().invoke_with_args(args).unwrap()
        else {
            panic!("an array comes back");
        };
        let list = a.as_list::<i32>();
        (0..n)
            .map(|r| {
                list.is_valid(r).then(|| {
                    let v = list.value(r);
                    let s = v.as_string::<i32>();
                    (0..s.len()).map(|i| s.value(i).to_string()).collect()
                })
            })
            .collect()
    }

    #[test]
    fn array_elements_come_out_typed() {
        // AnyValue{array_value: ["a", 7]}, then a scalar string (not an array), then NULL.
        let any = vec![0x2a, 9, 0x0a, 3, 0x0a, 0x01, b'a', 0x0a, 2, 0x18, 0x07];
        let scalar = vec![0x0a, 0x01, b'x'];
        let source: ArrayRef = Arc::new(BinaryArray::from(vec![
            Some(any.as_slice()),
            Some(scalar.as_slice()),
            None,
        ]));
        assert_eq!(
            call(source, "array"),
            [Some(vec!["s:a".to_string(), "i:7".to_string()]), None, None]
        );
    }
}
