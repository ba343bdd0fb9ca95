//! The answer of a search: the few result traces read whole to fill in Tempo's response (root
//! service and name, duration, service stats, span attributes, `select`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use allegro_traceql::ast::{FieldRef, Intrinsic, Scope};
use allegro_udfs::spansets::key::{KeyType, decode};
use allegro_udfs::spansets::typed::FoundSet;
use arrow::array::{FixedSizeBinaryArray, Int32Array, RecordBatch};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::convert::from_arrow::{RowSpan, batch_to_row_spans};
use crate::error::{EngineError, Result};
use crate::ids::TraceId;
use crate::query::plan::Compiled;
use crate::query::translate::{KIND_NAMES, STATUS_NAMES, enum_name};
use crate::query::{QueryEngine, df_err};
use crate::schema::col as c;
use crate::tempopb::{SearchSpan, ServiceStats, SpanSet, TraceSearchMetadata};

impl QueryEngine {
    /// Reads every span of `ids` from `tables`, grouped by trace.
    pub(super) async fn fetch(
        &self,
        tables: &[Arc<dyn TableProvider>],
        ids: &[TraceId],
    ) -> Result<HashMap<TraceId, Vec<Row>>> {
        let ctx = self.session();
        let list: Vec<_> = ids
            .iter()
            .map(|id| lit(ScalarValue::FixedSizeBinary(16, Some(id.0.to_vec()))))
            .collect();
        let mut out: HashMap<TraceId, Vec<Row>> = HashMap::new();
        for table in tables {
            let plan = LogicalPlanBuilder::scan("spans", provider_as_source(table.clone()), None)
                .and_then(|b| b.filter(col(c::TRACE_ID).in_list(list.clone(), false)))
                .and_then(|b| b.build())
                .map_err(df_err)?;
            let batches = ctx
                .execute_logical_plan(plan)
                .await
                .map_err(df_err)?
                .collect()
                .await
                .map_err(df_err)?;
            for b in &batches {
                let spans = batch_to_row_spans(b)?;
                let tid = fixed(b, c::TRACE_ID)?;
                let int = |name: &str| {
                    b.column_by_name(name)
                        .and_then(|a| a.as_any().downcast_ref::<Int32Array>())
                        .ok_or_else(|| EngineError::Internal(format!("{name} is not Int32")))
                };
                let (l, r, p) = (
                    int(c::NESTED_SET_LEFT)?,
                    int(c::NESTED_SET_RIGHT)?,
                    int(c::NESTED_SET_PARENT)?,
                );
                for (i, row) in spans.into_iter().enumerate() {
                    let id = TraceId::from_bytes(tid.value(i))?;
                    let rows = out.entry(id).or_default();
                    let nested = (l.value(i), r.value(i), p.value(i));
                    // The head and a block may both hold a span: keep one copy.
                    if !rows
                        .iter()
                        .any(|x| x.nested == nested && x.row.span.span_id == row.span.span_id)
                    {
                        rows.push(Row { row, nested });
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A result trace's span with its nested-set numbers.
pub(super) struct Row {
    row: RowSpan,
    nested: (i32, i32, i32),
}

fn fixed<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a FixedSizeBinaryArray> {
    b.column_by_name(name)
        .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .ok_or_else(|| EngineError::Internal(format!("{name} is not FixedSizeBinary")))
}

fn str_value(s: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(s.into())),
    })
}

fn int_value(i: i64) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::IntValue(i)),
    })
}

fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attrs.iter().find(|kv| kv.key == key)
}

fn status_name(code: i32) -> &'static str {
    enum_name(&STATUS_NAMES, code)
}

fn kind_name(kind: i32) -> &'static str {
    enum_name(&KIND_NAMES, kind)
}

