//! A server whose data directory is on a read-only filesystem (a real one: a read-only bind
//! mount) starts, serves what its blocks and WAL hold, and refuses writes with 503 saying why.

use std::path::{Path, PathBuf};
use std::process::Command;

use allegro_tests::engines::{catalog_at, store_block};
use allegro_tests::{TestServer, config_for, copy_dir, one_span_trace};

/// `dir` bind-mounted read-only onto itself until dropped.
struct ReadOnly(PathBuf);

impl ReadOnly {
    /// `None` (and a note) where this machine does not allow mounting.
    fn mount(dir: &Path) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["--bind", "-o", "ro"])
            .arg(dir)
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let msg = "read_only_storage: `mount --bind -o ro` is not permitted here";
            assert!(std::env::var("CI").is_err(), "{msg} (CI=true needs it)");
            eprintln!("skipped: {msg}");
            return None;
        }
        Some(Self(dir.to_path_buf()))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        // Lazily: the server still holds files open in it.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_read_only_data_directory_still_serves_reads() {
    let live = tempfile::tempdir().unwrap();
    // Trace 1 in a block, trace 2 acknowledged into the WAL only.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(store_block(
        &catalog_at(live.path()),
        "single-tenant",
        one_span_trace(1),
    ));
    let writer = TestServer::start(config_for(live.path()));
    assert_eq!(writer.export(None, one_span_trace(2)).status, 200);
    // The same data on a filesystem that takes no writes.
    let ro = tempfile::tempdir().unwrap();
    copy_dir(live.path(), ro.path());
    let Some(_mounted) = ReadOnly::mount(ro.path()) else {
        return;
    };
    assert!(std::fs::write(ro.path().join("probe"), b"").is_err());
    let srv = TestServer::start(config_for(ro.path()));
    assert_eq!(srv.get("/ready", &[]).status, 200);
    assert!(srv.finds_span(None, "op-1"), "the block is served");
    assert!(srv.finds_span(None, "op-2"), "the WAL's spans are served");
    let a = srv.export(None, one_span_trace(3));
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.text().contains("read-only"), "{}", a.text());
    assert!(!srv.finds_span(None, "op-3"));
}
