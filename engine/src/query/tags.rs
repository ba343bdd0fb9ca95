//! Tag names and tag values (`/api/search/tags`, `/api/v2/search/tag/{tag}/values`, ...).
//!
//! Names come from the blocks' metadata (hot columns) and the key columns of the overflow maps,
//! which hold only keys (dictionary-encoded, a few bytes a span) — never the values. Values are
//! `SELECT DISTINCT` over the one column (or map entry) that holds the attribute, filtered by
//! the optional query's conditions, so Parquet prunes like any search. Without conditions (the
//! query editor's and Drilldown's first request, `q={}`) a block's values are what its
//! `meta.json` records ([`crate::block::tag_values`]), or, where it records none, read once and
//! kept: blocks never change, so requests over a day of blocks answer from memory. As in Tempo,
//! a block in the time range contributes all its values.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use allegro_traceql::ast::{
    BinaryOp, FieldExpr, FieldKind, FieldRef, Intrinsic, QueryBody, Scope, SpansetExpr, Stage,
};
use allegro_udfs::spansets::key::KeyType;
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::UInt64Type;
use arrow::util::display::ArrayFormatter;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, lit};

use super::plan::Range;
use super::sources::{LiveGroup, Source};
use super::table::BlocksTable;
use super::translate::{KIND_NAMES, STATUS_NAMES, Typed, enum_names};
use super::{QueryEngine, collect_counted, df_err};
use crate::block::meta::BlockMeta;
use crate::block::tag_values::{Known, TagValueIndex};
use crate::error::{EngineError, Result};
use crate::hot::AttributeKeys;
use crate::schema::{AttrScope, OVERFLOW_KINDS, col as c};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

/// A tag value with its TraceQL type, as `/api/v2/search/tag/{tag}/values` returns it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TagValue {
    /// `string`, `int`, `float`, `bool`, `duration` or `keyword`.
    pub kind: &'static str,
    /// The value as text.
    pub value: String,
}

/// What answering a tags request cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct TagMetrics {
    /// Bytes read from storage.
    pub inspected_bytes: u64,
    /// Blocks in range.
    pub total_blocks: u32,
}

/// Intrinsics listed under the `intrinsic` scope (every spelling Allegro can search).
pub fn intrinsic_tags() -> Vec<&'static str> {
    let mut v: Vec<&str> = Intrinsic::SPELLINGS
        .iter()
        .filter(|(_, i)| !matches!(i, Intrinsic::Parent | Intrinsic::ChildCount))
        .map(|(s, _)| *s)
        .collect();
    v.sort_unstable();
    v
}

/// The conditions of a `q` filter that narrow tag values: the first spanset filter's
/// expression. Queries that are not a plain search narrow nothing, as in Tempo.
fn narrowing(q: Option<&str>) -> Option<FieldExpr> {
    let q = allegro_traceql::compile(q?.trim()).ok()?;
    let QueryBody::Spans(p) = q.body else {
        return None;
    };
    match p.stages.first()? {
        Stage::Spanset(SpansetExpr::Filter(f)) => f.expr.clone(),
        _ => None,
    }
}

impl QueryEngine {
    /// Attribute names per scope (`span`, `resource`, `instrumentation`, `event`, `link`) of
    /// `tenant`'s data in range.
    pub async fn tag_names(
        &self,
        tenant: &str,
        range: Range,
    ) -> Result<(BTreeMap<&'static str, BTreeSet<String>>, TagMetrics)> {
        let t = tenant.to_string();
        let max = self.limits().tenant(tenant).max_bytes_per_tag_values_query;
        self.budgeted(&[tenant.to_string()], move |e| {
            let t = t.clone();
            async move {
                let (mut names, metrics) = e.tag_names_now(&t, range).await?;
                cap_names(&mut names, max);
                Ok((names, metrics))
            }
        })
        .await
    }

