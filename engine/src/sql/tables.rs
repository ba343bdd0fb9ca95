//! The SQL tables of one tenant, with one stable schema whatever the blocks hold:
//!
//! - `spans`: one row per span of every block and the live head. IDs as lowercase hex, kind
//!   and status by TraceQL's names, times as timestamps and nanoseconds, nested sets,
//!   trace-level columns, and one column per attribute function the query calls
//!   (`"span_attr(http.route)"`), filled per block group from its hot column or its overflow
//!   map. The view is a union of per-group projections over the block scans, so filters and
//!   projections reach each Parquet scan (and a hot column's statistics) through it.
//! - `events` and `links`: one row per span event / link, with the span's IDs.
//! - `traces`: one row per trace, aggregated from `spans`.

use std::sync::Arc;

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, col, lit};
use datafusion::prelude::SessionContext;

use super::enum_literals::enum_text;
use super::rewrite::{AttrRef, AttrType};
use crate::error::Result;
use crate::query::df_err;
use crate::query::sources::{Source, Sources};
use crate::query::table::string_views;
use crate::query::translate::{KIND_NAMES, STATUS_NAMES, hex};
use crate::schema::col as c;

fn timestamp(ns: Expr) -> Expr {
    cast(
        cast(ns, DataType::Int64),
        DataType::Timestamp(TimeUnit::Nanosecond, None),
    )
}

/// A string column as a view (a no-op over blocks, read that way; the head's copied).
fn text(name: &str) -> Expr {
    cast(col(name), DataType::Utf8View)
}

/// The columns every source gives the `spans` view. Text is `Utf8View` inside the session: the
/// Parquet decoder then points into the dictionary pages instead of copying every value, which
/// was a fifth of a two-key group-by over 10M spans; answers leave as `Utf8`
/// ([`super::plain_strings`]).
fn span_columns() -> Vec<Expr> {
    vec![
        hex(c::TRACE_ID).alias("trace_id"),
        hex(c::SPAN_ID).alias("span_id"),
        hex(c::PARENT_SPAN_ID).alias("parent_span_id"),
        text(c::NAME).alias("name"),
        text(c::SERVICE_NAME).alias("service_name"),
        enum_text(col(c::KIND), &KIND_NAMES).alias("kind"),
        enum_text(col(c::STATUS_CODE), &STATUS_NAMES).alias("status"),
        text(c::STATUS_MESSAGE).alias("status_message"),
        timestamp(col(c::START_TIME)).alias("start_time"),
        timestamp(col(c::START_TIME) + col(c::DURATION)).alias("end_time"),
        col(c::START_TIME).alias("start_time_unix_nano"),
        col(c::DURATION).alias("duration_nano"),
        (cast(col(c::DURATION), DataType::Float64) / lit(1e6)).alias("duration_ms"),
        col(c::NESTED_SET_LEFT).alias("nested_set_left"),
        col(c::NESTED_SET_RIGHT).alias("nested_set_right"),
        col(c::NESTED_SET_PARENT).alias("nested_set_parent"),
        text(c::TRACE_ROOT_SERVICE).alias("trace_root_service"),
        text(c::TRACE_ROOT_NAME).alias("trace_root_name"),
        col(c::TRACE_START).alias("trace_start_unix_nano"),
        col(c::TRACE_DURATION).alias("trace_duration_nano"),
        text(c::SCOPE_NAME).alias("scope_name"),
        text(c::SCOPE_VERSION).alias("scope_version"),
        text(c::TRACE_STATE).alias("trace_state"),
    ]
}

/// `a` in source `s`: its hot column or overflow map there, NULL where it never occurs.
fn attribute(s: &Source, a: &AttrRef) -> Expr {
    let t = s.translator().scoped(a.scope, &a.key);
    let null = |ty: DataType| lit(ScalarValue::try_from(&ty).unwrap_or(ScalarValue::Null));
    let (e, ty) = match a.ty {
        AttrType::Text => (t.key_parts().0, DataType::Utf8View),
        AttrType::Int => (
            t.int.unwrap_or_else(|| null(DataType::Int64)),
            DataType::Int64,
        ),
        AttrType::Float => (
            t.float.unwrap_or_else(|| null(DataType::Float64)),
            DataType::Float64,
        ),
        AttrType::Bool => (
            t.bool.unwrap_or_else(|| null(DataType::Boolean)),
            DataType::Boolean,
        ),
    };
    cast(e, ty).alias(a.column())
}

