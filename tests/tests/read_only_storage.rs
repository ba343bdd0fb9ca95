//! A server whose data directory is on a read-only filesystem (a real one: a read-only bind
//! mount) starts, serves what its blocks and WAL hold, and refuses writes with 503 saying why.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use allegro_engine::block::writer::{BlockWriteOptions, encode_block};
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::convert::flatten::flatten;
use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use allegro_engine::storage::{StorageBackend, open_store};
use allegro_tests::{TestServer, config_for, url_encode};
use prost::Message;

/// A one-span trace named `op-<id>` that ended a minute ago.
fn trace(id: u8) -> Vec<ResourceSpans> {
    let now = allegro_engine::now_unix_nanos();
    vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![id; 16],
                span_id: vec![id; 8],
                name: format!("op-{id}"),
                start_time_unix_nano: now - 61_000_000_000,
                end_time_unix_nano: now - 60_000_000_000,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn send(srv: &TestServer, id: u8) -> allegro_tests::Answer {
    let body = ExportTraceServiceRequest {
        resource_spans: trace(id),
    }
    .encode_to_vec();
    srv.post(
        &srv.otlp_http(),
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        &body,
    )
}

fn finds(srv: &TestServer, id: u8) -> bool {
    let a = srv.get(&format!("/api/search?q={}", url_encode("{ }")), &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    a.text().contains(&format!("\"op-{id}\""))
}

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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_read_only_data_directory_still_serves_reads() {
    let live = tempfile::tempdir().unwrap();
    // Trace 1 in a block, trace 2 acknowledged into the WAL only.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (spans, rejected) = flatten(trace(1));
    assert!(rejected.is_empty());
    let block = encode_block("single-tenant", spans, &BlockWriteOptions::default()).unwrap();
    let store = open_store(&StorageBackend::Local {
        path: live.path().to_path_buf(),
    })
    .unwrap();
    rt.block_on(Arc::new(Catalog::new(store, CatalogConfig::default())).add_block(&block))
        .unwrap();
    let writer = TestServer::start(config_for(live.path()));
    assert_eq!(send(&writer, 2).status, 200);
    // The same data on a filesystem that takes no writes.
    let ro = tempfile::tempdir().unwrap();
    copy_dir(live.path(), ro.path());
    let Some(_mounted) = ReadOnly::mount(ro.path()) else {
        return;
    };
    assert!(std::fs::write(ro.path().join("probe"), b"").is_err());
    let srv = TestServer::start(config_for(ro.path()));
    assert_eq!(srv.get("/ready", &[]).status, 200);
    assert!(finds(&srv, 1), "the block is served");
    assert!(finds(&srv, 2), "the WAL's spans are served");
    let a = send(&srv, 3);
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.text().contains("read-only"), "{}", a.text());
    assert!(!finds(&srv, 3));
}
