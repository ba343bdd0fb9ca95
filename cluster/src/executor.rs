//! `allegro executor`: Ballista's executor with Allegro's codecs and functions, reading blocks
//! straight from the shared store through Allegro's block reader (footer and page caches, page
//! checksums verified).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use allegro_engine::catalog::Catalog;
use ballista_core::extension::SessionConfigExt;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use datafusion::prelude::SessionConfig;

use crate::client::for_cluster;
use crate::error::{ClusterError, Result};
use crate::logical_codec::AllegroLogicalCodec;
use crate::physical_codec::AllegroPhysicalCodec;
use crate::runtime;

/// What an executor needs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The address it binds (flight service for results and shuffles).
    pub bind_host: String,
    /// The host name others reach it by.
    pub external_host: Option<String>,
    /// Its Arrow Flight port (results and shuffle data).
    pub flight_port: u16,
    /// Its gRPC port (tasks pushed by the scheduler).
    pub grpc_port: u16,
    /// The scheduler's host and port.
    pub scheduler: (String, u16),
    /// Tasks run at once (0: one per core).
    pub concurrent_tasks: usize,
    /// Where shuffle files and spills go (a temporary directory when not given).
    pub work_dir: Option<PathBuf>,
    /// The executor's memory for queries, split across its tasks (`None`: Ballista's default
    /// share of the machine's memory).
    pub memory_bytes: Option<u64>,
    /// How often it tells the scheduler it is alive; well under the scheduler's
    /// [`crate::scheduler::SchedulerOptions::executor_timeout`].
    pub heartbeat: Duration,
}

/// The task slots of an executor asked for `requested` (0: one per core).
pub fn task_slots(requested: usize) -> usize {
    match requested {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Runs an executor over `catalog`'s store until the process ends.
pub async fn run_executor(opts: ExecutorOptions, catalog: Arc<Catalog>) -> Result<()> {
    let logical = Arc::new(AllegroLogicalCodec::new(Some(catalog.clone())));
    let physical = Arc::new(AllegroPhysicalCodec::new(Some(catalog.clone())));
    let (l, p) = (logical.clone(), physical.clone());
    let config_producer =
        Arc::new(move || for_cluster(SessionConfig::new_with_ballista(), l.clone(), p.clone()));
    let work_dir = opts.work_dir.clone();
    let store = catalog.clone();
    let runtime_producer =
        Arc::new(move |_: &SessionConfig| runtime::with_store(&store, work_dir.as_deref()));
    let config = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.flight_port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.0.clone(),
        scheduler_port: opts.scheduler.1,
        vcores: task_slots(opts.concurrent_tasks),
        work_dir: opts
            .work_dir
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned()),
        memory_pool_size: opts.memory_bytes,
        print_thread_info: false,
        override_function_registry: Some(Arc::new(crate::functions::registry())),
        override_config_producer: Some(config_producer),
        override_runtime_producer: Some(runtime_producer),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        executor_heartbeat_interval_seconds: opts.heartbeat.as_secs().max(1),
        ..Default::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(ClusterError::ballista)
}
