//! The ingester end to end on a real directory: pushes are durable and queryable at once,
//! replay after a crash rebuilds the head exactly, flushed traces are not replayed again, torn
//! tails are cut, and WAL segments go once their blocks are durable.

use std::sync::Arc;
use std::time::Duration;

use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::convert::normalize::{normalize, span_count};
use allegro_engine::ids::TraceId;
use allegro_engine::storage::{StorageBackend, open_store};
use allegro_ingest::wal::segment;
use allegro_ingest::{Ingester, IngesterConfig};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn catalog(dir: &std::path::Path) -> Arc<Catalog> {
    let store = open_store(&StorageBackend::Local {
        path: dir.join("blocks"),
    })
    .unwrap();
    Arc::new(Catalog::new(store, CatalogConfig::default()))
}

fn config(dir: &std::path::Path) -> IngesterConfig {
    let mut c = IngesterConfig::new(dir.join("wal"));
    c.cut.trace_idle_period = Duration::from_millis(1);
    c.cut.max_block_duration = Duration::from_secs(3600);
    // The spans here start in 2023.
    c.overrides.defaults.max_span_age = Duration::ZERO;
    c
}

fn span(trace: u8, id: u64, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: id.to_be_bytes().to_vec(),
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000 + id,
        end_time_unix_nano: 1_700_000_000_000_000_000 + id + 1000,
        ..Default::default()
    }
}

fn batch(spans: Vec<Span>) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("svc".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        schema_url: String::new(),
    }]
}

/// Span names of a trace in head ∪ blocks, duplicates removed exactly as queries do.
async fn names(ing: &Ingester, cat: &Catalog, trace: u8) -> Vec<String> {
    let id = TraceId([trace; 16]);
    let mut rs = ing.find_trace("t", &id).unwrap();
    cat.clear_caches();
    rs.extend(cat.find_trace("t", &id, None).await.unwrap().resource_spans);
    let rs = normalize(rs);
    let mut n: Vec<String> = rs
        .iter()
        .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter()))
        .map(|s| s.name.clone())
        .collect();
    n.sort();
    n
}

async fn block_spans(cat: &Catalog) -> u64 {
    cat.clear_caches();
    cat.blocks("t")
        .await
        .unwrap()
        .iter()
        .map(|b| b.total_spans)
        .sum()
}

#[tokio::test]
async fn acknowledged_spans_survive_a_crash_and_flushes_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    {
        let (ing, s) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
            .await
            .unwrap();
        assert_eq!(s.replayed_spans, 0);
        let out = ing
            .push(
                "t",
                "test",
                batch(vec![span(1, 1, "a"), span(2, 2, "b")]),
                100,
            )
            .await
            .unwrap();
        assert_eq!((out.accepted, out.rejected), (2, 0));
        // Queryable the moment the push returns.
        assert_eq!(names(&ing, &cat, 1).await, ["a"]);
        ing.push("t", "test", batch(vec![span(1, 3, "c")]), 100)
            .await
            .unwrap();
        // Crash: no shutdown, nothing flushed.
    }
    let (ing, s) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!((s.replayed_spans, s.replayed_traces), (3, 2));
    assert_eq!(names(&ing, &cat, 1).await, ["a", "c"]);
    // Flush trace 1 and 2 into a block, then a late span of trace 1 arrives.
    assert_eq!(ing.flush(true).await.unwrap(), 1);
    assert_eq!(block_spans(&cat).await, 3);
    ing.push("t", "test", batch(vec![span(1, 4, "late")]), 100)
        .await
        .unwrap();
    assert_eq!(names(&ing, &cat, 1).await, ["a", "c", "late"]);
    drop(ing);
    // Replay keeps only what no block holds: the late span.
    let (ing, s) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!((s.replayed_spans, s.replayed_traces), (1, 1));
    assert_eq!(names(&ing, &cat, 1).await, ["a", "c", "late"]);
    assert_eq!(names(&ing, &cat, 2).await, ["b"]);
    ing.flush(true).await.unwrap();
    assert_eq!(block_spans(&cat).await, 4);
    // Everything is in blocks: the WAL keeps only the open segment.
    ing.shutdown().await.unwrap();
    let segs = segment::list(&dir.path().join("wal")).unwrap();
    assert_eq!(segs.len(), 1, "{segs:?}");
    let (ing, s) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(s.replayed_spans, 0);
    assert_eq!(names(&ing, &cat, 1).await, ["a", "c", "late"]);
}

