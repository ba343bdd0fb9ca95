//! Grafana's streaming gRPC API (`tempopb.StreamingQuerier`), served on the HTTP port as
//! Tempo serves it with `stream_over_http_enabled`: HTTP/2 requests with
//! `content-type: application/grpc` to `/tempopb.StreamingQuerier/*` reach it, whatever the
//! HTTP API's path prefix. A thin door like the HTTP API: requests become the doors' shared
//! parameters (`crate::api`), answers come from the engine.

mod answers;
mod streaming_querier;

use axum::Router;
use tonic::{Code, Status};

use crate::api::error::ApiError;
use crate::http::AppState;

/// The generated service (`proto/tempopb/tempo.proto`, built by `build.rs`).
#[allow(missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/tempopb.rs"));
}

pub use generated::streaming_querier_server::{StreamingQuerier, StreamingQuerierServer};
pub use streaming_querier::Querier;

/// Largest message a stream sends. Grafana reads at most 4 MiB per message; Tempo cuts its
/// streamed answers into packets of 1 MiB (`max_grpc_streaming_packet_size`).
pub const MAX_PACKET_BYTES: usize = 1 << 20;

/// The streaming API's routes, to merge with the HTTP API's.
pub fn router(state: AppState) -> Router {
    let svc = StreamingQuerierServer::new(Querier::new(state))
        .max_encoding_message_size(4 * MAX_PACKET_BYTES);
    Router::new().route_service("/tempopb.StreamingQuerier/{*method}", svc)
}

/// The gRPC status for an error the HTTP API would answer with `e.status`; the message is the
/// same.
pub fn status(e: ApiError) -> Status {
    let code = match e.status.as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        413 | 422 | 429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, e.message)
}
