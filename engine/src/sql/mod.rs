//! SQL over the span tables: the door for ad-hoc analytics and for debugging traces with SQL.
//!
//! A query runs in a fresh DataFusion session per request with the tenant's tables
//! ([`tables`]): `spans`, `events`, `links`, `traces`. The text is checked first ([`rewrite`]):
//! one read-only query, attribute functions turned into view columns. Planning uses
//! DataFusion's `SQLOptions` with DDL, DML and statements off as a second wall, the session has
//! no file-reading table functions, and the query runs under the tenant's query budget (memory
//! pool, timeout, concurrency) like every other query.

mod enum_literals;
mod id_joins;
mod id_literals;
mod predicate_rule;
pub mod rewrite;
mod tables;
mod traceql_fn;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{Expr, LogicalPlan, cast};

use crate::error::{EngineError, Result};
use crate::query::{QueryEngine, df_err};

/// A SQL answer: its schema and rows (at most the row limit).
#[derive(Debug, Clone)]
pub struct SqlAnswer {
    /// Column names and types.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// True when rows past the limit were left out.
    pub truncated: bool,
}

/// DataFusion's planning errors are the user's (an unknown column or table, a type mismatch),
/// and so are errors evaluating the query's own expressions (a cast that fails, an overflow):
/// the tables' views are tested, so what fails while running is what the query asked.
fn sql_err(e: DataFusionError) -> EngineError {
    match e.find_root() {
        DataFusionError::ArrowError(a, _) => EngineError::InvalidInput(a.to_string()),
        DataFusionError::Execution(m) => EngineError::InvalidInput(m.clone()),
        DataFusionError::Plan(m) | DataFusionError::SQL(_, Some(m)) => {
            EngineError::InvalidInput(m.clone())
        }
        DataFusionError::SchemaError(s, _) => EngineError::InvalidInput(s.to_string()),
        DataFusionError::SQL(p, None) => EngineError::InvalidInput(p.to_string()),
        _ => df_err(e),
    }
}

/// `t` with every string (binary) view, nested ones too, as plain `Utf8` (`Binary`).
fn plain(t: &DataType) -> DataType {
    let field = |f: &FieldRef| Arc::new(f.as_ref().clone().with_data_type(plain(f.data_type())));
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(field(f)),
        DataType::LargeList(f) => DataType::LargeList(field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(field(f), *n),
        DataType::Struct(fs) => DataType::Struct(fs.iter().map(field).collect()),
        other => other.clone(),
    }
}

/// `df` answering with plain strings where the session computed views: clients, catalogs and
/// prepared statements see one stable type whatever the plan read (EXPLAIN as it is).
fn plain_strings(df: DataFrame) -> Result<DataFrame> {
    if matches!(
        df.logical_plan(),
        LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
    ) || df
        .schema()
        .fields()
        .iter()
        .all(|f| plain(f.data_type()) == *f.data_type())
    {
        return Ok(df);
    }
    let columns: Vec<Expr> = df
        .schema()
        .iter()
        .map(|(q, f)| {
            let c = Expr::Column(Column::new(q.cloned(), f.name()));
            let t = plain(f.data_type());
            if t == *f.data_type() {
                c
            } else {
                cast(c, t).alias_qualified(q.cloned(), f.name())
            }
        })
        .collect();
    df.select(columns).map_err(sql_err)
}

impl QueryEngine {
    /// Runs one read-only SQL query over `tenants`' tables (several tenants: their spans
    /// together); at most `max_rows` rows come back.
    pub async fn sql(&self, tenants: &[String], sql: &str, max_rows: usize) -> Result<SqlAnswer> {
        let (ts, sql) = (tenants.to_vec(), sql.to_string());
        self.budgeted(tenants, move |e| {
            let (ts, sql) = (ts.clone(), sql.clone());
            async move { e.sql_now(&ts, &sql, max_rows).await }
        })
        .await
    }

