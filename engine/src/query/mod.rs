//! TraceQL on DataFusion: sources (blocks ∪ live head), translation, planning and search.

mod block_reader;
pub mod executor;
pub mod head_traces;
pub mod metrics;
pub mod plan;
pub mod remote;
pub mod sampled_scan;
pub mod search;
pub mod sources;
pub mod spans_table;
pub(crate) mod split_traces;
pub mod table;
pub mod tag_requests;
pub mod tags;
pub mod trace_by_id;
pub mod translate;

use std::sync::{Arc, LazyLock};

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::optimizer::OptimizerRule;
use datafusion::optimizer::common_subexpr_eliminate::CommonSubexprEliminate;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};
use crate::query::executor::QueryExecutor;

pub use self::executor::{QueryLimits, TenantQueryLimits};
pub use self::table::{LiveBatches, LiveSpans};

/// Receives the partial answers of a streamed query while it runs (search, range and instant
/// metrics); the whole answer is what the query returns.
pub type Partial<T> = Arc<dyn Fn(T) + Send + Sync>;

/// Runs TraceQL over a tenant's blocks and live spans. One per process; cheap to clone (the
/// clones share everything).
#[derive(Clone)]
pub struct QueryEngine {
    catalog: Arc<Catalog>,
    live: Option<Arc<dyn LiveSpans>>,
    runtime: Arc<RuntimeEnv>,
    executor: Arc<QueryExecutor>,
    /// Distinct values of an attribute per block, for tag-value requests without conditions;
    /// `None` for a block holding too many to keep.
    block_values: Arc<moka::sync::Cache<(uuid::Uuid, String), tags::BlockValues>>,
    /// The cluster SQL runs on, when one is configured.
    pub(crate) remote: Option<Arc<dyn remote::Remote>>,
}

impl QueryEngine {
    /// An engine over `catalog`'s blocks and, when given, the live head, with default budgets.
    pub fn new(catalog: Arc<Catalog>, live: Option<Arc<dyn LiveSpans>>) -> Result<Self> {
        Self::with_limits(catalog, live, QueryLimits::default())
    }

    /// An engine whose queries run under `limits` ([`executor`]).
    pub fn with_limits(
        catalog: Arc<Catalog>,
        live: Option<Arc<dyn LiveSpans>>,
        limits: QueryLimits,
    ) -> Result<Self> {
        // One DataFusion runtime for all queries; each query swaps in a memory pool of its
        // own ([`QueryEngine::budgeted`]). Block scans take footers from the catalog's cache
        // (`block_reader`), not from DataFusion's metadata cache.
        let runtime = RuntimeEnvBuilder::new().build_arc().map_err(df_err)?;
        let url = ObjectStoreUrl::parse(table::STORE_URL).map_err(df_err)?;
        runtime.register_object_store(url.as_ref(), catalog.store().clone());
        Ok(Self {
            catalog,
            live,
            runtime,
            executor: Arc::new(QueryExecutor::start(limits)?),
            block_values: Arc::new(
                moka::sync::Cache::builder()
                    .weigher(|k: &(uuid::Uuid, String), v: &tags::BlockValues| {
                        let values = v.iter().flat_map(|v| v.iter());
                        let bytes =
                            64 + k.1.len() + values.map(|t| 32 + t.value.len()).sum::<usize>();
                        u32::try_from(bytes).unwrap_or(u32::MAX)
                    })
                    .max_capacity(64 << 20)
                    .build(),
            ),
            remote: None,
        })
    }

    /// The same engine running SQL on `remote` ([`remote`]).
    pub fn with_remote(self, remote: Arc<dyn remote::Remote>) -> Self {
        Self {
            remote: Some(remote),
            ..self
        }
    }

    /// Whether SQL runs on a cluster.
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// The budgets queries run under.
    pub fn limits(&self) -> &QueryLimits {
        self.executor.limits()
    }

