//! The spansets of a trace as Arrow data: what `traceql_spansets` returns and what the engine
//! reads back, with one encoder and one decoder.
//!
//! ```text
//! List<Struct {
//!     spans: List<Struct { span_id: FixedSizeBinary(8), left: Int32 }>,
//!     attrs: List<Struct { label: Utf8, key: Utf8 (null = nil) }>,
//! }>                                            -- null: the trace has no spansets
//! ```
//!
//! A span is named by its ID and nested-set left (two spans may share an ID, as Zipkin's
//! client and server halves do); `key` is a typed key (see [`super::key`]).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeBinaryArray, FixedSizeBinaryBuilder, Int32Array, ListArray,
    StringArray, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, exec_err};

use super::eval::{SpanRow, Spanset};

/// One spanset of a trace, decoded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FoundSet {
    /// Its spans: (span ID, nested-set left).
    pub spans: Vec<([u8; 8], i32)>,
    /// `by(...)` labels and their typed keys (`None` = nil).
    pub attrs: Vec<(String, Option<String>)>,
}

impl FoundSet {
    /// The spansets `sets` of a trace whose rows are `rows`.
    pub fn of(sets: &[Spanset], rows: &[SpanRow]) -> Vec<FoundSet> {
        sets.iter()
            .map(|s| FoundSet {
                spans: s
                    .spans
                    .iter()
                    .map(|&i| (rows[i].span_id, rows[i].left))
                    .collect(),
                attrs: s.attrs.clone(),
            })
            .collect()
    }
}

fn span_fields() -> Fields {
    Fields::from(vec![
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("left", DataType::Int32, false),
    ])
}

fn attr_fields() -> Fields {
    Fields::from(vec![
        Field::new("label", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, true),
    ])
}

fn set_fields() -> Fields {
    Fields::from(vec![
        Field::new_list(
            "spans",
            Field::new_list_field(DataType::Struct(span_fields()), false),
            false,
        ),
        Field::new_list(
            "attrs",
            Field::new_list_field(DataType::Struct(attr_fields()), false),
            false,
        ),
    ])
}

/// The Arrow type of a trace's spansets.
pub fn data_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(set_fields()),
        false,
    )))
}

/// Builds a column of spansets, one trace (row) at a time.
#[derive(Default)]
pub struct Encoder {
    /// Per trace: present, and its end offset into the sets.
    traces: Vec<bool>,
    trace_ends: Vec<i32>,
    set_span_ends: Vec<i32>,
    set_attr_ends: Vec<i32>,
    span_ids: Vec<[u8; 8]>,
    lefts: Vec<i32>,
    labels: Vec<String>,
    keys: Vec<Option<String>>,
}

impl Encoder {
    /// Appends a trace's spansets (`None`: it has none).
    pub fn append(&mut self, sets: Option<&[FoundSet]>) {
        self.traces.push(sets.is_some());
        for s in sets.unwrap_or_default() {
            for (id, left) in &s.spans {
                self.span_ids.push(*id);
                self.lefts.push(*left);
            }
            for (label, key) in &s.attrs {
                self.labels.push(label.clone());
                self.keys.push(key.clone());
            }
            self.set_span_ends.push(self.span_ids.len() as i32);
            self.set_attr_ends.push(self.labels.len() as i32);
        }
        self.trace_ends.push(self.set_span_ends.len() as i32);
    }

