//! `allegro blocks`: what is stored.

use std::sync::Arc;

use allegro_engine::block::meta::BlockMeta;
use allegro_engine::block::quarantine::Quarantined;
use allegro_engine::block::reader::verify_block;

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
    /// Read every block whole and verify it (checksums of meta, data and bloom; every page
    /// decoded); exits non-zero when any block is damaged.
    #[arg(long)]
    pub check: bool,
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
    let mut damaged = Vec::new();
    for t in &tenants {
        let blocks = catalog.blocks(t).await.map_err(|e| e.to_string())?;
        for m in blocks.iter() {
            if args.check
                && let Err(e) = verify_block(catalog.store(), m).await
            {
                catalog.quarantine_damaged(&e);
                continue;
            }
            all.push(m.clone());
        }
        // Listing quarantines blocks whose meta.json is damaged, listing every directory
        // those that lost it; checking, those whose data is damaged.
        catalog.list_all(t).await.map_err(|e| e.to_string())?;
        damaged.extend(catalog.quarantined(t));
    }
    if args.format == "json" {
        let mut v: Vec<_> = all
            .iter()
            .map(|m| {
                let mut j = serde_json::to_value(&**m).unwrap_or_default();
                j["state"] = "ok".into();
                j
            })
            .collect();
        v.extend(damaged.iter().map(|q| {
            serde_json::json!({
                "tenantID": q.tenant, "blockID": q.block, "state": "quarantined",
                "damagedObject": q.object, "reason": q.reason,
            })
        }));
        println!("{}", serde_json::Value::Array(v));
    } else {
        print_table(&all, &damaged);
    }
    if args.check && !damaged.is_empty() {
        return Err(format!(
            "{} damaged block(s): queries skip them and answer partial; restore them from a \
             copy or delete them",
            damaged.len()
        ));
    }
    Ok(())
}

fn print_table(all: &[Arc<BlockMeta>], damaged: &[Quarantined]) {
    println!(
        "{:<16} {:<36} {:<20} {:<20} {:>9} {:>10} {:>12} {:>6} {:>5} {:<11}",
        "TENANT", "BLOCK", "START", "END", "TRACES", "SPANS", "BYTES", "GROUPS", "LEVEL", "STATE"
    );
    for m in all {
        println!(
            "{:<16} {:<36} {:<20} {:<20} {:>9} {:>10} {:>12} {:>6} {:>5} {:<11}",
            m.tenant_id,
            m.block_id,
            m.start_time,
            m.end_time,
            m.total_objects,
            m.total_spans,
            m.size,
            m.row_groups,
            m.compaction_level,
            "ok"
        );
    }
    for q in damaged {
        println!(
            "{:<16} {:<36} {:<20} quarantined: {} damaged: {}",
            q.tenant, q.block, "", q.object, q.reason
        );
    }
    let spans: u64 = all.iter().map(|m| m.total_spans).sum();
    let bytes: u64 = all.iter().map(|m| m.size).sum();
    println!(
        "{} blocks, {spans} spans, {bytes} bytes ({:.1} bytes/span); {} quarantined",
        all.len(),
        bytes as f64 / spans.max(1) as f64,
        damaged.len()
    );
}
