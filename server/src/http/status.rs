//! Health, version and metrics endpoints.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// The Tempo version whose API and TraceQL semantics Allegro answers to. Grafana compares it
/// with semver; build metadata (`+allegro…`) does not change the comparison.
pub const TEMPO_COMPAT_VERSION: &str = "2.9.0";

/// `GET /ready`.
pub async fn ready() -> &'static str {
    "ready\n"
}

/// `GET /api/echo`.
pub async fn echo() -> &'static str {
    "echo"
}

/// `GET /api/status/buildinfo`, in Prometheus' version-info shape.
pub async fn buildinfo() -> Json<serde_json::Value> {
    Json(json!({
        "version": format!("{TEMPO_COMPAT_VERSION}+allegro.{}", env!("CARGO_PKG_VERSION")),
        "revision": option_env!("ALLEGRO_GIT_REVISION").unwrap_or("unknown"),
        "branch": option_env!("ALLEGRO_GIT_BRANCH").unwrap_or("unknown"),
        "buildUser": "allegro",
        "buildDate": option_env!("ALLEGRO_BUILD_DATE").unwrap_or("unknown"),
        "goVersion": "n/a (Rust)",
    }))
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([("content-type", "text/plain; version=0.0.4")], {
        let mut text = state.metrics.render();
        if let Some(i) = &state.ingester {
            i.render_metrics(&mut text);
        }
        text
    })
}

/// Anything else.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("404 page not found: {}", uri.path()))
}
