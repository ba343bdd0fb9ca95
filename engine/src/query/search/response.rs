//! The answer of a search: the few result traces read whole to fill in Tempo's response (root
//! service and name, duration, service stats, span attributes, `select`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use allegro_traceql::ast::{FieldRef, Intrinsic, Scope};
use allegro_udfs::spansets::key::{KeyType, decode};
use allegro_udfs::spansets::typed::FoundSet;
use arrow::array::{Array, AsArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, UInt64Type};
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, lit};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use crate::convert::from_arrow::{RowSpan, batch_to_row_spans};
use crate::error::{EngineError, Result};
use crate::ids::TraceId;
use crate::query::plan::Compiled;
use crate::query::split_traces::{WholeSpan, end_of, number_whole};
use crate::query::translate::{KIND_NAMES, STATUS_NAMES, enum_name};
use crate::query::{QueryEngine, df_err};
use crate::schema::col as c;
use crate::tempopb::{ServiceStats, Span as SearchSpan, SpanSet, TraceSearchMetadata};

use super::matched_values::FieldTests;
use super::newest::Found;

/// What the answer needs of every span of its traces, read from narrow columns: the trace's
/// summary, and every intrinsic a query can select.
struct Summary {
    span_id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    /// Nested-set numbers (left, right, parent): over the whole trace for a split one.
    nested: (i32, i32, i32),
    /// The left number as stored with the span, which finds its row.
    stored_left: i32,
    name: String,
    start: u64,
    /// Stored duration (a wrapped one, of a span that ended before it started, reads as 0).
    duration: u64,
    status: i32,
    status_message: String,
    kind: i32,
    /// The `service_name` column: the resource's first string `service.name`.
    service: Option<String>,
    scope_name: String,
    scope_version: String,
}

impl Summary {
    fn root(&self) -> bool {
        self.parent_id.is_none()
    }

    fn left(&self) -> i32 {
        self.nested.0
    }

    fn service(&self) -> &str {
        self.service.as_deref().unwrap_or_default()
    }
}

/// Columns of [`Summary`].
const SUMMARY: [&str; 15] = [
    c::TRACE_ID,
    c::SPAN_ID,
    c::PARENT_SPAN_ID,
    c::NAME,
    c::START_TIME,
    c::DURATION,
    c::STATUS_CODE,
    c::STATUS_MESSAGE,
    c::KIND,
    c::SERVICE_NAME,
    c::SCOPE_NAME,
    c::SCOPE_VERSION,
    c::NESTED_SET_LEFT,
    c::NESTED_SET_RIGHT,
    c::NESTED_SET_PARENT,
];

impl QueryEngine {
    /// Tempo's search results for `found` (all of one tenant), from `tables`: every span of
    /// each trace in a few narrow columns (for its summary and which spans to show), then the
    /// shown spans whole when the query asks for attributes. Reading every span of 200 traces
    /// whole was most of a Drilldown span list's time.
    pub(super) async fn answer(
        &self,
        tables: &[Arc<dyn TableProvider>],
        found: &[&Found],
        c: &Compiled,
        spss: usize,
    ) -> Result<Vec<TraceSearchMetadata>> {
        let ids: Vec<TraceId> = found.iter().map(|f| f.id).collect();
        let summaries = self.summaries(tables, &ids).await?;
        let mut fields: Vec<&FieldRef> = c.referenced.iter().collect();
        for f in &c.select {
            if !fields.contains(&f) {
                fields.push(f);
            }
        }
        let tests = FieldTests::of(&c.leaves);
        let none = Vec::new();
        let shown: Vec<Vec<Vec<&Summary>>> = found
            .iter()
            .map(|f| shown(summaries.get(&f.id).unwrap_or(&none), &f.sets, spss))
            .collect();
        // Intrinsics come from the summaries; attributes need the shown spans whole.
        let whole = fields.iter().any(|f| narrow_attr(f, None).is_none());
        let details = if whole {
            let spans: Vec<[u8; 8]> = shown
                .iter()
                .flatten()
                .flatten()
                .map(|s| s.span_id)
                .collect();
            let nested = fields.iter().any(|f| reads_events_or_links(f));
            self.details(tables, &ids, &spans, nested).await?
        } else {
            HashMap::new()
        };
        Ok(found
            .iter()
            .zip(&shown)
            .map(|(f, shown)| {
                let spans = summaries.get(&f.id).unwrap_or(&none);
                assemble(&f.id, spans, &f.sets, shown, &details, &fields, &tests)
            })
            .collect())
    }

