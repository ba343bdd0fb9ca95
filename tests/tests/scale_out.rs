//! Scale-out end to end, on loopback: a Ballista scheduler and two executors, and two
//! `allegro serve` members of an ingest ring, all over one bucket on a real S3 server
//! (SeaweedFS), the members sending their queries' block reads and SQL to the cluster. Every
//! TraceQL search, TraceQL metrics and SQL golden file's dataset, and the generated shop of the
//! metrics agreement test, is sent through OTLP to one member (a tenant each) and the cases
//! are asked of the other member over HTTP: first while the spans are live in the two heads,
//! then once `/flush` has put every span in blocks, read by the executors. Each answer is the golden file's,
//! or the reference evaluator's.
//!
//! The scheduler and executors run in the test's process (`allegro_cluster::in_process`) and
//! the members as servers in it, but every hop is real: OTLP/HTTP and the ring's routes
//! between members, gRPC and Arrow Flight to and within the cluster, S3 for blocks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_cluster::in_process::{InProcessCluster, InProcessOptions};
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::storage::open_store;
use allegro_engine::tempopb::{QueryInstantResponse, QueryRangeResponse, SearchResponse};
use allegro_server::config::{Config, RingMember, RingSection};
use allegro_tests::engines::{GENERATED_START, generated_traces};
use allegro_tests::golden::{self, search_lines, sql_golden_files, sql_output};
use allegro_tests::metrics::{
    AGREEMENT_QUERIES, diff, golden_range, instant_lines, range_lines, series,
};
use allegro_tests::ports::free_port;
use allegro_tests::reference;
use allegro_tests::seaweed::{self, SeaweedFs};
use allegro_tests::{TestServer, config_on_s3, url_encode};
use prost::Message;
use sqllogictest::AsyncDB as _;

fn golden_dir() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("traceql")
}

/// Member `me` of the ring `[a, b]` on API ports `ports`, over the bucket `blocks` on `s3`,
/// its queries' block reads on the scheduler at `scheduler`; blocks cut only on `/flush`.
fn member(dir: &Path, s3: &SeaweedFs, me: &str, ports: [u16; 2], scheduler: u16) -> Config {
    let mut c = config_on_s3(&dir.join(me), s3, "blocks");
    c.multitenancy_enabled = true;
    c.ingester.ring = Some(RingSection {
        instance_id: me.into(),
        members: ["a", "b"]
            .iter()
            .zip(ports)
            .map(|(id, port)| RingMember {
                id: (*id).into(),
                address: format!("http://127.0.0.1:{port}"),
            })
            .collect(),
    });
    // Nothing is cut while the live answers are checked; `/flush` then cuts everything.
    c.ingester.trace_idle_period = Some(Duration::from_secs(600));
    c.ingester.max_block_duration = Some(Duration::from_secs(600));
    c.ingester.flush_check_period = Some(Duration::from_millis(100));
    c.storage.trace.blocklist_poll = Some(Duration::from_millis(200));
    c.query.ballista.scheduler = Some(format!("127.0.0.1:{scheduler}"));
    c
}

