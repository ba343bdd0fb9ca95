//! Health, version and metrics endpoints.

use allegro_ingest::generator::remote_write::{EndpointStats, RemoteWrite};
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use crate::api::error::ApiError;
use crate::tenant::request_tenants;

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
        state.query.render_metrics(&mut text);
        if let Some(i) = &state.ingester {
            i.render_metrics(&mut text);
        }
        if let Some(g) = &state.generator {
            g.render_self_metrics(&mut text);
        }
        if let Some(rw) = &state.remote_write {
            render_remote_write(rw, &mut text);
        }
        if let Some(l) = &state.lifecycle {
            l.render(&mut text);
        }
        text
    })
}

/// Name, type, help and reading of one remote-write self-metric.
type StatFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&EndpointStats) -> u64,
);

fn render_remote_write(rw: &RemoteWrite, out: &mut String) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let stats = rw.stats();
    let families: [StatFamily; 6] = [
        (
            "allegro_generator_remote_write_requests_total",
            "counter",
            "Remote-write requests accepted by the receiver.",
            |s| s.sent_requests.load(Relaxed),
        ),
        (
            "allegro_generator_remote_write_samples_total",
            "counter",
            "Samples in accepted remote-write requests.",
            |s| s.sent_samples.load(Relaxed),
        ),
        (
            "allegro_generator_remote_write_failed_attempts_total",
            "counter",
            "Remote-write attempts that failed and were retried.",
            |s| s.failed_attempts.load(Relaxed),
        ),
        (
            "allegro_generator_remote_write_dropped_requests_total",
            "counter",
            "Remote-write requests given up (refused as bad, or pushed out of a full queue).",
            |s| s.dropped_requests.load(Relaxed),
        ),
        (
            "allegro_generator_remote_write_queued_bytes",
            "gauge",
            "Bytes waiting in the on-disk remote-write queue.",
            |s| s.queued_bytes.load(Relaxed),
        ),
        (
            "allegro_generator_remote_write_queued_requests",
            "gauge",
            "Requests waiting in the on-disk remote-write queue.",
            |s| s.queued_requests.load(Relaxed),
        ),
    ];
    for (name, ty, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
        for (endpoint, s) in &stats {
            let _ = writeln!(out, "{name}{{endpoint=\"{endpoint}\"}} {}", value(s));
        }
    }
}

/// Query of the generated-series scrape endpoint.
#[derive(Debug, serde::Deserialize)]
pub struct GeneratedQuery {
    /// Only this one of the caller's tenants.
    pub tenant: Option<String>,
}

/// `/api/metrics-generator/metrics`: span metrics and service graphs in the Prometheus text
/// format, for setups that scrape instead of receiving remote write. Like every endpoint it
/// answers for the caller's tenants only (`X-Scope-OrgID`, `a|b` for several, each series then
/// labelled with its tenant); `?tenant=` picks one of them.
pub async fn generated_metrics(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<GeneratedQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(g) = &state.generator else {
        return Err(ApiError::not_found(
            "the metrics generator is off; add a metrics_generator: block to the config (an empty block runs it with defaults)",
        ));
    };
    let mut tenants = request_tenants(state.multitenancy, &headers)?;
    if let Some(t) = q.tenant {
        if !tenants.contains(&t) {
            return Err(ApiError::forbidden(format!(
                "tenant {t:?} is not among the tenants of this request ({}); set X-Scope-OrgID to it",
                tenants.join("|")
            )));
        }
        tenants = vec![t];
    }
    Ok((
        [("content-type", "text/plain; version=0.0.4")],
        g.render(&tenants),
    ))
}

/// Anything else.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("404 page not found: {}", uri.path()))
}
