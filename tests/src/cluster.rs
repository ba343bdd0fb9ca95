//! A Ballista cluster on loopback for tests: a scheduler and executors over one local block
//! store, each with its own catalog (their own caches, as separate processes have), speaking
//! gRPC and Arrow Flight to each other and to the engine that sends them queries.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_cluster::{Cluster, ExecutorOptions, SchedulerOptions};
use allegro_engine::query::QueryEngine;
use tokio::task::JoinHandle;

use crate::engines::catalog_at;
use crate::prometheus::free_port;

/// A running cluster; its nodes stop when it is dropped.
pub struct LocalCluster {
    /// The scheduler's port on 127.0.0.1.
    pub scheduler_port: u16,
    nodes: Vec<JoinHandle<()>>,
}

/// Waits until something listens on `port`.
async fn listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl LocalCluster {
    /// A scheduler and `executors` executors (two tasks each) over the blocks under `dir`.
    pub async fn start(dir: &Path, executors: usize) -> Self {
        let scheduler_port = free_port();
        let mut nodes = Vec::new();
        let opts = SchedulerOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], scheduler_port)),
            external_host: "127.0.0.1".into(),
        };
        let catalog = catalog_at(dir);
        nodes.push(tokio::spawn(async move {
            if let Err(e) = allegro_cluster::run_scheduler(opts, catalog).await {
                panic!("scheduler: {e}");
            }
        }));
        listening(scheduler_port).await;
        for _ in 0..executors {
            let (flight_port, grpc_port) = (free_port(), free_port());
            let opts = ExecutorOptions {
                bind_host: "127.0.0.1".into(),
                external_host: Some("127.0.0.1".into()),
                flight_port,
                grpc_port,
                scheduler: ("127.0.0.1".into(), scheduler_port),
                concurrent_tasks: 2,
                work_dir: None,
                memory_bytes: Some(512 << 20),
            };
            let catalog = catalog_at(dir);
            nodes.push(tokio::spawn(async move {
                if let Err(e) = allegro_cluster::run_executor(opts, catalog).await {
                    panic!("executor: {e}");
                }
            }));
            listening(flight_port).await;
        }
        Self {
            scheduler_port,
            nodes,
        }
    }

    /// `engine` sending its SQL to this cluster.
    pub fn remote(&self, engine: QueryEngine) -> QueryEngine {
        let cluster = Cluster::new("127.0.0.1", self.scheduler_port, engine.catalog().clone());
        engine.with_remote(Arc::new(cluster))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.abort();
        }
    }
}
