//! `traceql('<spanset query>' [, start, end])`: TraceQL inside SQL. A table of the spans the
//! query matches (`trace_id`, `span_id`, hex like `spans`), so SQL can join them with `spans`
//! or `events` and aggregate. Every trace overlapping the range (`start`/`end` as unix
//! nanoseconds or timestamps; all time by default) is evaluated by the search's own per-trace
//! stage, block by block as each block streams past sorted by trace, with no limit
//! (`QueryEngine::every_match`), so structural operators, spanset operators and pipelines mean
//! exactly what they mean in `/api/search`, over traces split across blocks too. The matching
//! runs when the table is scanned, under the SQL query's budget.
//!
//! It once ran as TraceQL metrics' structural filter (a hash aggregate of every matching row by
//! trace): 2.2 s for `{ resource.service.name = "api-gateway" } >> { status = error }` over
//! 10M spans, against 1.2 s after the aggregate's size accounting stopped being quadratic, and
//! the figure in `docs/benchmarks.md` (SQL analytics) with the search's stage.

use std::collections::HashSet;
use std::sync::Arc;

use allegro_traceql::ast::QueryBody;
use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::error::{EngineError, Result};
use crate::query::QueryEngine;
use crate::query::plan;
use crate::tempopb::SearchMetrics;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
    ]))
}

/// The table function, bound to one query's engine and tenants.
pub(crate) struct TraceqlFunction {
    pub(crate) engine: QueryEngine,
    pub(crate) tenants: Vec<String>,
}

impl std::fmt::Debug for TraceqlFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "traceql() over {:?}", self.tenants)
    }
}

fn user(m: String) -> DataFusionError {
    DataFusionError::Plan(m)
}

/// A `start`/`end` argument as unix nanoseconds.
fn instant(e: &Expr, which: &str) -> DfResult<u64> {
    let v = match e {
        Expr::Literal(v, _) => v,
        _ => {
            return Err(user(format!(
                "traceql(): {which} must be a literal (unix nanoseconds or a timestamp)"
            )));
        }
    };
    let ns = match v {
        ScalarValue::Int64(Some(n)) => Some(*n),
        ScalarValue::TimestampNanosecond(Some(n), _) => Some(*n),
        ScalarValue::TimestampMicrosecond(Some(n), _) => n.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(n), _) => n.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(n), _) => n.checked_mul(1_000_000_000),
        ScalarValue::Utf8(Some(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt()),
        _ => None,
    };
    ns.and_then(|n| u64::try_from(n).ok()).ok_or_else(|| {
        user(format!(
            "traceql(): {which} {v} is not unix nanoseconds or an RFC3339 time"
        ))
    })
}

impl TableFunctionImpl for TraceqlFunction {
    fn call(&self, args: &[Expr]) -> DfResult<Arc<dyn TableProvider>> {
        let query = match args.first() {
            Some(Expr::Literal(ScalarValue::Utf8(Some(q)), _)) => q.clone(),
            _ => {
                return Err(user(
                    "traceql() takes the TraceQL query as a string literal, e.g. \
                     traceql('{ status = error } >> { span.db.system = \"postgres\" }')"
                        .into(),
                ));
            }
        };
        let range = match args.len() {
            1 => None,
            3 => Some((instant(&args[1], "start")?, instant(&args[2], "end")?)),
            n => {
                return Err(user(format!(
                    "traceql() takes a query, or a query, a start and an end; got {n} arguments"
                )));
            }
        };
        Ok(Arc::new(TraceqlTable {
            engine: self.engine.clone(),
            tenants: self.tenants.clone(),
            query,
            range,
        }))
    }
}

/// The spans one `traceql(...)` call matches, found when scanned.
struct TraceqlTable {
    engine: QueryEngine,
    tenants: Vec<String>,
    query: String,
    range: Option<(u64, u64)>,
}

impl std::fmt::Debug for TraceqlTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "traceql({:?})", self.query)
    }
}

