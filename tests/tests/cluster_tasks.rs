//! SQL over many blocks through a Ballista cluster whose executors run one or two tasks at
//! once: every answer equals one process's, and counts equal the spans stored.
//!
//! Ballista's scheduler cuts a stage's plan down to each task's partitions before sending it;
//! a block scan it did not know how to cut stayed whole, and every task read the scan's first
//! partitions instead of its own (docs/scale-out.md). With one task slot per executor, every
//! answer over 100 blocks counted each span twice; a join with `traceql()` did too. Twelve
//! blocks give a stage twelve partitions to hand out.

use allegro_engine::convert::to_arrow::resource_spans_to_batches;
use allegro_engine::query::{LiveSpans, QueryEngine};
use allegro_tests::engines::{StaticLive, TENANT, catalog_at, generated_traces, store_block};
use arrow::util::pretty::pretty_format_batches;
use std::path::Path;
use std::sync::Arc;

const BLOCKS: usize = 12;
const SPANS: u64 = 6_000;

const QUERIES: [&str; 6] = [
    "SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces, sum(duration_nano) AS d \
     FROM spans",
    "SELECT service_name, count(*) AS spans, max(duration_ms) AS slowest FROM spans \
     GROUP BY 1 ORDER BY 1",
    "SELECT spans, count(*) AS traces FROM traces GROUP BY 1 ORDER BY 1",
    "SELECT p.service_name AS caller, c.service_name AS callee, count(*) AS calls \
     FROM spans p JOIN spans c \
     ON c.trace_id = p.trace_id AND c.nested_set_parent = p.nested_set_left \
     WHERE p.service_name <> c.service_name GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
    "SELECT s.service_name, count(*) AS errors FROM traceql('{ status = error }') t \
     JOIN spans s USING (trace_id, span_id) GROUP BY 1 ORDER BY 1",
    "SELECT count(*) AS spans FROM traceql('{ }') t JOIN spans s USING (trace_id, span_id)",
];

/// The generated shop's traces in [`BLOCKS`] blocks under `store`; the spans stored and, of
/// them, the spans with an error status, counted from the OTLP data.
async fn stored(store: &Path) -> (usize, usize) {
    let traces = generated_traces(7, SPANS);
    let catalog = catalog_at(store);
    let (mut spans, mut errors) = (0, 0);
    for chunk in traces.chunks(traces.len().div_ceil(BLOCKS)) {
        let rs: Vec<_> = chunk.iter().flatten().cloned().collect();
        for s in rs
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            spans += 1;
            errors += usize::from(s.status.as_ref().is_some_and(|st| st.code == 2));
        }
        store_block(&catalog, TENANT, rs).await;
    }
    assert_eq!(catalog.blocks(TENANT).await.unwrap().len(), BLOCKS);
    (spans, errors)
}

