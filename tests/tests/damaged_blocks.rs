//! Damage is contained and visible: a block whose data, footer or `meta.json` is damaged is
//! quarantined (skipped, listed, counted) and the answers over it say they are partial; a
//! damaged bloom filter costs only the filter. Each case damages one of three blocks on disk
//! and checks the answers hold exactly the other two blocks' traces.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use allegro_engine::block::lifecycle::{LifecycleConfig, apply_retention};
use allegro_engine::block::meta::objects;
use allegro_engine::block::reader::verify_block;
use allegro_engine::ids::TraceId;
use allegro_engine::query::QueryEngine;
use allegro_engine::query::metrics::{MetricsLimits, MetricsRequest, Mode};
use allegro_engine::query::search::SearchRequest;
use allegro_engine::schema::col;
use allegro_engine::tempopb::PartialStatus;
use allegro_tests::engines::{
    GENERATED_START, TENANT, catalog_at, encode, generated_traces, store_block,
};

/// Three blocks of generated traces under `dir`: each block's trace IDs (hex, as search
/// answers them: no leading zeros) and its directory.
async fn three_blocks(dir: &Path) -> Vec<(BTreeSet<String>, PathBuf)> {
    let traces = generated_traces(11, 6_000);
    let catalog = catalog_at(dir);
    let mut out = Vec::new();
    for chunk in traces.chunks(traces.len().div_ceil(3)) {
        let ids: BTreeSet<String> = chunk
            .iter()
            .map(|t| {
                let id = &t[0].scope_spans[0].spans[0].trace_id;
                hex::encode(id).trim_start_matches('0').to_string()
            })
            .collect();
        let block = store_block(&catalog, TENANT, chunk.iter().flatten().cloned().collect()).await;
        out.push((ids, dir.join(TENANT).join(block.meta.block_id.to_string())));
    }
    out
}

/// A fresh engine over `dir`: nothing cached from before the damage.
fn engine(dir: &Path) -> QueryEngine {
    QueryEngine::new(catalog_at(dir), None).expect("engine")
}

async fn traces_found(engine: &QueryEngine) -> BTreeSet<String> {
    let req = SearchRequest {
        query: "{ }".into(),
        limit: 100_000,
        spss: 1,
        range: None,
    };
    let r = engine
        .search(&[TENANT.to_string()], &req)
        .await
        .expect("a search over a damaged block still answers");
    r.traces.iter().map(|t| t.trace_id.clone()).collect()
}

fn union(a: &BTreeSet<String>, b: &BTreeSet<String>) -> BTreeSet<String> {
    a.union(b).cloned().collect()
}

