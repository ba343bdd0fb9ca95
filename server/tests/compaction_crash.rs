//! kill -9 during compaction and retention loses no span and shows none twice. A store of 20
//! blocks (40k spans) over three closed hours is compacted by `allegro compact` (which also
//! deletes the merged inputs at once here), killed five times, each after a fifth to a third of
//! the time a whole pass takes; after every kill the visible blocks hold exactly the spans they
//! held before, trace by trace, and a last run completes the job with the same spans. The same
//! store is then compacted by `allegro serve` while a client counts every span over and over
//! through TraceQL metrics: each answer counts every span exactly once, through kills and
//! restarts, until the store is merged.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::storage::{StorageBackend, open_store};
use arrow::array::{Array, FixedSizeBinaryArray};
use common::{Killed, RECEIVERS};

/// The compactor section of the tests' config, after [`common::RECEIVERS`].
const COMPACTOR: &str = "compactor:
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

/// Spans per trace, and visible blocks per compaction level.
type Counted = (BTreeMap<Vec<u8>, usize>, BTreeMap<u32, usize>);

/// Spans per trace over every visible block, and how many blocks are visible at each level.
/// A block retired between the listing and its read (a server still compacting) makes it list
/// and read again, as a query does.
fn spans_per_trace(dir: &Path) -> Counted {
    for _ in 0..20 {
        if let Some(counted) = spans_per_trace_once(dir) {
            return counted;
        }
    }
    panic!("blocks kept being retired under 20 listings");
}

