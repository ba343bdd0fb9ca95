//! `/api/search`: run the plan, then read the few result traces whole to fill in Tempo's
//! response (root service and name, duration, service stats, span attributes, `select`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use allegro_traceql::ast::{FieldRef, Intrinsic, Scope};
use allegro_udfs::spansets::key::{KeyType, decode};
use arrow::array::{Array, AsArray, FixedSizeBinaryArray, Int32Array, RecordBatch};
use arrow::datatypes::UInt64Type;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder, col, lit};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

use super::plan::{self, Compiled, Range};
use super::spans_table::SpansTable;
use super::table::{BlocksTable, group_by_schema};
use super::translate::{KIND_NAMES, KnownKeys, KnownTypes, STATUS_NAMES, Translator, enum_name};
use super::{QueryEngine, collect_counted, df_err};
use crate::block::meta::BlockMeta;
use crate::convert::from_arrow::{RowSpan, batch_to_row_spans};
use crate::error::{EngineError, Result};
use crate::hot::AttributeKeys;
use crate::ids::TraceId;
use crate::schema::{AttrScope, HotColumn, col as c};
use crate::tempopb::{
    SearchMetrics, SearchResponse, SearchSpan, ServiceStats, SpanSet, TraceSearchMetadata,
};
use datafusion::prelude::SessionContext;

/// A TraceQL search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The TraceQL text.
    pub query: String,
    /// Most traces returned (newest first).
    pub limit: usize,
    /// Most spans returned per spanset.
    pub spss: usize,
    /// Only traces overlapping `[start, end]` (unix nanoseconds).
    pub range: Range,
}

/// One searchable table: its hot columns and provider.
pub(crate) struct Source {
    pub(crate) hot: Vec<HotColumn>,
    /// Keys that may hold arrays (`None`: unknown, any may).
    pub(crate) others: Option<HashSet<(AttrScope, String)>>,
    /// Attribute keys present per scope (`None`: unknown).
    pub(crate) keys: Option<KnownKeys>,
    /// Scalar types per attribute key (`None`: unknown).
    pub(crate) types: Option<KnownTypes>,
    pub(crate) table: Arc<dyn TableProvider>,
}

impl Source {
    /// The translator for this source's schema and recorded keys.
    pub(crate) fn translator(&self) -> Translator<'_> {
        Translator::new(&self.hot)
            .with_others(self.others.as_ref())
            .with_keys(self.keys.as_ref())
            .with_types(self.types.as_ref())
    }
}

/// What a tenant's search reads.
pub(crate) struct Sources {
    pub(crate) tables: Vec<Source>,
    pub(crate) blocks: Vec<Arc<BlockMeta>>,
    pub(crate) live_spans: u64,
    pub(crate) live_traces: u64,
}

impl Sources {
    /// Spans held in blocks and the head.
    pub(crate) fn spans(&self) -> u64 {
        self.blocks.iter().map(|b| b.total_spans).sum::<u64>() + self.live_spans
    }

    /// Traces held in blocks and the head (as many as root spans, give or take broken traces).
    pub(crate) fn traces(&self) -> u64 {
        self.blocks.iter().map(|b| b.total_objects).sum::<u64>() + self.live_traces
    }

    /// Adds what these sources hold (blocks, bytes, spans, traces) and one job to `m`.
    pub(crate) fn account(&self, m: &mut SearchMetrics) {
        m.total_blocks += self.blocks.len() as u32;
        m.total_block_bytes += self.blocks.iter().map(|b| b.size).sum::<u64>();
        m.inspected_spans += self.spans();
        let traces = self.traces();
        m.inspected_traces = m
            .inspected_traces
            .saturating_add(traces.min(u32::MAX as u64) as u32);
        m.total_jobs += 1;
        m.completed_jobs += 1;
    }
}

/// The plans of a query, for `explain`.
pub struct Explained {
    /// What the planner compiled.
    pub compiled: Compiled,
    /// Logical plan, optimised.
    pub logical: String,
    /// Physical plan.
    pub physical: String,
}

impl QueryEngine {
    pub(crate) async fn sources(&self, tenant: &str, range: Range) -> Result<Sources> {
        self.sources_picked(tenant, range, &|_| true, true).await
    }

