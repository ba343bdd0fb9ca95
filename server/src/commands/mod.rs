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

/// Tables of rows smaller than this travel inside plans: a fetch costs a round trip.
const INLINE_ROWS_BELOW: usize = 1 << 20;

/// Where this process serves its in-memory rows to the cluster's executors: at
/// `query.ballista.rows_address`, or on the interface it reaches the scheduler
/// `host:port` from, any free port. `None` (rows travel inside plans, and a big head fails
/// its SQL) only when no such interface is found.
fn rows_server(
    cfg: &Config,
    host: &str,
    port: u16,
) -> Result<Option<Arc<allegro_cluster::served_rows::RowsServer>>, String> {
    let (bind, advertise) = match cfg
        .query
        .ballista
        .rows_address()
        .map_err(|e| e.to_string())?
    {
        Some((bind, host)) => (bind, Some(host)),
        None => {
            let local = std::net::UdpSocket::bind(("0.0.0.0", 0))
                .and_then(|s| s.connect((host, port)).map(|()| s))
                .and_then(|s| s.local_addr());
            match local {
                Ok(a) => (std::net::SocketAddr::new(a.ip(), 0), None),
                Err(e) => {
                    tracing::warn!(error = %e, scheduler = %format!("{host}:{port}"),
                        "no interface reaches the scheduler; in-memory rows travel inside plans \
                         (set query.ballista.rows_address)");
                    return Ok(None);
                }
            }
        }
    };
    allegro_cluster::served_rows::RowsServer::start(bind, advertise.as_deref(), INLINE_ROWS_BELOW)
        .map(Some)
        .map_err(|e| format!("query.ballista.rows_address: {e}"))
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
            let cluster = match rows_server(cfg, &host, port)? {
                Some(rows) => {
                    tracing::info!(at = %rows.address(), "executors fetch in-memory rows here");
                    cluster.serving_rows(rows)
                }
                None => cluster,
            };
            Ok(engine.with_remote(Arc::new(cluster)))
        }
        None => Ok(engine),
    }
}