/// Ten one-span traces (1..=10) pushed one request each, then the ingester dropped as a crash
/// would; the WAL's last segment and where each of its records starts and ends.
async fn ten_records(
    dir: &std::path::Path,
    cat: &Arc<Catalog>,
) -> (segment::Segment, Vec<(usize, usize)>) {
    {
        let (ing, _) = Ingester::open(config(dir), cat.clone(), Default::default())
            .await
            .unwrap();
        for i in 0..10u8 {
            ing.push(
                "t",
                "test",
                batch(vec![span(i + 1, u64::from(i) + 1, "x")]),
                10,
            )
            .await
            .unwrap();
        }
    }
    let segs = segment::list(&dir.join("wal")).unwrap();
    let last = segs.last().unwrap().clone();
    let data = std::fs::read(&last.path).unwrap();
    // Frames: [u32 length][u32 CRC][body] after the 8-byte magic.
    let mut frames = Vec::new();
    let mut at = 8;
    while at < data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        frames.push((at, at + 8 + len));
        at += 8 + len;
    }
    assert_eq!(frames.len(), 10);
    (last, frames)
}

/// The files set aside in the WAL's `damaged/` directory, with their bytes.
fn set_aside(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("wal").join(segment::DAMAGED_DIR))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_everything_before_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    let (last, frames) = ten_records(dir.path(), &cat).await;
    // A crash in the middle of the last record: chop 5 bytes off, then add garbage.
    let mut data = std::fs::read(&last.path).unwrap();
    data.truncate(data.len() - 5);
    data.extend_from_slice(b"\xde\xad");
    std::fs::write(&last.path, &data).unwrap();
    let (ing, s) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(s.damage.len(), 1, "{:?}", s.damage);
    assert!(
        s.damage[0].contains("nothing readable after it"),
        "{}",
        s.damage[0]
    );
    assert_eq!(s.replayed_spans, 9);
    assert_eq!(names(&ing, &cat, 9).await, ["x"]);
    assert!(names(&ing, &cat, 10).await.is_empty());
    // The torn bytes are kept aside, and the file was repaired: a second start finds no tear.
    assert_eq!(set_aside(dir.path()), [data[frames[9].0..].to_vec()]);
    drop(ing);
    let (_, s) = Ingester::open(config(dir.path()), cat, Default::default())
        .await
        .unwrap();
    assert!(s.damage.is_empty(), "{:?}", s.damage);
    assert_eq!(s.replayed_spans, 9);
}

#[tokio::test]
async fn a_damaged_record_costs_that_record_only_and_its_bytes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    let (last, frames) = ten_records(dir.path(), &cat).await;
    // Flip bits in the fifth record's body (trace 5), and in the segment's magic.
    let mut data = std::fs::read(&last.path).unwrap();
    let (start, end) = frames[4];
    for b in &mut data[start + 20..start + 36] {
        *b ^= 0x5a;
    }
    data[2] ^= 1;
    std::fs::write(&last.path, &data).unwrap();
    let (ing, s) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(s.damage.len(), 2, "{:?}", s.damage);
    assert!(s.damage[0].contains("magic"), "{}", s.damage[0]);
    assert!(
        s.damage[1].contains(&format!("reading resumed at byte {end}")),
        "{}",
        s.damage[1]
    );
    assert_eq!(s.replayed_spans, 9);
    for t in 1..=10u8 {
        let want: &[&str] = if t == 5 { &[] } else { &["x"] };
        assert_eq!(names(&ing, &cat, t).await, want, "trace {t}");
    }
    assert_eq!(
        set_aside(dir.path()),
        [data[..8].to_vec(), data[start..end].to_vec()]
    );
    drop(ing);
    let (ing, s) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
        .await
        .unwrap();
    assert!(s.damage.is_empty(), "{:?}", s.damage);
    assert_eq!(s.replayed_spans, 9);
    assert_eq!(names(&ing, &cat, 10).await, ["x"]);
}

