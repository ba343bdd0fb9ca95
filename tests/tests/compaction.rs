//! Compaction merges blocks into one: every span once (a span written twice kept once), split
//! traces whole again, the inputs hidden the moment the merged block is visible, and every
//! trace read back by ID equal to what was sent. Retention follows each tenant's
//! `block_retention` and leaves merged inputs for `compacted_block_retention`. A merge waits
//! while its pace says flushing is behind, and writes the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use allegro_engine::block::compact::compact;
use allegro_engine::block::lifecycle::{LifecycleConfig, apply_retention};
use allegro_engine::block::pace::Pace;
use allegro_engine::block::writer::BlockWriteOptions;
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::convert::normalize::{normalize, span_count};
use allegro_engine::ids::TraceId;
use allegro_engine::query::QueryEngine;
use allegro_engine::query::search::SearchRequest;
use allegro_tests::engines::{
    TENANT as ENGINE_TENANT, catalog_at, encode, generated_traces, sorted_span_sets, store_block,
    visible_blocks,
};
use object_store::ObjectStoreExt;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

const TENANT: &str = "t";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_every_span_once_and_joins_split_traces() {
    let traces = generated_traces(3, 20_000);
    let (parts, blocks_of) = four_blocks(&traces);
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

    // Flushing is behind when the merge takes its first step: it waits, then merges the same.
    let asked = Arc::new(AtomicU32::new(0));
    let a = asked.clone();
    let pace = Pace::yielding_to(Arc::new(move || a.fetch_add(1, SeqCst) == 0));
    let (merged, done) = compact(&catalog, &before, &BlockWriteOptions::default(), &pace)
        .await
        .unwrap();
    assert!(done.paused > Duration::ZERO, "the merge did not wait");
    assert!(asked.load(SeqCst) >= 2, "asked again after waiting");
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

/// A merge cuts its block into time slices, each trace whole in the slice its start falls in
/// and each slice's row groups in trace-ID order, and searches over it answer exactly as over
/// the same merge in one run, reading less for the newest traces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_in_time_slices_answers_as_a_merge_in_one_run() {
    let traces = generated_traces(5, 20_000);
    let (parts, _) = four_blocks(&traces);
    let dir = tempfile::tempdir().unwrap();
    let mut merged = Vec::new();
    for (name, rows) in [("one-run", 65_536), ("sliced", 2_000)] {
        let catalog = catalog_at(&dir.path().join(name));
        for p in &parts {
            store_block(&catalog, ENGINE_TENANT, p.clone()).await;
        }
        let inputs = catalog.blocks(ENGINE_TENANT).await.unwrap();
        let opts = BlockWriteOptions {
            row_group_rows: rows,
            ..Default::default()
        };
        let (meta, _) = compact(&catalog, &inputs, &opts, &Pace::never())
            .await
            .unwrap();
        merged.push((catalog, meta));
    }
    let (one, sliced) = (&merged[0].1, &merged[1].1);
    assert_eq!(
        (one.format.as_str(), one.slices.is_none()),
        ("allegro-1", true)
    );
    assert_eq!(sliced.format, "allegro-2");
    let slices = sliced.slices.clone().unwrap();
    // One slice per 2,000 spans read.
    let read_in: usize = parts.iter().map(|p| span_count(p)).sum();
    assert_eq!(slices.len(), read_in.div_ceil(2_000), "{slices:?}");

    // The layout, read back slice by slice.
    let path = format!("{ENGINE_TENANT}/{}/data.parquet", sliced.block_id);
    let bytes = merged[1]
        .0
        .store()
        .get(&path.as_str().into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut every_group: Vec<u32> = slices.iter().flat_map(|s| s.row_groups.clone()).collect();
    every_group.sort();
    assert_eq!(
        every_group,
        (0..sliced.row_groups as u32).collect::<Vec<_>>()
    );
    let mut seen: std::collections::HashSet<Vec<u8>> = Default::default();
    let mut previous_latest_start = 0;
    for s in &slices {
        // Per part (roots or not), the slice's rows in file order; and each trace's start.
        let mut runs: [Vec<Vec<u8>>; 2] = Default::default();
        let mut starts: std::collections::HashMap<Vec<u8>, u64> = Default::default();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .unwrap()
                .with_row_groups(s.row_groups.iter().map(|&g| g as usize).collect())
                .build()
                .unwrap();
        for b in reader {
            let b = b.unwrap();
            let col = |n: &str| b.column_by_name(n).unwrap().clone();
            let ids = col("trace_id");
            let ids = ids
                .as_any()
                .downcast_ref::<arrow::array::FixedSizeBinaryArray>()
                .unwrap();
            let (st, du, pa) = (
                col("start_time_unix_nano"),
                col("duration_nano"),
                col("nested_set_parent"),
            );
            let st = st
                .as_any()
                .downcast_ref::<arrow::array::UInt64Array>()
                .unwrap();
            let du = du
                .as_any()
                .downcast_ref::<arrow::array::UInt64Array>()
                .unwrap();
            let pa = pa
                .as_any()
                .downcast_ref::<arrow::array::Int32Array>()
                .unwrap();
            for i in 0..b.num_rows() {
                let (start, end) = (st.value(i), st.value(i) + du.value(i));
                assert!(
                    s.start_unix_nano <= start && end <= s.end_unix_nano,
                    "{s:?}"
                );
                let id = ids.value(i).to_vec();
                let t = starts.entry(id.clone()).or_insert(start);
                *t = (*t).min(start);
                runs[usize::from(pa.value(i) < 0)].push(id);
            }
        }
        for run in &runs {
            assert!(
                run.windows(2).all(|w| w[0] <= w[1]),
                "a run out of trace-ID order"
            );
        }
        // Whole traces: none of this slice's traces has rows in another.
        for id in starts.keys() {
            assert!(seen.insert(id.clone()), "a trace in two slices");
        }
        // Slices follow each other in time by their traces' starts.
        let earliest = starts.values().min().copied().unwrap();
        assert!(
            earliest >= previous_latest_start,
            "slices out of time order"
        );
        previous_latest_start = starts.values().max().copied().unwrap();
    }
    assert_eq!(seen.len(), traces.len());

    // The same answers from both merges, over the whole window and a stretch of it.
    let engines: Vec<QueryEngine> = merged
        .iter()
        .map(|(c, _)| QueryEngine::new(c.clone(), None).unwrap())
        .collect();
    let window = (one.start_unix_nano, one.end_unix_nano);
    let third = (window.1 - window.0) / 3;
    let mut read = [0u64; 2];
    for query in [
        "{ }",
        "{ status = error }",
        "{ resource.service.name = \"frontend\" } >> { status = error }",
        "{ } | count() > 5",
        "{ name =~ \"GET.*\" } && { kind = server }",
    ] {
        for limit in [5, 20, 100_000] {
            for range in [None, Some((window.0 + third, window.1 - third))] {
                let req = SearchRequest {
                    query: query.into(),
                    limit,
                    spss: 1_000,
                    range,
                };
                let mut answers = Vec::new();
                for (e, bytes) in engines.iter().zip(&mut read) {
                    let r = e.search(&[ENGINE_TENANT.to_string()], &req).await.unwrap();
                    if (query, limit, range) == ("{ }", 5, None) {
                        *bytes = r.metrics.unwrap().inspected_bytes;
                    }
                    let found: Vec<_> = r
                        .traces
                        .iter()
                        .map(|t| {
                            (
                                t.trace_id.clone(),
                                t.start_time_unix_nano,
                                sorted_span_sets(t),
                            )
                        })
                        .collect();
                    answers.push(found);
                }
                assert_eq!(
                    answers[0], answers[1],
                    "{query} limit {limit} over {range:?}"
                );
                if query == "{ }" {
                    assert!(!answers[0].is_empty());
                }
            }
        }
    }
    // The five newest traces are in the newest slice: a tenth of the block, not all of it.
    assert!(
        read[1] * 3 < read[0],
        "bytes read for the newest five: {read:?}"
    );
    for t in traces.iter().step_by(41) {
        let id = TraceId(
            t[0].scope_spans[0].spans[0].trace_id[..]
                .try_into()
                .unwrap(),
        );
        let whole = merged[1]
            .0
            .find_trace(ENGINE_TENANT, &id, None)
            .await
            .unwrap();
        assert_eq!(
            normalize(whole.resource_spans),
            normalize(t.clone()),
            "trace {id}"
        );
        // Asked with the trace's own time range, the lookup reads only the slices it overlaps.
        let spans = t.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans);
        let from = spans.clone().map(|s| s.start_time_unix_nano).min().unwrap();
        let to = spans.map(|s| s.end_time_unix_nano).max().unwrap();
        let ranged = merged[1]
            .0
            .find_trace(ENGINE_TENANT, &id, Some((from, to)))
            .await
            .unwrap();
        assert_eq!(
            normalize(ranged.resource_spans),
            normalize(t.clone()),
            "trace {id}"
        );
        assert!(
            ranged.inspected_bytes < whole.inspected_bytes,
            "{} bytes in range against {}",
            ranged.inspected_bytes,
            whole.inspected_bytes
        );
    }
}

/// `traces` (time-ordered) as four blocks in time order, every fifth trace split between two
/// neighbours and the first trace also written again in the last block; and the blocks each
/// trace has rows in.
fn four_blocks(traces: &[Vec<ResourceSpans>]) -> (Vec<Vec<ResourceSpans>>, Vec<Vec<usize>>) {
    let mut parts: Vec<Vec<ResourceSpans>> = vec![Vec::new(); 4];
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
    (parts, blocks_of)
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
    let (merged, _) = compact(
        &catalog,
        &inputs,
        &BlockWriteOptions::default(),
        &Pace::never(),
    )
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
    let (x, _) = compact(&catalog, &inputs[..2], &opts, &Pace::never())
        .await
        .unwrap();
    let (y, _) = compact(&catalog, &inputs, &opts, &Pace::never())
        .await
        .unwrap();
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
