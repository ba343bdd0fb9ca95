//! Allegro's own directories in a local data directory, beside the tenants' blocks.
//!
//! Blocks of tenant `t` live in `<data>/<t>/`, and a tenant ID may be almost any name made of
//! `[0-9A-Za-z!-_.*'()]`, dot-names included. So the WAL (and the generator's queue inside it)
//! lives in `<data>/@wal`: `@` is in no tenant ID. Releases before this kept the WAL in
//! `<data>/.wal`, which is also tenant `.wal`'s directory: that tenant's blocks landed inside
//! the WAL, and `.hidden`-like tenants were skipped as if they were Allegro's. [`migrate`]
//! moves such a data directory to the new layout on start.

use std::path::{Path, PathBuf};

/// The WAL directory's name inside a local data directory.
pub const WAL_DIR: &str = "@wal";
/// Where releases before `@wal` kept the WAL.
const LEGACY_WAL_DIR: &str = ".wal";

/// What [`migrate`] moved.
#[derive(Debug, Default, PartialEq)]
pub struct Migrated {
    /// The old WAL directory, now at the new place.
    pub wal: Option<(PathBuf, PathBuf)>,
    /// Blocks of tenant `.wal` found inside the old WAL, moved to the tenant's directory.
    pub blocks: Vec<PathBuf>,
    /// The old WAL directory, when storage refused the move (read-only): it stays the WAL for
    /// this run, which serves reads only.
    pub stay: Option<PathBuf>,
}

/// Moves `<data>/.wal` to `<data>/@wal` when the WAL is at its default place and `@wal` does
/// not exist yet; blocks of tenant `.wal` that were written inside it go back to `<data>/.wal`.
/// Nothing is deleted; a directory that cannot be moved is an error naming it.
pub fn migrate(data: &Path, wal: &Path) -> Result<Migrated, String> {
    let mut done = Migrated::default();
    let old = data.join(LEGACY_WAL_DIR);
    if wal != data.join(WAL_DIR) || wal.exists() || !old.is_dir() {
        return Ok(done);
    }
    let moved = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|e| {
            format!(
                "cannot move {} to {} (the WAL's new place): {e}",
                from.display(),
                to.display()
            )
        })
    };
    if let Err(e) = std::fs::rename(&old, wal) {
        if allegro_ingest::wal::refuses_writes(&e) {
            done.stay = Some(old);
            return Ok(done);
        }
        return Err(format!(
            "cannot move {} to {} (the WAL's new place): {e}",
            old.display(),
            wal.display()
        ));
    }
    done.wal = Some((old.clone(), wal.to_path_buf()));
    let entries = std::fs::read_dir(wal).map_err(|e| format!("{}: {e}", wal.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if is_block_of(&path, LEGACY_WAL_DIR) {
            std::fs::create_dir_all(&old).map_err(|e| format!("{}: {e}", old.display()))?;
            let to = old.join(entry.file_name());
            moved(&path, &to)?;
            done.blocks.push(to);
        }
    }
    Ok(done)
}

/// Whether `dir` is a block of `tenant`: a directory named by the block ID its `meta.json`
/// gives, for that tenant.
fn is_block_of(dir: &Path, tenant: &str) -> bool {
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let Ok(text) = std::fs::read(dir.join(allegro_engine::block::meta::objects::META)) else {
        return false;
    };
    serde_json::from_slice::<allegro_engine::block::meta::BlockMeta>(&text)
        .is_ok_and(|m| m.tenant_id == tenant && m.block_id.to_string() == name)
}