    /// The sources of `tenant` in range: blocks `keep` accepts, and the head when `live`.
    pub(crate) async fn sources_picked(
        &self,
        tenant: &str,
        range: Range,
        keep: &(dyn Fn(&BlockMeta) -> bool + Sync),
        live: bool,
    ) -> Result<Sources> {
        let all = self.catalog.blocks(tenant).await?;
        let blocks: Vec<Arc<BlockMeta>> = all
            .iter()
            .filter(|b| range.is_none_or(|(s, e)| b.overlaps(s, e)) && keep(b))
            .cloned()
            .collect();
        let mut tables: Vec<Source> = group_by_schema(&blocks)
            .into_iter()
            .map(|(hot, metas)| {
                let others = metas.iter().try_fold(HashSet::new(), |mut acc, m| {
                    acc.extend(
                        m.other_keys
                            .as_ref()?
                            .iter()
                            .map(|k| (k.scope, k.key.clone())),
                    );
                    Some(acc)
                });
                let keys = metas.iter().try_fold(KnownKeys::new(), |mut acc, m| {
                    let k = m.attribute_keys.as_ref()?;
                    for scope in AttributeKeys::SCOPES {
                        acc.entry(scope)
                            .or_default()
                            .extend(k.scope(scope).iter().cloned());
                    }
                    Some(acc)
                });
                let types = metas.iter().try_fold(KnownTypes::new(), |mut acc, m| {
                    for k in m.key_types.as_ref()? {
                        acc.entry((k.scope, k.key.clone()))
                            .or_default()
                            .extend(k.types.iter().copied());
                    }
                    Some(acc)
                });
                Source {
                    table: Arc::new(BlocksTable::new(&self.catalog, &hot, metas)),
                    hot,
                    others,
                    keys,
                    types,
                }
            })
            .collect();
        let (mut live_spans, mut live_traces) = (0, 0);
        if let Some(head) = self.live.as_ref().filter(|_| live) {
            let batches = head.live_batches(tenant)?;
            if let Some(first) = batches.first() {
                live_spans = batches.iter().map(|b| b.num_rows() as u64).sum();
                live_traces = count_traces(&batches);
                let mem = MemTable::try_new(first.schema(), vec![batches]).map_err(df_err)?;
                tables.push(Source {
                    hot: Vec::new(),
                    others: None,
                    keys: None,
                    types: None,
                    table: Arc::new(mem),
                });
            }
        }
        Ok(Sources {
            tables,
            blocks,
            live_spans,
            live_traces,
        })
    }

    /// The per-span plans of every source, and the search plan over their union.
    async fn plan(
        &self,
        ctx: &SessionContext,
        src: &Sources,
        c: &Compiled,
        req: &SearchRequest,
    ) -> Result<Option<(Vec<LogicalPlan>, LogicalPlan)>> {
        if src.tables.is_empty() {
            return Ok(None);
        }
        let inputs = src
            .tables
            .iter()
            .map(|s| plan::span_rows(s, c, req.range))
            .collect::<Result<Vec<_>>>()?;
        let spans = Arc::new(SpansTable::try_new(&ctx.state(), &inputs).await?);
        let top = plan::search_plan(spans, c, req.limit.max(1))?;
        Ok(Some((inputs, top)))
    }

    /// Explains a search over `tenant`'s data: the compiled program and both plans.
    pub async fn explain(&self, tenant: &str, req: &SearchRequest) -> Result<Explained> {
        let (t, req) = (tenant.to_string(), req.clone());
        self.budgeted(&[tenant.to_string()], move |e| async move {
            e.explain_now(&t, &req).await
        })
        .await
    }

    async fn explain_now(&self, tenant: &str, req: &SearchRequest) -> Result<Explained> {
        let compiled = plan::compile_search(&req.query)?;
        let ctx = self.session();
        let src = self.sources(tenant, req.range).await?;
        let Some((inputs, plan)) = self.plan(&ctx, &src, &compiled, req).await? else {
            return Ok(Explained {
                compiled,
                logical: "EmptyRelation (no blocks or live spans in range)".into(),
                physical: "EmptyExec".into(),
            });
        };
        let df = ctx.execute_logical_plan(plan).await.map_err(df_err)?;
        let state = ctx.state();
        let mut logical = state
            .optimize(df.logical_plan())
            .map_err(df_err)?
            .display_indent()
            .to_string();
        for (i, input) in inputs.iter().enumerate() {
            let o = state.optimize(input).map_err(df_err)?;
            logical.push_str(&format!("\n-- spans input {i} --\n{}", o.display_indent()));
        }
        let physical = df.create_physical_plan().await.map_err(df_err)?;
        Ok(Explained {
            compiled,
            logical,
            physical: datafusion::physical_plan::displayable(physical.as_ref())
                .indent(true)
                .to_string(),
        })
    }

    /// Runs a TraceQL search over the tenants (`a|b` federates) and assembles Tempo's response.
    pub async fn search(&self, tenants: &[String], req: &SearchRequest) -> Result<SearchResponse> {
        let (ts, req) = (tenants.to_vec(), req.clone());
        self.budgeted(
            tenants,
            move |e| async move { e.search_now(&ts, &req).await },
        )
        .await
    }