    /// The tables SQL sees (`spans`, `traces`, `events`, `links`) with their columns, as
    /// catalog listings (Flight SQL's `GetTables`) show them.
    pub async fn sql_tables(&self, tenants: &[String]) -> Result<Vec<(String, SchemaRef)>> {
        let ctx = self.sql_session(tenants, &[]).await?;
        let mut out = Vec::new();
        for name in tables::TABLES {
            let t = ctx.table_provider(name).await.map_err(df_err)?;
            let fields: Vec<Field> = t
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_data_type(plain(f.data_type())))
                .collect();
            out.push((name.to_string(), Arc::new(Schema::new(fields))));
        }
        Ok(out)
    }

    /// A session with `tenants`' tables, a column per attribute in `attrs`, and `traceql()`.
    async fn sql_session(
        &self,
        tenants: &[String],
        attrs: &[rewrite::AttrRef],
    ) -> Result<datafusion::prelude::SessionContext> {
        let Some((first, others)) = tenants.split_first() else {
            return Err(EngineError::InvalidInput("no tenant to query".into()));
        };
        let mut src = self.sources(first, None).await?;
        for t in others {
            src.tables.extend(self.sources(t, None).await?.tables);
        }
        // Analytic SQL mostly keeps many rows (`kind = 'server'`: a third of all spans, in
        // runs of one or two): decoding whole pages and filtering them after costs less than
        // the decoder's row selection, which took 20% of such a query (perf, `allegro-bench
        // sql`). Row groups and pages are still pruned by the same predicates.
        //
        // A join builds one hash table for all partitions when its smaller side is under 32 MiB
        // (DataFusion's default: 1 MiB): otherwise both sides are hash-partitioned first, and
        // for `traceql(…) JOIN spans` (42k matches, 2.3 MB) that shuffled all 10M spans, half
        // the query's time.
        let ctx = self.session_on(
            crate::query::Optimizer::Full,
            |c| {
                c.set_bool("datafusion.execution.parquet.pushdown_filters", false)
                    .set_usize(
                        "datafusion.optimizer.hash_join_single_partition_threshold",
                        32 << 20,
                    )
                    .set_usize(
                        "datafusion.optimizer.hash_join_single_partition_threshold_rows",
                        1 << 20,
                    )
            },
            self.remote.as_ref(),
        );
        ctx.add_optimizer_rule(id_literals::rule());
        ctx.add_optimizer_rule(enum_literals::rule());
        ctx.add_optimizer_rule(id_joins::rule());
        tables::register(&ctx, &src, attrs).await?;
        ctx.register_udtf(
            "traceql",
            Arc::new(traceql_fn::TraceqlFunction {
                engine: self.clone(),
                tenants: tenants.to_vec(),
            }),
        );
        Ok(ctx)
    }

    /// The columns `sql` would answer with over `tenants`' tables, from planning alone (Flight
    /// SQL's prepared statements describe their result before running).
    pub async fn sql_schema(&self, tenants: &[String], sql: &str) -> Result<SchemaRef> {
        Ok(self.sql_frame(tenants, sql).await?.schema().inner().clone())
    }

    /// `sql` checked and planned over `tenants`' tables.
    async fn sql_frame(&self, tenants: &[String], sql: &str) -> Result<DataFrame> {
        let (text, attrs) = rewrite::prepare(sql)?;
        let ctx = self.sql_session(tenants, &attrs).await?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = ctx
            .sql_with_options(&text, options)
            .await
            .map_err(sql_err)?;
        plain_strings(df)
    }

    /// `sql` planned as it runs: checked, planned, `traceql()` evaluated when the plan goes
    /// to a cluster, one row past `max_rows` asked for (that row tells a cut answer from one
    /// that just fits; EXPLAIN stays the plan's root).
    async fn sql_to_run(
        &self,
        tenants: &[String],
        sql: &str,
        max_rows: usize,
    ) -> Result<DataFrame> {
        let mut df = self.sql_frame(tenants, sql).await?;
        if self.remote.is_some() {
            let (state, plan) = df.into_parts();
            df = DataFrame::new(state, traceql_fn::materialized(plan).await?);
        }
        if !matches!(
            df.logical_plan(),
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
        ) {
            df = df
                .limit(0, Some(max_rows.saturating_add(1)))
                .map_err(sql_err)?;
        }
        Ok(df)
    }

    /// The optimized logical plan `sql` runs as with at most `max_rows` rows (with a cluster:
    /// the plan sent to it), for measuring what a plan costs to ship.
    pub async fn sql_plan(
        &self,
        tenants: &[String],
        sql: &str,
        max_rows: usize,
    ) -> Result<LogicalPlan> {
        let df = self.sql_to_run(tenants, sql, max_rows).await?;
        df.into_optimized_plan().map_err(sql_err)
    }

    async fn sql_now(&self, tenants: &[String], sql: &str, max_rows: usize) -> Result<SqlAnswer> {
        let df = self.sql_to_run(tenants, sql, max_rows).await?;
        let schema = df.schema().inner().clone();
        let mut batches = df.collect().await.map_err(|e| match &self.remote {
            Some(r) => r.failure(e),
            None => sql_err(e),
        })?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let truncated = rows > max_rows;
        if truncated {
            let mut keep = max_rows;
            for b in batches.iter_mut() {
                let n = b.num_rows().min(keep);
                *b = b.slice(0, n);
                keep -= n;
            }
        }
        Ok(SqlAnswer {
            schema,
            batches,
            truncated,
        })
    }
}
