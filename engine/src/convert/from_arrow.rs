//! Span-table rows → OTLP `ResourceSpans`, grouped by resource and scope.

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, FixedSizeBinaryArray, Float64Array,
    Int32Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::DataType;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::attrs::{OverflowReader, scalar};
use crate::error::{EngineError, Result};
use crate::schema::{AttrScope, OVERFLOW_KINDS, col};

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| EngineError::corrupt("span batch", format!("column {name:?} is missing")))
}

fn typed<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    column(batch, name)?
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| {
            EngineError::corrupt("span batch", format!("column {name:?} has unexpected type"))
        })
}

fn overflow_cols(batch: &RecordBatch, prefix: &str) -> Result<Vec<ArrayRef>> {
    OVERFLOW_KINDS
        .iter()
        .map(|(n, _)| column(batch, &format!("{prefix}{n}")).cloned())
        .collect()
}

/// A hot column: its scope, key and values.
struct Hot<'a> {
    scope: AttrScope,
    key: String,
    values: &'a ArrayRef,
}

impl Hot<'_> {
    fn value(&self, row: usize) -> Option<KeyValue> {
        if self.values.is_null(row) {
            return None;
        }
        let v = match self.values.data_type() {
            DataType::Utf8 => {
                Value::StringValue(self.values.as_string::<i32>().value(row).to_string())
            }
            DataType::Int64 => Value::IntValue(
                self.values
                    .as_any()
                    .downcast_ref::<Int64Array>()?
                    .value(row),
            ),
            DataType::Float64 => Value::DoubleValue(
                self.values
                    .as_any()
                    .downcast_ref::<Float64Array>()?
                    .value(row),
            ),
            DataType::Boolean => Value::BoolValue(
                self.values
                    .as_any()
                    .downcast_ref::<BooleanArray>()?
                    .value(row),
            ),
            _ => return None,
        };
        Some(KeyValue {
            key: self.key.clone(),
            value: Some(scalar(v)),
            ..Default::default()
        })
    }
}

fn hot_columns(batch: &RecordBatch) -> Vec<Hot<'_>> {
    let schema = batch.schema_ref();
    let mut out = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        for scope in AttrScope::ALL {
            if let Some(key) = f
                .name()
                .strip_prefix(scope.name())
                .and_then(|r| r.strip_prefix('.'))
            {
                out.push(Hot {
                    scope,
                    key: key.to_string(),
                    values: batch.column(i),
                });
            }
        }
    }
    out
}

fn sort_attrs(attrs: &mut [KeyValue]) {
    attrs.sort_by(|a, b| a.key.cmp(&b.key));
}

/// Converts span-table batches back to OTLP. Resources and scopes are rebuilt per row and
/// merged when equal, in first-seen order; attributes come back sorted by key.
pub fn batches_to_resource_spans(batches: &[RecordBatch]) -> Result<Vec<ResourceSpans>> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut res_index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut scope_index: HashMap<(usize, Vec<u8>), usize> = HashMap::new();
    for batch in batches {
        let rows = BatchRows::new(batch)?;
        for row in 0..batch.num_rows() {
            let (resource, res_schema) = rows.resource(row)?;
            let rkey = (resource.encode_to_vec(), res_schema.clone()).encode_key();
            let ri = *res_index.entry(rkey).or_insert_with(|| {
                out.push(ResourceSpans {
                    resource: Some(resource),
                    scope_spans: vec![],
                    schema_url: res_schema,
                });
                out.len() - 1
            });
            let (scope, scope_schema) = rows.scope(row)?;
            let skey = (scope.encode_to_vec(), scope_schema.clone()).encode_key();
            let si = *scope_index.entry((ri, skey)).or_insert_with(|| {
                out[ri].scope_spans.push(ScopeSpans {
                    scope: Some(scope),
                    spans: vec![],
                    schema_url: scope_schema,
                });
                out[ri].scope_spans.len() - 1
            });
            out[ri].scope_spans[si].spans.push(rows.span(row)?);
        }
    }
    Ok(out)
}

trait EncodeKey {
    fn encode_key(self) -> Vec<u8>;
}

impl EncodeKey for (Vec<u8>, String) {
    fn encode_key(self) -> Vec<u8> {
        let mut k = self.0;
        k.extend_from_slice(&(k.len() as u64).to_le_bytes());
        k.extend_from_slice(self.1.as_bytes());
        k
    }
}

