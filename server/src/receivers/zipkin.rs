//! Zipkin v2: `POST /api/v2/spans` with a JSON list of spans; 202 on success as Zipkin answers.

use std::sync::Arc;

use allegro_ingest::Ingester;
use allegro_ingest::zipkin::decode_zipkin_v2;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::routing::post;

use super::{Refusal, accepted, body, write_tenant};
use crate::tenant::ORG_ID_HEADER;

/// What the Zipkin receiver needs.
#[derive(Clone)]
pub struct Zipkin {
    /// Where spans go.
    pub ingester: Arc<Ingester>,
    /// Require `X-Scope-OrgID`.
    pub multitenancy: bool,
    /// Body limit.
    pub max_body: usize,
}

/// The receiver's routes.
pub fn router(state: Zipkin) -> Router {
    Router::new()
        .route("/api/v2/spans", post(spans))
        .with_state(state)
}

async fn spans(State(s): State<Zipkin>, headers: HeaderMap, body: Body) -> Response {
    accepted(handle(&s, &headers, body).await)
}

async fn handle(s: &Zipkin, headers: &HeaderMap, body: Body) -> Result<String, Refusal> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(Refusal::UnsupportedMedia(format!(
            "Content-Type {ct:?} is not supported; send Zipkin v2 JSON (application/json)"
        )));
    }
    let tenant = write_tenant(
        s.multitenancy,
        headers.get(ORG_ID_HEADER).map(|v| v.as_bytes()),
    )?;
    let bytes = body::read(headers, body, s.max_body).await?;
    let batches = decode_zipkin_v2(&bytes).map_err(Refusal::BadRequest)?;
    let o = s
        .ingester
        .push(&tenant, "zipkin", batches, bytes.len())
        .await?;
    Ok(o.message)
}
