//! `allegro scheduler`: Ballista's scheduler with Allegro's codecs, functions and block scans.
//! It plans the queries sent to it: decodes the tables (reading the blocks' metas from the
//! shared store), plans scans as one process does, wraps them for the executors
//! ([`crate::block_scan`]) and cuts the plan into stages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use allegro_engine::catalog::Catalog;
use ballista_core::extension::SessionConfigExt;
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::{FunctionRegistry, SessionStateBuilder};
use datafusion::prelude::SessionConfig;

use crate::block_scan::WrapBlockScans;
use crate::client::for_cluster;
use crate::error::{ClusterError, Result};
use crate::logical_codec::AllegroLogicalCodec;
use crate::physical_codec::AllegroPhysicalCodec;
use crate::runtime;
use crate::small_join_sides::BroadcastSmallJoinSides;
use crate::source_limits::KeepSourceLimits;

/// What a scheduler needs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where it listens for clients and executors (gRPC).
    pub listen: SocketAddr,
    /// The host name executors and clients reach it by.
    pub external_host: String,
    /// How long an executor may go without a heartbeat before it is taken for lost and its
    /// tasks run again elsewhere (see [`ExecutorOptions::heartbeat`]).
    ///
    /// [`ExecutorOptions::heartbeat`]: crate::executor::ExecutorOptions::heartbeat
    pub executor_timeout: Duration,
}

/// Runs a scheduler over `catalog`'s store until the process ends.
pub async fn run_scheduler(opts: SchedulerOptions, catalog: Arc<Catalog>) -> Result<()> {
    let logical = Arc::new(AllegroLogicalCodec::new(Some(catalog.clone())));
    let physical = Arc::new(AllegroPhysicalCodec::new(Some(catalog.clone())));
    let (l, p) = (logical.clone(), physical.clone());
    let config_producer =
        Arc::new(move || for_cluster(SessionConfig::new_with_ballista(), l.clone(), p.clone()));
    let store = catalog.clone();
    let session_builder = Arc::new(move |config: SessionConfig| {
        let functions = crate::functions::registry();
        let mut state = SessionStateBuilder::new()
            .with_default_features()
            .with_config(config)
            .with_runtime_env(runtime::with_store(&store, None)?)
            .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
            .with_physical_optimizer_rules(BroadcastSmallJoinSides::in_default_rules())
            .with_physical_optimizer_rule(Arc::new(WrapBlockScans))
            .with_physical_optimizer_rule(Arc::new(KeepSourceLimits))
            .build();
        // Added to DataFusion's own, which the state already holds.
        for f in functions.scalar_functions.into_values() {
            state.register_udf(f)?;
        }
        for f in functions.aggregate_functions.into_values() {
            state.register_udaf(f)?;
        }
        Ok(state)
    });
    // Ballista's default waits 180 s for a heartbeat: a query whose executor was killed
    // would hang that long before its tasks ran again elsewhere.
    let timeout = opts.executor_timeout.as_secs().max(1);
    let config = SchedulerConfig {
        bind_host: opts.listen.ip().to_string(),
        bind_port: opts.listen.port(),
        external_host: opts.external_host.clone(),
        override_config_producer: Some(config_producer),
        override_session_builder: Some(session_builder),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        executor_timeout_seconds: timeout,
        // Checked a few times per timeout, so a lost executor is noticed soon after it.
        expire_dead_executor_interval_seconds: (timeout / 4).max(1),
        no_executors_grace_period_seconds: timeout,
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ClusterError::ballista)?;
    start_server(cluster, opts.listen, Arc::new(config))
        .await
        .map_err(ClusterError::ballista)
}
