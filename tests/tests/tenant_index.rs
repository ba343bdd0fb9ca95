//! The tenant index: once a catalog has listed a tenant, its polls read the one index object
//! (and only the metas of blocks it has not seen) instead of listing every block directory; an
//! index older than the stale limit, or none, means listing again; blocks published through the
//! catalog after the index was made are never missed.

use std::sync::Arc;
use std::time::Duration;

use allegro_engine::block::tenant_index::TenantIndex;
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_tests::engines::{catalog_at, encode, visible_blocks};
use allegro_tests::one_span_trace;
use object_store::ObjectStoreExt;
use uuid::Uuid;

const TENANT: &str = "t";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_read_the_index_when_fresh_and_list_storage_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let writer = catalog_at(dir.path());
    let mut all = Vec::new();
    for id in 1..=3u8 {
        let b = encode(TENANT, one_span_trace(id));
        writer.add_block(&b).await.unwrap();
        all.push(b.meta);
    }
    let cfg = CatalogConfig {
        index_stale_after: Some(Duration::from_secs(300)),
        ..Default::default()
    };
    let reader = Catalog::new(writer.store().clone(), cfg);
    let mut every: Vec<Uuid> = all.iter().map(|m| m.block_id).collect();
    every.sort();
    // No index: storage is listed.
    assert_eq!(visible_blocks(&reader, TENANT).await, every);
    // An index naming two of the three, fresh: it is what a poll sees, in one read.
    let now = allegro_engine::now_unix_nanos();
    let two: Vec<Arc<_>> = all[..2].iter().cloned().map(Arc::new).collect();
    TenantIndex::of(&two, now, "test")
        .write(writer.store(), TENANT)
        .await
        .unwrap();
    let (reads, _) = reader.read_counters();
    let mut named: Vec<Uuid> = two.iter().map(|m| m.block_id).collect();
    named.sort();
    assert_eq!(visible_blocks(&reader, TENANT).await, named);
    assert_eq!(reader.read_counters().0 - reads, 1, "one read per poll");
    // The same index, stale: storage is listed again.
    let old = now - 600_000_000_000;
    TenantIndex::of(&two, old, "test")
        .write(writer.store(), TENANT)
        .await
        .unwrap();
    assert_eq!(visible_blocks(&reader, TENANT).await, every);
    // A block published through the reader after the index was made is seen with it.
    TenantIndex::of(&two, allegro_engine::now_unix_nanos(), "test")
        .write(writer.store(), TENANT)
        .await
        .unwrap();
    let fourth = encode(TENANT, one_span_trace(4));
    reader.add_block(&fourth).await.unwrap();
    let mut want = named.clone();
    want.push(fourth.meta.block_id);
    want.sort();
    assert_eq!(visible_blocks(&reader, TENANT).await, want);
    // An unreadable index is no index.
    let path = allegro_engine::block::tenant_index::index_path(TENANT);
    writer.store().put(&path, "not gzip".into()).await.unwrap();
    let mut everything = every.clone();
    everything.push(fourth.meta.block_id);
    everything.sort();
    assert_eq!(visible_blocks(&reader, TENANT).await, everything);
}