/// Spans in `srv`'s heads (every tenant's), from `/metrics`.
fn head_spans(srv: &TestServer) -> u64 {
    srv.get("/metrics", &[])
        .text()
        .lines()
        .filter(|l| l.split([' ', '{']).next() == Some("allegro_head_spans"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `query` of `tenant` asked of `srv` over HTTP (protobuf answer), as golden result lines, or
/// the error's text.
fn search(
    srv: &TestServer,
    tenant: &str,
    ds: &allegro_tests::dataset::Dataset,
    query: &str,
) -> Result<Vec<String>, String> {
    let path = format!("/api/search?q={}&limit=1000&spss=100", url_encode(query));
    let resp: SearchResponse = get_proto(srv, tenant, &path)?;
    Ok(search_lines(&resp, ds))
}

/// `path` of `tenant` asked of `srv` over HTTP, its protobuf answer decoded, or the error's
/// text.
fn get_proto<M: Message + Default>(
    srv: &TestServer,
    tenant: &str,
    path: &str,
) -> Result<M, String> {
    let a = srv.get(
        path,
        &[
            ("X-Scope-OrgID", tenant),
            ("Accept", "application/protobuf"),
        ],
    );
    if a.status != 200 {
        return Err(format!("HTTP {}: {}", a.status, a.text()));
    }
    M::decode(a.body.as_slice()).map_err(|e| e.to_string())
}

/// Metrics `query` of `tenant` over `(start, end, step)` asked of `srv` over HTTP
/// (`/api/metrics/query` without a step), as golden result lines, or the error's text.
fn metrics(
    srv: &TestServer,
    tenant: &str,
    query: &str,
    (start, end, step): (u64, u64, Option<u64>),
) -> Result<Vec<String>, String> {
    let range = format!("q={}&start={start}&end={end}", url_encode(query));
    Ok(match step {
        None => instant_lines(
            &get_proto::<QueryInstantResponse>(
                srv,
                tenant,
                &format!("/api/metrics/query?{range}"),
            )?,
            end,
        ),
        Some(step) => range_lines(&get_proto::<QueryRangeResponse>(
            srv,
            tenant,
            &format!(
                "/api/metrics/query_range?{range}&step={}",
                step as f64 / 1e9
            ),
        )?),
    })
}

/// SQL golden files asked of a member over HTTP (`POST /api/sql`, Arrow IPC answers).
struct HttpDb {
    api: String,
    tenant: String,
    agent: ureq::Agent,
}

impl HttpDb {
    /// SQL asked of the member at `api` for `tenant`.
    fn new(api: &str, tenant: &str) -> Self {
        Self {
            api: api.to_string(),
            tenant: tenant.to_string(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }
}

/// Spans, traces and error spans of the shop, asked in SQL: its live head is bigger than a
/// plan may be (16 MiB), so the cluster's executors fetch it from the asked member.
const SHOP_SQL: &str = "SELECT count(*) AS spans, count(DISTINCT trace_id) AS traces, \
     sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors FROM spans";

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for HttpDb {
    type Error = std::io::Error;
    type ColumnType = sqllogictest::DefaultColumnType;

    async fn run(
        &mut self,
        sql: &str,
    ) -> Result<sqllogictest::DBOutput<Self::ColumnType>, std::io::Error> {
        let mut r = self
            .agent
            .post(format!("{}/api/sql", self.api))
            .header("X-Scope-OrgID", &self.tenant)
            .header("Accept", "application/vnd.apache.arrow.stream")
            .send(sql)
            .map_err(std::io::Error::other)?;
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_vec().map_err(std::io::Error::other)?;
        if status != 200 {
            let text = String::from_utf8_lossy(&body).into_owned();
            return Err(std::io::Error::other(format!("HTTP {status}: {text}")));
        }
        let reader = arrow::ipc::reader::StreamReader::try_new(body.as_slice(), None)
            .map_err(std::io::Error::other)?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(std::io::Error::other)?;
        Ok(sql_output(&schema, &batches))
    }

    async fn shutdown(&mut self) {}
}

#[test]
fn golden_files_through_an_ingest_ring_and_a_query_cluster() {
    let Some(weed) = seaweed::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = SeaweedFs::start(&weed, &dir.path().join("weed"));
    s3.create_bucket("blocks");
    let store =
        open_store(&config_on_s3(&dir.path().join("cluster"), &s3, "blocks").backend()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let opts = InProcessOptions {
        executors: 2,
        tasks_per_executor: 1,
        memory_bytes: Some(512 << 20),
        work_dir: dir.path().join("executors"),
    };
    let catalog = || Arc::new(Catalog::new(store.clone(), CatalogConfig::default()));
    let cluster = rt
        .block_on(InProcessCluster::start(opts, catalog, free_port))
        .expect("cluster");
    let ports = [free_port(), free_port()];
    let [a, b] = ["a", "b"].map(|me| {
        TestServer::start_on(
            member(dir.path(), &s3, me, ports, cluster.scheduler_port),
            ports[usize::from(me == "b")],
        )
    });

    let files = golden::load_dir(&golden_dir(), &golden_dir().join("data"));
    for (i, (file, _, ds)) in files.iter().enumerate() {
        let r = a.export(Some(&format!("golden-{i}")), ds.resource_spans());
        assert_eq!(r.status, 200, "{file}: {}", r.text());
    }
    let metrics_dir = golden_dir().join("metrics");
    let metrics_files = golden::load_dir(&metrics_dir, &golden_dir().join("data"));
    for (i, (file, _, ds)) in metrics_files.iter().enumerate() {
        let r = a.export(Some(&format!("metrics-{i}")), ds.resource_spans());
        assert_eq!(r.status, 200, "{file}: {}", r.text());
    }
    // The agreement test's shop, a few hundred traces a request.
    let shop = generated_traces(42, 30_000);
    for chunk in shop.chunks(300) {
        let r = a.export(Some("shop"), chunk.iter().flatten().cloned().collect());
        assert_eq!(r.status, 200, "the shop: {}", r.text());
    }
    let shop_spans: Vec<_> = shop
        .iter()
        .flatten()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let shop_counts = vec![vec![
        shop_spans.len().to_string(),
        shop_spans
            .iter()
            .map(|s| &s.trace_id)
            .collect::<std::collections::HashSet<_>>()
            .len()
            .to_string(),
        shop_spans
            .iter()
            .filter(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
            .count()
            .to_string(),
    ]];
    let shop = reference::traces(&shop.into_iter().flatten().collect::<Vec<_>>());
    let grid = (
        GENERATED_START + 17_000_000_000,
        GENERATED_START + 590_000_000_000,
        30_000_000_000,
    );
    let sql_files = sql_golden_files();
    for (i, (file, ds)) in sql_files.iter().enumerate() {
        let r = a.export(Some(&format!("sql-{i}")), ds.resource_spans());
        assert_eq!(r.status, 200, "{}: {}", file.display(), r.text());
    }
    let ask = |phase: &str| {
        let mut failures = Vec::new();
        for (i, (file, g, ds)) in files.iter().enumerate() {
            for case in &g.cases {
                let got = search(&b, &format!("golden-{i}"), ds, &case.query);
                if !case.expect.matches(&got) {
                    failures.push(format!(
                        "{file}:{} [{phase}] {}\n  expected: {:?}\n  got:      {:?}",
                        case.line, case.query, case.expect, got
                    ));
                }
            }
        }
        for (i, (file, g, _)) in metrics_files.iter().enumerate() {
            for case in &g.cases {
                let range = case.range.as_deref().expect("a metrics case's range line");
                let got = metrics(
                    &b,
                    &format!("metrics-{i}"),
                    &case.query,
                    golden_range(range),
                );
                if !case.expect.matches(&got) {
                    failures.push(format!(
                        "metrics/{file}:{} [{phase}] {}\n  expected: {:?}\n  got:      {:?}",
                        case.line, case.query, case.expect, got
                    ));
                }
            }
        }
        for q in AGREEMENT_QUERIES {
            let ast = allegro_traceql::compile(q).expect("an agreement query compiles");
            let want = reference::metrics(&ast, &shop, grid, &|_| true, &|_, _| 1.0)
                .expect("the reference answers");
            let (start, end, step) = grid;
            let path = format!(
                "/api/metrics/query_range?q={}&start={start}&end={end}&step={}&maxSeries=100000",
                url_encode(q),
                step / 1_000_000_000
            );
            match get_proto::<QueryRangeResponse>(&b, "shop", &path) {
                Ok(got) => {
                    if let Some(d) = diff(&want, &series(&got)) {
                        failures.push(format!("[{phase}] the shop, {q}: {d}"));
                    }
                }
                Err(e) => failures.push(format!("[{phase}] the shop, {q}: {e}")),
            }
        }
        match rt.block_on(HttpDb::new(&b.base, "shop").run(SHOP_SQL)) {
            Ok(sqllogictest::DBOutput::Rows { rows, .. }) if rows == shop_counts => {}
            Ok(sqllogictest::DBOutput::Rows { rows, .. }) => failures.push(format!(
                "[{phase}] the shop, {SHOP_SQL}: {rows:?}, not {shop_counts:?}"
            )),
            Ok(_) => failures.push(format!("[{phase}] the shop, {SHOP_SQL}: no rows")),
            Err(e) => failures.push(format!("[{phase}] the shop, {SHOP_SQL}: {e}")),
        }
        for (i, (file, _)) in sql_files.iter().enumerate() {
            let mut runner = sqllogictest::Runner::new(|| {
                let db = HttpDb::new(&b.base, &format!("sql-{i}"));
                async move { Ok(db) }
            });
            if let Err(e) = rt.block_on(runner.run_file_async(file)) {
                failures.push(format!("[{phase}] {e}"));
            }
        }
        assert!(
            failures.is_empty(),
            "{} golden cases failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    };
    // Live: b answers from both heads.
    assert!(
        head_spans(&a) > 0 && head_spans(&b) > 0,
        "both heads hold spans"
    );
    ask("live");
    // Every span in blocks, read by the executors: each member flushes its own head.
    for m in [&a, &b] {
        let r = m.post(&m.base, "/flush", &[], b"");
        assert_eq!(r.status, 204, "/flush: {}", r.text());
    }
    // A block the flush loop was writing as `/flush` came is stored by the loop.
    let until = Instant::now() + Duration::from_secs(60);
    while head_spans(&a) + head_spans(&b) > 0 {
        assert!(Instant::now() < until, "the heads did not empty");
        std::thread::sleep(Duration::from_millis(100));
    }
    // b learns of a's blocks by polling the bucket (every 200 ms).
    std::thread::sleep(Duration::from_secs(2));
    let jobs_before = cluster.shuffled_since(&[]).1.len();
    ask("blocks");
    let jobs_after = cluster.shuffled_since(&[]).1.len();
    assert!(
        jobs_after > jobs_before,
        "no job ran on the cluster ({jobs_before} job directories before, {jobs_after} after)"
    );
    drop(rt);
}

/// A block one member flushes is seen by the other before it polls the bucket: the flushing
/// member's live answer names its lately flushed blocks, which the asking member reads by ID.
/// Without that, the spans were in neither member's answer until the next poll (here an
/// hour away). Every span once: the total count is the dataset's.
#[test]
fn a_block_flushed_by_one_member_is_seen_by_the_other_before_it_polls() {
    let Some(weed) = seaweed::binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s3 = SeaweedFs::start(&weed, &dir.path().join("weed"));
    s3.create_bucket("blocks");
    let ports = [free_port(), free_port()];
    let [a, b] = ["a", "b"].map(|me| {
        let mut c = member(dir.path(), &s3, me, ports, 0);
        c.query.ballista.scheduler = None;
        c.storage.trace.blocklist_poll = Some(Duration::from_secs(3600));
        TestServer::start_on(c, ports[usize::from(me == "b")])
    });
    let ds = allegro_tests::dataset::parse(
        &std::fs::read_to_string(golden_dir().join("data/shop.traces")).unwrap(),
    )
    .unwrap();
    let spans: usize = ds
        .resource_spans()
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(a.export(Some("t"), ds.resource_spans()).status, 200);
    assert!(
        head_spans(&a) > 0 && head_spans(&b) > 0,
        "both heads hold spans"
    );
    let base = allegro_tests::dataset::BASE_NANOS;
    let window = (base - 3_600_000_000_000, base + 3_600_000_000_000, None);
    let ask = || {
        let traces = search(&b, "t", &ds, "{ }").unwrap();
        let count = metrics(&b, "t", "{ } | count_over_time()", window).unwrap();
        (traces, count)
    };
    // b lists the bucket (no block yet) and keeps the list for an hour.
    let (live_traces, live_count) = ask();
    assert_eq!(
        live_count,
        [format!("{{__name__=\"count_over_time\"}}: 3600={spans}")]
    );
    let r = a.post(&a.base, "/flush", &[], b"");
    assert_eq!(r.status, 204, "/flush: {}", r.text());
    assert_eq!(head_spans(&a), 0, "a's head is in a block");
    assert!(head_spans(&b) > 0, "b's head is its own");
    assert_eq!(ask(), (live_traces, live_count));
}
