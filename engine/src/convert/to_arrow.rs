//! [`FlatSpan`]s → a span-table [`RecordBatch`].

use std::collections::HashMap;

use foldhash::fast::RandomState;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, Float64Builder, Int32Builder,
    Int64Builder, ListArray, RecordBatch, StringBuilder, StructArray, UInt32Array, UInt32Builder,
    UInt64Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::take;
use arrow::datatypes::{DataType, SchemaRef};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::attrs::OverflowBuilder;
use super::flatten::FlatSpan;
use crate::error::{EngineError, Result};
use crate::schema::{
    AttrScope, HotColumn, HotType, event_struct_type, link_struct_type, list_item, span_schema,
};

enum HotBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
}

impl HotBuilder {
    fn new(ty: HotType) -> Self {
        match ty {
            HotType::String => Self::Str(StringBuilder::new()),
            HotType::Int => Self::Int(Int64Builder::new()),
            HotType::Float => Self::Float(Float64Builder::new()),
            HotType::Bool => Self::Bool(BooleanBuilder::new()),
        }
    }

    /// Takes the value if its type fits the column.
    fn take(&mut self, kv: &KeyValue) -> bool {
        match (self, kv.value.as_ref().and_then(|v| v.value.as_ref())) {
            (Self::Str(b), Some(Value::StringValue(s))) => b.append_value(s),
            (Self::Int(b), Some(Value::IntValue(i))) => b.append_value(*i),
            (Self::Float(b), Some(Value::DoubleValue(f))) => b.append_value(*f),
            (Self::Bool(b), Some(Value::BoolValue(v))) => b.append_value(*v),
            _ => return false,
        }
        true
    }

    fn null(&mut self) {
        match self {
            Self::Str(b) => b.append_null(),
            Self::Int(b) => b.append_null(),
            Self::Float(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
        }
    }
}

/// Hot columns plus overflow maps of one scope.
struct ScopeAttrs {
    /// Key → index into the hot builders.
    hot: HashMap<String, usize, RandomState>,
    /// Hot builder indexes of this scope, and whether the current row filled them.
    filled: Vec<(usize, bool)>,
    overflow: OverflowBuilder,
}

impl ScopeAttrs {
    fn new(scope: AttrScope, hot: &[HotColumn]) -> Self {
        let mine: Vec<(usize, &HotColumn)> = hot
            .iter()
            .enumerate()
            .filter(|(_, h)| h.scope == scope)
            .collect();
        Self {
            hot: mine.iter().map(|(i, h)| (h.key.clone(), *i)).collect(),
            filled: mine.iter().map(|(i, _)| (*i, false)).collect(),
            overflow: OverflowBuilder::default(),
        }
    }

