//! The lifetime of damaged WAL bytes.
//!
//! Replay sets aside every stretch of a segment it cannot read (a torn tail after a crash,
//! flipped bits) in `<wal>/damaged/` rather than deleting it, so an operator can look at what
//! was lost. Those files only appear when the WAL is replayed at start, so a start is also when
//! old ones go: files older than [`KEEP_FOR`] are deleted, then the oldest until the directory
//! holds at most [`KEEP_BYTES`]. A server restarted in a crash loop on a damaged disk therefore
//! cannot fill it with copies of its own damage.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// How long damaged bytes are kept.
pub const KEEP_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most bytes kept in `damaged/`.
pub const KEEP_BYTES: u64 = 1 << 30;

/// Deletes what `damaged` (a WAL's `damaged/` directory) holds past its lifetime at `now`:
/// files older than `keep_for`, then the oldest past `keep_bytes`; the paths deleted. A missing
/// directory holds nothing.
pub fn prune(
    damaged: &Path,
    now: SystemTime,
    keep_for: Duration,
    keep_bytes: u64,
) -> std::io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(damaged) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for e in entries {
        let e = e?;
        let m = e.metadata()?;
        if m.is_file() {
            files.push((m.modified()?, m.len(), e.path()));
        }
    }
    // Newest first: the budget keeps the most recent damage.
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut kept = 0u64;
    let mut deleted = Vec::new();
    for (modified, len, path) in files {
        let age = now.duration_since(modified).unwrap_or_default();
        if age <= keep_for && kept + len <= keep_bytes {
            kept += len;
            continue;
        }
        std::fs::remove_file(&path)?;
        deleted.push(path.display().to_string());
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_damage_goes_and_the_newest_is_kept_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        let file = |name: &str, age: Duration, len: usize| {
            let p = dir.path().join(name);
            std::fs::write(&p, vec![0u8; len]).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(now - age)
                .unwrap();
        };
        file("old", 8 * day, 10);
        file("recent", day, 10);
        file("fresh", Duration::ZERO, 10);
        let path = |name: &str| dir.path().join(name).display().to_string();
        let left = || {
            let mut v: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let gone = prune(dir.path(), now, KEEP_FOR, KEEP_BYTES).unwrap();
        assert_eq!(gone, [path("old")]);
        assert_eq!(left(), ["fresh", "recent"]);
        // Over a 15-byte budget the older of the two goes.
        let gone = prune(dir.path(), now, KEEP_FOR, 15).unwrap();
        assert_eq!(gone, [path("recent")]);
        assert_eq!(left(), ["fresh"]);
        assert!(
            prune(&dir.path().join("missing"), now, KEEP_FOR, KEEP_BYTES)
                .unwrap()
                .is_empty()
        );
    }
}