/// Typed views of one batch's columns.
struct BatchRows<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a FixedSizeBinaryArray,
    parent: &'a FixedSizeBinaryArray,
    trace_state: &'a StringArray,
    flags: &'a UInt32Array,
    name: &'a StringArray,
    kind: &'a Int32Array,
    status_code: &'a Int32Array,
    status_message: &'a StringArray,
    start: &'a UInt64Array,
    duration: &'a UInt64Array,
    dropped_attrs: &'a UInt32Array,
    dropped_events: &'a UInt32Array,
    dropped_links: &'a UInt32Array,
    service_name: &'a StringArray,
    res_dropped: &'a UInt32Array,
    res_schema: &'a StringArray,
    res_entities: &'a BinaryArray,
    scope_name: &'a StringArray,
    scope_version: &'a StringArray,
    scope_dropped: &'a UInt32Array,
    scope_schema: &'a StringArray,
    hot: Vec<Hot<'a>>,
    overflow: Vec<(AttrScope, Vec<ArrayRef>)>,
    events: &'a ListArray,
    links: &'a ListArray,
    event_cols: NestedCols,
    link_cols: NestedCols,
}

/// The element indexes of `row` in a list column.
fn list_range(list: &ListArray, row: usize) -> std::ops::Range<usize> {
    let offsets = list.value_offsets();
    offsets[row] as usize..offsets[row + 1] as usize
}

/// The attributes of nested element `i`, sorted by key.
fn sorted_attrs(reader: &OverflowReader<'_>, i: usize) -> Result<Vec<KeyValue>> {
    let mut attributes = Vec::new();
    reader.read_row(i, &mut attributes)?;
    sort_attrs(&mut attributes);
    Ok(attributes)
}

/// Columns of the `events` or `links` struct, flattened.
struct NestedCols {
    strukt: StructArray,
    attrs: Vec<ArrayRef>,
}

impl NestedCols {
    fn new(list: &ListArray) -> Result<Self> {
        let strukt = list
            .values()
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| EngineError::corrupt("span batch", "events/links are not structs"))?
            .clone();
        let attrs = OVERFLOW_KINDS
            .iter()
            .map(|(n, _)| {
                strukt.column_by_name(n).cloned().ok_or_else(|| {
                    EngineError::corrupt("span batch", format!("nested {n} missing"))
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { strukt, attrs })
    }

    fn col<T: 'static>(&self, name: &str) -> Result<&T> {
        self.strukt
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| {
                EngineError::corrupt(
                    "span batch",
                    format!("nested column {name:?} missing or mistyped"),
                )
            })
    }
}

impl<'a> BatchRows<'a> {
    fn new(b: &'a RecordBatch) -> Result<Self> {
        let events: &ListArray = typed(b, col::EVENTS)?;
        let links: &ListArray = typed(b, col::LINKS)?;
        Ok(Self {
            trace_id: typed(b, col::TRACE_ID)?,
            span_id: typed(b, col::SPAN_ID)?,
            parent: typed(b, col::PARENT_SPAN_ID)?,
            trace_state: typed(b, col::TRACE_STATE)?,
            flags: typed(b, col::FLAGS)?,
            name: typed(b, col::NAME)?,
            kind: typed(b, col::KIND)?,
            status_code: typed(b, col::STATUS_CODE)?,
            status_message: typed(b, col::STATUS_MESSAGE)?,
            start: typed(b, col::START_TIME)?,
            duration: typed(b, col::DURATION)?,
            dropped_attrs: typed(b, col::DROPPED_ATTRIBUTES)?,
            dropped_events: typed(b, col::DROPPED_EVENTS)?,
            dropped_links: typed(b, col::DROPPED_LINKS)?,
            service_name: typed(b, col::SERVICE_NAME)?,
            res_dropped: typed(b, col::RESOURCE_DROPPED_ATTRIBUTES)?,
            res_schema: typed(b, col::RESOURCE_SCHEMA_URL)?,
            res_entities: typed(b, col::RESOURCE_ENTITY_REFS)?,
            scope_name: typed(b, col::SCOPE_NAME)?,
            scope_version: typed(b, col::SCOPE_VERSION)?,
            scope_dropped: typed(b, col::SCOPE_DROPPED_ATTRIBUTES)?,
            scope_schema: typed(b, col::SCOPE_SCHEMA_URL)?,
            hot: hot_columns(b),
            overflow: AttrScope::ALL
                .iter()
                .map(|s| Ok((*s, overflow_cols(b, &s.overflow_prefix())?)))
                .collect::<Result<_>>()?,
            event_cols: NestedCols::new(events)?,
            link_cols: NestedCols::new(links)?,
            events,
            links,
        })
    }

    fn attrs(&self, scope: AttrScope, row: usize) -> Result<Vec<KeyValue>> {
        let mut out: Vec<KeyValue> = self
            .hot
            .iter()
            .filter(|h| h.scope == scope)
            .filter_map(|h| h.value(row))
            .collect();
        if let Some((_, cols)) = self.overflow.iter().find(|(s, _)| *s == scope) {
            OverflowReader::new(cols)?.read_row(row, &mut out)?;
        }
        Ok(out)
    }

