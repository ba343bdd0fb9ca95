//! Query engines over a golden dataset: as Parquet blocks, or all in the live head.

use std::path::Path;
use std::sync::Arc;

use allegro_datasets::{GenOptions, Generator};
use allegro_engine::block::pace::Pace;
use allegro_engine::block::writer::{BlockWriteOptions, EncodedBlock, encode_block};
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::convert::flatten::flatten;
use allegro_engine::convert::to_arrow::resource_spans_to_batches;
use allegro_engine::query::{LiveSpans, QueryEngine};
use allegro_engine::storage::{StorageBackend, open_store};
use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::dataset::Dataset;

/// The tenant the engines hold data for.
pub const TENANT: &str = "single-tenant";

/// A fixed live head, in groups of whole traces (see [`LiveSpans::live_batches`]).
pub struct StaticLive(pub Vec<Vec<RecordBatch>>);

impl StaticLive {
    /// A head of one group.
    pub fn one(batches: Vec<RecordBatch>) -> Self {
        Self(vec![batches])
    }
}

#[async_trait::async_trait]
impl LiveSpans for StaticLive {
    async fn live_batches(
        &self,
        _tenant: &str,
    ) -> allegro_engine::error::Result<allegro_engine::query::LiveBatches> {
        Ok(allegro_engine::query::LiveBatches {
            groups: self.0.clone(),
            ..Default::default()
        })
    }
}

/// A catalog over a local store in `dir`.
pub fn catalog_at(dir: &Path) -> Arc<Catalog> {
    let store = open_store(&StorageBackend::Local {
        path: dir.to_path_buf(),
    })
    .expect("store");
    Arc::new(Catalog::new(store, CatalogConfig::default()))
}

/// The IDs of `tenant`'s visible blocks in `catalog`, sorted, listed anew.
pub async fn visible_blocks(catalog: &Catalog, tenant: &str) -> Vec<uuid::Uuid> {
    catalog.forget(tenant).await;
    let mut ids: Vec<uuid::Uuid> = catalog
        .blocks(tenant)
        .await
        .expect("blocks")
        .iter()
        .map(|m| m.block_id)
        .collect();
    ids.sort();
    ids
}

/// `rs` as one block of `tenant`, default options; every span must be valid.
pub fn encode(tenant: &str, rs: Vec<ResourceSpans>) -> EncodedBlock {
    let (spans, rejected) = flatten(rs);
    assert!(rejected.is_empty(), "{rejected:?}");
    encode_block(tenant, spans, &BlockWriteOptions::default()).expect("block")
}

/// Stores `rs` as one visible block of `tenant` in `catalog`.
pub async fn store_block(catalog: &Catalog, tenant: &str, rs: Vec<ResourceSpans>) -> EncodedBlock {
    let block = encode(tenant, rs);
    catalog.add_block(&block).await.expect("add block");
    block
}

/// Two blocks under `dir`: odd and even traces, so each block chooses its own hot columns.
pub async fn over_blocks(ds: &Dataset, dir: &Path) -> QueryEngine {
    let catalog = catalog_at(dir);
    for parity in 0..2 {
        let rs: Vec<_> = ds
            .traces
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == parity)
            .flat_map(|(_, t)| t.spans.clone())
            .collect();
        if rs.is_empty() {
            continue;
        }
        store_block(&catalog, TENANT, rs).await;
    }
    QueryEngine::new(catalog, None).expect("engine")
}

/// Every trace of `ds` split in two parts, as a trace whose spans arrive minutes apart is: the
/// first half of its spans (in file order, or reversed for every other trace, so the root is
/// sometimes in the later part) in one block, the rest in a second block or, for every third
/// trace, in the live head.
pub async fn split_across(ds: &Dataset, dir: &Path) -> QueryEngine {
    let (catalog, live) = split_blocks(ds, dir, true).await;
    let live = resource_spans_to_batches(live, 7).expect("batches");
    QueryEngine::new(catalog, Some(Arc::new(StaticLive::one(live)))).expect("engine")
}

/// The blocks of [`split_across`] (the head's part in a third block), compacted into one
/// block: the split traces joined, a span written in two blocks kept once. Row groups of 8
/// rows make the merge cut its block into time slices (one per 8 spans, at most 16), as a
/// merge of a busy hour does, so queries run over a sliced block.
pub async fn compacted(ds: &Dataset, dir: &Path) -> QueryEngine {
    let (catalog, _) = split_blocks(ds, dir, false).await;
    compact_all(&catalog, 8).await;
    QueryEngine::new(catalog, None).expect("engine")
}

/// Compacts all of [`TENANT`]'s blocks in `catalog` into one, written in row groups of
/// `row_group_rows` (small ones cut the merged block into several time slices).
async fn compact_all(catalog: &Arc<Catalog>, row_group_rows: usize) {
    let blocks = catalog.blocks(TENANT).await.expect("blocks");
    let opts = BlockWriteOptions {
        row_group_rows,
        ..BlockWriteOptions::default()
    };
    allegro_engine::block::compact::compact(catalog, &blocks, &opts, &Pace::never())
        .await
        .expect("compaction");
}