    /// The rows of `tables` whose trace is one of `ids`, optionally also narrowed to the spans
    /// `spans`, projected as `project` says for each table's schema (whole when `None`).
    async fn rows_of(
        &self,
        tables: &[Arc<dyn TableProvider>],
        ids: &[TraceId],
        spans: Option<&[[u8; 8]]>,
        project: &(dyn Fn(&arrow::datatypes::Schema) -> Option<Vec<Expr>> + Sync),
    ) -> Result<Vec<RecordBatch>> {
        let ctx = self.session();
        let list: Vec<_> = ids
            .iter()
            .map(|id| lit(ScalarValue::FixedSizeBinary(16, Some(id.0.to_vec()))))
            .collect();
        let mut filter = col(c::TRACE_ID).in_list(list, false);
        if let Some(spans) = spans {
            let list: Vec<_> = spans
                .iter()
                .map(|id| lit(ScalarValue::FixedSizeBinary(8, Some(id.to_vec()))))
                .collect();
            filter = filter.and(col(c::SPAN_ID).in_list(list, false));
        }
        let mut out = Vec::new();
        for table in tables {
            let mut b = LogicalPlanBuilder::scan("spans", provider_as_source(table.clone()), None)
                .and_then(|b| b.filter(filter.clone()))
                .map_err(df_err)?;
            if let Some(exprs) = project(table.schema().as_ref()) {
                b = b.project(exprs).map_err(df_err)?;
            }
            let plan = b.build().map_err(df_err)?;
            out.extend(
                ctx.execute_logical_plan(plan)
                    .await
                    .map_err(df_err)?
                    .collect()
                    .await
                    .map_err(df_err)?,
            );
        }
        Ok(out)
    }

    /// Every span of `ids` in [`Summary`] form, grouped by trace; a span held by both the head
    /// and a block counts once.
    async fn summaries(
        &self,
        tables: &[Arc<dyn TableProvider>],
        ids: &[TraceId],
    ) -> Result<HashMap<TraceId, Vec<Summary>>> {
        let narrow = |_: &arrow::datatypes::Schema| Some(SUMMARY.iter().map(|n| col(*n)).collect());
        let batches = self.rows_of(tables, ids, None, &narrow).await?;
        let mut out: HashMap<TraceId, Vec<Summary>> = HashMap::new();
        let mut seen: HashSet<(TraceId, [u8; 8], i32)> = HashSet::new();
        for b in &batches {
            let tid = fixed(b, c::TRACE_ID)?;
            let sid = fixed(b, c::SPAN_ID)?;
            let parent = fixed(b, c::PARENT_SPAN_ID)?;
            let text = |name: &str| {
                let a = b.column_by_name(name).ok_or_else(|| lost(name))?;
                arrow::compute::cast(a, &DataType::Utf8).map_err(EngineError::from)
            };
            let texts = [
                text(c::NAME)?,
                text(c::STATUS_MESSAGE)?,
                text(c::SERVICE_NAME)?,
                text(c::SCOPE_NAME)?,
                text(c::SCOPE_VERSION)?,
            ];
            let [names, messages, services, scopes, versions] =
                texts.each_ref().map(|a| a.as_string::<i32>());
            let str_at = |a: &arrow::array::StringArray, i: usize| {
                (!a.is_null(i)).then(|| a.value(i).to_string())
            };
            let u64s = |name: &str| {
                b.column_by_name(name)
                    .and_then(|a| a.as_primitive_opt::<UInt64Type>())
                    .ok_or_else(|| lost(name))
            };
            let i32s = |name: &str| {
                b.column_by_name(name)
                    .and_then(|a| a.as_primitive_opt::<Int32Type>())
                    .ok_or_else(|| lost(name))
            };
            let (starts, durations) = (u64s(c::START_TIME)?, u64s(c::DURATION)?);
            let (status, kind) = (i32s(c::STATUS_CODE)?, i32s(c::KIND)?);
            let (lefts, rights, parents) = (
                i32s(c::NESTED_SET_LEFT)?,
                i32s(c::NESTED_SET_RIGHT)?,
                i32s(c::NESTED_SET_PARENT)?,
            );
            let id8 = |a: &FixedSizeBinaryArray, i: usize| {
                let mut id = [0u8; 8];
                if a.value(i).len() == 8 {
                    id.copy_from_slice(a.value(i));
                }
                id
            };
            for i in 0..b.num_rows() {
                let id = TraceId::from_bytes(tid.value(i))?;
                let span_id = id8(sid, i);
                if !seen.insert((id, span_id, lefts.value(i))) {
                    continue;
                }
                let duration = durations.value(i);
                out.entry(id).or_default().push(Summary {
                    span_id,
                    parent_id: (!parent.is_null(i)).then(|| id8(parent, i)),
                    nested: (lefts.value(i), rights.value(i), parents.value(i)),
                    stored_left: lefts.value(i),
                    name: str_at(names, i).unwrap_or_default(),
                    start: starts.value(i),
                    duration: if duration > i64::MAX as u64 {
                        0
                    } else {
                        duration
                    },
                    status: status.value(i),
                    status_message: str_at(messages, i).unwrap_or_default(),
                    kind: kind.value(i),
                    service: str_at(services, i),
                    scope_name: str_at(scopes, i).unwrap_or_default(),
                    scope_version: str_at(versions, i).unwrap_or_default(),
                });
            }
        }
        // A trace split across sources is numbered as its evaluation numbered it.
        for spans in out.values_mut() {
            if spans.iter().any(|s| s.stored_left == 0) {
                renumber(spans);
            }
        }
        Ok(out)
    }

