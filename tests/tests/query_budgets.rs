//! Every query runs under a budget: time, memory and concurrency per tenant. Going over is the
//! user's 422 (429 for concurrency) naming the limit, never a 500 or a process grown until it is
//! killed, and the next query runs as if nothing happened.

use std::sync::Arc;
use std::time::Duration;

use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::error::EngineError;
use allegro_engine::query::search::SearchRequest;
use allegro_engine::query::{QueryEngine, QueryLimits};
use allegro_engine::storage::{StorageBackend, open_store};
use allegro_tests::engines::{TENANT, generated};
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
    let q = search("{ } | count() > 2");
    let want = unlimited.search(&[TENANT.into()], &q).await.unwrap();
    assert!(!want.traces.is_empty());

    let mut tight = QueryLimits::default();
    tight.defaults.max_memory_per_query_bytes = 64 << 10;
    let engine = engine_with(dir.path(), tight);
    let e = engine.search(&[TENANT.into()], &q).await.unwrap_err();
    match &e {
        EngineError::Budget { limit, message } => {
            assert_eq!(limit, "overrides.read.max_memory_per_query_bytes");
            assert!(message.contains("more memory than its budget"), "{message}");
        }
        other => panic!("expected a budget error, got {other}"),
    }
    assert!(e.is_user_error());
    // A query that fits still runs on the same engine (a search's top-N alone reserves more).
    let field = allegro_engine::query::tags::parse_tag("resource.service.name", false).unwrap();
    let (values, _) = engine
        .tag_values(TENANT, &field, None, None, 100)
        .await
        .unwrap();
    assert!(values.len() > 5, "{values:?}");
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
