//! Two `allegro serve` processes share one bucket on a real S3 server (SeaweedFS), both with
//! compaction on, started together over the same blocks so they plan the same merges at about
//! the same moments, while a third compactor (the test) holds a claim on one hour's blocks:
//! that hour is left alone until the claim is given back, every block is merged exactly once
//! (the two servers' counters add up to the blocks that were there), and both servers answer
//! every trace exactly once throughout.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_datasets::{GenOptions, Generator};
use allegro_engine::block::claim::claim;
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::now_unix_nanos;
use allegro_engine::storage::open_store;
use allegro_tests::config_on_s3;
use allegro_tests::engines::{GENERATED_START, store_block};
use allegro_tests::seaweed::{self, SeaweedFs};
use allegro_tests::{TestServer, url_encode};
use object_store::ObjectStore;

const TENANT: &str = "single-tenant";
const BLOCKS: usize = 12;

/// The value of counter or gauge line `name` (summed over its label sets) in `/metrics`.
fn metric(srv: &TestServer, name: &str) -> u64 {
    srv.get("/metrics", &[])
        .text()
        .lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Trace ID → times `{ }` answered it, over the whole day.
fn traces_answered(srv: &TestServer) -> HashMap<String, usize> {
    let (start, end) = (
        GENERATED_START / 1_000_000_000 - 60,
        GENERATED_START / 1_000_000_000 + 4 * 3600,
    );
    let a = srv.get(
        &format!(
            "/api/search?q={}&limit=100000&spss=1&start={start}&end={end}",
            url_encode("{ }")
        ),
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    let mut seen = HashMap::new();
    for t in v["traces"].as_array().unwrap() {
        *seen
            .entry(t["traceID"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    seen
}

#[test]
fn two_servers_sharing_a_bucket_merge_each_block_once() {
    let Some(weed) = seaweed::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = SeaweedFs::start(&weed, &dir.path().join("weed"));
    s3.create_bucket("shared");
    let cfg = |name: &str| {
        let mut c = config_on_s3(&dir.path().join(name), &s3, "shared");
        let l = &mut c.compactor.compaction;
        l.compaction_window = Some(Duration::from_secs(3600));
        l.compaction_cycle = Some(Duration::from_secs(1));
        l.compacted_block_retention = Some(Duration::from_secs(2));
        // Each server learns of the other's merges within a poll: retired inputs must
        // outlive it (as in Tempo, compacted_block_retention > blocklist_poll).
        c.storage.trace.blocklist_poll = Some(Duration::from_millis(100));
        c
    };
    // Twelve blocks over three hours: four to a one-hour window.
    let store = open_store(&cfg("a").backend()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Each hour's traces in 50 minutes, so no block reaches into the next window.
    let catalog = Catalog::new(store.clone(), CatalogConfig::default());
    let mut traces = Vec::new();
    for hour in 0..3u64 {
        let mut generator = Generator::new(GenOptions {
            seed: 9 + hour,
            spans: 2_000,
            start_unix_nano: GENERATED_START + hour * 3600 * 1_000_000_000,
            duration_nano: 3000 * 1_000_000_000,
        });
        let mut hour_traces = Vec::new();
        while let Some(t) = generator.next_trace() {
            hour_traces.push(t);
        }
        for chunk in hour_traces.chunks(hour_traces.len().div_ceil(BLOCKS / 3)) {
            rt.block_on(store_block(&catalog, TENANT, chunk.concat()));
        }
        traces.extend(hour_traces);
    }
    let before = rt.block_on(catalog.blocks(TENANT)).unwrap();
    assert_eq!(before.len(), BLOCKS);

    // A third compactor (this test) holds the first hour's blocks: the servers must merge
    // around them, and merge them once the claim is given back.
    let first_hour: Vec<_> = before[..BLOCKS / 3].to_vec();
    let held = rt
        .block_on(claim(
            &store,
            &first_hour,
            "the-test",
            Duration::from_secs(3600),
            now_unix_nanos(),
        ))
        .unwrap()
        .expect("free blocks");
    let (a, b) = (TestServer::start(cfg("a")), TestServer::start(cfg("b")));
    let servers = [&a, &b];
    let want = traces.len();
    let levels = settle(&rt, &store, &servers, want);
    assert_eq!(
        levels,
        [(0, BLOCKS / 3), (1, 2)],
        "the claimed hour is left alone"
    );
    // Still left alone a few cycles later.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(settle(&rt, &store, &servers, want), levels);
    rt.block_on(held.release()).unwrap();
    assert_eq!(settle(&rt, &store, &servers, want), [(1, 3)]);
    let fresh = Catalog::new(store.clone(), CatalogConfig::default());
    let visible = rt.block_on(fresh.blocks(TENANT)).unwrap();
    let inputs: usize = visible
        .iter()
        .map(|m| m.compacted_from.as_ref().map_or(0, Vec::len))
        .sum();
    assert_eq!(inputs, BLOCKS, "every block is in one merged block");
    let sum = |name: &str| metric(&a, name) + metric(&b, name);
    assert_eq!(
        (
            sum("allegro_compactions_total"),
            sum("allegro_compaction_blocks_total")
        ),
        (3, BLOCKS as u64),
        "merges done by the two servers together"
    );
}

/// Waits until the compactors have nothing left to do (no backlog beyond claimed blocks, no
/// retired block left in storage), checking all along that both servers answer every trace
/// exactly once; the visible blocks' (level, count) pairs then.
fn settle(
    rt: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    servers: &[&TestServer],
    want: usize,
) -> Vec<(u32, usize)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    let mut same = 0;
    loop {
        for srv in servers {
            let seen = traces_answered(srv);
            assert_eq!(seen.len(), want, "traces answered");
            assert!(seen.values().all(|n| *n == 1), "a trace answered twice");
        }
        let fresh = Catalog::new(store.clone(), CatalogConfig::default());
        let listing = rt.block_on(fresh.list_all(TENANT)).unwrap();
        let mut levels: BTreeMap<u32, usize> = BTreeMap::new();
        for m in &listing.visible {
            *levels.entry(m.compaction_level).or_default() += 1;
        }
        let levels: Vec<(u32, usize)> = levels.into_iter().collect();
        // The same blocks over several cycles of both servers, and nothing left to delete.
        if listing.retired.is_empty() && last.as_ref() == Some(&levels) {
            same += 1;
            if same >= 5 {
                return levels;
            }
        } else {
            same = 0;
        }
        last = Some(levels);
        assert!(
            Instant::now() < deadline,
            "not settled: {last:?}, {} retired",
            listing.retired.len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
