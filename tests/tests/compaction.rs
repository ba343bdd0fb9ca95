//! Compaction merges blocks into one: every span once (a span written twice kept once), split
//! traces whole again, the inputs hidden the moment the merged block is visible, and every
//! trace read back by ID equal to what was sent. Retention follows each tenant's
//! `block_retention` and leaves merged inputs for `compacted_block_retention`.

use std::sync::Arc;
use std::time::Duration;

use allegro_datasets::{GenOptions, Generator};
use allegro_engine::block::compact::compact;
use allegro_engine::block::lifecycle::{LifecycleConfig, apply_retention};
use allegro_engine::block::writer::BlockWriteOptions;
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::convert::normalize::{normalize, span_count};
use allegro_engine::ids::TraceId;
use allegro_tests::engines::{GENERATED_START, catalog_at, encode, store_block, visible_blocks};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

const TENANT: &str = "t";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_span_once_and_joins_split_traces() {
    let mut generator = Generator::new(GenOptions {
        seed: 3,
        spans: 20_000,
        start_unix_nano: GENERATED_START,
        duration_nano: 600_000_000_000,
    });
    let mut traces: Vec<Vec<ResourceSpans>> = Vec::new();
    while let Some(t) = generator.next_trace() {
        traces.push(t);
    }
    // Four blocks of time-ordered traces; every fifth trace split between two neighbours;
    // the first trace also written again in the last block.
    let mut parts: Vec<Vec<ResourceSpans>> = vec![Vec::new(); 4];
    // The blocks each trace has rows in.
    let mut blocks_of: Vec<Vec<usize>> = Vec::new();
    let per = traces.len().div_ceil(4);
    for (i, t) in traces.iter().enumerate() {
        let b = i / per;
        if i % 5 == 0 && b + 1 < 4 && t.len() > 1 {
            let mut spans = t.clone();
            let later = spans.split_off(spans.len() / 2);
            parts[b].extend(spans);
            parts[b + 1].extend(later);
            blocks_of.push(vec![b, b + 1]);
        } else {
            parts[b].extend(t.iter().cloned());
            blocks_of.push(vec![b]);
        }
    }
    parts[3].extend(traces[0].iter().cloned());
    blocks_of[0].push(3);
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog_at(dir.path());
    let mut stored = Vec::new();
    for p in parts {
        stored.push(store_block(&catalog, TENANT, p).await);
    }
    let before = catalog.blocks(TENANT).await.unwrap();
    assert_eq!(before.len(), 4);
    let split: usize = before
        .iter()
        .map(|b| b.incomplete_traces.as_ref().map_or(0, Vec::len))
        .sum();
    assert!(split > 50, "only {split} incomplete parts");
    let written: u64 = before.iter().map(|b| b.total_spans).sum();
    let sent: usize = traces.iter().map(|t| span_count(t)).sum();
    assert_eq!(written as usize, sent + span_count(&traces[0]));

    let (merged, done) = compact(&catalog, &before, &BlockWriteOptions::default())
        .await
        .unwrap();
    assert_eq!(done.spans_in, written);
    assert_eq!(
        done.spans_out as usize, sent,
        "the repeated trace is kept once"
    );
    assert_eq!(done.traces as usize, traces.len());
    // Split and resent traces, and traces of inputs whose hot columns the merged block does
    // not have, went through spans; every other trace was copied as rows.
    let other_columns: Vec<bool> = stored
        .iter()
        .map(|b| b.meta.hot_columns != merged.hot_columns)
        .collect();
    let rewritten: usize = blocks_of
        .iter()
        .zip(&traces)
        .enumerate()
        .filter(|(_, (bs, _))| bs.len() > 1 || bs.iter().any(|b| other_columns[*b]))
        // The first trace's rows were read twice.
        .map(|(i, (_, t))| span_count(t) * if i == 0 { 2 } else { 1 })
        .sum();
    assert_eq!(done.rewritten as usize, rewritten);
    assert!(done.rewritten < done.spans_in, "{other_columns:?}");
    // What the merged block records of keys and values is what a block written from all the
    // spans at once records.
    let reference = encode(TENANT, traces.concat()).meta;
    assert_eq!(merged.hot_columns, reference.hot_columns);
    assert_eq!(merged.attribute_keys, reference.attribute_keys);
    assert_eq!(merged.key_types, reference.key_types);
    assert_eq!(merged.other_keys, reference.other_keys);
    assert_eq!(merged.tag_values, reference.tag_values);
    assert_eq!(merged.compaction_level, 1);
    assert_eq!(merged.total_spans as usize, sent);
    assert_eq!(
        merged.incomplete_traces.as_deref(),
        Some(&[][..]),
        "every trace whole"
    );
    let mut from = merged.compacted_from.clone().unwrap();
    from.sort();
    let mut inputs: Vec<_> = before.iter().map(|b| b.block_id).collect();
    inputs.sort();
    assert_eq!(from, inputs);
    // The same catalog, and a fresh one listing storage, see the merged block only.
    for c in [
        catalog.clone(),
        Arc::new(Catalog::new(
            catalog.store().clone(),
            CatalogConfig::default(),
        )),
    ] {
        let after = c.blocks(TENANT).await.unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].block_id, merged.block_id);
        for t in traces.iter().step_by(37) {
            let id = TraceId(
                t[0].scope_spans[0].spans[0].trace_id[..]
                    .try_into()
                    .unwrap(),
            );
            let got = c
                .find_trace(TENANT, &id, None)
                .await
                .unwrap()
                .resource_spans;
            assert_eq!(normalize(got), normalize(t.clone()), "trace {id}");
        }
    }
}

