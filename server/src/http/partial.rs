//! `X-Allegro-Partial`: every answer over blocks says when damaged blocks were left out.
//!
//! A damaged block is quarantined and skipped (`allegro_engine::block::quarantine`), so the
//! answers that would have read it lack its spans. Where Tempo's response has a partial status
//! (metrics, trace by ID v2) the engine sets it; this header says the same on every query
//! route, search, tags and SQL included, whose formats have no such field.

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::tenant::request_tenants;

/// The header naming the quarantined blocks an answer left out.
pub const PARTIAL_HEADER: &str = "x-allegro-partial";

/// Adds [`PARTIAL_HEADER`] to successful query answers of tenants with quarantined blocks.
pub async fn mark(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let query =
        path.contains("/api/") && !path.contains("/api/status") && !path.contains("/api/echo");
    let tenants = request_tenants(state.multitenancy, req.headers()).ok();
    let mut resp = next.run(req).await;
    if !query || !resp.status().is_success() {
        return resp;
    }
    if let Some(notice) = tenants.and_then(|t| state.query.damage_notice(&t))
        && let Ok(v) = HeaderValue::from_str(&notice)
    {
        resp.headers_mut().insert(PARTIAL_HEADER, v);
    }
    resp
}
