//! The DataFusion runtime of a cluster node: the block store registered where block scans look
//! for it, spills in the node's work directory.

use std::path::Path;
use std::sync::Arc;

use allegro_engine::catalog::Catalog;
use allegro_engine::query::table::STORE_URL;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};

/// A runtime reading blocks from `catalog`'s store, spilling into `work_dir` when given.
pub fn with_store(catalog: &Arc<Catalog>, work_dir: Option<&Path>) -> Result<Arc<RuntimeEnv>> {
    let mut b = RuntimeEnvBuilder::new();
    if let Some(d) = work_dir {
        b = b.with_temp_file_path(d);
    }
    let env = b.build_arc()?;
    let url = ObjectStoreUrl::parse(STORE_URL)?;
    env.register_object_store(url.as_ref(), catalog.store().clone());
    Ok(env)
}
