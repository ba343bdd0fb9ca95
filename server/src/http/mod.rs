//! Tempo's HTTP API on axum.

pub mod metrics;
pub mod operator;
pub mod params;
pub mod partial;
pub mod ring;
pub mod search;
pub mod sql;
pub mod status;
pub mod tags;
pub mod traceql_metrics;
pub mod traces;

use std::sync::Arc;

use allegro_engine::catalog::Catalog;
use allegro_engine::query::QueryEngine;
use allegro_ingest::Ingester;
use axum::Router;
use axum::routing::get;

use self::metrics::HttpMetrics;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Blocks and lookups.
    pub catalog: Arc<Catalog>,
    /// Require `X-Scope-OrgID`.
    pub multitenancy: bool,
    /// Request metrics.
    pub metrics: Arc<HttpMetrics>,
    /// The live head, when this process ingests.
    pub ingester: Option<Arc<Ingester>>,
    /// TraceQL over blocks and the live head.
    pub query: Arc<QueryEngine>,
    /// TraceQL metrics limits and which tenants have them.
    pub traceql_metrics: Arc<crate::config::MetricsSettings>,
    /// The metrics generator, when `metrics_generator:` is configured.
    pub generator: Option<Arc<allegro_ingest::generator::Generator>>,
    /// Its remote-write outputs.
    pub remote_write: Option<Arc<allegro_ingest::generator::remote_write::RemoteWrite>>,
    /// What compaction and retention have done, when this process runs them.
    pub lifecycle: Option<Arc<allegro_engine::block::lifecycle::LifecycleStats>>,
    /// The effective config (`allegro config check`'s values), for `/status/config`.
    pub effective_config: Arc<serde_json::Value>,
    /// `query_frontend.search` limits.
    pub search_limits: Arc<crate::api::search::SearchLimits>,
}

/// The HTTP API, with every route under `prefix` (Tempo's `http_api_prefix`).
pub fn router(state: AppState, prefix: &str) -> Router {
    let api = Router::new()
        .route("/ready", get(status::ready))
        .route("/api/echo", get(status::echo))
        .route("/api/status/buildinfo", get(status::buildinfo))
        .route("/status/buildinfo", get(status::buildinfo))
        .route("/status/config", get(operator::config))
        .route("/status/overrides", get(operator::overrides))
        .route("/status/endpoints", get(operator::endpoints))
        .route("/api/overrides", get(operator::tenant_overrides))
        .route("/metrics", get(status::metrics))
        .route("/flush", get(operator::flush).post(operator::flush))
        .route(
            "/api/metrics-generator/metrics",
            get(status::generated_metrics),
        )
        .route("/api/traces/{id}", get(traces::trace_v1))
        .route("/api/v2/traces/{id}", get(traces::trace_v2))
        .route("/api/search", get(search::search))
        .route("/api/sql", axum::routing::post(sql::sql))
        .route(
            "/api/metrics/query_range",
            get(traceql_metrics::query_range),
        )
        .route("/api/metrics/query", get(traceql_metrics::query_instant))
        .route("/api/search/tags", get(tags::tags_v1))
        .route("/api/v2/search/tags", get(tags::tags_v2))
        .route("/api/search/tag/{tag}/values", get(tags::values_v1))
        .route("/api/v2/search/tag/{tag}/values", get(tags::values_v2))
        .fallback(status::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            partial::mark,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state);
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        api
    } else {
        Router::new().nest(prefix, api)
    }
}