/// A one-span trace `id` of `tenant`'s block, ending `ago` before `now`.
fn block_at(
    tenant: &str,
    id: u8,
    now: u64,
    ago: Duration,
) -> allegro_engine::block::writer::EncodedBlock {
    let mut t = allegro_tests::one_span_trace(id);
    let span = &mut t[0].scope_spans[0].spans[0];
    span.end_time_unix_nano = now - ago.as_nanos() as u64;
    span.start_time_unix_nano = span.end_time_unix_nano - 1_000_000;
    encode(tenant, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_per_tenant_and_merged_inputs_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog_at(dir.path());
    let now = allegro_engine::now_unix_nanos();
    let h = Duration::from_secs(3600);
    for tenant in ["short", "long"] {
        for (id, ago) in [(1, 10 * h), (2, h)] {
            catalog
                .add_block(&block_at(tenant, id, now, ago))
                .await
                .unwrap();
        }
    }
    let cfg = LifecycleConfig {
        block_retention: 24 * h,
        tenant_retention: [("short".to_string(), 5 * h)].into_iter().collect(),
        compacted_block_retention: h,
        ..Default::default()
    };
    let short = apply_retention(&catalog, "short", &cfg, now).await.unwrap();
    assert_eq!(short.expired.len(), 1, "{short:?}");
    let long = apply_retention(&catalog, "long", &cfg, now).await.unwrap();
    assert_eq!(long, Default::default(), "within the default retention");
    let left: Vec<u64> = catalog
        .blocks("short")
        .await
        .unwrap()
        .iter()
        .map(|b| b.total_spans)
        .collect();
    assert_eq!(left, [1]);
    // Merged inputs stay for compacted_block_retention, whatever block_retention says.
    let inputs = catalog.blocks("long").await.unwrap();
    let (merged, _) = compact(&catalog, &inputs, &BlockWriteOptions::default())
        .await
        .unwrap();
    for keep_all in [
        cfg.clone(),
        LifecycleConfig {
            block_retention: Duration::ZERO,
            ..cfg.clone()
        },
    ] {
        let d = apply_retention(&catalog, "long", &keep_all, now)
            .await
            .unwrap();
        assert_eq!(d, Default::default(), "inputs deleted before their time");
    }
    let later = now + 2 * h.as_nanos() as u64;
    let d = apply_retention(&catalog, "long", &cfg, later)
        .await
        .unwrap();
    assert_eq!(d.retired.len(), 2, "{d:?}");
    let left = catalog.blocks("long").await.unwrap();
    assert_eq!(
        left.iter().map(|b| b.block_id).collect::<Vec<_>>(),
        [merged.block_id]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_merged_twice_show_their_spans_once_and_the_extra_merge_goes() {
    // Two compactors whose claims lapsed both merged the same blocks, and one of them also
    // merged a third block in: of the overlapping merges the lower ID counts everywhere.
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog_at(dir.path());
    let now = allegro_engine::now_unix_nanos();
    let h = Duration::from_secs(3600);
    let mut inputs = Vec::new();
    for id in 1..=3u8 {
        let b = block_at(TENANT, id, now, h);
        catalog.add_block(&b).await.unwrap();
        inputs.push(Arc::new(b.meta));
    }
    let opts = BlockWriteOptions::default();
    let (x, _) = compact(&catalog, &inputs[..2], &opts).await.unwrap();
    let (y, _) = compact(&catalog, &inputs, &opts).await.unwrap();
    let (winner, loser) = if x.block_id < y.block_id {
        (&x, &y)
    } else {
        (&y, &x)
    };
    let fresh = Catalog::new(catalog.store().clone(), CatalogConfig::default());
    // Block 3 is visible on its own unless the counting merge holds it.
    let mut want = vec![winner.block_id];
    if winner.block_id == x.block_id {
        want.push(inputs[2].block_id);
    }
    want.sort();
    assert_eq!(visible_blocks(&fresh, TENANT).await, want);
    let spans: u64 = fresh
        .blocks(TENANT)
        .await
        .unwrap()
        .iter()
        .map(|m| m.total_spans)
        .sum();
    assert_eq!(spans, 3, "every span once");
    // The losing merge goes as retired inputs do, and nothing it named goes with it.
    let cfg = LifecycleConfig {
        block_retention: Duration::ZERO,
        compacted_block_retention: h,
        ..Default::default()
    };
    let later = now + 2 * h.as_nanos() as u64;
    let d = apply_retention(&catalog, TENANT, &cfg, later)
        .await
        .unwrap();
    assert!(d.retired.contains(&loser.block_id), "{d:?}");
    assert_eq!(visible_blocks(&fresh, TENANT).await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_killed_before_its_rename_leaves_nothing_behind() {
    // A process killed while writing a block's first file leaves only the local store's
    // staging file (`data.parquet#N`), which no listing shows: retention must still find the
    // directory, wait out its grace (a write may be in progress), then remove it.
    let dir = tempfile::tempdir().unwrap();
    let catalog = catalog_at(dir.path());
    let now = allegro_engine::now_unix_nanos();
    let block = dir
        .path()
        .join(TENANT)
        .join("7a1e0000-0000-4000-8000-000000000001");
    std::fs::create_dir_all(&block).unwrap();
    std::fs::write(block.join("data.parquet#12345"), b"half a block").unwrap();
    let h = Duration::from_secs(3600);
    let cfg = LifecycleConfig {
        block_retention: Duration::ZERO,
        compacted_block_retention: h,
        ..Default::default()
    };
    // Within the grace it stays: the write may still be going on.
    let d = apply_retention(&catalog, TENANT, &cfg, now).await.unwrap();
    assert!(d.orphans.is_empty(), "{d:?}");
    assert!(block.exists());
    // After it, the leftover and its directory go.
    let later = now + 2 * h.as_nanos() as u64;
    let d = apply_retention(&catalog, TENANT, &cfg, later)
        .await
        .unwrap();
    assert_eq!(d.orphans.len(), 1, "{d:?}");
    assert!(!block.exists());
}
