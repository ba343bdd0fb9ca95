//! The Ballista cluster the golden-file tests answer through: a scheduler and two executors
//! in the test's process (`allegro_cluster::in_process`) over one local store, which each
//! case's data replaces.

use std::path::{Path, PathBuf};

use allegro_cluster::in_process::{InProcessCluster, InProcessOptions};

use crate::engines::catalog_at;
use crate::ports::free_port;

/// A cluster of two executors (`slots` tasks at once each) over the store `root/store`, and
/// that store's path.
pub async fn two_executors(root: &Path, slots: usize) -> (InProcessCluster, PathBuf) {
    let store = root.join("store");
    std::fs::create_dir_all(&store).expect("store directory");
    let opts = InProcessOptions {
        executors: 2,
        tasks_per_executor: slots,
        memory_bytes: Some(512 << 20),
        work_dir: root.join("executors"),
    };
    let cluster = InProcessCluster::start(opts, || catalog_at(&store), free_port)
        .await
        .expect("in-process cluster");
    (cluster, store)
}

/// Empties `store` for the next case's data (the cluster's catalogs stay: blocks are found
/// by ID).
pub fn emptied(store: &Path) {
    std::fs::remove_dir_all(store).expect("empty the store");
    std::fs::create_dir_all(store).expect("store directory");
}
