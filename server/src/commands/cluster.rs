//! `allegro scheduler` and `allegro executor`: the two processes of a Ballista cluster, over
//! the block store the config names (docs/scale-out.md). Serving processes send SQL to the
//! scheduler when `query.ballista.scheduler` is set.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use super::open_catalog;
use crate::config::{Config, parse_duration};

/// `text` as a duration of whole seconds, at least one (Ballista counts liveness in seconds).
fn seconds(flag: &str, text: &str) -> Result<Duration, String> {
    let d = parse_duration(text).map_err(|e| format!("{flag}: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("{flag} {text:?}: at least 1s"));
    }
    Ok(d)
}

/// Options of `allegro scheduler`.
#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Where it listens for clients and executors (gRPC).
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub listen: SocketAddr,
    /// The host name executors and clients reach it by.
    #[arg(long, default_value = "localhost")]
    pub external_host: String,
    /// How long an executor may miss heartbeats before its tasks run again elsewhere.
    #[arg(long, default_value = "30s")]
    pub executor_timeout: String,
}

/// Options of `allegro executor`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    /// The scheduler's `host:port`.
    #[arg(long, default_value = "localhost:50050")]
    pub scheduler: String,
    /// The address it binds.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_host: String,
    /// The host name others reach it by (default: the bind address).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Its Arrow Flight port (results and shuffle data).
    #[arg(long, default_value_t = 50051)]
    pub flight_port: u16,
    /// Its gRPC port (tasks from the scheduler).
    #[arg(long, default_value_t = 50052)]
    pub grpc_port: u16,
    /// Tasks run at once (0: one per core); at least 2 (docs/scale-out.md, "Known problems").
    #[arg(long, default_value_t = 0)]
    pub concurrent_tasks: usize,
    /// Where shuffle files and spills go (default: a temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Memory for queries, in bytes, split across tasks (default: Ballista's share of the
    /// machine's memory).
    #[arg(long)]
    pub memory_bytes: Option<u64>,
    /// How often it tells the scheduler it is alive (well under the scheduler's
    /// `--executor-timeout`).
    #[arg(long, default_value = "5s")]
    pub heartbeat: String,
}

/// Runs a scheduler until the process is stopped.
pub async fn scheduler(cfg: Config, a: SchedulerArgs) -> Result<(), String> {
    let catalog = open_catalog(&cfg)?;
    let opts = allegro_cluster::SchedulerOptions {
        listen: a.listen,
        external_host: a.external_host,
        executor_timeout: seconds("--executor-timeout", &a.executor_timeout)?,
    };
    allegro_cluster::run_scheduler(opts, catalog)
        .await
        .map_err(|e| e.to_string())
}

/// Runs an executor until the process is stopped.
pub async fn executor(cfg: Config, a: ExecutorArgs) -> Result<(), String> {
    let catalog = open_catalog(&cfg)?;
    let (host, port) = a
        .scheduler
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("--scheduler {:?} is not host:port", a.scheduler))?;
    let opts = allegro_cluster::ExecutorOptions {
        bind_host: a.bind_host,
        external_host: a.external_host,
        flight_port: a.flight_port,
        grpc_port: a.grpc_port,
        scheduler: (host, port),
        concurrent_tasks: a.concurrent_tasks,
        work_dir: a.work_dir,
        memory_bytes: a.memory_bytes,
        heartbeat: seconds("--heartbeat", &a.heartbeat)?,
    };
    allegro_cluster::run_executor(opts, catalog)
        .await
        .map_err(|e| e.to_string())
}