/// Writes [`split_across`]'s blocks under `dir`; the head's part is returned when `head`, in a
/// third block otherwise, which also repeats the first trace's first span (a span received
/// twice).
async fn split_blocks(ds: &Dataset, dir: &Path, head: bool) -> (Arc<Catalog>, Vec<ResourceSpans>) {
    let catalog = catalog_at(dir);
    let (mut first, mut second, mut live) = (Vec::new(), Vec::new(), Vec::new());
    for (i, t) in ds.traces.iter().enumerate() {
        let mut spans = t.spans.clone();
        if i % 2 == 1 {
            spans.reverse();
        }
        let later = spans.split_off(spans.len() / 2);
        first.extend(spans);
        if i % 3 == 0 {
            live.extend(later);
        } else {
            second.extend(later);
        }
    }
    let mut third = Vec::new();
    if !head {
        third = std::mem::take(&mut live);
        third.extend(ds.traces.first().and_then(|t| t.spans.first()).cloned());
    }
    for rs in [first, second, third] {
        if rs.is_empty() {
            continue;
        }
        store_block(&catalog, TENANT, rs).await;
    }
    (catalog, live)
}

/// Every span of `ds` in the live head, no blocks.
pub fn over_head(ds: &Dataset, dir: &Path) -> QueryEngine {
    let catalog = catalog_at(dir);
    let batches = resource_spans_to_batches(ds.resource_spans(), 7).expect("batches");
    QueryEngine::new(catalog, Some(Arc::new(StaticLive::one(batches)))).expect("engine")
}

/// The generated shop (`spans` spans over 10 minutes from 2026-01-01): the older nine tenths
/// of its traces in three Parquet blocks under `dir`, the newest tenth in the live head.
/// Returns the engine and every trace's OTLP data.
pub async fn generated(dir: &Path, seed: u64, spans: u64) -> (QueryEngine, Vec<ResourceSpans>) {
    let traces = generated_traces(seed, spans);
    let catalog = catalog_at(dir);
    let live_from = traces.len() * 9 / 10;
    for chunk in traces[..live_from].chunks(live_from.div_ceil(3)) {
        store_block(&catalog, TENANT, chunk.iter().flatten().cloned().collect()).await;
    }
    let engine =
        QueryEngine::new(catalog, Some(Arc::new(generated_head(&traces)))).expect("engine");
    (engine, traces.into_iter().flatten().collect())
}

/// The live head of [`generated`]: its last tenth of the traces.
fn generated_head(traces: &[Vec<ResourceSpans>]) -> StaticLive {
    let live_from = traces.len() * 9 / 10;
    let live = resource_spans_to_batches(
        traces[live_from..].iter().flatten().cloned().collect(),
        4096,
    )
    .expect("batches");
    StaticLive::one(live)
}

/// A fresh engine (nothing cached) over the blocks [`generated`] stored in `dir` with the same
/// `seed` and `spans`, and the same live head.
pub fn reopened_generated(dir: &Path, seed: u64, spans: u64) -> QueryEngine {
    let head = generated_head(&generated_traces(seed, spans));
    QueryEngine::new(catalog_at(dir), Some(Arc::new(head))).expect("engine")
}

/// [`generated`]'s blocks compacted into one, cut into time slices (row groups of 512 rows,
/// one slice per 512 spans, at most 16), with the same live head.
pub async fn generated_compacted(dir: &Path, seed: u64, spans: u64) -> QueryEngine {
    generated(dir, seed, spans).await;
    let catalog = catalog_at(dir);
    compact_all(&catalog, 512).await;
    let head = generated_head(&generated_traces(seed, spans));
    QueryEngine::new(catalog, Some(Arc::new(head))).expect("engine")
}

/// The generated shop's traces (`spans` spans over 10 minutes from 2026-01-01), each as its
/// OTLP data.
pub fn generated_traces(seed: u64, spans: u64) -> Vec<Vec<ResourceSpans>> {
    let mut generator = Generator::new(GenOptions {
        seed,
        spans,
        start_unix_nano: GENERATED_START,
        duration_nano: 600_000_000_000,
    });
    std::iter::from_fn(|| generator.next_trace()).collect()
}

/// Where [`generated`] data starts: 2026-01-01T00:00:00Z.
pub const GENERATED_START: u64 = 1_767_225_600_000_000_000;

/// A search answer's spansets as sorted lists of span IDs, sorted: comparable with the
/// reference evaluator's whatever order the engine listed them in.
pub fn sorted_span_sets(t: &allegro_engine::tempopb::TraceSearchMetadata) -> Vec<Vec<String>> {
    let mut sets: Vec<Vec<String>> = t
        .span_sets
        .iter()
        .map(|s| {
            let mut v: Vec<String> = s.spans.iter().map(|x| x.span_id.clone()).collect();
            v.sort();
            v
        })
        .collect();
    sets.sort();
    sets
}