/// Union over the sources of `columns(source)`, each over its own scan.
fn union(tables: &[Source], columns: impl Fn(&Source) -> Vec<Expr>) -> Result<LogicalPlan> {
    let mut plans = Vec::with_capacity(tables.len());
    for s in tables {
        let table = string_views(s.table.clone());
        let p = LogicalPlanBuilder::scan("spans", provider_as_source(table), None)
            .and_then(|b| b.project(columns(s)))
            .and_then(|b| b.build())
            .map_err(df_err)?;
        plans.push(p);
    }
    let mut it = plans.into_iter();
    let Some(first) = it.next() else {
        return Err(crate::error::EngineError::Internal(
            "SQL tables over no source".into(),
        ));
    };
    let mut b = LogicalPlanBuilder::from(first);
    for p in it {
        b = b.union(p).map_err(df_err)?;
    }
    b.build().map_err(df_err)
}

fn register_plan(ctx: &SessionContext, name: &str, plan: LogicalPlan) -> Result<()> {
    ctx.register_table(name, Arc::new(ViewTable::new(plan, None)))
        .map_err(df_err)?;
    Ok(())
}

/// Registers `spans`, `events`, `links` and `traces` over `src` in `ctx`, with a column per
/// attribute in `attrs`.
pub(crate) async fn register(ctx: &SessionContext, src: &Sources, attrs: &[AttrRef]) -> Result<()> {
    // A tenant with no data yet gets the same tables, empty.
    let empty;
    let tables = if src.tables.is_empty() {
        let schema = crate::schema::span_schema(&[]);
        let table =
            datafusion::datasource::MemTable::try_new(schema, vec![vec![]]).map_err(df_err)?;
        empty = [Source {
            hot: Vec::new(),
            others: None,
            keys: None,
            types: None,
            table: Arc::new(table),
            live_ends: None,
        }];
        &empty[..]
    } else {
        &src.tables[..]
    };
    let spans = union(tables, |s| {
        let mut cols = span_columns();
        cols.extend(attrs.iter().map(|a| attribute(s, a)));
        cols
    })?;
    register_plan(ctx, "spans", spans)?;
    for (name, list) in [("_span_events", c::EVENTS), ("_span_links", c::LINKS)] {
        let p = union(tables, |_| {
            vec![
                hex(c::TRACE_ID).alias("trace_id"),
                hex(c::SPAN_ID).alias("span_id"),
                col(c::START_TIME).alias("span_start_unix_nano"),
                col(list).alias("item"),
            ]
        })?;
        register_plan(ctx, name, p)?;
    }
    for (name, sql) in VIEWS {
        let plan = ctx.sql(sql).await.map_err(df_err)?.into_unoptimized_plan();
        register_plan(ctx, name, plan)?;
    }
    Ok(())
}

/// The tables a query sees, in the order catalog listings show them.
pub(crate) const TABLES: [&str; 4] = ["events", "links", "spans", "traces"];

/// The views over `spans` and the nested lists.
const VIEWS: [(&str, &str); 3] = [
    (
        "events",
        "SELECT trace_id, span_id, \
           to_timestamp_nanos(CAST(span_start_unix_nano + get_field(e, 'time_since_start_nano') AS BIGINT)) AS time, \
           get_field(e, 'name') AS name, \
           get_field(e, 'attrs_str') AS attributes \
         FROM (SELECT trace_id, span_id, span_start_unix_nano, unnest(item) AS e FROM _span_events)",
    ),
    (
        "links",
        "SELECT trace_id, span_id, \
           hex_id(get_field(l, 'trace_id')) AS linked_trace_id, \
           hex_id(get_field(l, 'span_id')) AS linked_span_id, \
           get_field(l, 'attrs_str') AS attributes \
         FROM (SELECT trace_id, span_id, unnest(item) AS l FROM _span_links)",
    ),
    (
        "traces",
        "SELECT trace_id, \
           max(trace_root_service) AS root_service, \
           max(trace_root_name) AS root_name, \
           min(start_time) AS start_time, \
           max(end_time) AS end_time, \
           CAST(max(end_time_ns) - min(start_time_unix_nano) AS BIGINT) AS duration_nano, \
           count(*) AS spans, \
           sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, \
           array_agg(DISTINCT service_name) AS services \
         FROM (SELECT *, start_time_unix_nano + duration_nano AS end_time_ns FROM spans) \
         GROUP BY trace_id",
    ),
];
