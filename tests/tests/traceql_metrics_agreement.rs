//! TraceQL metrics from the engine must agree with the plain reference evaluator
//! (`reference::metrics`) over the generated dataset (three Parquet blocks plus the live
//! head), for every function, `by()`, structural pipelines, and trace sampling — which
//! must equal the exact answer over the traces whose ID falls below the sampling bound,
//! scaled up.

use allegro_engine::query::QueryEngine;
use allegro_engine::query::metrics::{MetricsLimits, MetricsRequest, Mode};
use allegro_engine::tempopb::PartialStatus;
use allegro_tests::engines::{
    GENERATED_START, TENANT, generated, generated_compacted, reopened_generated,
};
use allegro_tests::golden::labels_text;
use allegro_tests::metrics::{AGREEMENT_QUERIES, close, diff, series};
use allegro_tests::reference::{self, RefSeries};

/// The engine's answer to range query `q` over `(start, end, step)`, as the reference evaluator
/// gives its own, and the answer's partial status.
async fn answer(
    engine: &QueryEngine,
    q: &str,
    (start, end, step): (u64, u64, u64),
) -> (RefSeries, i32) {
    let req = MetricsRequest {
        query: q.to_string(),
        start,
        end,
        step: Some(step),
        exemplars: Some(0),
        max_series: Some(100_000),
        mode: Mode::All,
    };
    let r = engine
        .query_range(&[TENANT.to_string()], &req, &MetricsLimits::default())
        .await
        .unwrap();
    (series(&r), r.status)
}

