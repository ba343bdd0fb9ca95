//! `allegro blocks`: what is stored.

use super::open_catalog;
use crate::config::Config;
use crate::tenant::SINGLE_TENANT;

/// Options of `allegro blocks`.
#[derive(Debug, Clone, clap::Args)]
pub struct BlocksArgs {
    /// Tenant to list; `--all-tenants` lists every tenant.
    #[arg(long, default_value = SINGLE_TENANT)]
    pub tenant: String,
    /// List the blocks of every tenant.
    #[arg(long)]
    pub all_tenants: bool,
    /// `table` for people, `json` for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// `allegro blocks`.
pub async fn run(cfg: Config, args: BlocksArgs) -> Result<(), String> {
    let catalog = open_catalog(&cfg)?;
    let tenants = if args.all_tenants {
        catalog.list_tenants().await.map_err(|e| e.to_string())?
    } else {
        vec![args.tenant.clone()]
    };
    let mut all = Vec::new();
    for t in &tenants {
        all.extend(
            catalog
                .blocks(t)
                .await
                .map_err(|e| e.to_string())?
                .iter()
                .cloned(),
        );
    }
    if args.format == "json" {
        let v: Vec<_> = all
            .iter()
            .map(|m| serde_json::to_value(&**m).unwrap_or_default())
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    println!(
        "{:<16} {:<36} {:<20} {:<20} {:>9} {:>10} {:>12} {:>6} {:>5}",
        "TENANT", "BLOCK", "START", "END", "TRACES", "SPANS", "BYTES", "GROUPS", "LEVEL"
    );
    for m in &all {
        println!(
            "{:<16} {:<36} {:<20} {:<20} {:>9} {:>10} {:>12} {:>6} {:>5}",
            m.tenant_id,
            m.block_id,
            m.start_time,
            m.end_time,
            m.total_objects,
            m.total_spans,
            m.size,
            m.row_groups,
            m.compaction_level
        );
    }
    let spans: u64 = all.iter().map(|m| m.total_spans).sum();
    let bytes: u64 = all.iter().map(|m| m.size).sum();
    println!(
        "{} blocks, {spans} spans, {bytes} bytes ({:.1} bytes/span)",
        all.len(),
        bytes as f64 / spans.max(1) as f64
    );
    Ok(())
}
