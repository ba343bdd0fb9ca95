//! Runs every golden file under `tests/traceql/` against the engine three times: with the
//! dataset written as Parquet blocks (two blocks, so hot columns and unions are exercised), with
//! every span in the live head, with every trace split across two blocks or a block and the
//! head, and with those split blocks compacted into one (the answers are those of whole
//! traces).

use std::path::{Path, PathBuf};

use allegro_engine::query::QueryEngine;
use allegro_engine::query::search::SearchRequest;
use allegro_tests::dataset::Dataset;
use allegro_tests::engines::{TENANT, compacted, over_blocks, over_head, split_across};
use allegro_tests::golden::{self, search_lines};

fn golden_dir() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("traceql")
}

async fn run(engine: &QueryEngine, ds: &Dataset, query: &str) -> Result<Vec<String>, String> {
    let req = SearchRequest {
        query: query.to_string(),
        limit: 1000,
        spss: 1000,
        range: None,
    };
    let resp = engine
        .search(&[TENANT.to_string()], &req)
        .await
        .map_err(|e| e.to_string())?;
    Ok(search_lines(&resp, ds))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files() {
    let files = golden::load_dir(&golden_dir(), &golden_dir().join("data"));
    let mut failures = Vec::new();
    let mut cases = 0;
    for (file, g, ds) in &files {
        let dir = tempfile::tempdir().unwrap();
        let blocks = over_blocks(ds, &dir.path().join("blocks")).await;
        let head = over_head(ds, &dir.path().join("head"));
        let split = split_across(ds, &dir.path().join("split")).await;
        let merged = compacted(ds, &dir.path().join("compacted")).await;
        for case in &g.cases {
            cases += 1;
            let modes = [
                ("blocks", &blocks),
                ("head", &head),
                ("split", &split),
                ("compacted", &merged),
            ];
            for (mode, engine) in modes {
                let got = run(engine, ds, &case.query).await;
                if !case.expect.matches(&got) {
                    failures.push(format!(
                        "{}:{} [{mode}] {}\n  expected: {:?}\n  got:      {:?}",
                        file, case.line, case.query, case.expect, got
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} golden cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{cases} golden cases passed in {} files", files.len());
}

/// The golden files answered through a Ballista cluster (a scheduler and two executors with
/// one task slot each, on loopback): blocks are read on the executors in waves, the head here
/// (`engine/src/query/search/on_cluster.rs`), and every answer is one process's. One cluster
/// over one store; each mode's data replaces the last's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn golden_files_on_a_cluster() {
    let root = tempfile::tempdir().unwrap();
    let (cluster, store) = allegro_tests::cluster::two_executors(root.path(), 1).await;
    let files = golden::load_dir(&golden_dir(), &golden_dir().join("data"));
    let mut failures = Vec::new();
    let mut cases = 0;
    for (file, g, ds) in &files {
        for mode in ["blocks", "head", "split", "compacted"] {
            allegro_tests::cluster::emptied(&store);
            let engine = match mode {
                "blocks" => over_blocks(ds, &store).await,
                "head" => over_head(ds, &store),
                "split" => split_across(ds, &store).await,
                _ => compacted(ds, &store).await,
            };
            let engine = cluster.remote(engine);
            for case in &g.cases {
                cases += 1;
                let got = run(&engine, ds, &case.query).await;
                if !case.expect.matches(&got) {
                    failures.push(format!(
                        "{}:{} [cluster, {mode}] {}\n  expected: {:?}\n  got:      {:?}",
                        file, case.line, case.query, case.expect, got
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} golden cases failed on the cluster:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
