//! Runs the TraceQL metrics golden files (`tests/traceql/metrics/*.tql`) against the engine,
//! with the dataset as Parquet blocks, all in the live head, and every trace split across
//! blocks and the head. Each series prints as
//! `{labels}: <offset s>=<value> ...` (labels sorted, strings quoted; values with at most six
//! decimals; NaN samples absent), sorted by labels.

use std::path::{Path, PathBuf};

use allegro_engine::query::QueryEngine;
use allegro_engine::query::metrics::{MetricsLimits, MetricsRequest, Mode};
use allegro_tests::engines::{TENANT, over_blocks, over_head, split_across};
use allegro_tests::golden;
use allegro_tests::metrics::{golden_range, instant_lines, range_lines};

fn golden_dir() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("traceql/metrics")
}

async fn run(engine: &QueryEngine, query: &str, range: &str) -> Result<Vec<String>, String> {
    let (start, end, step) = golden_range(range);
    let req = MetricsRequest {
        query: query.to_string(),
        start,
        end,
        step,
        exemplars: Some(0),
        max_series: None,
        mode: Mode::All,
    };
    let limits = MetricsLimits::default();
    let tenants = [TENANT.to_string()];
    let e = |e: allegro_engine::error::EngineError| e.to_string();
    Ok(match step {
        None => instant_lines(
            &engine
                .query_instant(&tenants, &req, &limits)
                .await
                .map_err(e)?,
            end,
        ),
        Some(_) => range_lines(
            &engine
                .query_range(&tenants, &req, &limits)
                .await
                .map_err(e)?,
        ),
    })
}

/// Runs `g`'s cases of `file` against `engine` (`mode` names its data), adding each failure
/// to `failures`; how many cases ran.
async fn check(
    file: &str,
    g: &golden::GoldenFile,
    mode: &str,
    engine: &QueryEngine,
    failures: &mut Vec<String>,
) -> usize {
    for case in &g.cases {
        let range = case
            .range
            .as_deref()
            .unwrap_or_else(|| panic!("{file}:{}: no range line", case.line));
        let got = run(engine, &case.query, range).await;
        if !case.expect.matches(&got) {
            failures.push(format!(
                "{}:{} [{mode}] {}\n  expected: {:#?}\n  got:      {:#?}",
                file, case.line, case.query, case.expect, got
            ));
        }
    }
    g.cases.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_golden_files() {
    let files = golden::load_dir(&golden_dir(), &golden_dir().join("../data"));
    let mut failures = Vec::new();
    let mut cases = 0;
    for (file, g, ds) in &files {
        let dir = tempfile::tempdir().unwrap();
        let blocks = over_blocks(ds, &dir.path().join("blocks")).await;
        let head = over_head(ds, &dir.path().join("head"));
        let split = split_across(ds, &dir.path().join("split")).await;
        for (mode, engine) in [("blocks", &blocks), ("head", &head), ("split", &split)] {
            cases += check(file, g, mode, engine, &mut failures).await;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} metrics golden cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "{cases} metrics golden cases passed in {} files",
        files.len()
    );
}

/// The golden files answered with a Ballista cluster (a scheduler and two executors on
/// loopback) running the first stages' aggregations: the same answers as one process, over
/// blocks, the live head and split traces. One cluster over one store; each mode's data
/// replaces the last's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_golden_files_on_a_cluster() {
    let files = golden::load_dir(&golden_dir(), &golden_dir().join("../data"));
    let root = tempfile::tempdir().unwrap();
    let (cluster, store) = allegro_tests::cluster::two_executors(root.path(), 2).await;
    let mut failures = Vec::new();
    let mut cases = 0;
    for (file, g, ds) in &files {
        for mode in ["blocks", "head", "split"] {
            allegro_tests::cluster::emptied(&store);
            let engine = match mode {
                "blocks" => over_blocks(ds, &store).await,
                "head" => over_head(ds, &store),
                _ => split_across(ds, &store).await,
            };
            let engine = cluster.remote(engine);
            cases += check(file, g, &format!("cluster, {mode}"), &engine, &mut failures).await;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} metrics golden cases failed on the cluster:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
