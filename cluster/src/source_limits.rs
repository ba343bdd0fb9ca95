//! Limits pushed into in-memory scans, kept as limits of their own for the executors.
//!
//! The scheduler pushes a `LIMIT` into the in-memory scan below it (`fetch`: the live head,
//! `traceql()` matches, `VALUES`), and on an executor that scan ignored it: `SELECT column1
//! FROM (VALUES (1),(2),(3),(4)) LIMIT 2` answered four rows on the cluster, the stage's
//! metrics saying `DataSourceExec: …, fetch=2` with `output_rows=4`. (The fetch survives
//! DataFusion's plan serialization, tested alone; one process keeps the `GlobalLimitExec`
//! above the scan and never relies on it.) So the scheduler's last rule puts a per-partition
//! limit of the same size above every such scan, which executes as a node of its own.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::limit::LocalLimitExec;

/// Puts a [`LocalLimitExec`] above every in-memory scan that has a fetch; see the module docs.
#[derive(Debug, Default)]
pub struct KeepSourceLimits;

impl PhysicalOptimizerRule for KeepSourceLimits {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let limited = node
                .downcast_ref::<DataSourceExec>()
                .filter(|s| {
                    s.data_source()
                        .downcast_ref::<MemorySourceConfig>()
                        .is_some()
                })
                .and_then(|s| s.fetch());
            match limited {
                Some(n) => Ok(Transformed::yes(Arc::new(LocalLimitExec::new(node, n)))),
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "keep_source_limits"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