    /// Routes one attribute set: the first value of a hot key with the column's type goes to the
    /// column, everything else to the overflow maps. `skip` names a string attribute that has a
    /// fixed column of its own (`service.name`), taken once.
    fn push(&mut self, attrs: &[KeyValue], hot: &mut [HotBuilder], mut skip: Option<&str>) {
        for kv in attrs {
            if skip == Some(kv.key.as_str())
                && matches!(
                    kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    Some(Value::StringValue(_))
                )
            {
                skip = None;
                continue;
            }
            let taken = match self.hot.get(&kv.key) {
                Some(&b) => match self.filled.iter_mut().find(|(i, _)| *i == b) {
                    Some(slot) if !slot.1 && hot[b].take(kv) => {
                        slot.1 = true;
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            if !taken {
                self.overflow.push(kv);
            }
        }
        for (b, f) in self.filled.iter_mut() {
            if !*f {
                hot[*b].null();
            }
            *f = false;
        }
        self.overflow.finish_row();
    }
}

/// Distinct shared items (resources or scopes) by address, and each span's index among them.
fn distinct<'a, T>(items: impl Iterator<Item = &'a Arc<T>>) -> (Vec<u32>, Vec<&'a Arc<T>>)
where
    T: 'a,
{
    let mut seen: HashMap<usize, u32, RandomState> = HashMap::default();
    let mut list = Vec::new();
    let idx = items
        .map(|it| {
            *seen
                .entry(Arc::as_ptr(it) as *const () as usize)
                .or_insert_with(|| {
                    list.push(it);
                    (list.len() - 1) as u32
                })
        })
        .collect();
    (idx, list)
}

/// Hot columns (of `scope` only, by position in `hot`) and the five overflow maps of a list of
/// attribute sets, one row per set.
type AttrColumns = (Vec<(usize, ArrayRef)>, Vec<ArrayRef>);

fn attr_columns<'a>(
    sets: impl Iterator<Item = &'a [KeyValue]>,
    scope: AttrScope,
    hot: &[HotColumn],
    skip: Option<&str>,
) -> AttrColumns {
    let mut builders: Vec<HotBuilder> = hot.iter().map(|h| HotBuilder::new(h.ty)).collect();
    let mut attrs = ScopeAttrs::new(scope, hot);
    for set in sets {
        attrs.push(set, &mut builders, skip);
    }
    let hot_cols = hot
        .iter()
        .enumerate()
        .filter(|(_, h)| h.scope == scope)
        .map(|(i, _)| (i, builders[i].finish()))
        .collect();
    (hot_cols, attrs.overflow.finish())
}

/// Builds one record batch of the span table from `spans` with the given hot columns.
///
/// Resources and scopes are shared by many spans: their columns (service name, hot resource
/// attributes, overflow maps, …) are built once per distinct resource or scope and gathered to
/// span rows with `take`, instead of being routed attribute by attribute for every span.
pub fn spans_to_batch(spans: &[FlatSpan], hot: &[HotColumn]) -> Result<RecordBatch> {
    let schema: SchemaRef = span_schema(hot);
    let n = spans.len();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut trace_state = StringBuilder::new();
    let mut flags = UInt32Builder::with_capacity(n);
    let mut name = StringBuilder::new();
    let mut kind = Int32Builder::with_capacity(n);
    let mut status_code = Int32Builder::with_capacity(n);
    let mut status_message = StringBuilder::new();
    let mut start = UInt64Builder::with_capacity(n);
    let mut duration = UInt64Builder::with_capacity(n);
    let mut dropped_attrs = UInt32Builder::with_capacity(n);
    let mut dropped_events = UInt32Builder::with_capacity(n);
    let mut dropped_links = UInt32Builder::with_capacity(n);
    let mut ns_left = Int32Builder::with_capacity(n);
    let mut ns_right = Int32Builder::with_capacity(n);
    let mut ns_parent = Int32Builder::with_capacity(n);
    let mut root_service = StringBuilder::new();
    let mut root_name = StringBuilder::new();
    let mut trace_start = UInt64Builder::with_capacity(n);
    let mut trace_duration = UInt64Builder::with_capacity(n);
    let mut ev = EventColumns::default();
    let mut lk = LinkColumns::default();
    let mut ev_lens = Vec::with_capacity(n);
    let mut lk_lens = Vec::with_capacity(n);

    for s in spans {
        let sp = &s.span;
        trace_id.append_value(s.trace_id.0)?;
        span_id.append_value(s.span_id)?;
        match s.parent_span_id {
            Some(p) => parent.append_value(p)?,
            None => parent.append_null(),
        }
        trace_state.append_value(&sp.trace_state);
        flags.append_value(sp.flags);
        name.append_value(&sp.name);
        kind.append_value(sp.kind);
        let (code, message) = sp
            .status
            .as_ref()
            .map_or((0, ""), |st| (st.code, st.message.as_str()));
        status_code.append_value(code);
        status_message.append_value(message);
        start.append_value(sp.start_time_unix_nano);
        // Wrapping keeps the round trip exact even for spans that end before they start.
        duration.append_value(sp.end_time_unix_nano.wrapping_sub(sp.start_time_unix_nano));
        dropped_attrs.append_value(sp.dropped_attributes_count);
        dropped_events.append_value(sp.dropped_events_count);
        dropped_links.append_value(sp.dropped_links_count);
        ns_left.append_value(s.nested.left);
        ns_right.append_value(s.nested.right);
        ns_parent.append_value(s.nested.parent);
        root_service.append_value(&s.trace.root_service);
        root_name.append_value(&s.trace.root_name);
        trace_start.append_value(s.trace.start_unix_nano);
        trace_duration.append_value(s.trace.duration_nano);

        ev_lens.push(sp.events.len());
        for e in &sp.events {
            ev.time
                .append_value(e.time_unix_nano.wrapping_sub(sp.start_time_unix_nano));
            ev.name.append_value(&e.name);
            ev.dropped.append_value(e.dropped_attributes_count);
            for kv in &e.attributes {
                ev.attrs.push(kv);
            }
            ev.attrs.finish_row();
        }
        lk_lens.push(sp.links.len());
        for l in &sp.links {
            lk.trace_id.append_value(&l.trace_id);
            lk.span_id.append_value(&l.span_id);
            lk.trace_state.append_value(&l.trace_state);
            lk.flags.append_value(l.flags);
            lk.dropped.append_value(l.dropped_attributes_count);
            for kv in &l.attributes {
                lk.attrs.push(kv);
            }
            lk.attrs.finish_row();
        }
    }

    // Resource-level columns, once per distinct resource.
    let (res_idx, resources) = distinct(spans.iter().map(|s| &s.resource));
    let res_take = UInt32Array::from(res_idx);
    let mut service_name = StringBuilder::new();
    let mut res_dropped = UInt32Builder::with_capacity(resources.len());
    let mut res_schema = StringBuilder::new();
    let mut res_entities = BinaryBuilder::new();
    for r in &resources {
        service_name.append_option(r.service_name());
        res_dropped.append_value(r.resource.dropped_attributes_count);
        res_schema.append_value(&r.schema_url);
        if r.resource.entity_refs.is_empty() {
            res_entities.append_null();
        } else {
            let only_refs = Resource {
                entity_refs: r.resource.entity_refs.clone(),
                ..Default::default()
            };
            res_entities.append_value(only_refs.encode_to_vec());
        }
    }
    let res_attrs = attr_columns(
        resources.iter().map(|r| r.resource.attributes.as_slice()),
        AttrScope::Resource,
        hot,
        Some("service.name"),
    );

    // Scope-level columns, once per distinct scope.
    let (scope_idx, scopes) = distinct(spans.iter().map(|s| &s.scope));
    let scope_take = UInt32Array::from(scope_idx);
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut scope_dropped = UInt32Builder::with_capacity(scopes.len());
    let mut scope_schema = StringBuilder::new();
    for sc in &scopes {
        scope_name.append_value(&sc.scope.name);
        scope_version.append_value(&sc.scope.version);
        scope_dropped.append_value(sc.scope.dropped_attributes_count);
        scope_schema.append_value(&sc.schema_url);
    }
    let scope_attrs = attr_columns(
        scopes.iter().map(|s| s.scope.attributes.as_slice()),
        AttrScope::Instrumentation,
        hot,
        None,
    );

    let span_attrs = attr_columns(
        spans.iter().map(|s| s.span.attributes.as_slice()),
        AttrScope::Span,
        hot,
        None,
    );

    let by_res = |a: ArrayRef| -> Result<ArrayRef> { Ok(take(&a, &res_take, None)?) };
    let by_scope = |a: ArrayRef| -> Result<ArrayRef> { Ok(take(&a, &scope_take, None)?) };
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(flags.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(status_code.finish()),
        Arc::new(status_message.finish()),
        Arc::new(start.finish()),
        Arc::new(duration.finish()),
        Arc::new(dropped_attrs.finish()),
        Arc::new(dropped_events.finish()),
        Arc::new(dropped_links.finish()),
        Arc::new(ns_left.finish()),
        Arc::new(ns_right.finish()),
        Arc::new(ns_parent.finish()),
        Arc::new(root_service.finish()),
        Arc::new(root_name.finish()),
        Arc::new(trace_start.finish()),
        Arc::new(trace_duration.finish()),
        by_res(Arc::new(service_name.finish()))?,
        by_res(Arc::new(res_dropped.finish()))?,
        by_res(Arc::new(res_schema.finish()))?,
        by_res(Arc::new(res_entities.finish()))?,
        by_scope(Arc::new(scope_name.finish()))?,
        by_scope(Arc::new(scope_version.finish()))?,
        by_scope(Arc::new(scope_dropped.finish()))?,
        by_scope(Arc::new(scope_schema.finish()))?,
    ];
    let mut hot_cols: Vec<Option<ArrayRef>> = vec![None; hot.len()];
    for (i, a) in res_attrs.0 {
        hot_cols[i] = Some(by_res(a)?);
    }
    for (i, a) in scope_attrs.0 {
        hot_cols[i] = Some(by_scope(a)?);
    }
    for (i, a) in span_attrs.0 {
        hot_cols[i] = Some(a);
    }
    for c in hot_cols {
        cols.push(c.ok_or_else(|| EngineError::Internal("hot column without a scope".into()))?);
    }
    for a in res_attrs.1 {
        cols.push(by_res(a)?);
    }
    cols.extend(span_attrs.1);
    for a in scope_attrs.1 {
        cols.push(by_scope(a)?);
    }
    cols.push(list(event_struct_type(), ev.finish()?, &ev_lens)?);
    cols.push(list(link_struct_type(), lk.finish()?, &lk_lens)?);
    Ok(RecordBatch::try_new(schema, cols)?)
}

fn list(ty: DataType, values: ArrayRef, lens: &[usize]) -> Result<ArrayRef> {
    Ok(Arc::new(ListArray::try_new(
        list_item(ty),
        OffsetBuffer::from_lengths(lens.iter().copied()),
        values,
        None,
    )?))
}

fn struct_of(ty: DataType, cols: Vec<ArrayRef>) -> Result<ArrayRef> {
    let DataType::Struct(fields) = ty else {
        return Err(EngineError::Internal("not a struct type".into()));
    };
    Ok(Arc::new(StructArray::try_new(fields, cols, None)?))
}

#[derive(Default)]
struct EventColumns {
    time: UInt64Builder,
    name: StringBuilder,
    dropped: UInt32Builder,
    attrs: OverflowBuilder,
}

impl EventColumns {
    fn finish(&mut self) -> Result<ArrayRef> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.dropped.finish()),
        ];
        cols.extend(self.attrs.finish());
        struct_of(event_struct_type(), cols)
    }
}