#[tokio::test]
async fn concurrent_pushes_share_fsyncs_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    let (ing, _) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for t in 0..50u8 {
        let ing = ing.clone();
        tasks.push(tokio::spawn(async move {
            ing.push("t", "test", batch(vec![span(t + 1, 1, "p")]), 10)
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().accepted, 1);
    }
    let text = {
        let mut s = String::new();
        ing.render_metrics(&mut s);
        s
    };
    let fsyncs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("allegro_wal_fsync_duration_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=50).contains(&fsyncs), "{fsyncs}");
    assert!(
        text.contains("allegro_ingest_spans_received_total{tenant=\"t\",protocol=\"test\"} 50")
    );
    ing.flush(true).await.unwrap();
    let id = TraceId([7; 16]);
    cat.clear_caches();
    let found = cat.find_trace("t", &id, None).await.unwrap();
    assert_eq!(span_count(&found.resource_spans), 1);
}

#[tokio::test]
async fn limits_refuse_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog(dir.path());
    let mut cfg = config(dir.path());
    cfg.overrides.defaults.max_traces_per_user = 2;
    cfg.overrides.defaults.max_bytes_per_trace = 300;
    cfg.overrides.defaults.rate_limit_bytes = 1000;
    cfg.overrides.defaults.burst_size_bytes = 1000;
    let (ing, _) = Ingester::open(cfg, cat, Default::default()).await.unwrap();
    let out = ing
        .push(
            "t",
            "test",
            batch(vec![span(1, 1, "a"), span(2, 2, "b"), span(3, 3, "c")]),
            10,
        )
        .await
        .unwrap();
    assert_eq!((out.accepted, out.rejected), (2, 1));
    assert!(
        out.message.contains("LIVE_TRACES_EXCEEDED"),
        "{}",
        out.message
    );
    // Trace 1 grows past 300 bytes: the span that would cross the limit is refused.
    let mut grew = 0;
    for i in 10..20 {
        let out = ing
            .push("t", "test", batch(vec![span(1, i, "more")]), 10)
            .await
            .unwrap();
        if out.rejected > 0 {
            assert!(out.message.contains("TRACE_TOO_LARGE"), "{}", out.message);
            break;
        }
        grew += 1;
    }
    assert!((1..9).contains(&grew), "{grew}");
    // 1000 bytes of burst: the next big request is refused whole.
    let e = ing
        .push("t", "test", batch(vec![span(1, 99, "x")]), 990)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("RATE_LIMITED"), "{e}");
    // Bad IDs are refused span by span.
    let mut bad = span(2, 50, "bad");
    bad.span_id = vec![1, 2, 3];
    let out = ing
        .push("t", "test", batch(vec![bad, span(2, 51, "ok")]), 10)
        .await
        .unwrap();
    assert_eq!((out.accepted, out.rejected), (1, 1));
    assert!(
        out.message.contains("span ID must be 8 bytes, got 3"),
        "{}",
        out.message
    );
}

