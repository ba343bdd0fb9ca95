//! Trace lookups and queries read only the blocks, pages and footers they need.

use std::sync::Arc;

use allegro_datasets::{BlockCut, GenOptions, Summary, generate_all, write_blocks};
use allegro_engine::block::writer::BlockWriteOptions;
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::ids::TraceId;
use allegro_engine::query::QueryEngine;
use allegro_engine::query::metrics::{MetricsLimits, MetricsRequest, Mode};
use allegro_engine::storage::{StorageBackend, open_store};
use object_store::ObjectStore;

const START: u64 = 1_767_225_600_000_000_000;

/// One hour of generated spans written as blocks of 2,000 spans for tenant `t` under `dir`.
async fn blocks(
    dir: &std::path::Path,
    seed: u64,
    spans: u64,
) -> (Arc<dyn ObjectStore>, GenOptions, Summary) {
    let store = open_store(&StorageBackend::Local {
        path: dir.to_path_buf(),
    })
    .unwrap();
    let opts = GenOptions {
        seed,
        spans,
        start_unix_nano: START,
        duration_nano: 3_600_000_000_000,
    };
    let summary = write_blocks(
        &store,
        "t",
        opts.clone(),
        BlockCut::whole(2_000),
        &BlockWriteOptions::default(),
        &mut |_| {},
    )
    .await
    .unwrap();
    (store, opts, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_skip_blocks_by_bloom_and_pages_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let (store, opts, summary) = blocks(dir.path(), 5, 60_000).await;
    let blocks = summary.blocks.len();
    assert!(blocks >= 25, "{blocks} blocks");
    let data_bytes: u64 = summary.blocks.iter().map(|b| b.size).sum();
    let catalog = Catalog::new(store, CatalogConfig::default());
    let traces = generate_all(opts);
    let sample: Vec<TraceId> = traces
        .iter()
        .step_by(53)
        .map(|t| TraceId::from_bytes(&t[0].scope_spans[0].spans[0].trace_id).unwrap())
        .collect();
    // Warm the caches (footers, blooms, metas) once, then measure.
    for id in &sample {
        catalog.find_trace("t", id, None).await.unwrap();
    }
    let (_, before) = catalog.read_counters();
    let mut blocks_read = 0;
    for id in &sample {
        let found = catalog.find_trace("t", id, None).await.unwrap();
        assert!(!found.resource_spans.is_empty(), "{id}");
        assert_eq!(found.total_blocks, blocks);
        blocks_read += found.blocks_read;
    }
    let per_lookup = (catalog.read_counters().1 - before) as f64 / sample.len() as f64;
    // Random trace IDs overlap every block's min/max, so the bloom does the pruning: at 1%
    // false positives, barely more than one block per lookup has its pages read.
    let avg_blocks = blocks_read as f64 / sample.len() as f64;
    assert!(
        avg_blocks < 1.0 + 0.05 * blocks as f64,
        "{avg_blocks} blocks read per lookup of {blocks}"
    );
    // And within a block only the pages holding the trace: a small share of the data.
    assert!(
        per_lookup < data_bytes as f64 / blocks as f64,
        "{per_lookup} bytes per lookup; one block is {}",
        data_bytes / blocks as u64
    );
    // An absent ID is answered from cached blooms alone, with no storage read in most cases.
    let (_, before) = catalog.read_counters();
    for i in 0..50u8 {
        let found = catalog
            .find_trace("t", &TraceId([i.wrapping_add(1); 16]), None)
            .await
            .unwrap();
        assert!(found.resource_spans.is_empty());
    }
    let absent = (catalog.read_counters().1 - before) as f64 / 50.0;
    assert!(absent < per_lookup, "absent IDs cost {absent} bytes each");
}

/// Runs `req` cold then warm: bytes read from storage and the series, per run.
async fn cold_then_warm(
    catalog: &Catalog,
    engine: &QueryEngine,
    req: &MetricsRequest,
) -> [(u64, Vec<allegro_engine::tempopb::TimeSeries>); 2] {
    let tenants = ["t".to_string()];
    let run = async || {
        let (_, before) = catalog.read_counters();
        let r = engine
            .query_range(&tenants, req, &MetricsLimits::default())
            .await
            .unwrap();
        (catalog.read_counters().1 - before, r.series)
    };
    [run().await, run().await]
}

/// A warm metrics query reads no footer or page index: they come from the catalog's cache
/// (DataFusion's own reader kept footers without their page index and decoded it per query).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_queries_read_only_data_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, summary) = blocks(dir.path(), 7, 20_000).await;
    let footers: u64 = summary.blocks.iter().map(|b| b.footer_size).sum();
    let catalog = Arc::new(Catalog::new(store, CatalogConfig::default()));
    let engine = QueryEngine::new(catalog.clone(), None).unwrap();
    let req = MetricsRequest {
        query: "{ status = error } | count_over_time() by (resource.service.name)".into(),
        start: START,
        end: START + 3_600_000_000_000,
        // Not whole minutes: counted from the spans, not from the blocks' rollups.
        step: Some(30_000_000_000),
        exemplars: Some(0),
        max_series: None,
        mode: Mode::All,
    };
    // Block metas are read (and cached) by the listing; only Parquet reads are compared.
    assert_eq!(
        catalog.blocks("t").await.unwrap().len(),
        summary.blocks.len()
    );
    let [(cold, first), (warm, second)] = cold_then_warm(&catalog, &engine, &req).await;
    let (read, answers) = ([cold, warm], [first, second]);
    assert!(!answers[0].is_empty());
    assert_eq!(answers[0], answers[1]);
    // Cold: every footer with its page index plus the data pages; warm: the same data pages
    // only, so at least the footers' bytes fewer.
    assert!(
        read[0] >= read[1] + footers && read[1] > 0,
        "cold {} warm {} footers {footers}",
        read[0],
        read[1]
    );
}

/// Blocks keep root spans in row groups of their own, so a root-span query (Traces
/// Drilldown's default signal) skips the other row groups by their statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_span_queries_read_only_the_root_row_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _, summary) = blocks(dir.path(), 11, 20_000).await;
    let catalog = Arc::new(Catalog::new(store, CatalogConfig::default()));
    let engine = QueryEngine::new(catalog.clone(), None).unwrap();
    // Warm read of the data pages and the total count of one query.
    let run = async |query: &str| {
        let req = MetricsRequest {
            query: query.into(),
            start: START,
            end: START + 3_600_000_000_000,
            step: Some(3_600_000_000_000),
            exemplars: Some(0),
            max_series: None,
            mode: Mode::All,
        };
        let [_, (read, series)] = cold_then_warm(&catalog, &engine, &req).await;
        let total: f64 = series
            .iter()
            .flat_map(|s| &s.samples)
            .map(|s| s.value)
            .sum();
        (read, total)
    };
    let (roots, n_roots) = run("{ nestedSetParent < 0 } | count_over_time()").await;
    let (children, n_children) = run("{ nestedSetParent >= 0 } | count_over_time()").await;
    // The generator writes whole traces, each with one root.
    assert_eq!(n_roots, summary.traces as f64);
    assert_eq!(n_roots + n_children, summary.spans as f64);
    // The same two columns, about one row in twenty: without the layout both read every row.
    assert!(
        roots * 5 < children,
        "root query read {roots} bytes, child query {children}"
    );
}
