//! What this process answers the other ingesters of its ring (`ingester.ring`): its live
//! spans, for their queries. The wire formats and the client are in `allegro_ingest::peers`;
//! shares of writes arrive at the OTLP/HTTP receiver's `shares_router`.

use std::sync::Arc;

use allegro_engine::ids::TraceId;
use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_ingest::Ingester;
use allegro_ingest::peers::{LIVE_SPANS_PATH, LIVE_TRACE_PATH, encode_live};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prost::Message;

use crate::receivers::{Refusal, write_tenant};
use crate::tenant::ORG_ID_HEADER;

/// What the ring's routes need.
#[derive(Clone)]
pub struct RingReads {
    /// This process's head.
    pub ingester: Arc<Ingester>,
    /// Require `X-Scope-OrgID`.
    pub multitenancy: bool,
}

/// The routes the other members ask this one's live spans at.
pub fn router(state: RingReads) -> Router {
    Router::new()
        .route(LIVE_SPANS_PATH, get(live_spans))
        .route(&format!("{LIVE_TRACE_PATH}/{{id}}"), get(live_trace))
        .with_state(state)
}

fn refused(r: Refusal) -> Response {
    (r.http_status(), r.message().to_string()).into_response()
}

fn tenant(s: &RingReads, headers: &HeaderMap) -> Result<String, Refusal> {
    write_tenant(
        s.multitenancy,
        headers.get(ORG_ID_HEADER).map(|v| v.as_bytes()),
    )
}

/// The tenant's live spans in this process's head, in its groups, and its lately flushed
/// blocks.
async fn live_spans(State(s): State<RingReads>, headers: HeaderMap) -> Response {
    let tenant = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return refused(r),
    };
    // Converting the head is CPU work: off the threads that serve requests.
    let ingester = s.ingester.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        ingester
            .live_snapshot(&tenant)
            .and_then(|live| encode_live(&live))
    })
    .await;
    match encoded {
        Ok(Ok(bytes)) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => refused(Refusal::from(e)),
        Err(e) => refused(Refusal::Internal(format!("live spans: {e}"))),
    }
}

/// The tenant's live spans of one trace in this process's head.
async fn live_trace(
    State(s): State<RingReads>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let tenant = match tenant(&s, &headers) {
        Ok(t) => t,
        Err(r) => return refused(r),
    };
    let id = match TraceId::parse_hex(&id) {
        Ok(id) => id,
        Err(e) => return refused(Refusal::BadRequest(format!("trace ID {id:?}: {e}"))),
    };
    match s.ingester.find_trace(&tenant, &id) {
        Ok(spans) => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/x-protobuf")],
            ExportTraceServiceRequest {
                resource_spans: spans,
            }
            .encode_to_vec(),
        )
            .into_response(),
        Err(e) => refused(Refusal::from(e)),
    }
}
