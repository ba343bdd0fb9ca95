//! TraceQL on DataFusion: sources (blocks ∪ live head), translation, planning and search.

mod block_reader;
pub mod metrics;
pub mod plan;
pub mod sampled_scan;
pub mod search;
pub mod spans_table;
pub mod table;
pub mod tags;
pub mod translate;

use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::catalog::Catalog;
use crate::error::{EngineError, Result};

pub use self::table::LiveSpans;

/// Runs TraceQL over a tenant's blocks and live spans. One per process; cheap to share.
pub struct QueryEngine {
    catalog: Arc<Catalog>,
    live: Option<Arc<dyn LiveSpans>>,
    runtime: Arc<RuntimeEnv>,
}

impl QueryEngine {
    /// An engine over `catalog`'s blocks and, when given, the live head.
    pub fn new(catalog: Arc<Catalog>, live: Option<Arc<dyn LiveSpans>>) -> Result<Self> {
        // One runtime for all queries. Block scans take footers from the catalog's cache
        // (`block_reader`), not from DataFusion's metadata cache.
        let runtime = RuntimeEnvBuilder::new().build_arc().map_err(df_err)?;
        let url = ObjectStoreUrl::parse(table::STORE_URL).map_err(df_err)?;
        runtime.register_object_store(url.as_ref(), catalog.store().clone());
        Ok(Self {
            catalog,
            live,
            runtime,
        })
    }

    /// The catalog searched.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// A fresh session with Allegro's UDFs, sharing the runtime.
    pub fn session(&self) -> SessionContext {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        let ctx = SessionContext::new_with_config_rt(config, self.runtime.clone());
        allegro_udfs::register_all(&ctx);
        ctx
    }
}

/// DataFusion errors: per-trace evaluation errors are the user's (Tempo returns them as 400s);
/// everything else is ours.
pub fn df_err(e: datafusion::error::DataFusionError) -> EngineError {
    let text = e.to_string();
    if text.contains(allegro_udfs::spansets::eval::MULTIPLE_SPANSETS) {
        return EngineError::InvalidInput(allegro_udfs::spansets::eval::MULTIPLE_SPANSETS.into());
    }
    // Evaluated in the Parquet row filter, Arrow's error arrives wrapped and in Debug form.
    if text.contains("Divide by zero") || text.contains("DivideByZero") {
        return EngineError::InvalidInput("division by zero".into());
    }
    match e.find_root() {
        datafusion::error::DataFusionError::NotImplemented(m) => {
            EngineError::NotSupported(m.clone())
        }
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
