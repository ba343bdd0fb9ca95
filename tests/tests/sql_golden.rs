//! SQL golden files (`tests/sql/*.slt`, sqllogictest format, extendable without Rust): each
//! file names its dataset in a first-line comment (`# dataset: shop`, from
//! `tests/traceql/data/`) and runs over the dataset stored three ways: two blocks that chose
//! their hot columns separately, the live head, and compacted blocks. The answers must not
//! depend on where a span or an attribute is stored. Empty strings print as `(empty)`.

use std::path::Path;

use allegro_engine::error::EngineError;
use allegro_engine::query::QueryEngine;
use allegro_tests::dataset;
use allegro_tests::engines::{TENANT, compacted, over_blocks, over_head};
use allegro_tests::golden::{sql_golden_files, sql_output};
use sqllogictest::{DBOutput, DefaultColumnType};

struct Db(QueryEngine);

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = EngineError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, EngineError> {
        let a = self.0.sql(&[TENANT.to_string()], sql, 100_000).await?;
        Ok(sql_output(&a.schema, &a.batches))
    }

    async fn shutdown(&mut self) {}

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_files() {
    let mut failures = Vec::new();
    for (file, ds) in &sql_golden_files() {
        let dir = tempfile::tempdir().unwrap();
        let modes = [
            ("blocks", over_blocks(ds, &dir.path().join("blocks")).await),
            ("head", over_head(ds, &dir.path().join("head"))),
            (
                "compacted",
                compacted(ds, &dir.path().join("compacted")).await,
            ),
        ];
        // The two blocks differ in what they keep hot, or the attribute cases prove nothing.
        let blocks = modes[0].1.catalog().blocks(TENANT).await.unwrap();
        let hot: Vec<_> = blocks.iter().map(|b| b.hot_columns.clone()).collect();
        assert!(
            hot.iter().any(|h| !h.is_empty()) && hot.windows(2).any(|w| w[0] != w[1]),
            "{}: {hot:?}",
            file.display()
        );
        for (mode, engine) in modes {
            let mut runner = sqllogictest::Runner::new(|| {
                let e = engine.clone();
                async move { Ok(Db(e)) }
            });
            if let Err(e) = runner.run_file_async(file).await {
                failures.push(format!("[{mode}] {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The golden files answered by a Ballista cluster (a scheduler and two executors on
/// loopback): the same answers as one process, from blocks (decoded by the scheduler, read by
/// the executors), from the live head (sent as rows) and from a compacted block (time slices
/// sent as row groups). One cluster over one store; each mode's data replaces the last's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn golden_files_on_a_cluster() {
    let root = tempfile::tempdir().unwrap();
    let (cluster, store) = allegro_tests::cluster::two_executors(root.path(), 2).await;
    let mut failures = Vec::new();
    for (file, ds) in &sql_golden_files() {
        for mode in ["blocks", "head", "compacted"] {
            allegro_tests::cluster::emptied(&store);
            let engine = match mode {
                "blocks" => over_blocks(ds, &store).await,
                "head" => over_head(ds, &store),
                _ => compacted(ds, &store).await,
            };
            let engine = cluster.remote(engine);
            assert!(engine.is_remote());
            let mut runner = sqllogictest::Runner::new(|| {
                let e = engine.clone();
                async move { Ok(Db(e)) }
            });
            if let Err(e) = runner.run_file_async(file).await {
                failures.push(format!("[cluster, {mode}] {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// An engine over the shop dataset in two blocks under `dir`.
async fn shop_in_blocks(dir: &Path) -> QueryEngine {
    let path = allegro_tests::workspace_dir().join("tests/traceql/data/shop.traces");
    let ds = dataset::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
    over_blocks(&ds, dir).await
}

/// Every `plan` row of an `EXPLAIN` answer, as text.
async fn explain(engine: &QueryEngine, sql: &str) -> String {
    let a = engine
        .sql(&[TENANT.to_string()], &format!("EXPLAIN {sql}"), 1000)
        .await
        .unwrap();
    let mut out = String::new();
    for b in &a.batches {
        let plans = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>();
        for p in plans.into_iter().flatten().flatten() {
            out.push_str(p);
            out.push('\n');
        }
    }
    out
}

/// Filters on the readable kind and status reach the Parquet scan as comparisons of the stored
/// codes, which statistics answer, not as text built for every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_and_status_filters_reach_the_scan_as_codes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shop_in_blocks(dir.path()).await;
    let plan = explain(
        &engine,
        "SELECT count(*) FROM spans WHERE kind = 'server' AND status <> 'error'",
    )
    .await;
    let scans: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("DataSourceExec") && l.contains("predicate="))
        .collect();
    assert!(!scans.is_empty(), "no scan predicate in\n{plan}");
    for scan in scans {
        assert!(
            scan.contains("kind@") && scan.contains("status_code@") && !scan.contains("CASE"),
            "the scan should test the codes: {scan}"
        );
    }
}

/// A lookup by hex trace ID reaches the Parquet scan as a comparison of the stored bytes, which
/// the blocks' statistics and blooms prune, and still means what the hex text means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_id_lookup_is_pruned_on_the_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shop_in_blocks(dir.path()).await;
    let tenants = [TENANT.to_string()];
    let root = engine
        .sql(&tenants, "SELECT trace_id FROM spans WHERE name = 'A'", 10)
        .await
        .unwrap();
    let id = root.batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .unwrap()
        .value(0)
        .to_string();
    let lookup = format!("SELECT name FROM spans WHERE trace_id = '{id}' ORDER BY name");
    let plan = explain(&engine, &lookup).await;
    let scan = plan
        .lines()
        .find(|l| l.contains("DataSourceExec") && l.contains("predicate="))
        .unwrap_or_else(|| panic!("no scan predicate in\n{plan}"));
    assert!(
        scan.contains("trace_id_min") && !scan.contains("hex_id"),
        "the scan should prune on the trace_id bytes: {scan}"
    );
    let names = |sql: String| {
        let engine = engine.clone();
        let tenants = tenants.clone();
        async move {
            let a = engine.sql(&tenants, &sql, 100).await.unwrap();
            let mut v = Vec::new();
            for b in &a.batches {
                let col = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>();
                v.extend(col.into_iter().flatten().flatten().map(String::from));
            }
            v
        }
    };
    assert_eq!(names(lookup).await, ["A", "B", "C", "D"]);
    // Text hex_id never writes matches nothing, as a plain text comparison says.
    let upper = format!(
        "SELECT name FROM spans WHERE trace_id = '{}'",
        id.to_uppercase()
    );
    assert!(names(upper).await.is_empty());
}

/// Joins on the ID text of the tables run on the stored bytes: both sides' when both are
/// tables, `id_bytes` of the text when one side is `traceql()` (the answers are the golden
/// files').
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_on_id_text_run_on_the_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = shop_in_blocks(dir.path()).await;
    let logical = |plan: String| {
        plan.split("DataSourceExec")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let own = logical(
        explain(
            &engine,
            "SELECT count(*) FROM spans p JOIN spans c ON c.trace_id = p.trace_id",
        )
        .await,
    );
    assert!(
        own.contains("__allegro_id_bytes_l0 = ") && !own.contains("Inner Join: p.trace_id"),
        "{own}"
    );
    let with_traceql = explain(
        &engine,
        "SELECT count(*) FROM traceql('{ }') t JOIN spans s USING (trace_id, span_id)",
    )
    .await;
    assert!(
        with_traceql.contains("id_bytes(t.trace_id"),
        "{with_traceql}"
    );
}