    /// The spans `spans` of traces `ids`, whole, by (trace, span ID, nested-set left); their
    /// events and links (nested lists, the costliest columns to decode) only when `nested`.
    async fn details(
        &self,
        tables: &[Arc<dyn TableProvider>],
        ids: &[TraceId],
        spans: &[[u8; 8]],
        nested: bool,
    ) -> Result<HashMap<(TraceId, [u8; 8], i32), RowSpan>> {
        let project = |schema: &arrow::datatypes::Schema| {
            (!nested).then(|| {
                schema
                    .fields()
                    .iter()
                    .map(|f| match f.name().as_str() {
                        c::EVENTS | c::LINKS => ScalarValue::try_new_null(f.data_type())
                            .map_or_else(|_| col(f.name()), lit)
                            .alias(f.name()),
                        n => col(datafusion::common::Column::from_name(n)),
                    })
                    .collect()
            })
        };
        let batches = self.rows_of(tables, ids, Some(spans), &project).await?;
        let mut out = HashMap::new();
        for b in &batches {
            let rows = batch_to_row_spans(b)?;
            let tid = fixed(b, c::TRACE_ID)?;
            let l = b
                .column_by_name(c::NESTED_SET_LEFT)
                .and_then(|a| a.as_primitive_opt::<Int32Type>())
                .ok_or_else(|| lost(c::NESTED_SET_LEFT))?;
            for (i, row) in rows.into_iter().enumerate() {
                let mut span_id = [0u8; 8];
                if row.span.span_id.len() == 8 {
                    span_id.copy_from_slice(&row.span.span_id);
                }
                let key = (TraceId::from_bytes(tid.value(i))?, span_id, l.value(i));
                out.entry(key).or_insert(row);
            }
        }
        Ok(out)
    }
}

/// The spans each spanset shows: its members by start time, at most `spss`.
/// Numbers the spans of a trace whose parts were numbered apart (some span has no numbers)
/// over the whole trace, as [`number_whole`] does for its evaluation; a span
/// read twice is kept once.
fn renumber(spans: &mut Vec<Summary>) {
    let whole: Vec<WholeSpan> = spans
        .iter()
        .map(|s| WholeSpan {
            start: s.start,
            span_id: s.span_id,
            kind: s.kind,
            end: end_of(s.start, s.duration),
            parent: s.parent_id,
        })
        .collect();
    let numbered = number_whole(&whole);
    let mut slots: Vec<Option<Summary>> = std::mem::take(spans).into_iter().map(Some).collect();
    for (i, n) in numbered {
        if let Some(mut s) = slots[i].take() {
            s.nested = (n.left, n.right, n.parent);
            spans.push(s);
        }
    }
}

