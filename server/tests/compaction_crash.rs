//! kill -9 during compaction and retention loses no span and shows none twice. A store of 20
//! blocks (100k spans) over three closed hours is compacted by `allegro compact` (which also deletes the
//! merged inputs at once here), killed five times, each after a fifth to a third of the time a
//! whole pass takes; after every kill
//! the visible blocks hold exactly the spans they held before, trace by trace, and a last run
//! completes the job with the same spans.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::storage::{StorageBackend, open_store};
use arrow::array::{Array, FixedSizeBinaryArray};

const CONFIG: &str = "compactor:
  compaction:
    compaction_window: 1h
    block_retention: 0s            # keep every block
    compacted_block_retention: 0s  # merged inputs go in the same pass
";

fn allegro(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_allegro"));
    c.arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(dir.join("allegro.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Spans per trace over every visible block, and how many blocks are visible at each level.
fn spans_per_trace(dir: &Path) -> (BTreeMap<Vec<u8>, usize>, BTreeMap<u32, usize>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open_store(&StorageBackend::Local {
            path: dir.join("data"),
        })
        .unwrap();
        let catalog = Catalog::new(store.clone(), CatalogConfig::default());
        let mut spans = BTreeMap::new();
        let mut levels = BTreeMap::new();
        for b in catalog.blocks("single-tenant").await.unwrap().iter() {
            *levels.entry(b.compaction_level).or_insert(0) += 1;
            for batch in allegro_engine::block::reader::read_all(&store, b)
                .await
                .unwrap()
            {
                let ids = batch
                    .column_by_name("trace_id")
                    .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
                    .unwrap()
                    .clone();
                for i in 0..ids.len() {
                    *spans.entry(ids.value(i).to_vec()).or_insert(0) += 1;
                }
            }
        }
        (spans, levels)
    })
}

/// Hard-links every file of `from` into `to`.
fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            link_tree(&e.path(), &target);
        } else {
            std::fs::hard_link(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn kill_9_during_compaction_loses_no_span_and_shows_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("allegro.yaml"), CONFIG).unwrap();
    let start = allegro_engine::now_unix_nanos() / 1_000_000_000 - 4 * 3600;
    let ok = allegro(dir.path())
        .args([
            "gen",
            "--spans",
            "40000",
            "--block-spans",
            "2000",
            "--duration",
            "3h",
        ])
        .args(["--start", &start.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let (want, levels) = spans_per_trace(dir.path());
    assert_eq!(levels.keys().copied().collect::<Vec<_>>(), [0]);
    assert!(levels[&0] >= 15, "{levels:?}");
    // Kills spread over the run (each run resumes where the last one was killed).
    let disk = || {
        // Block directories (the tenant index sits beside them).
        std::fs::read_dir(dir.path().join("data").join("single-tenant"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .count()
    };
    // How long a whole pass takes here, on a hard-linked copy (deleting a link leaves the
    // original): kills are placed at fractions of it, so they land mid-work on any machine.
    let copy = tempfile::tempdir().unwrap();
    link_tree(dir.path(), copy.path());
    let t0 = Instant::now();
    assert!(
        allegro(copy.path())
            .arg("compact")
            .status()
            .unwrap()
            .success()
    );
    let whole = t0.elapsed();
    let mut interrupted = 0;
    for fraction in [0.2, 0.35, 0.2, 0.35, 0.2] {
        let delay = whole.mul_f64(fraction);
        let delay_ms = delay.as_millis();
        let mut child = allegro(dir.path()).arg("compact").spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let (got, levels) = spans_per_trace(dir.path());
        // Work left (blocks to merge, inputs to delete): this kill cut the run short.
        if levels.contains_key(&0) || disk() > levels.values().sum::<usize>() {
            interrupted += 1;
        }
        assert_eq!(
            got.len(),
            want.len(),
            "traces after a kill at {delay_ms} ms"
        );
        assert!(
            got == want,
            "spans per trace changed after a kill at {delay_ms} ms ({levels:?})"
        );
    }
    eprintln!("{interrupted} of 5 kills landed with work left (a whole pass: {whole:?})");
    assert!(
        interrupted >= 3,
        "only {interrupted} kills landed before the work was done"
    );
    let ok = allegro(dir.path()).arg("compact").status().unwrap();
    assert!(ok.success());
    let (got, levels) = spans_per_trace(dir.path());
    assert!(got == want, "spans per trace changed by compaction");
    assert!(!levels.contains_key(&0) || levels[&0] <= 1, "{levels:?}");
    // Nothing but visible blocks is left: the merged inputs were deleted, orphans too.
    assert_eq!(disk(), levels.values().sum::<usize>());
}