/// Flips `n` bytes of `path` from `at` on.
fn flip(path: &Path, at: usize, n: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes[at..at + n] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

/// Checks the answers of `engine` after block 1 of `blocks` was damaged: searches and metrics
/// answer blocks 0 and 2 exactly, say they are partial, and the block is quarantined for
/// `object`.
async fn answers_without_block_1(
    engine: &QueryEngine,
    blocks: &[(BTreeSet<String>, PathBuf)],
    object: &str,
) {
    let tenants = [TENANT.to_string()];
    assert_eq!(
        traces_found(engine).await,
        union(&blocks[0].0, &blocks[2].0)
    );
    let damaged = blocks[1]
        .1
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let q = engine.catalog().quarantined(TENANT);
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        (q[0].block.as_str(), q[0].object.as_str()),
        (damaged.as_str(), object)
    );
    let notice = engine.damage_notice(&tenants).expect("a partial notice");
    assert!(notice.contains(&damaged), "{notice}");

    let req = MetricsRequest {
        query: "{ } | count_over_time()".into(),
        start: GENERATED_START,
        end: GENERATED_START + 900_000_000_000,
        step: Some(900_000_000_000),
        exemplars: Some(0),
        max_series: None,
        mode: Mode::Blocks,
    };
    let r = engine
        .query_range(&tenants, &req, &MetricsLimits::default())
        .await
        .expect("metrics over a damaged block still answer");
    assert_eq!(r.status, PartialStatus::Partial as i32);
    assert!(r.message.contains(&damaged), "{}", r.message);
    let mut text = String::new();
    engine.render_metrics(&mut text);
    assert!(
        text.contains(&format!(
            "allegro_blocks_quarantined{{tenant=\"{TENANT}\"}} 1"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bytes_in_a_blocks_data_quarantine_it_and_answers_say_partial() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = three_blocks(dir.path()).await;
    let all = engine(dir.path());
    let every = traces_found(&all).await;
    assert_eq!(every.len(), blocks.iter().map(|b| b.0.len()).sum::<usize>());
    assert_eq!(all.damage_notice(&[TENANT.to_string()]), None);
    let meta = all.catalog().blocks(TENANT).await.unwrap();
    for m in meta.iter() {
        verify_block(all.catalog().store(), m)
            .await
            .expect("an intact block verifies");
    }

    // 16 bytes in the middle of the start times a search reads: delta-encoded, they decode,
    // into wrong values.
    let data = blocks[1].1.join(objects::DATA);
    let file = std::fs::File::open(&data).unwrap();
    let md = parquet::file::reader::FileReader::metadata(
        &parquet::file::reader::SerializedFileReader::new(file).unwrap(),
    )
    .clone();
    let chunk = md
        .row_group(0)
        .columns()
        .iter()
        .find(|c| c.column_path().string() == col::START_TIME)
        .expect("a start time column");
    let (at, len) = chunk.byte_range();
    flip(&data, (at + len / 2) as usize, 16);
    answers_without_block_1(&engine(dir.path()), &blocks, objects::DATA).await;

    let fresh = engine(dir.path());
    let damaged = fresh
        .catalog()
        .blocks(TENANT)
        .await
        .unwrap()
        .iter()
        .find(|m| blocks[1].1.ends_with(m.block_id.to_string()))
        .cloned()
        .expect("listed until read");
    let e = verify_block(fresh.catalog().store(), &damaged)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_footer_is_quarantined_not_a_failed_query() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = three_blocks(dir.path()).await;
    let data = blocks[1].1.join(objects::DATA);
    let len = std::fs::metadata(&data).unwrap().len() as usize;
    // Inside the footer (its last kilobyte holds the key-value metadata and schema).
    flip(&data, len - 200, 16);
    answers_without_block_1(&engine(dir.path()), &blocks, objects::DATA).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_meta_json_is_quarantined_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = three_blocks(dir.path()).await;
    // Still valid JSON, still a block meta: only its seal can tell.
    let path = blocks[1].1.join(objects::META);
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = text.replacen("\"totalSpans\": ", "\"totalSpans\": 1", 1);
    assert_ne!(changed, text);
    std::fs::write(&path, changed).unwrap();
    answers_without_block_1(&engine(dir.path()), &blocks, objects::META).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_that_lost_its_meta_json_is_kept_quarantined_while_orphans_are_swept() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = three_blocks(dir.path()).await;
    let engine = engine(dir.path());
    let catalog = engine.catalog();
    // Another process leaves what a write cut short leaves (marked pending, data and bloom,
    // no meta.json) ...
    let writer = catalog_at(dir.path());
    let cut = encode(TENANT, generated_traces(12, 50).concat());
    writer.stage_block(&cut).await.unwrap();
    // ... and what a deletion cut short after its meta.json leaves (as `delete_block` does:
    // the mark first, then meta.json).
    let deleted = store_block(&writer, TENANT, generated_traces(13, 50).concat()).await;
    let deleted_dir = dir
        .path()
        .join(TENANT)
        .join(deleted.meta.block_id.to_string());
    std::fs::write(deleted_dir.join(objects::PENDING), b"").unwrap();
    std::fs::remove_file(deleted_dir.join(objects::META)).unwrap();
    // Against both, a published block whose meta.json is lost.
    let meta = blocks[1].1.join(objects::META);
    let saved = std::fs::read(&meta).unwrap();
    std::fs::remove_file(&meta).unwrap();

    let hour = Duration::from_secs(3600);
    let cfg = LifecycleConfig {
        block_retention: Duration::ZERO,
        compacted_block_retention: hour,
        ..Default::default()
    };
    // Past every grace period: before the mark, all three directories went as orphans.
    let later = allegro_engine::now_unix_nanos() + 2 * hour.as_nanos() as u64;
    let d = apply_retention(catalog, TENANT, &cfg, later).await.unwrap();
    let mut swept = d.orphans.clone();
    swept.sort();
    let mut want = vec![
        cut.meta.block_id.to_string(),
        deleted.meta.block_id.to_string(),
    ];
    want.sort();
    assert_eq!(swept, want, "{d:?}");
    assert!(!deleted_dir.exists());
    assert!(
        blocks[1].1.join(objects::DATA).exists(),
        "the lost block's data is kept"
    );
    assert!(
        catalog.quarantined(TENANT)[0]
            .reason
            .contains("meta.json missing")
    );
    answers_without_block_1(&engine, &blocks, objects::META).await;

    // Restored from a copy, the block is whole again at the next pass.
    std::fs::write(&meta, saved).unwrap();
    apply_retention(catalog, TENANT, &cfg, later).await.unwrap();
    assert!(catalog.quarantined(TENANT).is_empty());
    assert_eq!(engine.damage_notice(&[TENANT.to_string()]), None);
    catalog.forget(TENANT).await;
    let every: BTreeSet<String> = blocks.iter().flat_map(|b| b.0.iter().cloned()).collect();
    assert_eq!(traces_found(&engine).await, every);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_bloom_costs_the_filter_not_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let blocks = three_blocks(dir.path()).await;
    let bloom = blocks[1].1.join(objects::BLOOM);
    let bytes = std::fs::read(&bloom).unwrap();
    std::fs::write(&bloom, &bytes[..bytes.len() / 2]).unwrap();
    let engine = engine(dir.path());
    for id in &blocks[1].0 {
        let id = TraceId::parse_hex(&format!("{id:0>32}")).unwrap();
        let found = engine
            .catalog()
            .find_trace(TENANT, &id, None)
            .await
            .expect("a lookup past a damaged bloom");
        assert!(!found.resource_spans.is_empty(), "{id:?} not found");
        assert!(engine.catalog().quarantined(TENANT).is_empty());
    }
    assert!(engine.catalog().quarantined(TENANT).is_empty());
    let every: BTreeSet<String> = blocks.iter().flat_map(|b| b.0.iter().cloned()).collect();
    assert_eq!(traces_found(&engine).await, every);
}