/// Counting queries, which blocks answer from their span counts per minute
/// (`block/rollup.rs`), agree with the reference evaluator: with every rollup intact, with one
/// damaged (that block is read span by span), and with the other blocks' spans damaged (only
/// their rollups can answer; a query that needs spans then says it is partial).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_from_rollups_agree_with_the_reference_evaluator() {
    const QUERIES: &[&str] = &[
        "{ } | rate()",
        "{ } | count_over_time() by (resource.service.name)",
        "{ status = error } | rate() by (resource.service.name, name)",
        "{ nestedSetParent < 0 && true } | rate() by (resource.service.name)",
        "{ kind = server && resource.service.name != \"api-gateway\" } | count_over_time() by (kind, status)",
        "{ status != error || nestedSetParent < 0 } | count_over_time() by (name)",
    ];
    let (seed, spans) = (7, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let (engine, all) = generated(dir.path(), seed, spans).await;
    let traces = reference::traces(&all);
    // Whole minutes (the range from the data's first minute, a two-minute step), and a step of
    // Drilldown's shape (range / 64 s) whose boundaries cut minutes, which are counted from the
    // spans of the blocks holding them.
    let aligned = (
        GENERATED_START + 60_000_000_000,
        GENERATED_START + 600_000_000_000,
        120_000_000_000,
    );
    let cutting = (
        GENERATED_START,
        GENERATED_START + 600_000_000_000,
        337_000_000_000,
    );
    let check = |engine: QueryEngine, when: &'static str, grids: &'static [(u64, u64, u64)]| {
        let traces = &traces;
        async move {
            for (q, &grid) in QUERIES
                .iter()
                .flat_map(|q| grids.iter().map(move |g| (q, g)))
            {
                let ast = allegro_traceql::compile(q).unwrap();
                let want = reference::metrics(&ast, traces, grid, &|_| true, &|_, _| 1.0).unwrap();
                assert!(!want.is_empty(), "{q}: the reference finds nothing");
                let (got, status) = answer(&engine, q, grid).await;
                if let Some(d) = diff(&want, &got) {
                    panic!("{when}: {q}, step {} s: {d}", grid.2 / 1_000_000_000);
                }
                assert_eq!(status, PartialStatus::Complete as i32, "{when}: {q}");
            }
            engine
        }
    };
    let both: &'static [_] = Box::leak(Box::new([aligned, cutting]));
    check(engine, "rollups intact", both).await;
    // Merged into one block read by time slice: only slices holding a cut minute are read.
    let merged = tempfile::tempdir().unwrap();
    let engine = generated_compacted(merged.path(), seed, spans).await;
    let catalog = allegro_tests::engines::catalog_at(merged.path());
    let metas: Vec<_> = catalog
        .blocks(TENANT)
        .await
        .unwrap()
        .iter()
        .filter(|b| b.compaction_level > 0)
        .cloned()
        .collect();
    assert_eq!(metas.len(), 1);
    assert!(metas[0].rollup.is_some());
    assert!(metas[0].slices.as_ref().is_some_and(|s| s.len() > 4));
    check(engine, "merged, sliced", both).await;
    let mut blocks: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path().join(TENANT))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("rollup.parquet").exists())
        .collect();
    blocks.sort();
    assert_eq!(blocks.len(), 3, "every block is written with its rollup");
    let flip = |path: std::path::PathBuf| {
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        for b in &mut bytes[at..at + 64] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
    };
    flip(blocks[0].join("rollup.parquet"));
    check(
        reopened_generated(dir.path(), seed, spans),
        "one rollup damaged",
        both,
    )
    .await;
    // Spans cut off at half the file: its footer, and so every column, is gone.
    for b in &blocks[1..] {
        let path = b.join("data.parquet");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    }
    let engine = check(
        reopened_generated(dir.path(), seed, spans),
        "two blocks' spans damaged",
        &both[..1],
    )
    .await;
    // The damaged spans are really unreadable for a query that needs them.
    // So are the minutes cut by the other step's boundaries.
    for (q, grid) in [
        ("{ } | avg_over_time(duration)", aligned),
        ("{ } | rate()", cutting),
    ] {
        assert_eq!(
            answer(&engine, q, grid).await.1,
            PartialStatus::Partial as i32,
            "{q}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_reference_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, all) = generated(dir.path(), 42, 30_000).await;
    let traces = reference::traces(&all);
    let (start, end, step) = (
        GENERATED_START + 17_000_000_000,
        GENERATED_START + 590_000_000_000,
        30_000_000_000,
    );
    let limits = MetricsLimits::default();
    let tenants = [TENANT.to_string()];
    let run = |q: String| {
        let engine = &engine;
        async move { answer(engine, &q, (start, end, step)).await.0 }
    };
    let mut failures = Vec::new();
    let mut points = 0;
    for q in AGREEMENT_QUERIES {
        let ast = allegro_traceql::compile(q).unwrap();
        let want =
            reference::metrics(&ast, &traces, (start, end, step), &|_| true, &|_, _| 1.0).unwrap();
        assert!(
            !want.is_empty(),
            "{q}: the reference finds nothing; pick another query"
        );
        points += want.values().map(|s| s.len()).sum::<usize>();
        if let Some(d) = diff(&want, &run(q.to_string()).await) {
            failures.push(format!("{q}: {d}"));
        }
    }
    // Sampling keeps the traces below the trace-ID bound. The live head and pipelines evaluated
    // per trace scale by the inverse of the kept share of the ID space; spans counted one by
    // one from a block are scaled by the block's spans over its kept spans.
    let blocks = block_trace_ids(dir.path());
    assert_eq!(blocks.len(), 3);
    for (q, rate, per_block) in [
        ("{ } | rate() with(sample=0.25)", 0.25, true),
        (
            "{ kind = server } >> { } | count_over_time() by (resource.service.name) with(trace_sample=0.5)",
            0.5,
            false,
        ),
        (
            "{ } | quantile_over_time(duration, 0.9) with(span_sample=0.3)",
            0.3,
            true,
        ),
        (
            "{ status = error } | avg_over_time(duration) by (resource.service.name) with(sample=0.1)",
            0.1,
            true,
        ),
        (
            "{ } | compare({ status = error }, 1000) with(sample=0.25)",
            0.25,
            false,
        ),
    ] {
        // The kept share of the 1024 trace-ID buckets (the top 10 bits), computed here, not
        // by the engine.
        let kept = (rate * 1024.0_f64).floor() as u16;
        let bound = (kept << 6).to_be_bytes();
        let below = |id: &[u8]| id[..2] < bound[..];
        let block_weight: Vec<f64> = blocks
            .iter()
            .map(|ids| ids.len() as f64 / ids.iter().filter(|id| below(id)).count() as f64)
            .collect();
        let head_weight = 1024.0 / f64::from(kept);
        let weight = |t: &reference::RTrace, _span: usize| match blocks
            .iter()
            .position(|ids| ids.binary_search(&t.id).is_ok())
        {
            Some(b) if per_block => block_weight[b],
            _ => head_weight,
        };
        let ast = allegro_traceql::compile(q).unwrap();
        let keep = |t: &reference::RTrace| below(&t.id);
        let want = reference::metrics(&ast, &traces, (start, end, step), &keep, &weight).unwrap();
        if let Some(d) = diff(&want, &run(q.to_string()).await) {
            failures.push(format!("{q}: {d}"));
        }
    }
    // Asking a sampled query for exemplars leaves its counts alone, and every exemplar is a
    // span of a kept trace (ID below the 0.25 bound).
    let q = "{ } | rate() with(sample=0.25)";
    let with_exemplars = MetricsRequest {
        query: q.to_string(),
        start,
        end,
        step: Some(step),
        exemplars: Some(40),
        max_series: Some(100_000),
        mode: Mode::All,
    };
    let r = engine
        .query_range(&tenants, &with_exemplars, &limits)
        .await
        .unwrap();
    let plain = run(q.to_string()).await;
    assert_eq!(r.series.len(), plain.len());
    for s in &r.series {
        for x in &s.samples {
            let want = plain[&labels_text(&s.labels)][&x.timestamp_ms];
            assert!(close(want, x.value), "{want} vs {}", x.value);
        }
    }
    let exemplar_ids: Vec<Vec<u8>> = r
        .series
        .iter()
        .flat_map(|s| &s.exemplars)
        .filter_map(|e| e.labels.iter().find(|kv| kv.key == "trace:id"))
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(h) => {
                hex::decode(h).ok()
            }
            _ => None,
        })
        .collect();
    assert!(exemplar_ids.len() >= 10, "{exemplar_ids:?}");
    assert!(
        exemplar_ids.iter().all(|id| id[..2] < [0x40, 0x00][..]),
        "{exemplar_ids:?}"
    );

    assert!(
        failures.is_empty(),
        "{} of {} queries disagree:\n{}",
        failures.len(),
        AGREEMENT_QUERIES.len() + 5,
        failures.join("\n\n")
    );
    eprintln!(
        "{} metrics queries agree ({points} points)",
        AGREEMENT_QUERIES.len() + 5
    );
}

/// The trace ID of every span of each block under `dir` (sorted), read from the Parquet files
/// themselves.
fn block_trace_ids(dir: &std::path::Path) -> Vec<Vec<Vec<u8>>> {
    use arrow::array::{Array, FixedSizeBinaryArray};
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "data.parquet") {
                files.push(p);
            }
        }
    }
    files
        .iter()
        .map(|f| {
            let file = std::fs::File::open(f).unwrap();
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap();
            let mask =
                parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), ["trace_id"]);
            let mut ids = Vec::new();
            for b in builder.with_projection(mask).build().unwrap() {
                let b = b.unwrap();
                let col = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<FixedSizeBinaryArray>()
                    .unwrap();
                ids.extend((0..col.len()).map(|i| col.value(i).to_vec()));
            }
            ids.sort();
            ids
        })
        .collect()
}