    async fn tag_names_now(
        &self,
        tenant: &str,
        range: Range,
    ) -> Result<(BTreeMap<&'static str, BTreeSet<String>>, TagMetrics)> {
        let src = self.sources(tenant, range).await?;
        let mut out: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
        for b in &src.blocks {
            for h in &b.hot_columns {
                out.entry(h.scope.name()).or_default().insert(h.key.clone());
            }
        }
        let mut metrics = TagMetrics {
            total_blocks: src.blocks.len() as u32,
            ..Default::default()
        };
        let ctx = self.session();
        for (i, s) in src.tables.iter().enumerate() {
            if let Some(keys) = &s.keys {
                // Recorded at write time: no data to read.
                for (scope, names) in keys {
                    if !names.is_empty() {
                        out.entry(scope).or_default().extend(names.iter().cloned());
                    }
                }
                continue;
            }
            let (pairs, bytes) = self.scanned_keys(&ctx, i, s).await?;
            metrics.inspected_bytes += bytes;
            for (scope, key) in pairs {
                out.entry(scope).or_default().insert(key);
            }
            // Every resource's service.name lives in its own column, not in a map.
            out.entry("resource")
                .or_default()
                .insert("service.name".into());
        }
        Ok((out, metrics))
    }

    /// Attribute keys per scope found by reading a source's overflow maps (sources without
    /// recorded `attributeKeys`: the head, older blocks), and the bytes read.
    pub(crate) async fn scanned_keys(
        &self,
        ctx: &SessionContext,
        i: usize,
        s: &Source,
    ) -> Result<(Vec<(&'static str, String)>, u64)> {
        let name = format!("t{i}");
        ctx.register_table(&name, s.table.clone()).map_err(df_err)?;
        let mut parts: Vec<String> = Vec::new();
        for scope in AttrScope::ALL {
            for (map, _) in OVERFLOW_KINDS {
                parts.push(format!(
                    "SELECT DISTINCT '{}' AS scope, unnest(map_keys(\"{}{map}\")) AS k FROM {name}",
                    scope.name(),
                    scope.overflow_prefix()
                ));
            }
        }
        for (scope, column) in [("event", c::EVENTS), ("link", c::LINKS)] {
            for (map, _) in OVERFLOW_KINDS {
                parts.push(format!(
                    "SELECT DISTINCT '{scope}' AS scope, unnest(map_keys(e['{map}'])) AS k \
                     FROM (SELECT unnest(\"{column}\") AS e FROM {name})"
                ));
            }
        }
        let sql = format!(
            "SELECT DISTINCT scope, k FROM ({})",
            parts.join(" UNION ALL ")
        );
        let df = ctx.sql(&sql).await.map_err(df_err)?;
        let (batches, bytes) = collect_counted(ctx, df).await?;
        let mut out = Vec::new();
        for b in &batches {
            for (scope, key) in string_pairs(b)? {
                if let Some(scope) = AttributeKeys::SCOPES.iter().find(|s| **s == scope) {
                    out.push((*scope, key));
                }
            }
        }
        Ok((out, bytes))
    }

    /// Distinct values of `field` in `tenant`'s data in range, narrowed by the conditions of
    /// `q`, at most `limit`.
    pub async fn tag_values(
        &self,
        tenant: &str,
        field: &FieldRef,
        q: Option<&str>,
        range: Range,
        limit: usize,
    ) -> Result<(Vec<TagValue>, TagMetrics)> {
        let (t, field, q) = (tenant.to_string(), field.clone(), q.map(str::to_string));
        let max = self.limits().tenant(tenant).max_bytes_per_tag_values_query;
        self.budgeted(&[tenant.to_string()], move |e| {
            let (t, field, q) = (t.clone(), field.clone(), q.clone());
            async move {
                let (mut values, metrics) = e
                    .tag_values_now(&t, &field, q.as_deref(), range, limit)
                    .await?;
                cap_values(&mut values, max);
                Ok((values, metrics))
            }
        })
        .await
    }

    async fn tag_values_now(
        &self,
        tenant: &str,
        field: &FieldRef,
        q: Option<&str>,
        range: Range,
        limit: usize,
    ) -> Result<(Vec<TagValue>, TagMetrics)> {
        let src = self.sources(tenant, range).await?;
        let cond = narrowing(q);
        let ctx = self.session();
        let mut metrics = TagMetrics {
            total_blocks: src.blocks.len() as u32,
            ..Default::default()
        };
        let mut out: BTreeSet<TagValue> = BTreeSet::new();
        for s in &src.tables {
            let t = s.translator();
            let typed = match field {
                FieldRef::Intrinsic(i) => super::translate::intrinsic(*i),
                FieldRef::Attribute(a) => t.attribute(a),
            };
            let typed = match typed {
                Ok(v) => v,
                Err(EngineError::NotSupported(m)) => {
                    return Err(EngineError::InvalidInput(format!(
                        "no values for {field}: {m}"
                    )));
                }
                Err(e) => return Err(e),
            };
            let filter = match &cond {
                Some(e) => Some(t.condition(e)?),
                None => None,
            };
            // meta.json and the head's records hold scalar values only: a key that may hold
            // arrays is read.
            let arrays = typed.multi.iter().any(|m| m.kind == "array");
            // Without conditions a block's values are a fact of the block: read once, kept.
            if filter.is_none()
                && let Some(blocks) = BlocksTable::of(s.table.as_ref())
            {
                let key = |b: &BlockMeta| (b.block_id, field.to_string());
                let mut unknown = Vec::new();
                let mut wide = BTreeSet::new();
                for b in blocks.blocks() {
                    if let Some(v) = recorded(b.tag_values.as_ref(), field)?.filter(|_| !arrays) {
                        out.extend(v);
                        continue;
                    }
                    match self.block_values.get(&key(b)) {
                        Some(Some(v)) => out.extend(v.iter().cloned()),
                        Some(None) => {
                            wide.insert(b.block_id);
                        }
                        None => unknown.push(b.clone()),
                    }
                }
                let typed_ref = &typed;
                let ctx_ref = &ctx;
                let mut reads = Vec::new();
                for b in unknown {
                    let Some(one) = blocks.subset(&|x| x.block_id == b.block_id) else {
                        continue;
                    };
                    reads.push(async move {
                        let one = Arc::new(one);
                        let read = self
                            .distinct(ctx_ref, one, typed_ref, None, None, BLOCK_VALUES + 1)
                            .await;
                        read.map(|r| (b, r))
                    });
                }
                let mut reads = futures::stream::iter(reads).buffer_unordered(2);
                while let Some(read) = reads.next().await {
                    let (b, (v, bytes)) = read?;
                    metrics.inspected_bytes += bytes;
                    if v.len() > BLOCK_VALUES {
                        self.block_values.insert(key(&b), None);
                        if limit > BLOCK_VALUES {
                            wide.insert(b.block_id);
                        } else {
                            // Already more values than the request keeps: no second read.
                            out.extend(v);
                        }
                    } else {
                        out.extend(v.iter().cloned());
                        self.block_values.insert(key(&b), Some(Arc::new(v)));
                    }
                }
                // Blocks with too many values to keep are read with the request's limit.
                if let Some(w) = blocks.subset(&|x| wide.contains(&x.block_id)) {
                    let (v, bytes) = self
                        .distinct(&ctx, Arc::new(w), &typed, None, None, limit + 1)
                        .await?;
                    metrics.inspected_bytes += bytes;
                    out.extend(v);
                }
                continue;
            }
            // So are the head's parts, as they record them when converted: in range, all
            // their values (as blocks), without a `SELECT DISTINCT` over a minute of spans
            // at every request (25–50 ms of a request under the soak's 60k spans/s).
            if filter.is_none()
                && s.live_ends.is_some()
                && !arrays
                && let Some(v) = head_recorded(&src.live_groups, field, range)?
            {
                out.extend(v);
                continue;
            }
            let (v, bytes) = self
                .distinct(&ctx, s.table.clone(), &typed, filter, range, limit + 1)
                .await?;
            metrics.inspected_bytes += bytes;
            out.extend(v);
        }
        let mut values: Vec<TagValue> = out.into_iter().collect();
        values.truncate(limit);
        Ok((values, metrics))
    }

    /// Up to `limit` distinct values of `typed` in `table` where `filter` holds, in traces
    /// overlapping `range`; and the bytes read.
    async fn distinct(
        &self,
        ctx: &SessionContext,
        table: Arc<dyn datafusion::catalog::TableProvider>,
        typed: &Typed,
        filter: Option<Expr>,
        range: Range,
        limit: usize,
    ) -> Result<(Vec<TagValue>, u64)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let when = |base: Expr| {
            let mut f = base;
            if let Some(c) = &filter {
                f = f.and(c.clone());
            }
            if let Some(t) = super::plan::time_filter(range) {
                f = f.and(t);
            }
            f
        };
        for (kind, slot) in slots(typed) {
            let f = when(slot.clone().is_not_null());
            let (batches, read) = distinct_of(ctx, &table, f, slot, false, limit).await?;
            bytes += read;
            for b in &batches {
                for v in render(b.column(0), kind)? {
                    out.push(TagValue { kind, value: v });
                }
            }
        }
        // Values a span holds several of, one by one: every event's (link's) value, every
        // element of an array, typed (Tempo lists them so).
        for m in typed.multi.iter().filter(|m| m.listed()) {
            let f = when(m.guard.clone().unwrap_or(lit(true)));
            let (batches, read) = distinct_of(ctx, &table, f, m.values(), true, limit).await?;
            bytes += read;
            for b in &batches {
                let keys = b.column(0).as_string::<i32>();
                for k in keys.iter().flatten() {
                    if let Some(v) = typed_value(k)? {
                        out.push(v);
                    }
                }
            }
        }
        Ok((out, bytes))
    }
}