fn service_of(r: &RowSpan) -> String {
    match find_attr(&r.resource.attributes, "service.name")
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    {
        Some(Value::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

/// The attribute Tempo returns for `f` on span `r`, keyed as Tempo keys it (scope dropped).
fn field_attr(f: &FieldRef, r: &Row) -> Option<KeyValue> {
    let span = &r.row.span;
    let kv = |key: &str, value: Option<AnyValue>| {
        Some(KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        })
    };
    match f {
        FieldRef::Intrinsic(i) => match i {
            // Name, duration and start are fields of the search span already.
            Intrinsic::Name | Intrinsic::Duration => None,
            Intrinsic::Status => kv(
                "status",
                str_value(status_name(span.status.as_ref().map_or(0, |s| s.code))),
            ),
            Intrinsic::StatusMessage => kv(
                "statusMessage",
                str_value(
                    span.status
                        .as_ref()
                        .map(|s| s.message.clone())
                        .unwrap_or_default(),
                ),
            ),
            Intrinsic::Kind => kv("kind", str_value(kind_name(span.kind))),
            Intrinsic::NestedSetLeft => kv("nestedSetLeft", int_value(r.nested.0.into())),
            Intrinsic::NestedSetRight => kv("nestedSetRight", int_value(r.nested.1.into())),
            Intrinsic::NestedSetParent => kv("nestedSetParent", int_value(r.nested.2.into())),
            Intrinsic::SpanId => kv("span:id", str_value(hex::encode(&span.span_id))),
            Intrinsic::ParentId => kv(
                "span:parentID",
                str_value(hex::encode(&span.parent_span_id)),
            ),
            Intrinsic::InstrumentationName => {
                kv("instrumentation:name", str_value(r.row.scope.name.clone()))
            }
            Intrinsic::InstrumentationVersion => kv(
                "instrumentation:version",
                str_value(r.row.scope.version.clone()),
            ),
            Intrinsic::EventName => span
                .events
                .first()
                .and_then(|e| kv("event:name", str_value(e.name.clone()))),
            _ => None,
        },
        FieldRef::Attribute(a) => {
            let scoped: Vec<&[KeyValue]> = match a.scope {
                Scope::Span => vec![&span.attributes],
                Scope::Resource => vec![&r.row.resource.attributes],
                Scope::Instrumentation => vec![&r.row.scope.attributes],
                Scope::Event => span
                    .events
                    .iter()
                    .map(|e| e.attributes.as_slice())
                    .collect(),
                Scope::Link => span.links.iter().map(|l| l.attributes.as_slice()).collect(),
                Scope::None => {
                    let mut v: Vec<&[KeyValue]> = vec![
                        &span.attributes,
                        &r.row.resource.attributes,
                        &r.row.scope.attributes,
                    ];
                    v.extend(span.events.iter().map(|e| e.attributes.as_slice()));
                    v
                }
            };
            scoped
                .into_iter()
                .find_map(|attrs| find_attr(attrs, &a.name))
                .cloned()
        }
    }
}

fn key_value(label: &str, key: Option<&str>) -> KeyValue {
    let value = match key.and_then(decode) {
        None => str_value("nil"),
        Some((t, v)) => Some(AnyValue {
            value: Some(match t {
                KeyType::Str | KeyType::Status | KeyType::Kind => Value::StringValue(v.to_string()),
                KeyType::Int | KeyType::Duration => Value::IntValue(v.parse().unwrap_or_default()),
                KeyType::Float => Value::DoubleValue(v.parse().unwrap_or_default()),
                KeyType::Bool => Value::BoolValue(v == "true"),
            }),
        }),
    };
    KeyValue {
        key: label.to_string(),
        value,
        ..Default::default()
    }
}

/// Tempo's search result for trace `id`: its spansets `sets` (at most `spss` spans each, with
/// the attributes the query looks at and selects) and the trace's summary from all its `rows`.
pub(super) fn assemble(
    id: &TraceId,
    rows: &[Row],
    sets: &[FoundSet],
    c: &Compiled,
    spss: usize,
) -> TraceSearchMetadata {
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut stats: BTreeMap<String, ServiceStats> = BTreeMap::new();
    let mut root: Option<&Row> = None;
    for r in rows {
        let s = &r.row.span;
        start = start.min(s.start_time_unix_nano);
        end = end.max(s.end_time_unix_nano);
        let st = stats.entry(service_of(&r.row)).or_default();
        st.span_count += 1;
        if s.status.as_ref().is_some_and(|x| x.code == 2) {
            st.error_count += 1;
        }
        if s.parent_span_id.is_empty()
            && root.is_none_or(|x| x.row.span.start_time_unix_nano > s.start_time_unix_nano)
        {
            root = Some(r);
        }
    }
    if rows.is_empty() {
        start = 0;
    }
    let by_id: HashMap<(&[u8], i32), &Row> = rows
        .iter()
        .map(|r| ((r.row.span.span_id.as_slice(), r.nested.0), r))
        .collect();
    let mut fields: Vec<&FieldRef> = c.referenced.iter().collect();
    for f in &c.select {
        if !fields.contains(&f) {
            fields.push(f);
        }
    }
    let span_sets = sets
        .iter()
        .map(|set| {
            let mut members: Vec<&Row> = set
                .spans
                .iter()
                .filter_map(|(id, left)| by_id.get(&(id.as_slice(), *left)).copied())
                .collect();
            members.sort_by_key(|r| r.row.span.start_time_unix_nano);
            let spans = members
                .iter()
                .take(spss)
                .map(|r| {
                    let s = &r.row.span;
                    SearchSpan {
                        span_id: hex::encode(&s.span_id),
                        name: s.name.clone(),
                        start_time_unix_nano: s.start_time_unix_nano,
                        duration_nanos: s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano),
                        attributes: fields.iter().filter_map(|f| field_attr(f, r)).collect(),
                    }
                })
                .collect();
            SpanSet {
                spans,
                matched: set.spans.len() as u32,
                attributes: set
                    .attrs
                    .iter()
                    .map(|(k, v)| key_value(k, v.as_deref()))
                    .collect(),
            }
        })
        .collect();
    let hex_id = id.to_hex();
    let trimmed = hex_id.trim_start_matches('0');
    TraceSearchMetadata {
        trace_id: if trimmed.is_empty() {
            "0".into()
        } else {
            trimmed.to_string()
        },
        root_service_name: root.map_or_else(
            || "<root span not yet received>".to_string(),
            |r| service_of(&r.row),
        ),
        root_trace_name: root.map(|r| r.row.span.name.clone()).unwrap_or_default(),
        start_time_unix_nano: start,
        duration_ms: (end.saturating_sub(start) / 1_000_000).min(u32::MAX as u64) as u32,
        span_sets,
        service_stats: stats,
    }
}
