//! One module per subcommand.

pub mod blocks;
pub mod cluster;
pub mod compact;
pub mod config_cmd;
pub mod demo;
pub mod gen_cmd;
pub mod metrics_cmd;
pub mod query;
pub mod serve;
pub mod sql_cmd;
pub mod sql_shell;
pub mod traceql_cmd;

use std::sync::Arc;

use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::storage::open_store;

use crate::config::Config;

/// Opens the configured store and builds the catalog over it.
pub fn open_catalog(cfg: &Config) -> Result<Arc<Catalog>, String> {
    let store = open_store(&cfg.backend()).map_err(|e| e.to_string())?;
    let t = &cfg.storage.trace;
    let mut cc = CatalogConfig {
        footer_cache_bytes: t.cache.footer_mb << 20,
        bloom_cache_bytes: t.cache.bloom_mb << 20,
        meta_cache_bytes: t.cache.meta_mb << 20,
        rollup_cache_bytes: t.cache.rollup_mb << 20,
        ..Default::default()
    };
    if let Some(p) = t.blocklist_poll {
        cc.blocklist_poll = p;
    }
    if let Some(s) = t.blocklist_poll_stale_tenant_index {
        cc.index_stale_after = Some(s);
    }
    Ok(Arc::new(Catalog::new(store, cc)))
}

/// `engine` running SQL on the Ballista cluster of `query.ballista`, when one is configured.
pub fn on_cluster(
    cfg: &Config,
    engine: allegro_engine::query::QueryEngine,
) -> Result<allegro_engine::query::QueryEngine, String> {
    match cfg.query.ballista.scheduler().map_err(|e| e.to_string())? {
        Some((host, port)) => {
            tracing::info!(scheduler = %format!("{host}:{port}"), "SQL runs on a Ballista cluster");
            let cluster = allegro_cluster::Cluster::new(&host, port, engine.catalog().clone());
            Ok(engine.with_remote(Arc::new(cluster)))
        }
        None => Ok(engine),
    }
}