async fn answer(engine: &QueryEngine, sql: &str) -> String {
    let a = engine
        .sql(&[TENANT.to_string()], sql, 100_000)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&a.batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_over_many_blocks_equal_one_process_with_one_or_two_task_slots() {
    for slots in [1, 2] {
        let root = tempfile::tempdir().unwrap();
        let (cluster, store) = allegro_tests::cluster::two_executors(root.path(), slots).await;
        let (spans, errors) = stored(&store).await;
        let local = QueryEngine::new(catalog_at(&store), None).unwrap();
        let mut expected = Vec::new();
        for q in QUERIES {
            expected.push(answer(&local, q).await);
        }
        // One process's answers themselves, against the OTLP data.
        assert!(
            expected[0].contains(&format!("| {spans} ")),
            "{}",
            expected[0]
        );
        let error_total: usize = expected[4]
            .lines()
            .filter_map(|l| l.split('|').nth(2)?.trim().parse::<usize>().ok())
            .sum();
        assert_eq!(error_total, errors, "{}", expected[4]);
        assert!(
            expected[5].contains(&format!("| {spans} ")),
            "{}",
            expected[5]
        );

        let engine = cluster.remote(QueryEngine::new(catalog_at(&store), None).unwrap());
        assert!(engine.is_remote());
        for (q, want) in QUERIES.iter().zip(&expected) {
            let got = answer(&engine, q).await;
            assert_eq!(&got, want, "{slots} task slot(s) per executor: {q}");
        }
    }
}

/// TraceQL metrics sampled by trace (`with(sample=…)`) read the same rows on the cluster as in
/// one process (the executors plan each block's sample from its footer): the same series,
/// values equal to 1e-9 (weighted sums may add in another order).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sampled_metrics_on_the_cluster_read_the_same_rows() {
    use allegro_engine::query::metrics::{MetricsLimits, MetricsRequest, Mode};
    use allegro_tests::engines::GENERATED_START;

    let root = tempfile::tempdir().unwrap();
    let (cluster, store) = allegro_tests::cluster::two_executors(root.path(), 1).await;
    stored(&store).await;
    let local = QueryEngine::new(catalog_at(&store), None).unwrap();
    let remote = cluster.remote(QueryEngine::new(catalog_at(&store), None).unwrap());
    let tenants = [TENANT.to_string()];
    for q in [
        "{ } | quantile_over_time(duration, 0.9) by (resource.service.name) with(sample=0.25)",
        "{ status = error } | avg_over_time(duration) by (resource.service.name) with(sample=0.25)",
        "{ kind = server } | histogram_over_time(duration) with(sample=0.5)",
    ] {
        let req = MetricsRequest {
            query: q.into(),
            start: GENERATED_START,
            end: GENERATED_START + 600_000_000_000,
            step: Some(60_000_000_000),
            exemplars: Some(0),
            max_series: None,
            mode: Mode::All,
        };
        let limits = MetricsLimits::default();
        let want = local.query_range(&tenants, &req, &limits).await.unwrap();
        let jobs = cluster.shuffled_since(&[]).1.len();
        let got = remote.query_range(&tenants, &req, &limits).await.unwrap();
        assert!(
            cluster.shuffled_since(&[]).1.len() > jobs,
            "{q}: nothing ran on the cluster"
        );
        let series = |r: &allegro_engine::tempopb::QueryRangeResponse| {
            let mut s: Vec<(String, Vec<(i64, f64)>)> = r
                .series
                .iter()
                .map(|t| {
                    (
                        format!("{:?}", t.labels),
                        t.samples
                            .iter()
                            .map(|p| (p.timestamp_ms, p.value))
                            .collect(),
                    )
                })
                .collect();
            s.sort_by(|a, b| a.0.cmp(&b.0));
            s
        };
        // A sample, not the whole: the exact answer differs.
        let exact_req = MetricsRequest {
            query: q.split(" with(").next().unwrap_or(q).into(),
            ..req.clone()
        };
        let exact = local
            .query_range(&tenants, &exact_req, &limits)
            .await
            .unwrap();
        assert_ne!(
            series(&exact),
            series(&want),
            "{q}: the sample read everything"
        );
        let (want, got) = (series(&want), series(&got));
        assert!(!want.is_empty(), "{q}: no series");
        assert_eq!(
            want.iter().map(|w| &w.0).collect::<Vec<_>>(),
            got.iter().map(|g| &g.0).collect::<Vec<_>>(),
            "{q}"
        );
        for ((labels, w), (_, g)) in want.iter().zip(&got) {
            assert_eq!(w.len(), g.len(), "{q} {labels}");
            for ((tw, vw), (tg, vg)) in w.iter().zip(g) {
                assert_eq!(tw, tg, "{q} {labels}");
                assert!(
                    (vw - vg).abs() <= 1e-9 * vw.abs().max(vg.abs()),
                    "{q} {labels} at {tw}: {vw} in one process, {vg} on the cluster"
                );
            }
        }
    }
}

/// Spans in the live head of [`sql_over_a_head_bigger_than_a_grpc_message_equals_one_process`]:
/// their rows take more than Ballista's 16 MiB gRPC message inside a plan.
const HEAD_SPANS: u64 = 60_000;

/// A head bigger than a plan may be travels by reference: executors fetch it from the serving
/// process (`allegro_cluster::served_rows`). Inside the plan it failed every SQL query with
/// a 503 (docs/scale-out.md). Answers equal one process's; the plan is small; nothing stays
/// served once the answers are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_over_a_head_bigger_than_a_grpc_message_equals_one_process() {
    let root = tempfile::tempdir().unwrap();
    let (cluster, store) = allegro_tests::cluster::two_executors(root.path(), 2).await;
    let traces = generated_traces(11, HEAD_SPANS);
    let spans: usize = traces
        .iter()
        .flatten()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let head = || {
        let rs = traces.iter().flatten().cloned().collect();
        let batches = resource_spans_to_batches(rs, 4096).expect("batches");
        Some(Arc::new(StaticLive::one(batches)) as Arc<dyn LiveSpans>)
    };
    let local = QueryEngine::new(catalog_at(&store), head()).unwrap();
    let client = cluster.client(catalog_at(&store));
    let rows = client.rows_server().expect("a rows server").clone();
    let inline =
        allegro_cluster::Cluster::new("127.0.0.1", cluster.scheduler_port, catalog_at(&store));
    let q = QUERIES[0];
    let plan = local.sql_plan(&[TENANT.into()], q, 100_000).await.unwrap();
    let inline_bytes = inline.plan_bytes(&plan).unwrap();
    assert!(
        inline_bytes > 16 << 20,
        "the head inside a plan: {inline_bytes} bytes"
    );
    let served_bytes = client.plan_bytes(&plan).unwrap();
    assert!(
        served_bytes < 64 << 10,
        "the head by reference: {served_bytes} bytes"
    );

    let remote = QueryEngine::new(catalog_at(&store), head())
        .unwrap()
        .with_remote(Arc::new(client));
    for q in QUERIES {
        let want = answer(&local, q).await;
        let got = answer(&remote, q).await;
        assert_eq!(got, want, "{q}");
    }
    // One process's count, against the OTLP data.
    assert!(
        answer(&local, QUERIES[0])
            .await
            .contains(&format!("| {spans} "))
    );
    assert_eq!(
        rows.serving(),
        0,
        "tables still served after their queries ended"
    );
}