/// [`spans_per_trace`] over one listing; `None` when a listed block was gone when read.
fn spans_per_trace_once(dir: &Path) -> Option<Counted> {
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
            let batches = match allegro_engine::block::reader::read_all(&store, b).await {
                Err(allegro_engine::error::EngineError::BlockGone { .. }) => return None,
                r => r.unwrap(),
            };
            for batch in batches {
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
        Some((spans, levels))
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

/// Writes the config and 20 blocks over three closed hours into `dir`; the unix second they
/// start at.
fn day(dir: &Path, config: &str) -> u64 {
    std::fs::write(dir.join("allegro.yaml"), config).unwrap();
    let start = allegro_engine::now_unix_nanos() / 1_000_000_000 - 4 * 3600;
    let ok = allegro(dir)
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
    start
}

#[test]
fn kill_9_during_compaction_loses_no_span_and_shows_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    day(dir.path(), &format!("{RECEIVERS}{COMPACTOR}"));
    let (want, levels) = spans_per_trace(dir.path());
    assert_eq!(levels.keys().copied().collect::<Vec<_>>(), [0]);
    assert!(levels[&0] >= 15, "{levels:?}");
    // Kills spread over the run (each run resumes where the last one was killed). Block
    // directories on disk holding anything (the tenant index sits beside them).
    let disk = || block_dirs(dir.path()).len();
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
    // Nothing but visible blocks is left: the merged inputs were deleted, orphans too (an
    // empty directory, left by a kill between a directory's creation and its first file or
    // between its last file's deletion and its own, holds nothing and is not counted).
    let left = block_dirs(dir.path());
    assert_eq!(left.len(), levels.values().sum::<usize>(), "{left:?}");
}

/// `allegro serve` over `dir` on a free port; its API base URL.
fn serve(dir: &Path) -> (Killed, String) {
    let common::Served {
        child, base, lines, ..
    } = common::serve(allegro(dir));
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

/// Blocks per compaction window (1h) over the visible blocks of `dir`, and the block
/// directories on disk.
fn windows(dir: &Path) -> (BTreeMap<u64, usize>, usize) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = open_store(&StorageBackend::Local {
        path: dir.join("data"),
    })
    .unwrap();
    let catalog = Catalog::new(store, CatalogConfig::default());
    let blocks = rt.block_on(catalog.blocks("single-tenant")).unwrap();
    let mut per_window = BTreeMap::new();
    for b in blocks.iter() {
        *per_window
            .entry(b.end_unix_nano / 3_600_000_000_000)
            .or_insert(0) += 1;
    }
    (per_window, block_dirs(dir).len())
}

/// The block directories on disk holding anything, each with its files. An empty directory
/// holds nothing: a kill between creating a directory and its first file, or between deleting
/// its last file and the directory itself (the local store removes emptied directories
/// itself), leaves one, invisible to every listing.
fn block_dirs(dir: &Path) -> Vec<(String, Vec<String>)> {
    let names = |p: &Path| -> Vec<String> {
        std::fs::read_dir(p)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    std::fs::read_dir(dir.join("data").join("single-tenant"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            (
                e.file_name().to_string_lossy().to_string(),
                names(&e.path()),
            )
        })
        .filter(|(_, files)| !files.is_empty())
        .collect()
}

/// Spans `{ } | count_over_time()` counts over `[start, end]`, or `None` when the server did
/// not answer 200 (killed, starting, or a block gone twice under the query: a 503).
fn count_spans(agent: &ureq::Agent, api: &str, start: u64, end: u64) -> Option<u64> {
    let mut r = agent
        .get(format!("{api}/api/metrics/query_range"))
        .query("q", "{ } | count_over_time()")
        .query("start", start.to_string())
        .query("end", end.to_string())
        .query("step", "3600s")
        .call()
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body_mut().read_to_vec().ok()?).ok()?;
    let total: f64 = v["series"]
        .as_array()?
        .iter()
        .flat_map(|s| s["samples"].as_array().cloned().unwrap_or_default())
        .map(|x| x["value"].as_f64().unwrap_or(0.0))
        .sum();
    Some(total as u64)
}

#[test]
fn kill_9_of_serve_while_it_compacts_never_changes_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{RECEIVERS}{COMPACTOR}    compaction_cycle: 100ms\n");
    let start = day(dir.path(), &config);
    let (want, _) = spans_per_trace(dir.path());
    let total: usize = want.values().sum();
    let end = allegro_engine::now_unix_nanos() / 1_000_000_000;
    let agent = common::agent(Duration::from_secs(10));
    let (mut answered, mut kills, mut mid_work) = (0, 0, 0);
    // The first pass starts 100 ms after the server; a whole pass takes about half a second
    // here, so the first kills land mid-work.
    for delay_ms in [150u64, 300, 450, 1000] {
        let (server, api) = serve(dir.path());
        // A client counting every span over and over until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let wrong = Arc::new(AtomicU64::new(u64::MAX));
        let counted = Arc::new(AtomicU64::new(0));
        let client = {
            let (stop, wrong, counted, agent, api) = (
                stop.clone(),
                wrong.clone(),
                counted.clone(),
                agent.clone(),
                api.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match count_spans(&agent, &api, start - 60, end) {
                        Some(n) if n as usize == total => {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(n) => wrong.store(n, Ordering::SeqCst),
                        None => {}
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        // The last run lives until the client has had a whole answer: on a loaded machine a
        // debug server answered nothing within a second (a CI run), and a test whose kills
        // all land before any answer checks nothing about answers.
        if delay_ms == 1000 {
            let until = Instant::now() + Duration::from_secs(60);
            while counted.load(Ordering::SeqCst) == 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        drop(server);
        stop.store(true, Ordering::SeqCst);
        client.join().unwrap();
        kills += 1;
        let w = wrong.load(Ordering::SeqCst);
        assert_eq!(w, u64::MAX, "an answer counted {w} spans, not {total}");
        answered += counted.load(Ordering::SeqCst);
        let (got, levels) = spans_per_trace(dir.path());
        assert!(
            got == want,
            "spans per trace changed by a kill after {delay_ms} ms ({levels:?})"
        );
        if levels.contains_key(&0) {
            mid_work += 1;
        }
        eprintln!("kill after {delay_ms} ms: blocks per level {levels:?}");
    }
    eprintln!(
        "{answered} answers, each counting all {total} spans; {mid_work} of {kills} kills with work left"
    );
    assert!(answered >= 1, "no query answered before a kill");
    assert!(mid_work >= 1, "no kill landed before the work was done");
    // A last run finishes the job: one block per window (a window may hold a single block
    // from the start, which nothing merges), nothing else on disk.
    let (_server, api) = serve(dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (got, _) = spans_per_trace(dir.path());
        assert!(got == want);
        let (per_window, on_disk) = windows(dir.path());
        if per_window.values().all(|n| *n == 1) && on_disk == per_window.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted: blocks per window {per_window:?}, {on_disk} on disk: {:?}",
            block_dirs(dir.path())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        count_spans(&agent, &api, start - 60, end),
        Some(total as u64)
    );
}
