//! Jaeger Thrift over HTTP: `POST /api/traces` with a Thrift binary `Batch` (port 14268), what
//! the Jaeger clients' HTTP senders post. 202 on success, as Jaeger's collector answers.

use std::sync::Arc;

use allegro_ingest::Ingester;
use allegro_ingest::jaeger::thrift::{Protocol, decode_batch};
use allegro_ingest::jaeger::translate;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::routing::post;

use super::{Refusal, accepted, body, write_tenant};
use crate::tenant::ORG_ID_HEADER;

/// What the Thrift-over-HTTP receiver needs.
#[derive(Clone)]
pub struct JaegerHttp {
    /// Where spans go.
    pub ingester: Arc<Ingester>,
    /// Require `X-Scope-OrgID`.
    pub multitenancy: bool,
    /// Body limit.
    pub max_body: usize,
}

/// The receiver's routes.
pub fn router(state: JaegerHttp) -> Router {
    Router::new()
        .route("/api/traces", post(traces))
        .with_state(state)
}

async fn traces(State(s): State<JaegerHttp>, headers: HeaderMap, body: Body) -> Response {
    accepted(handle(&s, &headers, body).await)
}

/// The content types Jaeger's collector reads as Thrift binary.
const THRIFT_BINARY: [&str; 2] = [
    "application/x-thrift",
    "application/vnd.apache.thrift.binary",
];

async fn handle(s: &JaegerHttp, headers: &HeaderMap, body: Body) -> Result<String, Refusal> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !THRIFT_BINARY.contains(&media.as_str()) {
        return Err(Refusal::UnsupportedMedia(format!(
            "Content-Type {ct:?} is not supported; send a Thrift binary Batch as {}",
            THRIFT_BINARY.join(" or ")
        )));
    }
    let tenant = write_tenant(
        s.multitenancy,
        headers.get(ORG_ID_HEADER).map(|v| v.as_bytes()),
    )?;
    let bytes = body::read(headers, body, s.max_body).await?;
    let batch =
        decode_batch(&bytes, Protocol::Binary).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    let o = s
        .ingester
        .push(
            &tenant,
            "jaeger_thrift_http",
            translate::to_otlp(vec![batch]),
            bytes.len(),
        )
        .await?;
    Ok(o.message)
}