fn shown<'a>(spans: &'a [Summary], sets: &[FoundSet], spss: usize) -> Vec<Vec<&'a Summary>> {
    let by_id: HashMap<([u8; 8], i32), &Summary> =
        spans.iter().map(|s| ((s.span_id, s.left()), s)).collect();
    sets.iter()
        .map(|set| {
            let mut members: Vec<&Summary> = set
                .spans
                .iter()
                .filter_map(|k| by_id.get(k).copied())
                .collect();
            members.sort_by_key(|s| s.start);
            members.truncate(spss);
            members
        })
        .collect()
}

/// Whether [`field_attr`] reads `f` from a span's events or links.
fn reads_events_or_links(f: &FieldRef) -> bool {
    match f {
        FieldRef::Intrinsic(i) => matches!(i, Intrinsic::EventName),
        FieldRef::Attribute(a) => matches!(a.scope, Scope::Event | Scope::Link),
    }
}

fn lost(name: &str) -> EngineError {
    EngineError::Internal(format!("answer rows lost column {name}"))
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

/// The attribute Tempo returns for `f` (keyed as Tempo keys it, scope dropped) when the span's
/// summary `s` holds it: `Some(answer)`, or `None` when it takes the span whole. With `s` `None`,
/// whether it ever can.
fn narrow_attr(f: &FieldRef, s: Option<&Summary>) -> Option<Option<KeyValue>> {
    let kv = |key: &str, value: Option<AnyValue>| {
        Some(KeyValue {
            key: key.to_string(),
            value,
            ..Default::default()
        })
    };
    let i = match f {
        FieldRef::Attribute(a)
            if a.scope == Scope::Resource && a.name == "service.name" && !a.parent =>
        {
            // The column holds the first string value; another type lives in the maps.
            return match s {
                None => Some(None),
                Some(s) => s
                    .service
                    .as_ref()
                    .map(|v| kv("service.name", str_value(v.clone()))),
            };
        }
        FieldRef::Attribute(_) => return None,
        FieldRef::Intrinsic(Intrinsic::EventName) => return None,
        FieldRef::Intrinsic(i) => *i,
    };
    let Some(s) = s else {
        return Some(None);
    };
    Some(match i {
        // Name, duration and start are fields of the search span already.
        Intrinsic::Name | Intrinsic::Duration => None,
        Intrinsic::Status => kv("status", str_value(status_name(s.status))),
        Intrinsic::StatusMessage => kv("statusMessage", str_value(s.status_message.clone())),
        Intrinsic::Kind => kv("kind", str_value(kind_name(s.kind))),
        Intrinsic::NestedSetLeft => kv("nestedSetLeft", int_value(s.nested.0.into())),
        Intrinsic::NestedSetRight => kv("nestedSetRight", int_value(s.nested.1.into())),
        Intrinsic::NestedSetParent => kv("nestedSetParent", int_value(s.nested.2.into())),
        Intrinsic::SpanId => kv("span:id", str_value(hex::encode(s.span_id))),
        Intrinsic::ParentId => kv(
            "span:parentID",
            str_value(s.parent_id.map(hex::encode).unwrap_or_default()),
        ),
        Intrinsic::InstrumentationName => {
            kv("instrumentation:name", str_value(s.scope_name.clone()))
        }
        Intrinsic::InstrumentationVersion => kv(
            "instrumentation:version",
            str_value(s.scope_version.clone()),
        ),
        _ => None,
    })
}

/// The attribute Tempo returns for `f` on span `r` when [`narrow_attr`] cannot say: attributes
/// and `event:name`, keyed as Tempo keys them (scope dropped).
/// An event's or link's field shows the value of the one that matched (see [`FieldTests`]).
fn field_attr(f: &FieldRef, r: &RowSpan, tests: &FieldTests) -> Option<KeyValue> {
    let span = &r.span;
    let keyed = |key: &str, value: &AnyValue| KeyValue {
        key: key.to_string(),
        value: Some(value.clone()),
        ..Default::default()
    };
    match f {
        FieldRef::Intrinsic(Intrinsic::EventName) => {
            let names: Vec<AnyValue> = span
                .events
                .iter()
                .map(|e| AnyValue {
                    value: Some(Value::StringValue(e.name.clone())),
                })
                .collect();
            tests.pick(f, names.iter()).map(|v| keyed("event:name", v))
        }
        FieldRef::Intrinsic(_) => None,
        FieldRef::Attribute(a) => {
            let several: Vec<&[KeyValue]> = match a.scope {
                Scope::Event => span
                    .events
                    .iter()
                    .map(|e| e.attributes.as_slice())
                    .collect(),
                Scope::Link => span.links.iter().map(|l| l.attributes.as_slice()).collect(),
                Scope::Span => return find_attr(&span.attributes, &a.name).cloned(),
                Scope::Resource => return find_attr(&r.resource.attributes, &a.name).cloned(),
                Scope::Instrumentation => return find_attr(&r.scope.attributes, &a.name).cloned(),
                // Span, then resource: what an unscoped name matches (see `Translator::attribute`).
                Scope::None => {
                    return find_attr(&span.attributes, &a.name)
                        .or_else(|| find_attr(&r.resource.attributes, &a.name))
                        .cloned();
                }
            };
            let values = several
                .into_iter()
                .filter_map(|attrs| find_attr(attrs, &a.name))
                .filter_map(|kv| kv.value.as_ref());
            tests.pick(f, values).map(|v| keyed(&a.name, v))
        }
    }
}

fn key_value(label: &str, key: Option<&str>) -> KeyValue {
    let value = match key.and_then(decode) {
        None => str_value("nil"),
        Some((t, v)) => Some(AnyValue {
            value: Some(match t {
                KeyType::Str | KeyType::Status | KeyType::Kind => Value::StringValue(v.to_string()),
                KeyType::Int => Value::IntValue(v.parse().unwrap_or_default()),
                // Tempo shows duration values as Go writes them (`1.5s`).
                KeyType::Duration => {
                    Value::StringValue(allegro_traceql::go_duration(v.parse().unwrap_or_default()))
                }
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

/// Tempo's search result for trace `id`: its spansets `sets`, each showing the spans `shown`
/// with the attributes `fields` (from `details`), and the trace's summary from all its `spans`.
fn assemble(
    id: &TraceId,
    spans: &[Summary],
    sets: &[FoundSet],
    shown: &[Vec<&Summary>],
    details: &HashMap<(TraceId, [u8; 8], i32), RowSpan>,
    fields: &[&FieldRef],
    tests: &FieldTests,
) -> TraceSearchMetadata {
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut stats: BTreeMap<String, ServiceStats> = BTreeMap::new();
    let mut root: Option<&Summary> = None;
    for s in spans {
        start = start.min(s.start);
        end = end.max(s.start.saturating_add(s.duration));
        let st = stats.entry(s.service().to_string()).or_default();
        st.span_count += 1;
        if s.status == 2 {
            st.error_count += 1;
        }
        if s.root() && root.is_none_or(|r| r.start > s.start) {
            root = Some(s);
        }
    }
    if spans.is_empty() {
        start = 0;
    }
    let span_sets: Vec<SpanSet> = sets
        .iter()
        .zip(shown)
        .map(|(set, shown)| SpanSet {
            spans: shown
                .iter()
                .map(|s| SearchSpan {
                    span_id: hex::encode(s.span_id),
                    name: s.name.clone(),
                    start_time_unix_nano: s.start,
                    duration_nanos: s.duration,
                    attributes: fields
                        .iter()
                        .filter_map(|f| match narrow_attr(f, Some(s)) {
                            Some(kv) => kv,
                            None => details
                                .get(&(*id, s.span_id, s.stored_left))
                                .and_then(|r| field_attr(f, r, tests)),
                        })
                        .collect(),
                })
                .collect(),
            matched: set.spans.len() as u32,
            attributes: set
                .attrs
                .iter()
                .map(|(k, v)| key_value(k, v.as_deref()))
                .collect(),
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
            |r| r.service().to_string(),
        ),
        root_trace_name: root.map(|r| r.name.clone()).unwrap_or_default(),
        start_time_unix_nano: start,
        duration_ms: (end.saturating_sub(start) / 1_000_000).min(u32::MAX as u64) as u32,
        // The deprecated single spanset, still read by older clients.
        span_set: span_sets.first().cloned(),
        span_sets,
        service_stats: stats,
    }
}