/// The values of `field` the head's `groups` in `range` recorded; `None` when one of them did
/// not record it (too wide, or not recorded at all).
fn head_recorded(
    groups: &[LiveGroup],
    field: &FieldRef,
    range: Range,
) -> Result<Option<Vec<TagValue>>> {
    let mut out = Vec::new();
    for (_, rec) in groups.iter().filter(|(b, _)| holds_range(b, range)) {
        let index = rec.as_ref().and_then(|r| r.tag_values.as_ref());
        match recorded(index, field)? {
            Some(v) => out.extend(v),
            None => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Whether a trace of `batches` (a head group) overlaps `range` (always without one): the group
/// then contributes all its values, as a block in range does.
fn holds_range(batches: &[RecordBatch], range: Range) -> bool {
    let Some((start, end)) = range else {
        return true;
    };
    batches.iter().any(|b| {
        let col = |name| {
            b.column_by_name(name)
                .and_then(|a| a.as_primitive_opt::<UInt64Type>())
        };
        match (col(c::TRACE_START), col(c::TRACE_DURATION)) {
            (Some(s), Some(d)) => s
                .values()
                .iter()
                .zip(d.values().iter())
                .any(|(s, d)| *s <= end && s.saturating_add(*d) >= start),
            // Not the head's schema: read, not guessed.
            _ => b.num_rows() > 0,
        }
    })
}

/// A typed key from `traceql_values` (`i:7`) as a tag value, rendered as a column's would be.
fn typed_value(key: &str) -> Result<Option<TagValue>> {
    let Some((t, v)) = allegro_udfs::spansets::key::decode(key) else {
        return Ok(None);
    };
    let (kind, a): (&'static str, ArrayRef) = match t {
        KeyType::Str => {
            return Ok(Some(TagValue {
                kind: "string",
                value: v.to_string(),
            }));
        }
        KeyType::Int => (
            "int",
            Arc::new(Int64Array::from(vec![v.parse::<i64>().ok()])),
        ),
        KeyType::Float => (
            "float",
            Arc::new(Float64Array::from(vec![v.parse::<f64>().ok()])),
        ),
        KeyType::Bool => ("bool", Arc::new(BooleanArray::from(vec![v == "true"]))),
        _ => return Ok(None),
    };
    Ok(render(&a, kind)?
        .into_iter()
        .next()
        .map(|value| TagValue { kind, value }))
}

/// Up to `limit` distinct values of `value` in `table`'s rows where `filter` holds (each element
/// when the value is a list, `listed`), and the bytes read.
async fn distinct_of(
    ctx: &SessionContext,
    table: &Arc<dyn datafusion::catalog::TableProvider>,
    filter: Expr,
    value: Expr,
    listed: bool,
    limit: usize,
) -> Result<(Vec<RecordBatch>, u64)> {
    let mut b = LogicalPlanBuilder::scan("spans", provider_as_source(table.clone()), None)
        .and_then(|b| b.filter(filter))
        .and_then(|b| b.project(vec![value.alias("v")]))
        .map_err(df_err)?;
    if listed {
        b = b
            .unnest_column("v")
            .and_then(|b| b.filter(col("v").is_not_null()))
            .map_err(df_err)?;
    }
    let plan = b
        .distinct()
        .and_then(|b| b.limit(0, Some(limit)))
        .and_then(|b| b.build())
        .map_err(df_err)?;
    let df = ctx.execute_logical_plan(plan).await.map_err(df_err)?;
    collect_counted(ctx, df).await
}

/// One block's distinct values of one attribute; `None` when it holds more than [`BLOCK_VALUES`].
pub type BlockValues = Option<Arc<Vec<TagValue>>>;

/// Most distinct values of one attribute kept per block for tag-value requests without
/// conditions; a block with more is remembered as such and read each time with the
/// request's limit.
const BLOCK_VALUES: usize = 1000;

/// Keeps the leading values whose bytes add up to at most `max` (Tempo's
/// `max_bytes_per_tag_values_query`; 0 keeps all), as Tempo answers with what fits. True when
/// some were left out.
pub fn cap_values(values: &mut Vec<TagValue>, max: usize) -> bool {
    let keep = fitting(values.iter().map(|v| v.value.len()), max);
    let cut = keep < values.len();
    if cut {
        tracing::warn!(
            kept = keep,
            of = values.len(),
            max_bytes_per_tag_values_query = max,
            "tag values exceed the response budget; answering with the first that fit"
        );
        values.truncate(keep);
    }
    cut
}

/// [`cap_values`] for tag names, scope by scope in scope order.
pub fn cap_names(names: &mut BTreeMap<&'static str, BTreeSet<String>>, max: usize) -> bool {
    let mut left = max;
    let mut cut = false;
    for set in names.values_mut() {
        if max == 0 {
            break;
        }
        let keep = match left {
            0 => 0,
            left => fitting(set.iter().map(String::len), left),
        };
        if keep < set.len() {
            cut = true;
            *set = std::mem::take(set).into_iter().take(keep).collect();
        }
        left = left.saturating_sub(set.iter().map(String::len).sum());
    }
    if cut {
        tracing::warn!(
            max_bytes_per_tag_values_query = max,
            "tag names exceed the response budget; answering with the first that fit"
        );
    }
    cut
}

/// How many of the leading `sizes` fit in `max` bytes (all when `max` is 0).
fn fitting(sizes: impl Iterator<Item = usize>, max: usize) -> usize {
    let mut total = 0usize;
    let mut n = 0;
    for s in sizes {
        total = total.saturating_add(s);
        if max > 0 && total > max {
            break;
        }
        n += 1;
    }
    n
}

fn slots(t: &Typed) -> Vec<(&'static str, Expr)> {
    let mut v = Vec::new();
    let mut add = |kind: &'static str, e: &Option<Expr>| {
        if let Some(e) = e {
            v.push((kind, e.clone()));
        }
    };
    add("string", &t.str);
    add("int", &t.int);
    add("float", &t.float);
    add("bool", &t.bool);
    add("duration", &t.dur);
    if let Some(s) = &t.status {
        v.push(("keyword", enum_names(s, &STATUS_NAMES, "")));
    }
    if let Some(k) = &t.kind {
        v.push(("keyword", enum_names(k, &KIND_NAMES, "")));
    }
    v
}

/// `field`'s values as `index` lists them (a block's `meta.json`, or a head part's record);
/// `None` when not recorded (an older block, a key with too many values, a field not recorded).
fn recorded(index: Option<&TagValueIndex>, field: &FieldRef) -> Result<Option<Vec<TagValue>>> {
    let Some(index) = index else {
        return Ok(None);
    };
    let strings = |v: &[String]| -> Vec<TagValue> {
        v.iter()
            .map(|s| TagValue {
                kind: "string",
                value: s.clone(),
            })
            .collect()
    };
    let (scope, key) = match field {
        FieldRef::Intrinsic(Intrinsic::Name) => return Ok(index.names.as_deref().map(strings)),
        FieldRef::Attribute(a) if !a.parent => match a.scope {
            Scope::Span => (AttrScope::Span, &a.name),
            Scope::Resource => (AttrScope::Resource, &a.name),
            Scope::Instrumentation => (AttrScope::Instrumentation, &a.name),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let kv = match index.lookup(scope, key) {
        Known::Values(kv) => kv,
        Known::Absent => return Ok(Some(Vec::new())),
        Known::Wide => return Ok(None),
    };
    // Rendered as the values read from the block would be.
    let mut out = strings(&kv.strings);
    let arrays: [(&'static str, ArrayRef); 3] = [
        ("int", Arc::new(Int64Array::from(kv.ints.clone()))),
        ("float", Arc::new(Float64Array::from(kv.floats.clone()))),
        ("bool", Arc::new(BooleanArray::from(kv.bools.clone()))),
    ];
    for (kind, a) in arrays {
        out.extend(
            render(&a, kind)?
                .into_iter()
                .map(|value| TagValue { kind, value }),
        );
    }
    Ok(Some(out))
}

fn render(a: &ArrayRef, kind: &str) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(a.len());
    if kind == "duration" {
        let ints = arrow::compute::cast(a, &arrow::datatypes::DataType::Int64)?;
        let ints = ints
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .ok_or_else(|| EngineError::Internal("duration values are not Int64".into()))?;
        for v in ints.iter().flatten() {
            out.push(format_duration(v));
        }
        return Ok(out);
    }
    let f = ArrayFormatter::try_new(a.as_ref(), &Default::default())?;
    for i in 0..a.len() {
        if a.is_valid(i) {
            out.push(f.value(i).to_string());
        }
    }
    Ok(out)
}

/// A duration as TraceQL writes it (`1.5s`, `250ms`, `10ns`).
pub fn format_duration(ns: i64) -> String {
    for (unit, size) in [
        ("h", 3_600_000_000_000i64),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("µs", 1_000),
    ] {
        if ns.abs() >= size {
            let v = ns as f64 / size as f64;
            return format!("{}{unit}", trim_float(v));
        }
    }
    format!("{ns}ns")
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn string_pairs(b: &RecordBatch) -> Result<Vec<(String, String)>> {
    let f0 = ArrayFormatter::try_new(b.column(0).as_ref(), &Default::default())?;
    let f1 = ArrayFormatter::try_new(b.column(1).as_ref(), &Default::default())?;
    Ok((0..b.num_rows())
        .filter(|&i| b.column(1).is_valid(i))
        .map(|i| (f0.value(i).to_string(), f1.value(i).to_string()))
        .collect())
}

/// The field a tag names: a TraceQL identifier (`resource.service.name`, `.http.method`,
/// `span:name`) or, for the v1 API, a bare attribute name.
pub fn parse_tag(tag: &str, bare: bool) -> Result<FieldRef> {
    let text = if bare && Intrinsic::from_name(tag).is_none() && !tag.starts_with('.') {
        format!(".{}", quote_if_needed(tag))
    } else {
        tag.to_string()
    };
    let q = allegro_traceql::parse(&format!("{{ {text} = nil }}"))
        .map_err(|_| EngineError::InvalidInput(format!("invalid tag {tag:?}: expected an attribute like resource.service.name or an intrinsic like span:name")))?;
    if let QueryBody::Spans(p) = &q.body
        && let Some(Stage::Spanset(SpansetExpr::Filter(f))) = p.stages.first()
        && let Some(FieldExpr {
            kind:
                FieldKind::Binary {
                    op: BinaryOp::Eq,
                    lhs,
                    ..
                },
            ..
        }) = &f.expr
        && let FieldKind::Ref(r) = &lhs.kind
    {
        return Ok(r.clone());
    }
    Err(EngineError::InvalidInput(format!("invalid tag {tag:?}")))
}

fn quote_if_needed(k: &str) -> String {
    if k.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        k.to_string()
    } else {
        format!("\"{}\"", k.replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_as_fields() {
        assert_eq!(
            parse_tag("span:name", false).unwrap(),
            FieldRef::Intrinsic(Intrinsic::Name)
        );
        assert_eq!(
            parse_tag("resource.service.name", false)
                .unwrap()
                .to_string(),
            "resource.service.name"
        );
        assert_eq!(
            parse_tag("service.name", true).unwrap().to_string(),
            ".service.name"
        );
        assert!(parse_tag("{", false).is_err());
        assert_eq!(format_duration(1_500_000_000), "1.5s");
        assert_eq!(format_duration(250_000_000), "250ms");
        assert_eq!(format_duration(10), "10ns");
    }
}
