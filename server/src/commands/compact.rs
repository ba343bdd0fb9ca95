//! `allegro compact`: one compaction and retention pass over the stored blocks, the pass
//! `serve` runs every `compactor.compaction.compaction_cycle` (docs/lifecycle.md).

use std::time::Duration;

use allegro_engine::block::lifecycle::{LifecycleStats, compactor_runtime, run_cycle};

use super::open_catalog;
use crate::config::Config;

/// Options of `allegro compact` (the settings are the config's `compactor.compaction`).
#[derive(Debug, Clone, clap::Args)]
pub struct CompactArgs {}

/// `allegro compact`.
pub async fn run(cfg: Config, _args: CompactArgs) -> Result<(), String> {
    let catalog = open_catalog(&cfg)?;
    let opts = cfg.ingester_config().map_err(|e| e.to_string())?.block;
    let lifecycle = cfg.lifecycle();
    // On a thread and runtime of its own, as `serve` runs it: the compactor's bounded blocking
    // pool is part of what keeps a merge's memory bounded (docs/lifecycle.md).
    let pass = std::thread::Builder::new()
        .name("compactor".into())
        .spawn(move || -> Result<String, String> {
            let stats = LifecycleStats::default();
            compactor_runtime()
                .map_err(|e| format!("cannot start the compactor: {e}"))?
                .block_on(run_cycle(
                    &catalog,
                    &lifecycle,
                    &opts,
                    &stats,
                    // Nothing here writes a head's blocks to yield to.
                    &allegro_engine::block::pace::Pace::never(),
                    Duration::MAX,
                    allegro_engine::now_unix_nanos(),
                ))
                .map_err(|e| e.to_string())?;
            Ok(stats.summary())
        })
        .map_err(|e| format!("cannot start the compactor: {e}"))?;
    let summary = tokio::task::spawn_blocking(move || pass.join())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|_| "the compaction pass panicked".to_string())??;
    println!("{summary}");
    Ok(())
}