    async fn search_now(&self, tenants: &[String], req: &SearchRequest) -> Result<SearchResponse> {
        let compiled = plan::compile_search(&req.query)?;
        let mut metrics = SearchMetrics::default();
        let mut found: Vec<(u64, String, TraceId, String)> = Vec::new();
        let mut per_tenant: HashMap<String, Sources> = HashMap::new();
        for tenant in tenants {
            let ctx = self.session();
            let src = self.sources(tenant, req.range).await?;
            src.account(&mut metrics);
            if let Some((_, plan)) = self.plan(&ctx, &src, &compiled, req).await? {
                let df = ctx.execute_logical_plan(plan).await.map_err(df_err)?;
                let (batches, bytes) = collect_counted(&ctx, df).await?;
                metrics.inspected_bytes += bytes;
                for b in &batches {
                    let ids = fixed(b, c::TRACE_ID)?;
                    let sets = b
                        .column_by_name(plan::out::SPANSETS)
                        .and_then(|a| a.as_string_opt::<i32>())
                        .ok_or_else(|| {
                            EngineError::Internal("search plan lost its spansets".into())
                        })?;
                    let starts = b
                        .column_by_name(plan::out::TRACE_START)
                        .and_then(|a| a.as_primitive_opt::<UInt64Type>())
                        .ok_or_else(|| {
                            EngineError::Internal("search plan lost trace_start".into())
                        })?;
                    for i in 0..b.num_rows() {
                        let id = TraceId::from_bytes(ids.value(i))?;
                        found.push((
                            starts.value(i),
                            tenant.clone(),
                            id,
                            sets.value(i).to_string(),
                        ));
                    }
                }
            }
            per_tenant.insert(tenant.clone(), src);
        }
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.0.cmp(&b.2.0)));
        found.truncate(req.limit.max(1));
        let mut traces = Vec::with_capacity(found.len());
        for tenant in tenants {
            let ids: Vec<TraceId> = found
                .iter()
                .filter(|f| &f.1 == tenant)
                .map(|f| f.2)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let Some(src) = per_tenant.get(tenant) else {
                continue;
            };
            let rows = self.fetch(src, &ids).await?;
            for (_, _, id, sets) in found.iter().filter(|f| &f.1 == tenant) {
                let empty = Vec::new();
                let trace_rows = rows.get(id).unwrap_or(&empty);
                traces.push(assemble(id, trace_rows, sets, &compiled, req.spss)?);
            }
        }
        traces.sort_by(|a, b| {
            b.start_time_unix_nano
                .cmp(&a.start_time_unix_nano)
                .then_with(|| a.trace_id.cmp(&b.trace_id))
        });
        Ok(SearchResponse {
            traces,
            metrics: Some(metrics),
        })
    }

    /// Reads every span of `ids` from the sources, grouped by trace.
    async fn fetch(&self, src: &Sources, ids: &[TraceId]) -> Result<HashMap<TraceId, Vec<Row>>> {
        let ctx = self.session();
        let list: Vec<_> = ids
            .iter()
            .map(|id| lit(ScalarValue::FixedSizeBinary(16, Some(id.0.to_vec()))))
            .collect();
        let mut out: HashMap<TraceId, Vec<Row>> = HashMap::new();
        for s in &src.tables {
            let plan = LogicalPlanBuilder::scan("spans", provider_as_source(s.table.clone()), None)
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
struct Row {
    row: RowSpan,
    nested: (i32, i32, i32),
}

fn fixed<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a FixedSizeBinaryArray> {
    b.column_by_name(name)
        .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .ok_or_else(|| EngineError::Internal(format!("{name} is not FixedSizeBinary")))
}

fn count_traces(batches: &[RecordBatch]) -> u64 {
    let mut ids: HashSet<&[u8]> = HashSet::new();
    for b in batches {
        if let Ok(a) = fixed(b, c::TRACE_ID) {
            ids.extend((0..a.len()).map(|i| a.value(i)));
        }
    }
    ids.len() as u64
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

#[derive(serde::Deserialize)]
struct SetJson {
    spans: Vec<(String, i32)>,
    attrs: Vec<(String, Option<String>)>,
}

fn assemble(
    id: &TraceId,
    rows: &[Row],
    sets: &str,
    c: &Compiled,
    spss: usize,
) -> Result<TraceSearchMetadata> {
    let sets: Vec<SetJson> = serde_json::from_str(sets)
        .map_err(|e| EngineError::Internal(format!("spansets json: {e}")))?;
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
    let by_id: HashMap<(String, i32), &Row> = rows
        .iter()
        .map(|r| ((hex::encode(&r.row.span.span_id), r.nested.0), r))
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
                .filter_map(|k| by_id.get(k).copied())
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
    Ok(TraceSearchMetadata {
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
    })
}