/// A local store whose next `fail` puts fail, as a flaky object store would.
#[derive(Debug)]
struct Flaky {
    inner: Arc<dyn object_store::ObjectStore>,
    fail: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Display for Flaky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flaky({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        use std::sync::atomic::Ordering::SeqCst;
        if self
            .fail
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(object_store::Error::Generic {
                store: "flaky",
                source: "injected failure".into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn after_a_failed_block_write_later_blocks_wait_so_a_crash_loses_nothing() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let local = open_store(&StorageBackend::Local {
        path: dir.path().join("blocks"),
    })
    .unwrap();
    let flaky = Arc::new(Flaky {
        inner: local,
        fail: usize::MAX.into(),
    });
    let cat = Arc::new(Catalog::new(flaky.clone(), CatalogConfig::default()));
    {
        let (ing, _) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
            .await
            .unwrap();
        // Block A (span "a" of trace 1) cannot be stored.
        ing.push("t", "test", batch(vec![span(1, 1, "a")]), 100)
            .await
            .unwrap();
        assert!(ing.flush(true).await.is_err());
        // One block waiting is not yet behind (two tenants' blocks are often cut together).
        assert!(!ing.flushing_behind());
        // A later span of the same trace becomes block B; A is retried first and fails once
        // more, so B must not be published ahead of it: B's `Flushed` record would drop A's
        // spans from the replay.
        ing.push("t", "test", batch(vec![span(1, 2, "b")]), 100)
            .await
            .unwrap();
        flaky.fail.store(1, SeqCst);
        assert!(ing.flush(true).await.is_err());
        // Two blocks waiting: flushing is behind, and compaction waits for it.
        assert!(ing.flushing_behind());
        assert_eq!(block_spans(&cat).await, 0);
        assert_eq!(names(&ing, &cat, 1).await, ["a", "b"]);
        // Crash.
    }
    flaky.fail.store(0, SeqCst);
    let (ing, s) = Ingester::open(config(dir.path()), cat.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(s.replayed_spans, 2);
    ing.flush(true).await.unwrap();
    assert!(!ing.flushing_behind());
    assert_eq!(block_spans(&cat).await, 2);
    assert_eq!(names(&ing, &cat, 1).await, ["a", "b"]);
}

/// An ingester whose heads only grow (nothing completes), with a 64 KiB budget for all tenants
/// and an 8 KiB share for tenant `small`.
async fn budgeted(dir: &std::path::Path) -> Arc<Ingester> {
    let mut c = config(dir);
    c.cut.trace_idle_period = Duration::from_secs(3600);
    c.max_head_bytes = 64 << 10;
    let mut small = c.overrides.defaults.clone();
    small.max_head_bytes = 8 << 10;
    c.overrides.per_tenant.insert("small".into(), small);
    Ingester::open(c, catalog(dir), Default::default())
        .await
        .unwrap()
        .0
}

/// 20 spans of about 100 bytes each, in trace `t`.
fn request(t: u8) -> Vec<ResourceSpans> {
    batch(
        (0..20u64)
            .map(|i| span(t, i + 1, &"x".repeat(100)))
            .collect(),
    )
}

/// Pushes `request(n)`, `request(n + 1)`, … for `tenant` until one is refused; why.
async fn push_until_refused(ing: &Ingester, tenant: &str, n: &mut u8) -> String {
    loop {
        match ing.push(tenant, "test", request(*n), 0).await {
            Ok(_) => *n += 1,
            Err(e) => return e.to_string(),
        }
        assert!(*n < 100, "the budget never refused");
    }
}

#[tokio::test]
async fn the_head_budget_holds_across_tenants_and_a_tenants_share_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let ing = budgeted(dir.path()).await;
    // Tenants choose their IDs freely: many of them together still stop at the budget.
    let mut refused = None;
    'fill: for round in 0..100u8 {
        for tenant in 0..8u8 {
            // Flushing counts as behind (compaction waits) from three quarters of the budget.
            let held: u64 = ing.gauges().iter().map(|g| g.bytes).sum();
            assert_eq!(ing.flushing_behind(), held >= 48 << 10, "{held}");
            if let Err(e) = ing
                .push(&format!("t{tenant}"), "test", request(round), 0)
                .await
            {
                refused = Some(e.to_string());
                break 'fill;
            }
        }
    }
    let refused = refused.expect("the budget never refused");
    assert!(
        refused.contains("HEAD_FULL") && refused.contains("ingester.max_head_bytes"),
        "{refused}"
    );
    let held: u64 = ing.gauges().iter().map(|g| g.bytes).sum();
    // At most one request past the budget: the check runs before each write.
    assert!(((64 << 10)..(68 << 10)).contains(&held), "{held}");

    // A tenant with a share of its own stops there, well under the budget.
    let dir = tempfile::tempdir().unwrap();
    let ing = budgeted(dir.path()).await;
    let e = push_until_refused(&ing, "small", &mut 0).await;
    assert!(e.contains("overrides.ingestion.max_head_bytes"), "{e}");
    assert!(ing.push("other", "test", request(0), 0).await.is_ok());
}

/// (trace, span ID, nested-set left, right) of every row of the head's query snapshot.
fn head_rows(ing: &Ingester) -> Vec<(u8, u64, i32, i32)> {
    use allegro_engine::schema::col;
    use arrow::array::{AsArray, FixedSizeBinaryArray};
    use arrow::datatypes::Int32Type;
    let mut out = Vec::new();
    for b in ing.live_snapshot("t").unwrap().groups.into_iter().flatten() {
        let ids = |c: &str| -> FixedSizeBinaryArray {
            b.column_by_name(c).unwrap().as_fixed_size_binary().clone()
        };
        let (traces, spans) = (ids(col::TRACE_ID), ids(col::SPAN_ID));
        let left = b
            .column_by_name(col::NESTED_SET_LEFT)
            .unwrap()
            .as_primitive::<Int32Type>();
        let right = b
            .column_by_name(col::NESTED_SET_RIGHT)
            .unwrap()
            .as_primitive::<Int32Type>();
        for i in 0..b.num_rows() {
            let span = u64::from_be_bytes(spans.value(i).try_into().unwrap());
            out.push((traces.value(i)[0], span, left.value(i), right.value(i)));
        }
    }
    out.sort();
    out
}

/// Asserts that each trace of the head's query snapshot is in one of its groups (a search reads
/// the groups one by one and evaluates each trace from its group's rows).
fn assert_traces_in_one_group(ing: &Ingester) {
    use allegro_engine::schema::col;
    use arrow::array::AsArray;
    let mut seen: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    for (g, group) in ing.live_snapshot("t").unwrap().groups.iter().enumerate() {
        for b in group {
            let ids = b
                .column_by_name(col::TRACE_ID)
                .unwrap()
                .as_fixed_size_binary();
            for id in ids.iter().flatten() {
                let first = *seen.entry(id.to_vec()).or_insert(g);
                assert_eq!(first, g, "trace {id:?} is in groups {first} and {g}");
            }
        }
    }
}

#[tokio::test]
async fn a_live_trace_sent_in_two_requests_is_one_whole_trace_in_every_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Everything stays live.
    cfg.cut.trace_idle_period = Duration::from_secs(3600);
    cfg.cut.max_trace_live = Duration::from_secs(3600);
    let (ing, _) = Ingester::open(cfg, catalog(dir.path()), Default::default())
        .await
        .unwrap();
    ing.push(
        "t",
        "test",
        batch(vec![span(7, 1, "root"), span(8, 1, "other")]),
        100,
    )
    .await
    .unwrap();
    // Converted and kept with trace 7's root alone.
    assert_eq!(head_rows(&ing), [(7, 1, 1, 2), (8, 1, 1, 2)]);
    let mut child = span(7, 2, "child");
    child.parent_span_id = 1u64.to_be_bytes().to_vec();
    ing.push("t", "test", batch(vec![child]), 100)
        .await
        .unwrap();
    // Trace 7's rows of the first request are left out of the kept conversion; the trace is
    // converted whole, so the child nests under the root. Trace 8 keeps its rows.
    let want = [(7, 1, 1, 4), (7, 2, 2, 3), (8, 1, 1, 2)];
    assert_eq!(head_rows(&ing), want);
    assert_traces_in_one_group(&ing);
    // The same on a snapshot converted ahead of the query.
    ing.convert_ahead();
    assert_eq!(head_rows(&ing), want);
    assert_traces_in_one_group(&ing);
}

#[tokio::test]
async fn the_heads_arrow_copies_for_queries_count_against_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let ing = budgeted(dir.path()).await;
    let held = |ing: &Ingester| {
        let g = ing.gauges();
        g.first().map_or((0, 0), |g| (g.bytes, g.snapshot_bytes))
    };
    let mut n = 0u8;
    while held(&ing).0 < 24 << 10 {
        ing.push("t", "test", request(n), 0).await.unwrap();
        n += 1;
    }
    // A query converts the head and keeps the copy.
    assert!(!ing.live_snapshot("t").unwrap().groups.is_empty());
    let (bytes, copies) = held(&ing);
    assert!(copies > 0, "{copies}");
    let mut metrics = String::new();
    ing.render_metrics(&mut metrics);
    assert!(
        metrics.contains(&format!(
            "allegro_head_snapshot_bytes{{tenant=\"t\"}} {copies}"
        )),
        "{metrics}"
    );
    // Pushes stop once OTLP bytes and copies together reach the budget, with the OTLP bytes
    // alone still under it.
    let e = push_until_refused(&ing, "t", &mut n).await;
    assert!(e.contains("ingester.max_head_bytes"), "{e}");
    let (now, copies_now) = held(&ing);
    assert_eq!(copies_now, copies);
    assert!(
        now + copies >= 64 << 10 && now < 64 << 10,
        "{bytes} {now} {copies}"
    );
}

#[tokio::test]
async fn completed_traces_keep_the_rows_their_live_part_was_converted_to() {
    let dir = tempfile::tempdir().unwrap();
    let (ing, _) = Ingester::open(config(dir.path()), catalog(dir.path()), Default::default())
        .await
        .unwrap();
    let mut child = span(7, 2, "child");
    child.parent_span_id = 1u64.to_be_bytes().to_vec();
    let spans = vec![span(7, 1, "root"), child, span(8, 1, "other")];
    ing.push("t", "test", batch(spans), 100).await.unwrap();
    let live = head_rows(&ing);
    assert_eq!(live, [(7, 1, 1, 4), (7, 2, 2, 3), (8, 1, 1, 2)]);
    // Idle past trace_idle_period: the sweep completes both traces (no block is due yet), and
    // the completed part is cut out of the live part's conversion.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(ing.flush(false).await.unwrap(), 0);
    assert_eq!(ing.gauges()[0].live_traces, 0);
    assert_eq!(head_rows(&ing), live);
}

/// Values of `resource.service.name` over `tenant`'s head as a tag-values request without
/// conditions reads them, over `range`.
async fn services(
    engine: &allegro_engine::query::QueryEngine,
    tenant: &str,
    range: Option<(u64, u64)>,
) -> Vec<String> {
    let req = allegro_engine::query::tag_requests::TagValuesRequest {
        tag: "resource.service.name".into(),
        query: None,
        range,
        limit: None,
    };
    let r = engine
        .search_tag_values_v2(&[tenant.to_string()], &req)
        .await
        .unwrap();
    r.tag_values.into_iter().map(|v| v.value).collect()
}

/// `batch` with the resource's service named `service`.
fn batch_of(service: &str, spans: Vec<Span>) -> Vec<ResourceSpans> {
    let mut b = batch(spans);
    b[0].resource.as_mut().unwrap().attributes[0].value = Some(AnyValue {
        value: Some(Value::StringValue(service.into())),
    });
    b
}

/// Traces (the byte their ID repeats) a search of `q` over `tenant`'s head finds.
async fn found(engine: &allegro_engine::query::QueryEngine, tenant: &str, q: &str) -> Vec<u8> {
    let req = allegro_engine::query::search::SearchRequest {
        query: q.into(),
        limit: 20,
        spss: 3,
        range: None,
    };
    let r = engine.search(&[tenant.to_string()], &req).await.unwrap();
    // Answers trim leading zeros of the hex ID.
    let id = |t: u8| {
        format!("{t:02x}")
            .repeat(16)
            .trim_start_matches('0')
            .to_string()
    };
    let mut ids: Vec<u8> = (1..=3)
        .filter(|t| r.traces.iter().any(|x| x.trace_id == id(*t)))
        .collect();
    ids.sort();
    assert_eq!(ids.len(), r.traces.len(), "a trace not sent here was found");
    ids
}

#[tokio::test]
async fn the_heads_parts_record_keys_and_values_that_queries_read_as_a_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.cut.trace_idle_period = Duration::from_secs(3600);
    let cat = catalog(dir.path());
    let (ing, _) = Ingester::open(c, cat.clone(), Default::default())
        .await
        .unwrap();
    let live: Arc<dyn allegro_engine::query::LiveSpans> = ing.clone();
    let engine = allegro_engine::query::QueryEngine::new(cat, Some(live)).unwrap();
    ing.push("t", "test", batch_of("a", vec![span(1, 1, "x")]), 0)
        .await
        .unwrap();
    assert_eq!(services(&engine, "t", None).await, ["a"]);
    // A part converted after the first request: both parts' values.
    let mut typed = span(2, 1, "x");
    typed.attributes.push(KeyValue {
        key: "n".into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(5)),
        }),
        ..Default::default()
    });
    ing.push("t", "test", batch_of("b", vec![typed]), 0)
        .await
        .unwrap();
    assert_eq!(services(&engine, "t", None).await, ["a", "b"]);
    // Conditions read the rows; slots for types no span holds are left out, the rest match.
    assert_eq!(found(&engine, "t", "{ span.n = 5 }").await, [2]);
    assert_eq!(
        found(&engine, "t", "{ span.n = \"5\" }").await,
        Vec::<u8>::new()
    );
    assert_eq!(
        found(&engine, "t", "{ resource.service.name = \"a\" }").await,
        [1]
    );
    // Another tenant's head: its values only, and not the other way.
    ing.push("u", "test", batch_of("c", vec![span(3, 1, "x")]), 0)
        .await
        .unwrap();
    assert_eq!(services(&engine, "u", None).await, ["c"]);
    assert_eq!(services(&engine, "t", None).await, ["a", "b"]);
    // Tag names come from the parts' records too.
    let names = |tenant: &'static str| {
        let engine = engine.clone();
        async move {
            let req = allegro_engine::query::tag_requests::TagsRequest {
                scope: Some("span"),
                range: None,
            };
            let r = engine
                .search_tags(&[tenant.to_string()], &req)
                .await
                .unwrap();
            r.tag_names
        }
    };
    assert_eq!(names("t").await, ["n"]);
    assert!(names("u").await.is_empty());
    // The spans start at 1.7e18 ns: a range before them holds no part, one around them all.
    let t0 = 1_700_000_000_000_000_000;
    assert!(services(&engine, "t", Some((0, t0 - 1))).await.is_empty());
    assert_eq!(
        services(&engine, "t", Some((t0, t0 + 10_000))).await,
        ["a", "b"]
    );
    // Trace 1 gets a span after its part was sealed: it leaves the part for the group
    // converted at each request, whose span brings a new service and a string `n`.
    let mut more = span(1, 2, "y");
    more.parent_span_id = 1u64.to_be_bytes().to_vec();
    more.attributes.push(KeyValue {
        key: "n".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue("5".into())),
        }),
        ..Default::default()
    });
    ing.push("t", "test", batch_of("d", vec![more]), 0)
        .await
        .unwrap();
    assert_eq!(services(&engine, "t", None).await, ["a", "b", "d"]);
    assert_eq!(found(&engine, "t", "{ span.n = \"5\" }").await, [1]);
    assert_eq!(found(&engine, "t", "{ span.n = 5 }").await, [2]);
}