    fn resource(&self, row: usize) -> Result<(Resource, String)> {
        let mut attributes = self.attrs(AttrScope::Resource, row)?;
        if self.service_name.is_valid(row) {
            attributes.push(KeyValue {
                key: "service.name".into(),
                value: Some(scalar(Value::StringValue(
                    self.service_name.value(row).to_string(),
                ))),
                ..Default::default()
            });
        }
        sort_attrs(&mut attributes);
        let entity_refs = if self.res_entities.is_valid(row) {
            Resource::decode(self.res_entities.value(row))
                .map_err(|e| EngineError::corrupt("resource_entity_refs", e))?
                .entity_refs
        } else {
            Vec::new()
        };
        let resource = Resource {
            attributes,
            dropped_attributes_count: self.res_dropped.value(row),
            entity_refs,
        };
        Ok((resource, self.res_schema.value(row).to_string()))
    }

    fn scope(&self, row: usize) -> Result<(InstrumentationScope, String)> {
        let mut attributes = self.attrs(AttrScope::Instrumentation, row)?;
        sort_attrs(&mut attributes);
        let scope = InstrumentationScope {
            name: self.scope_name.value(row).to_string(),
            version: self.scope_version.value(row).to_string(),
            attributes,
            dropped_attributes_count: self.scope_dropped.value(row),
        };
        Ok((scope, self.scope_schema.value(row).to_string()))
    }

    fn span(&self, row: usize) -> Result<Span> {
        let start = self.start.value(row);
        let mut attributes = self.attrs(AttrScope::Span, row)?;
        sort_attrs(&mut attributes);
        Ok(Span {
            trace_id: self.trace_id.value(row).to_vec(),
            span_id: self.span_id.value(row).to_vec(),
            trace_state: self.trace_state.value(row).to_string(),
            parent_span_id: if self.parent.is_valid(row) {
                self.parent.value(row).to_vec()
            } else {
                Vec::new()
            },
            flags: self.flags.value(row),
            name: self.name.value(row).to_string(),
            kind: self.kind.value(row),
            start_time_unix_nano: start,
            end_time_unix_nano: start.wrapping_add(self.duration.value(row)),
            attributes,
            dropped_attributes_count: self.dropped_attrs.value(row),
            events: self.events(row, start)?,
            dropped_events_count: self.dropped_events.value(row),
            links: self.links(row)?,
            dropped_links_count: self.dropped_links.value(row),
            status: Some(Status {
                message: self.status_message.value(row).to_string(),
                code: self.status_code.value(row),
            }),
        })
    }

    fn events(&self, row: usize, start: u64) -> Result<Vec<Event>> {
        let items = list_range(self.events, row);
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let c = &self.event_cols;
        let time: &UInt64Array = c.col("time_since_start_nano")?;
        let name: &StringArray = c.col("name")?;
        let dropped: &UInt32Array = c.col("dropped_attributes_count")?;
        let reader = OverflowReader::new(&c.attrs)?;
        items
            .map(|i| {
                let attributes = sorted_attrs(&reader, i)?;
                Ok(Event {
                    time_unix_nano: start.wrapping_add(time.value(i)),
                    name: name.value(i).to_string(),
                    attributes,
                    dropped_attributes_count: dropped.value(i),
                })
            })
            .collect()
    }

    fn links(&self, row: usize) -> Result<Vec<Link>> {
        let items = list_range(self.links, row);
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let c = &self.link_cols;
        let trace_id: &BinaryArray = c.col("trace_id")?;
        let span_id: &BinaryArray = c.col("span_id")?;
        let trace_state: &StringArray = c.col("trace_state")?;
        let flags: &UInt32Array = c.col("flags")?;
        let dropped: &UInt32Array = c.col("dropped_attributes_count")?;
        let reader = OverflowReader::new(&c.attrs)?;
        items
            .map(|i| {
                let attributes = sorted_attrs(&reader, i)?;
                Ok(Link {
                    trace_id: trace_id.value(i).to_vec(),
                    span_id: span_id.value(i).to_vec(),
                    trace_state: trace_state.value(i).to_string(),
                    attributes,
                    dropped_attributes_count: dropped.value(i),
                    flags: flags.value(i),
                })
            })
            .collect()
    }
}

/// One row of the span table as OTLP: its resource, scope and span.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpan {
    /// The span's resource (with `service.name` restored).
    pub resource: Resource,
    /// The span's instrumentation scope.
    pub scope: InstrumentationScope,
    /// The span.
    pub span: Span,
}

/// Converts every row of `batch` to OTLP, in row order (for search results, which need each
/// span next to its row's other columns).
pub fn batch_to_row_spans(batch: &RecordBatch) -> Result<Vec<RowSpan>> {
    let rows = BatchRows::new(batch)?;
    (0..batch.num_rows())
        .map(|row| {
            Ok(RowSpan {
                resource: rows.resource(row)?.0,
                scope: rows.scope(row)?.0,
                span: rows.span(row)?,
            })
        })
        .collect()
}