    /// The column.
    pub fn finish(self) -> Result<ArrayRef> {
        let offsets = |ends: Vec<i32>| {
            let mut v = Vec::with_capacity(ends.len() + 1);
            v.push(0);
            v.extend(ends);
            OffsetBuffer::new(v.into())
        };
        let mut ids = FixedSizeBinaryBuilder::with_capacity(self.span_ids.len(), 8);
        for id in &self.span_ids {
            ids.append_value(id)?;
        }
        let spans = StructArray::try_new(
            span_fields(),
            vec![
                Arc::new(ids.finish()) as ArrayRef,
                Arc::new(Int32Array::from(self.lefts)),
            ],
            None,
        )?;
        let mut labels = StringBuilder::new();
        let mut keys = StringBuilder::new();
        for (l, k) in self.labels.iter().zip(&self.keys) {
            labels.append_value(l);
            keys.append_option(k.as_deref());
        }
        let attrs = StructArray::try_new(
            attr_fields(),
            vec![
                Arc::new(labels.finish()) as ArrayRef,
                Arc::new(keys.finish()),
            ],
            None,
        )?;
        let [span_list, attr_list] = [
            (span_fields(), spans, self.set_span_ends),
            (attr_fields(), attrs, self.set_attr_ends),
        ]
        .map(|(fields, values, ends)| {
            ListArray::try_new(
                Arc::new(Field::new_list_field(DataType::Struct(fields), false)),
                offsets(ends),
                Arc::new(values),
                None,
            )
        });
        let sets = StructArray::try_new(
            set_fields(),
            vec![Arc::new(span_list?) as ArrayRef, Arc::new(attr_list?)],
            None,
        )?;
        Ok(Arc::new(ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Struct(set_fields()), false)),
            offsets(self.trace_ends),
            Arc::new(sets),
            Some(NullBuffer::from(self.traces)),
        )?))
    }
}

/// Reads row `row` of a spansets column: `None` when the trace has none.
pub fn decode(column: &dyn Array, row: usize) -> Result<Option<Vec<FoundSet>>> {
    let Some(list) = column.as_list_opt::<i32>() else {
        return exec_err!("spansets column has type {}", column.data_type());
    };
    if list.is_null(row) {
        return Ok(None);
    }
    let sets = list.value(row);
    let Some(sets) = sets.as_struct_opt() else {
        return exec_err!("spansets are not structs");
    };
    let (Some(spans), Some(attrs)) = (
        sets.column(0).as_list_opt::<i32>(),
        sets.column(1).as_list_opt::<i32>(),
    ) else {
        return exec_err!("a spanset's spans or attrs are not lists");
    };
    let mut out = Vec::with_capacity(sets.len());
    for s in 0..sets.len() {
        let sp = spans.value(s);
        let at = attrs.value(s);
        let (Some(sp), Some(at)) = (sp.as_struct_opt(), at.as_struct_opt()) else {
            return exec_err!("a spanset's entries are not structs");
        };
        let ids = sp.column(0).as_any().downcast_ref::<FixedSizeBinaryArray>();
        let lefts = sp.column(1).as_any().downcast_ref::<Int32Array>();
        let labels = at.column(0).as_any().downcast_ref::<StringArray>();
        let keys = at.column(1).as_any().downcast_ref::<StringArray>();
        let (Some(ids), Some(lefts), Some(labels), Some(keys)) = (ids, lefts, labels, keys) else {
            return exec_err!("a spanset's fields have unexpected types");
        };
        let mut set = FoundSet::default();
        for i in 0..ids.len() {
            let mut id = [0u8; 8];
            id.copy_from_slice(ids.value(i));
            set.spans.push((id, lefts.value(i)));
        }
        for i in 0..labels.len() {
            set.attrs.push((
                labels.value(i).to_string(),
                keys.is_valid(i).then(|| keys.value(i).to_string()),
            ));
        }
        out.push(set);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encoded_decodes_as_it_was() {
        let a = vec![
            FoundSet {
                spans: vec![([1; 8], 1), ([2; 8], 2)],
                attrs: vec![("by(.a)".into(), Some("s:x".into()))],
            },
            FoundSet {
                spans: vec![([3; 8], 5)],
                attrs: vec![("by(.a)".into(), None)],
            },
        ];
        let b = vec![FoundSet {
            spans: vec![([9; 8], 0)],
            attrs: vec![],
        }];
        let mut e = Encoder::default();
        e.append(Some(&a));
        e.append(None);
        e.append(Some(&b));
        let col = e.finish().unwrap();
        assert_eq!(col.data_type(), &data_type());
        assert_eq!(decode(&col, 0).unwrap(), Some(a));
        assert_eq!(decode(&col, 1).unwrap(), None);
        assert_eq!(decode(&col, 2).unwrap(), Some(b));
    }
}
