//! `allegro compact`: one compaction and retention pass over the stored blocks, the pass
//! `serve` runs every `compactor.compaction.compaction_cycle` (docs/lifecycle.md).

use std::time::Duration;

use allegro_engine::block::lifecycle::{LifecycleStats, run_cycle};

use super::open_catalog;
use crate::config::Config;

/// Options of `allegro compact` (the settings are the config's `compactor.compaction`).
#[derive(Debug, Clone, clap::Args)]
pub struct CompactArgs {}

/// `allegro compact`.
pub async fn run(cfg: Config, _args: CompactArgs) -> Result<(), String> {
    let catalog = open_catalog(&cfg)?;
    let opts = cfg.ingester_config().map_err(|e| e.to_string())?.block;
    let stats = LifecycleStats::default();
    run_cycle(
        &catalog,
        &cfg.lifecycle(),
        &opts,
        &stats,
        Duration::MAX,
        allegro_engine::now_unix_nanos(),
    )
    .await
    .map_err(|e| e.to_string())?;
    println!("{}", stats.summary());
    Ok(())
}