/// A head of one group whose record is `recorded`, whatever its rows hold.
struct Recorded(
    Vec<arrow::record_batch::RecordBatch>,
    Arc<allegro_engine::block::recorded::RecordedKeys>,
);

#[async_trait::async_trait]
impl allegro_engine::query::LiveSpans for Recorded {
    async fn live_batches(
        &self,
        _tenant: &str,
    ) -> allegro_engine::error::Result<allegro_engine::query::LiveBatches> {
        Ok(allegro_engine::query::LiveBatches {
            groups: vec![self.0.clone()],
            recorded: vec![Some(self.1.clone())],
            ..Default::default()
        })
    }
}

#[tokio::test]
async fn tag_values_without_conditions_come_from_the_heads_record_and_conditions_from_its_rows() {
    use allegro_engine::convert::to_arrow::resource_spans_to_recorded_batches;
    let dir = tempfile::tempdir().unwrap();
    let (rows, _) =
        resource_spans_to_recorded_batches(batch_of("a", vec![span(1, 1, "x")]), 64).unwrap();
    // The record says "z": a part lists the values of traces that left it for a block.
    let (_, z) =
        resource_spans_to_recorded_batches(batch_of("z", vec![span(1, 1, "x")]), 64).unwrap();
    let live: Arc<dyn allegro_engine::query::LiveSpans> = Arc::new(Recorded(rows, Arc::new(z)));
    let engine = allegro_engine::query::QueryEngine::new(catalog(dir.path()), Some(live)).unwrap();
    assert_eq!(services(&engine, "t", None).await, ["z"]);
    assert_eq!(
        found(&engine, "t", "{ resource.service.name = \"a\" }").await,
        [1]
    );
}