    /// Queries running and how queries ended, in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        self.executor.render_metrics(out);
        let _ = writeln!(
            out,
            "# HELP allegro_blocks_quarantined Damaged blocks set aside (skipped by queries) per \
             tenant.\n# TYPE allegro_blocks_quarantined gauge"
        );
        for (tenant, n) in self.catalog.quarantined_counts() {
            let tenant = tenant.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(out, "allegro_blocks_quarantined{{tenant=\"{tenant}\"}} {n}");
        }
    }

    /// Runs `query` on the query threads under the budget of `tenants`: it gets a clone of
    /// this engine whose sessions draw on one memory pool of the query's own.
    pub(crate) async fn budgeted<T, F, Fut>(&self, tenants: &[String], query: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(QueryEngine) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let mut env = (*self.runtime).clone();
        env.memory_pool = self.executor.memory_pool(tenants);
        let scoped = QueryEngine {
            runtime: Arc::new(env),
            ..self.clone()
        };
        let mut listed_again = false;
        let mut damaged = 0;
        loop {
            match self.executor.run(tenants, query(scoped.clone())).await {
                // A block listed before another process (or this one) deleted it: list again
                // and run once more over what replaced it.
                Err(e) if e.missing_object().is_some() && !listed_again => {
                    tracing::info!(error = %e, "a block went away under a query; listing again");
                    listed_again = true;
                    for t in tenants {
                        self.catalog.forget(t).await;
                    }
                }
                // A damaged block: quarantined, and the query runs again without it (its
                // answer then says it is partial: [`QueryEngine::damage_notice`]).
                Err(e)
                    if damaged < crate::catalog::MAX_DAMAGED_PER_QUERY
                        && self.catalog.quarantine_damaged(&e) =>
                {
                    damaged += 1;
                }
                r => return r,
            }
        }
    }

    /// What an answer over `tenants` lacks because damaged blocks are quarantined: `None` when
    /// nothing is, else a message for the answer's partial status.
    pub fn damage_notice(&self, tenants: &[String]) -> Option<String> {
        let skipped: Vec<String> = tenants
            .iter()
            .flat_map(|t| self.catalog.quarantined(t))
            .map(|q| format!("{}/{} ({})", q.tenant, q.block, q.object))
            .collect();
        (!skipped.is_empty()).then(|| {
            format!(
                "partial answer: {} damaged block(s) quarantined and skipped: {}",
                skipped.len(),
                skipped.join(", ")
            )
        })
    }

    /// The catalog searched.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// A fresh session for TraceQL plans with Allegro's UDFs, sharing the runtime.
    pub fn session(&self) -> SessionContext {
        self.session_with(Optimizer::TraceQl, |c| c)
    }

    /// A session with `optimizer` and `tune` applied to its configuration.
    pub(crate) fn session_with(
        &self,
        optimizer: Optimizer,
        tune: impl FnOnce(SessionConfig) -> SessionConfig,
    ) -> SessionContext {
        self.session_on(optimizer, tune, None)
    }

    /// A session as [`QueryEngine::session_with`] makes, whose plans run on `remote` if given.
    pub(crate) fn session_on(
        &self,
        optimizer: Optimizer,
        tune: impl FnOnce(SessionConfig) -> SessionConfig,
        remote: Option<&Arc<dyn remote::Remote>>,
    ) -> SessionContext {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        let config = match optimizer {
            Optimizer::Full => config,
            Optimizer::TraceQl => config.set_usize("datafusion.optimizer.max_passes", 1),
        };
        let config = match remote {
            Some(r) => r.configure(tune(config)),
            None => tune(config),
        };
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .with_default_features();
        let state = match remote {
            Some(r) => state.with_query_planner(r.planner()),
            None => state,
        };
        let state = match optimizer {
            Optimizer::Full => state,
            Optimizer::TraceQl => state.with_optimizer_rules(TRACEQL_RULES.clone()),
        };
        let ctx = SessionContext::new_with_state(state.build());
        allegro_udfs::register_all(&ctx);
        ctx
    }
}