#[async_trait]
impl TableProvider for TraceqlTable {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self
            .engine
            .traceql_matches(&self.tenants, &self.query, self.range)
            .await
            .map_err(|e| match e {
                EngineError::InvalidInput(m) | EngineError::NotSupported(m) => {
                    user(format!("traceql(): {m}"))
                }
                e => DataFusionError::External(Box::new(e)),
            })?;
        MemTable::try_new(schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

impl QueryEngine {
    /// The spans `query` (a spanset query) matches in `tenants`' data over `range`.
    async fn traceql_matches(
        &self,
        tenants: &[String],
        query: &str,
        range: Option<(u64, u64)>,
    ) -> Result<RecordBatch> {
        let q = allegro_traceql::compile(query)
            .map_err(|e| EngineError::InvalidInput(format!("{query:?}: {e}")))?;
        if !matches!(q.body, QueryBody::Spans(_)) {
            return Err(EngineError::InvalidInput(format!(
                "{query:?} is not a spanset query (metrics and scalar comparisons have no spans)"
            )));
        }
        let compiled = plan::compile(query, &q)?;
        let (mut traces, mut spans) = (StringBuilder::new(), StringBuilder::new());
        let mut cost = SearchMetrics::default();
        for t in tenants {
            for found in self.every_match(t, &compiled, range, &mut cost).await? {
                let trace = hex::encode(found.id.0);
                let mut seen = HashSet::new();
                for set in &found.sets {
                    for (id, _) in &set.spans {
                        if seen.insert(*id) {
                            traces.append_value(&trace);
                            spans.append_value(hex::encode(id));
                        }
                    }
                }
            }
        }
        let cols: Vec<ArrayRef> = vec![Arc::new(traces.finish()), Arc::new(spans.finish())];
        RecordBatch::try_new(schema(), cols)
            .map_err(|e| EngineError::Internal(format!("traceql() rows: {e}")))
    }
}

/// `plan` with every `traceql(...)` scan replaced by the spans it matches, found here: a
/// cluster's nodes have no engine to search with, so a query sent to one carries the matches
/// as a table of its own (two hex IDs per matching span).
pub(crate) async fn materialized(
    plan: datafusion::logical_expr::LogicalPlan,
) -> Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
    use datafusion::datasource::{provider_as_source, source_as_provider};
    use datafusion::logical_expr::LogicalPlan;

    let of = |node: &LogicalPlan| -> Option<Arc<dyn TableProvider>> {
        let LogicalPlan::TableScan(scan) = node else {
            return None;
        };
        let provider = source_as_provider(&scan.source).ok()?;
        (provider.as_ref() as &dyn std::any::Any)
            .is::<TraceqlTable>()
            .then_some(provider)
    };
    let mut calls = Vec::new();
    plan.apply_with_subqueries(|node| {
        calls.extend(of(node));
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(crate::query::df_err)?;
    if calls.is_empty() {
        return Ok(plan);
    }
    let mut found: Vec<(usize, Arc<dyn TableProvider>)> = Vec::with_capacity(calls.len());
    for provider in calls {
        let Some(t) = (provider.as_ref() as &dyn std::any::Any).downcast_ref::<TraceqlTable>()
        else {
            continue;
        };
        let batch = t
            .engine
            .traceql_matches(&t.tenants, &t.query, t.range)
            .await
            .map_err(|e| match e {
                EngineError::InvalidInput(m) | EngineError::NotSupported(m) => {
                    EngineError::InvalidInput(format!("traceql(): {m}"))
                }
                e => e,
            })?;
        let table = MemTable::try_new(schema(), vec![vec![batch]]).map_err(crate::query::df_err)?;
        found.push((
            Arc::as_ptr(&provider) as *const () as usize,
            Arc::new(table),
        ));
    }
    plan.transform_up_with_subqueries(|node| {
        let Some(provider) = of(&node) else {
            return Ok(Transformed::no(node));
        };
        let key = Arc::as_ptr(&provider) as *const () as usize;
        match (node, found.iter().find(|(k, _)| *k == key)) {
            (LogicalPlan::TableScan(mut scan), Some((_, table))) => {
                scan.source = provider_as_source(table.clone());
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            (node, _) => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
    .map_err(crate::query::df_err)
}
