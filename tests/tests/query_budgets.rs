//! Every query runs under a budget: time, memory and concurrency per tenant. Going over is the
//! user's 422 (429 for concurrency) naming the limit, never a 500 or a process grown until it is
//! killed, and the next query runs as if nothing happened.

use std::sync::Arc;
use std::time::Duration;

use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::error::EngineError;
use allegro_engine::query::metrics::{MetricsLimits, MetricsRequest, Mode};
use allegro_engine::query::search::SearchRequest;
use allegro_engine::query::{QueryEngine, QueryLimits};
use allegro_engine::storage::{StorageBackend, open_store};
use allegro_tests::engines::{GENERATED_START, TENANT, generated};
use allegro_tests::{TestServer, config_for};

fn search(q: &str) -> SearchRequest {
    SearchRequest {
        query: q.into(),
        limit: 20,
        spss: 3,
        range: None,
    }
}

/// An engine over the blocks `generated` wrote under `dir`, with `limits`.
fn engine_with(dir: &std::path::Path, limits: QueryLimits) -> QueryEngine {
    let store = open_store(&StorageBackend::Local {
        path: dir.to_path_buf(),
    })
    .unwrap();
    let catalog = Arc::new(Catalog::new(store, CatalogConfig::default()));
    QueryEngine::with_limits(catalog, None, limits).unwrap()
}

#[tokio::test]
async fn a_query_over_its_memory_budget_is_refused_naming_the_limit_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (unlimited, _) = generated(dir.path(), 3, 20_000).await;
    // A sketch per span name and step: tens of kilobytes of aggregate state.
    let q = MetricsRequest {
        query: "{ } | quantile_over_time(duration, .5) by (name)".into(),
        start: GENERATED_START,
        end: GENERATED_START + 600_000_000_000,
        step: Some(10_000_000_000),
        exemplars: Some(0),
        max_series: None,
        mode: Mode::Blocks,
    };
    let limits = MetricsLimits::default();
    let want = unlimited
        .query_range(&[TENANT.into()], &q, &limits)
        .await
        .unwrap();
    assert!(want.series.len() > 5, "{}", want.series.len());

    let mut tight = QueryLimits::default();
    tight.defaults.max_memory_per_query_bytes = 160 << 10;
    let engine = engine_with(dir.path(), tight);
    let e = engine
        .query_range(&[TENANT.into()], &q, &limits)
        .await
        .unwrap_err();
    match &e {
        EngineError::Budget { limit, message } => {
            assert_eq!(limit, "overrides.read.max_memory_per_query_bytes");
            assert!(message.contains("more memory than its budget"), "{message}");
        }
        other => panic!("expected a budget error, got {other}"),
    }
    assert!(e.is_user_error());
    // A query that fits still runs on the same engine: a search holds a block's matching roots
    // and one trace's other rows at a time, whatever the window.
    let found = engine
        .search(&[TENANT.into()], &search("{ } | count() > 2"))
        .await
        .unwrap();
    assert_eq!(found.traces.len(), 20);
}

#[tokio::test]
async fn a_query_over_its_time_budget_is_stopped_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    generated(dir.path(), 3, 20_000).await;
    let l = QueryLimits {
        timeout: Duration::from_millis(1),
        ..Default::default()
    };
    let engine = engine_with(dir.path(), l);
    let e = engine
        .search(&[TENANT.into()], &search("{ } | count() > 2"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, EngineError::Budget { limit, .. } if limit == "querier.search.query_timeout"),
        "{e}"
    );
}

#[test]
fn budgets_reach_http_as_422_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    cfg.overrides.defaults.read.max_memory_per_query_bytes = Some(1024);
    let srv = TestServer::start(cfg);
    let spans = allegro_datasets::generate_all(allegro_datasets::small_fixture_options());
    let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: spans.into_iter().flatten().collect(),
    };
    let a = srv.post(
        &srv.otlp_http(),
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        &prost::Message::encode_to_vec(&req),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let a = srv.get("/api/search?q=%7B%7D%20%7C%20count()%20%3E%202", &[]);
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(
        a.text().contains("max_memory_per_query_bytes"),
        "{}",
        a.text()
    );
    assert_eq!(srv.get("/ready", &[]).status, 200);
}
