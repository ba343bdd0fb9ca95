//! The store lives, through a real server: a trace sent in two requests seconds apart lands in
//! two blocks and is still answered whole (structure, root name); compaction then merges the
//! blocks of the closed window into one, the answers stay the same, the retired inputs are
//! deleted, and `/metrics` counts it all.

use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_engine::block::tenant_index::TenantIndex;
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::common::v1::{AnyValue, KeyValue, any_value::Value};
use allegro_engine::otlp::resource::v1::Resource;
use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use allegro_engine::storage::open_store;
use allegro_server::config::Config;
use allegro_tests::config_on_s3;
use allegro_tests::seaweed::{self, SeaweedFs};
use allegro_tests::{TestServer, config_for, url_encode};
use futures::TryStreamExt;
use object_store::ObjectStore;
use prost::Message;

const WINDOW: Duration = Duration::from_secs(2);

/// Span `name` of service `service`, `id` its span ID byte, child of `parent`, at `at`.
fn span(
    service: &str,
    name: &str,
    id: u8,
    parent: Option<u8>,
    at: u64,
    error: bool,
) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(service.into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![0x5a; 16],
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: name.into(),
                kind: 2,
                start_time_unix_nano: at + u64::from(id) * 1_000_000,
                end_time_unix_nano: at + 500_000_000 - u64::from(id) * 1_000_000,
                status: error.then(|| Status {
                    code: 2,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn send(srv: &TestServer, spans: Vec<ResourceSpans>) {
    let body = ExportTraceServiceRequest {
        resource_spans: spans,
    }
    .encode_to_vec();
    let a = srv.post(
        &srv.otlp_http(),
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        &body,
    );
    assert_eq!(a.status, 200, "{}", a.text());
}

/// The span names each search of the table answers.
fn answers(srv: &TestServer) -> Vec<Vec<String>> {
    [
        "{ name = \"A\" } >> { name = \"D\" }",
        "{ name = \"B\" } > { name = \"C\" }",
        "{ resource.service.name = \"gateway\" } >> { status = error }",
        "{ rootName = \"A\" && name = \"D\" }",
        "{ } | count() = 4",
    ]
    .iter()
    .map(|q| {
        let a = srv.get(&format!("/api/search?q={}&spss=10", url_encode(q)), &[]);
        assert_eq!(a.status, 200, "{q}: {}", a.text());
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        let mut names: Vec<String> = v["traces"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|t| {
                t["spanSet"]["spans"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|s| s["name"].as_str().unwrap_or_default().to_string())
            .collect();
        names.sort();
        names
    })
    .collect()
}

/// Block directories of `tenant` holding any object (emptied directories may linger as
/// prefixes on some stores).
async fn stored_blocks(store: &Arc<dyn ObjectStore>, tenant: &str) -> usize {
    let objects: Vec<_> = store
        .list(Some(&object_store::path::Path::from(tenant)))
        .try_collect()
        .await
        .unwrap();
    let dirs: std::collections::HashSet<String> = objects
        .iter()
        .filter_map(|o| o.location.parts().nth(1))
        .map(|p| p.as_ref().to_string())
        .filter(|d| !d.contains('.'))
        .collect();
    dirs.len()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(40);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn split_traces_are_whole_before_and_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(dir.path());
    let store = open_store(&cfg.backend()).unwrap();
    lives(cfg, store);
}

#[test]
fn the_store_lives_on_a_real_s3_server() {
    let Some(weed) = seaweed::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = SeaweedFs::start(&weed, &dir.path().join("weed"));
    s3.create_bucket("traces");
    let cfg = config_on_s3(dir.path(), &s3, "traces");
    let store = open_store(&cfg.backend()).unwrap();
    lives(cfg, store.clone());
    // The compactor left an index naming the merged block alone.
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_for("the tenant index", || {
        let ix = rt
            .block_on(TenantIndex::read(&store, "single-tenant"))
            .unwrap();
        ix.is_some_and(|ix| ix.blocks.len() == 1 && ix.blocks[0].level == 1)
    });
}

/// The scenario on a server configured by `cfg` over `store`: a trace sent in two
/// requests lands in two blocks, is answered whole, is merged, and the inputs go.
fn lives(mut cfg: Config, store: Arc<dyn ObjectStore>) {
    cfg.ingester.trace_idle_period = Some(Duration::from_millis(200));
    cfg.ingester.max_block_duration = Some(Duration::from_millis(300));
    cfg.ingester.flush_check_period = Some(Duration::from_millis(100));
    let c = &mut cfg.compactor.compaction;
    c.compaction_window = Some(WINDOW);
    c.compaction_cycle = Some(Duration::from_millis(300));
    c.compacted_block_retention = Some(Duration::from_secs(2));
    let srv = TestServer::start(cfg);
    let catalog = || Catalog::new(store.clone(), CatalogConfig::default());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let blocks = || rt.block_on(catalog().blocks("single-tenant")).unwrap();
    // Every span in one closed window, a minute ago.
    let window = WINDOW.as_nanos() as u64;
    let at = (allegro_engine::now_unix_nanos() / window - 30) * window;
    send(
        &srv,
        vec![
            span("gateway", "A", 1, None, at, false),
            span("checkout", "B", 2, Some(1), at, false),
        ],
    );
    wait_for("the first block", || blocks().len() == 1);
    send(
        &srv,
        vec![
            span("payment", "C", 3, Some(2), at, false),
            span("payment", "D", 4, Some(3), at, true),
        ],
    );
    wait_for("the second block (or the merged one)", || {
        let b = blocks();
        b.len() == 2 || b.iter().any(|m| m.compaction_level > 0)
    });
    let want: Vec<Vec<String>> = [
        vec!["D"],
        vec!["C"],
        vec!["D"],
        vec!["D"],
        vec!["A", "B", "C", "D"],
    ]
    .iter()
    .map(|v| v.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(answers(&srv), want, "split across blocks");
    wait_for("compaction", || {
        let b = blocks();
        b.len() == 1 && b[0].compaction_level == 1
    });
    let merged = blocks();
    assert_eq!(merged[0].total_spans, 4);
    assert_eq!(merged[0].incomplete_traces.as_deref(), Some(&[][..]));
    assert_eq!(answers(&srv), want, "compacted");
    // The two inputs go once the merged block has been visible for two seconds.
    wait_for("the inputs' deletion", || {
        rt.block_on(stored_blocks(&store, "single-tenant")) == 1
    });
    let lines = [
        "allegro_compactions_total 1",
        "allegro_compaction_blocks_total 2",
        "allegro_retention_deleted_blocks_total{reason=\"compacted\"} 2",
        "allegro_blocks{tenant=\"single-tenant\",level=\"1\"} 1",
    ];
    // Counters move right after the deletions they count.
    wait_for("the lifecycle metrics", || {
        let m = srv.get("/metrics", &[]).text();
        lines.iter().all(|line| m.lines().any(|l| l == *line))
    });
}