#[derive(Default)]
struct LinkColumns {
    trace_id: BinaryBuilder,
    span_id: BinaryBuilder,
    trace_state: StringBuilder,
    flags: UInt32Builder,
    dropped: UInt32Builder,
    attrs: OverflowBuilder,
}

impl LinkColumns {
    fn finish(&mut self) -> Result<ArrayRef> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.dropped.finish()),
        ];
        cols.extend(self.attrs.finish());
        struct_of(link_struct_type(), cols)
    }
}

/// Converts OTLP data to span-table batches of at most `rows` rows without hot columns, with
/// nested sets and trace-level columns computed per trace (how the live head is queried).
pub fn resource_spans_to_batches(
    data: Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
    rows: usize,
) -> Result<Vec<RecordBatch>> {
    Ok(resource_spans_flattened_to_batches(data, rows)?.1)
}

/// [`resource_spans_to_batches`], with what a block of these spans would record of their
/// attribute keys, types and values (for the live head's parts, which queries read as blocks).
pub fn resource_spans_to_recorded_batches(
    data: Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
    rows: usize,
) -> Result<(Vec<RecordBatch>, crate::block::recorded::RecordedKeys)> {
    let (spans, batches) = resource_spans_flattened_to_batches(data, rows)?;
    let recorded = crate::block::recorded::RecordedKeys::of_spans(&spans);
    Ok((batches, recorded))
}

/// `data` flattened to spans numbered per trace, and those spans as batches of `rows`.
fn resource_spans_flattened_to_batches(
    data: Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
    rows: usize,
) -> Result<(Vec<FlatSpan>, Vec<RecordBatch>)> {
    let (mut spans, _rejected) = crate::convert::flatten::flatten(data);
    crate::nested_set::prepare_traces(&mut spans);
    let batches = spans
        .chunks(rows.max(1))
        .map(|c| spans_to_batch(c, &[]))
        .collect::<Result<_>>()?;
    Ok((spans, batches))
}
