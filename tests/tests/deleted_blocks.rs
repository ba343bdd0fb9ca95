//! A block deleted under a query or a trace lookup (merged and retired, or expired, by another
//! process sharing the storage, whose deletion this process has not listed yet) is not an
//! error: the tenant's blocks are listed again and the answer comes from what is there.

use allegro_engine::block::meta::objects;
use allegro_engine::block::writer::block_path;
use allegro_engine::convert::normalize::span_count;
use allegro_engine::ids::TraceId;
use allegro_engine::query::QueryEngine;
use allegro_engine::query::search::SearchRequest;
use allegro_tests::engines::{catalog_at, store_block};
use allegro_tests::one_span_trace;
use object_store::ObjectStoreExt;

const TENANT: &str = "t";

async fn traces_found(engine: &QueryEngine) -> Vec<String> {
    let req = SearchRequest {
        query: "{ }".into(),
        limit: 20,
        spss: 3,
        range: None,
    };
    let r = engine
        .search(&[TENANT.to_string()], &req)
        .await
        .expect("search");
    let mut ids: Vec<String> = r.traces.iter().map(|t| t.trace_id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_a_block_deleted_under_it_lists_again_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog_at(dir.path());
    let mut blocks = Vec::new();
    for id in 1..=3u8 {
        blocks.push(store_block(&catalog, TENANT, one_span_trace(id)).await);
    }
    let engine = QueryEngine::new(catalog.clone(), None).expect("engine");
    let all = traces_found(&engine).await;
    assert_eq!(all.len(), 3);
    // Another process deletes the second block; this catalog still lists it (and holds its
    // footer), as it would until its next poll.
    let gone = &blocks[1].meta;
    for object in [
        objects::META,
        objects::DATA,
        objects::ROLLUP,
        objects::BLOOM,
    ] {
        catalog
            .store()
            .delete(&block_path(TENANT, &gone.block_id, object))
            .await
            .unwrap();
    }
    let left = traces_found(&engine).await;
    // Trace IDs are answered without leading zeros, as Tempo does.
    let gone_trace = hex::encode([2u8; 16]);
    let want: Vec<String> = all
        .iter()
        .filter(|id| id.as_str() != gone_trace.trim_start_matches('0'))
        .cloned()
        .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(left, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_lookup_over_a_block_deleted_under_it_lists_again() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog_at(dir.path());
    let mut blocks = Vec::new();
    for id in 1..=3u8 {
        blocks.push(store_block(&catalog, TENANT, one_span_trace(id)).await);
    }
    let trace = |n: u8| TraceId([n; 16]);
    // Blooms and footers cached, as after earlier lookups.
    for n in 1..=3 {
        let found = catalog.find_trace(TENANT, &trace(n), None).await.unwrap();
        assert_eq!(span_count(&found.resource_spans), 1);
    }
    for object in [
        objects::META,
        objects::DATA,
        objects::ROLLUP,
        objects::BLOOM,
    ] {
        catalog
            .store()
            .delete(&block_path(TENANT, &blocks[1].meta.block_id, object))
            .await
            .unwrap();
    }
    let gone = catalog.find_trace(TENANT, &trace(2), None).await.unwrap();
    assert!(gone.resource_spans.is_empty());
    assert_eq!(gone.total_blocks, 2, "listed again");
    let kept = catalog.find_trace(TENANT, &trace(3), None).await.unwrap();
    assert_eq!(span_count(&kept.resource_spans), 1);
}
