//! A whole cluster inside one process: a scheduler and executors as tasks of the caller's
//! runtime, speaking gRPC and Arrow Flight to each other over loopback and shuffling through
//! files, exactly as separate processes do. Tests answer golden files through it, and the
//! benchmark measures what distribution costs (`allegro-bench cluster`) without machines to
//! set up; `allegro scheduler` and `allegro executor` are the same two calls in processes of
//! their own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_engine::catalog::Catalog;
use allegro_engine::query::QueryEngine;
use tokio::task::JoinHandle;

use crate::error::{ClusterError, Result};
use crate::served_rows::RowsServer;
use crate::{Cluster, ExecutorOptions, SchedulerOptions, run_executor, run_scheduler};

/// What an in-process cluster is made of.
pub struct InProcessOptions {
    /// Executors to start.
    pub executors: usize,
    /// Tasks each executor runs at once.
    pub tasks_per_executor: usize,
    /// Executors' memory for queries, each.
    pub memory_bytes: Option<u64>,
    /// Under it, each executor's work directory (`executor-N`): shuffle files and spills.
    pub work_dir: PathBuf,
}

/// A running in-process cluster; its nodes stop when it is dropped.
pub struct InProcessCluster {
    /// The scheduler's port on 127.0.0.1.
    pub scheduler_port: u16,
    /// Each executor's work directory.
    pub work_dirs: Vec<PathBuf>,
    nodes: Vec<JoinHandle<()>>,
}

/// Waits until something accepts connections on `port` (30 s at most).
async fn listening(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            return Err(ClusterError::Ballista(format!(
                "{what} did not listen on port {port} within 30 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Runs `node` as a task of the caller's runtime, logging why it stopped if it does.
fn spawn_node(
    what: &'static str,
    node: impl Future<Output = Result<()>> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = node.await {
            tracing::error!(error = %e, "in-process {what} stopped");
        }
    })
}

impl InProcessCluster {
    /// Starts a scheduler and `opts.executors` executors, each node with its own catalog from
    /// `catalog` (their own caches, as separate processes have), on ports from `port` (each
    /// call a free loopback port).
    pub async fn start(
        opts: InProcessOptions,
        catalog: impl Fn() -> Arc<Catalog>,
        mut port: impl FnMut() -> u16,
    ) -> Result<Self> {
        let scheduler_port = port();
        let mut cluster = Self {
            scheduler_port,
            work_dirs: Vec::new(),
            nodes: Vec::new(),
        };
        let scheduler = SchedulerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], scheduler_port)),
            external_host: "127.0.0.1".into(),
            executor_timeout: Duration::from_secs(30),
        };
        cluster
            .nodes
            .push(spawn_node("scheduler", run_scheduler(scheduler, catalog())));
        listening(scheduler_port, "the scheduler").await?;
        for i in 0..opts.executors {
            let work_dir = opts.work_dir.join(format!("executor-{i}"));
            std::fs::create_dir_all(&work_dir)
                .map_err(|e| ClusterError::Ballista(format!("{}: {e}", work_dir.display())))?;
            let (flight_port, grpc_port) = (port(), port());
            let executor = ExecutorOptions {
                bind_host: "127.0.0.1".into(),
                external_host: Some("127.0.0.1".into()),
                flight_port,
                grpc_port,
                scheduler: ("127.0.0.1".into(), scheduler_port),
                concurrent_tasks: opts.tasks_per_executor,
                work_dir: Some(work_dir.clone()),
                memory_bytes: opts.memory_bytes,
                heartbeat: Duration::from_secs(5),
            };
            cluster
                .nodes
                .push(spawn_node("executor", run_executor(executor, catalog())));
            listening(flight_port, "an executor").await?;
            cluster.work_dirs.push(work_dir);
        }
        Ok(cluster)
    }

    /// A client of this cluster whose plans name blocks of `catalog`. Its executors fetch
    /// every table of rows from a rows server of its own on loopback, however small, so tests
    /// through it take that path; where that server cannot start, rows travel in plans.
    pub fn client(&self, catalog: Arc<Catalog>) -> Cluster {
        let cluster = Cluster::new("127.0.0.1", self.scheduler_port, catalog);
        match RowsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), None, 0) {
            Ok(rows) => cluster.serving_rows(rows),
            Err(e) => {
                tracing::warn!(error = %e, "rows travel inside plans");
                cluster
            }
        }
    }

    /// `engine` sending its SQL to this cluster.
    pub fn remote(&self, engine: QueryEngine) -> QueryEngine {
        let cluster = self.client(engine.catalog().clone());
        engine.with_remote(Arc::new(cluster))
    }

    /// Bytes under the executors' work directories in job directories not in `before`, and
    /// every job directory now: what queries run since `before` was taken shuffled.
    pub fn shuffled_since(&self, before: &[PathBuf]) -> (u64, Vec<PathBuf>) {
        let mut now = Vec::new();
        let mut bytes = 0;
        for d in &self.work_dirs {
            for job in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = job.path();
                if !before.contains(&p) {
                    bytes += bytes_under(&p);
                }
                now.push(p);
            }
        }
        (bytes, now)
    }
}

/// Bytes of the files under `p`.
fn bytes_under(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| bytes_under(&e.path()))
            .sum(),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

impl Drop for InProcessCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.abort();
        }
    }
}
