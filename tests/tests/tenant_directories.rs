//! Tenants whose IDs look like directory names (`.wal`, `.hidden`, `...`, `*`) are ordinary
//! tenants: their blocks go to their own directories, `allegro blocks --all-tenants` (the
//! catalog's tenant list) shows them, and the WAL lives where no tenant can be (`@wal`). A data
//! directory laid out by older releases (WAL in `.wal`, tenant `.wal`'s blocks inside it) is
//! moved on start without losing a span.

use std::path::Path;
use std::time::{Duration, Instant};

use allegro_tests::engines::{catalog_at, store_block};
use allegro_tests::{TestServer, config_for, copy_dir, one_span_trace};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

const TENANTS: [&str; 5] = [".wal", ".hidden", "...", "*", "plain"];

#[test]
fn tenants_named_like_directories_get_blocks_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    cfg.multitenancy_enabled = true;
    cfg.ingester.trace_idle_period = Some(Duration::from_millis(200));
    cfg.ingester.max_block_duration = Some(Duration::from_millis(300));
    cfg.ingester.flush_check_period = Some(Duration::from_millis(100));
    let srv = TestServer::start(cfg);
    for (i, t) in TENANTS.iter().enumerate() {
        let a = srv.export(Some(t), one_span_trace(i as u8 + 1));
        assert_eq!(a.status, 200, "{t}: {}", a.text());
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut want: Vec<String> = TENANTS.iter().map(|t| t.to_string()).collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A new catalog each time: no cached listing.
        let c = catalog_at(dir.path());
        let listed = rt.block_on(c.list_tenants()).expect("list");
        let blocks: Vec<usize> = TENANTS
            .iter()
            .map(|t| rt.block_on(c.blocks(t)).map(|b| b.len()).unwrap_or(0))
            .collect();
        if listed == want && blocks.iter().all(|n| *n == 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tenants listed {listed:?}, blocks per tenant {blocks:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The WAL is apart; tenant `.wal`'s directory holds its block and nothing else.
    assert!(dir.path().join("@wal").is_dir());
    let wal_tenant = names(&dir.path().join(".wal"));
    assert_eq!(wal_tenant.len(), 1, "{wal_tenant:?}");
    assert!(
        dir.path()
            .join(".wal")
            .join(&wal_tenant[0])
            .join("meta.json")
            .is_file()
    );
    for (i, t) in TENANTS.iter().enumerate() {
        assert!(
            srv.finds_span(Some(t), &format!("op-{}", i + 1)),
            "{t} finds its trace"
        );
        let other = (i + 1) % TENANTS.len();
        assert!(
            !srv.finds_span(Some(t), &format!("op-{}", other + 1)),
            "{t} sees another's trace"
        );
    }
}

#[test]
fn a_data_directory_of_older_releases_is_moved_without_losing_a_span() {
    let old = tempfile::tempdir().unwrap();
    // Older releases: the WAL in `<data>/.wal`, where tenant `.wal`'s blocks also went.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let block = rt.block_on(store_block(
        &catalog_at(old.path()),
        ".wal",
        one_span_trace(7),
    ));
    let mut cfg = config_for(old.path());
    cfg.multitenancy_enabled = true;
    cfg.storage.trace.wal.path = old.path().join(".wal");
    let srv = TestServer::start(cfg);
    // Acknowledged, so in the WAL; not flushed (the default idle period is longer than this
    // test).
    assert_eq!(srv.export(Some("t"), one_span_trace(9)).status, 200);
    assert!(
        names(&old.path().join(".wal"))
            .iter()
            .any(|n| n.ends_with(".wal"))
    );
    // The directory as a crash or an upgrade leaves it.
    let new = tempfile::tempdir().unwrap();
    copy_dir(old.path(), new.path());
    let mut cfg = config_for(new.path());
    cfg.multitenancy_enabled = true;
    let upgraded = TestServer::start(cfg);
    assert!(
        upgraded.finds_span(Some("t"), "op-9"),
        "spans of the old WAL are replayed"
    );
    assert!(
        upgraded.finds_span(Some(".wal"), "op-7"),
        "tenant .wal's block is found"
    );
    let wal = names(&new.path().join("@wal"));
    assert!(wal.iter().any(|n| n.ends_with(".wal")), "{wal:?}");
    assert_eq!(
        names(&new.path().join(".wal")),
        [block.meta.block_id.to_string()]
    );
    let listed = rt.block_on(catalog_at(new.path()).list_tenants()).unwrap();
    assert_eq!(listed, [".wal"]);
}