/// Which logical optimizer a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Optimizer {
    /// DataFusion's, whole: users' SQL can hold anything.
    Full,
    /// [`TRACEQL_RULES`] in one pass: TraceQL's plans are built by Allegro.
    TraceQl,
}

/// The logical optimizer rules TraceQL plans are optimized with: DataFusion's, less common
/// sub-expression elimination, and (set with them) one pass instead of three.
///
/// Why: on a small store, planning was most of a query's time, and the logical optimizer most
/// of planning, with common sub-expression elimination a third of that (it hashes every
/// expression of the plan, and the histogram and `compare()` plans are wide). TraceQL plans are
/// built here, so they hold no repeated expression for it to find, and the rules that matter
/// for them (filter and projection pushdown into the scans, simplification) do their work in
/// the first pass. Measured on 5,007 spans (`allegro-bench metrics`, docs/benchmarks.md):
/// planning of the Drilldown queries 0.8–3.3 ms → 0.7–2.0 ms, their p50 2.4–6.6 ms → 2.3–4.5
/// ms; on 1M spans over 6 h no query got slower. Built once: every query's session shares
/// the rules, which hold no state.
static TRACEQL_RULES: LazyLock<Vec<Arc<dyn OptimizerRule + Send + Sync>>> = LazyLock::new(|| {
    let skip = CommonSubexprEliminate::new();
    datafusion::optimizer::Optimizer::new()
        .rules
        .into_iter()
        .filter(|r| r.name() != skip.name())
        .collect()
});

/// DataFusion errors: per-trace evaluation errors are the user's (Tempo returns them as 400s);
/// everything else is ours.
pub fn df_err(e: datafusion::error::DataFusionError) -> EngineError {
    if let Some(user) = allegro_udfs::spansets::EvalError::find(&e) {
        return EngineError::InvalidInput(user.0.clone());
    }
    if let Some(path) = EngineError::missing_in(&e) {
        return EngineError::BlockGone { path };
    }
    if let Some(damaged) = EngineError::damaged_in(&e) {
        return damaged;
    }
    let text = e.to_string();
    // Evaluated in the Parquet row filter, Arrow's error arrives wrapped and in Debug form.
    if text.contains("Divide by zero") || text.contains("DivideByZero") {
        return EngineError::InvalidInput("division by zero".into());
    }
    match e.find_root() {
        datafusion::error::DataFusionError::NotImplemented(m) => {
            EngineError::NotSupported(m.clone())
        }
        datafusion::error::DataFusionError::ResourcesExhausted(m) => EngineError::Budget {
            limit: "overrides.read.max_memory_per_query_bytes".into(),
            message: format!(
                "the query needs more memory than its budget allows; narrow its time range or \
                 its conditions ({m})"
            ),
        },
        _ => EngineError::Internal(format!("datafusion: {text}")),
    }
}

/// Executes `df`: its batches, and the bytes its Parquet scans read (DataFusion's
/// `bytes_scanned`, summed over the plan).
pub(crate) async fn collect_counted(
    ctx: &SessionContext,
    df: datafusion::dataframe::DataFrame,
) -> Result<(Vec<arrow::record_batch::RecordBatch>, u64)> {
    let plan = df.create_physical_plan().await.map_err(df_err)?;
    let batches = datafusion::physical_plan::collect(plan.clone(), ctx.task_ctx())
        .await
        .map_err(df_err)?;
    Ok((batches, bytes_scanned(&plan)))
}

pub(crate) fn bytes_scanned(plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>) -> u64 {
    let mine = plan
        .metrics()
        .and_then(|m| m.sum_by_name("bytes_scanned"))
        .map_or(0, |v| v.as_usize() as u64);
    mine + plan
        .children()
        .iter()
        .map(|c| bytes_scanned(c))
        .sum::<u64>()
}
