//! The door from a serving process to the cluster: the engine's [`Remote`] over Ballista's
//! planner, which sends a session's optimized plan to the scheduler and streams the answer
//! back from the executors.

use std::sync::Arc;

use allegro_engine::catalog::Catalog;
use allegro_engine::error::EngineError;
use allegro_engine::query::remote::Remote;
use ballista_core::config::BallistaConfig;
use ballista_core::extension::SessionConfigExt;
use ballista_core::planner::BallistaQueryPlanner;
use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec;
use datafusion_proto::protobuf::LogicalPlanNode;

use crate::logical_codec::AllegroLogicalCodec;
use crate::physical_codec::AllegroPhysicalCodec;
use crate::served_rows::{self, RowsServer, ServingPlanner};

/// `config` as every node of the cluster and its clients run queries: Allegro's codecs,
/// and two of Ballista's and DataFusion's defaults turned off.
///
/// Ballista's adaptive planner (on by default) is turned off: it plans stages with a rule
/// list of its own, not the session's, so the scheduler's [`crate::block_scan`] wrapping
/// never ran (a merged block's time slices were read whole, once per slice), and it lost a
/// `LIMIT` pushed into an in-memory scan (`SELECT column1 FROM (VALUES (1),(2),(3),(4))
/// LIMIT 2` answered four rows). The static planner plans as the session says.
///
/// File-stream work stealing is off too: it lets one partition's stream read its sibling
/// partitions' files, and on a cluster the siblings are other tasks.
pub(crate) fn for_cluster(
    config: SessionConfig,
    logical: Arc<AllegroLogicalCodec>,
    physical: Arc<AllegroPhysicalCodec>,
) -> SessionConfig {
    config
        .with_ballista_logical_extension_codec(logical)
        .with_ballista_physical_extension_codec(physical)
        .with_ballista_adaptive_query_planner(false)
        .set_bool(
            "datafusion.execution.enable_file_stream_work_stealing",
            false,
        )
}

/// A Ballista cluster, reached through its scheduler.
#[derive(Debug, Clone)]
pub struct Cluster {
    scheduler_url: String,
    catalog: Arc<Catalog>,
    logical: Arc<AllegroLogicalCodec>,
    physical: Arc<AllegroPhysicalCodec>,
    /// Where executors fetch this process's in-memory rows; without it they travel in plans.
    rows: Option<Arc<RowsServer>>,
}

impl Cluster {
    /// The cluster whose scheduler listens at `host:port`; plans name blocks of `catalog`.
    pub fn new(host: &str, port: u16, catalog: Arc<Catalog>) -> Self {
        Self {
            scheduler_url: format!("df://{host}:{port}"),
            logical: Arc::new(AllegroLogicalCodec::new(Some(catalog.clone()))),
            physical: Arc::new(AllegroPhysicalCodec::new(Some(catalog.clone()))),
            catalog,
            rows: None,
        }
    }

    /// This cluster, its executors fetching the rows this process holds in memory (the live
    /// head, `traceql()` matches) from `rows` instead of receiving them inside plans.
    pub fn serving_rows(mut self, rows: Arc<RowsServer>) -> Self {
        let codec = AllegroLogicalCodec::new(Some(self.catalog.clone())).serving_rows(rows.clone());
        self.logical = Arc::new(codec);
        self.rows = Some(rows);
        self
    }
}

impl Cluster {
    /// The bytes `plan` travels to the scheduler as (Ballista encodes it with this codec; its
    /// tables of rows served, when this process serves them, and released again).
    pub fn plan_bytes(&self, plan: &LogicalPlan) -> Result<usize, EngineError> {
        let encode = || {
            logical_plan_to_bytes_with_extension_codec(plan, self.logical.as_ref())
                .map(|b| b.len())
                .map_err(|e| EngineError::Internal(format!("encoding a plan: {e}")))
        };
        match &self.rows {
            Some(rows) => served_rows::scoped(rows, encode).0,
            None => encode(),
        }
    }

    /// Where executors fetch this process's in-memory rows, when they do.
    pub fn rows_server(&self) -> Option<&Arc<RowsServer>> {
        self.rows.as_ref()
    }
}

impl Remote for Cluster {
    fn configure(&self, config: SessionConfig) -> SessionConfig {
        for_cluster(
            config.upgrade_for_ballista(),
            self.logical.clone(),
            self.physical.clone(),
        )
    }

    fn planner(&self) -> Arc<dyn QueryPlanner + Send + Sync> {
        let ballista = Arc::new(BallistaQueryPlanner::<LogicalPlanNode>::with_extension(
            self.scheduler_url.clone(),
            BallistaConfig::default(),
            self.logical.clone(),
        ));
        match &self.rows {
            Some(rows) => Arc::new(ServingPlanner::new(ballista, rows.clone())),
            None => ballista,
        }
    }

    fn failure(&self, e: DataFusionError) -> EngineError {
        crate::failure::classify(e)
    }
}
