//! Span receivers: OTLP/gRPC, OTLP/HTTP, Zipkin v2 and Jaeger (gRPC, Thrift over HTTP, agent
//! UDP), each on its own listener like Tempo's distributor. They decode, find the tenant and hand the spans to the ingester.

pub mod body;
pub mod jaeger_grpc;
pub mod jaeger_http;
pub mod jaeger_udp;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod zipkin;

use allegro_ingest::error::IngestError;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::tenant::{SINGLE_TENANT, validate_tenant};

/// `google.rpc.Status`, the error body of OTLP/HTTP.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// A gRPC status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// What went wrong.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// Why a write request was refused as a whole; maps to an HTTP status and a gRPC code.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Missing tenant with multitenancy on: 401 / UNAUTHENTICATED.
    Unauthenticated(String),
    /// Malformed body or bad tenant: 400 / INVALID_ARGUMENT.
    BadRequest(String),
    /// Body over the configured limit: 413 / RESOURCE_EXHAUSTED.
    TooLarge(String),
    /// Content type or encoding not spoken here: 415 / INVALID_ARGUMENT.
    UnsupportedMedia(String),
    /// Over the tenant's rate: 429 / RESOURCE_EXHAUSTED (retryable).
    RateLimited(String),
    /// Cannot take data now (WAL failure, shutting down): 503 / UNAVAILABLE (retryable).
    Unavailable(String),
    /// A bug: 500 / INTERNAL.
    Internal(String),
}

impl Refusal {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::Unauthenticated(m)
            | Self::BadRequest(m)
            | Self::TooLarge(m)
            | Self::UnsupportedMedia(m)
            | Self::RateLimited(m)
            | Self::Unavailable(m)
            | Self::Internal(m) => m,
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status answering this refusal on `receiver`'s RPC; a bug is logged.
    pub fn grpc_status(self, receiver: &str) -> tonic::Status {
        if matches!(self, Self::Internal(_)) {
            tracing::error!(error = self.message(), receiver, "a gRPC write failed");
        }
        tonic::Status::new(self.grpc_code(), self.message())
    }

    /// The gRPC status code.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::BadRequest(_) | Self::UnsupportedMedia(_) => tonic::Code::InvalidArgument,
            Self::TooLarge(_) | Self::RateLimited(_) => tonic::Code::ResourceExhausted,
            Self::Unavailable(_) => tonic::Code::Unavailable,
            Self::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl From<IngestError> for Refusal {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::InvalidInput(m) => Self::BadRequest(m),
            IngestError::RateLimited(m) => Self::RateLimited(m),
            e @ (IngestError::Wal(_)
            | IngestError::ShuttingDown
            | IngestError::ReadOnly(_)
            | IngestError::Backpressure(_)
            | IngestError::Peer(_)) => Self::Unavailable(e.to_string()),
            e @ (IngestError::Engine(_) | IngestError::Internal(_)) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

/// The answer of the receivers that speak plain HTTP (Zipkin, Jaeger Thrift): 202, with the
/// text of what was refused when part of the request was (they have no partial success), or
/// the refusal's status and message.
pub fn accepted(outcome: Result<String, Refusal>) -> Response {
    match outcome {
        Ok(msg) if msg.is_empty() => StatusCode::ACCEPTED.into_response(),
        Ok(msg) => (StatusCode::ACCEPTED, msg).into_response(),
        Err(r) => (
            r.http_status(),
            [(CONTENT_TYPE, "text/plain; charset=utf-8")],
            r.message().to_string(),
        )
            .into_response(),
    }
}

/// The one tenant a write is for: `single-tenant` when multitenancy is off, else the
/// `X-Scope-OrgID` value, which must name exactly one valid tenant.
pub fn write_tenant(multitenancy: bool, org_id: Option<&[u8]>) -> Result<String, Refusal> {
    if !multitenancy {
        return Ok(SINGLE_TENANT.to_string());
    }
    let raw = org_id.ok_or_else(|| {
        Refusal::Unauthenticated(
            "no org id: the X-Scope-OrgID header is required (multitenancy_enabled is true)".into(),
        )
    })?;
    let t = std::str::from_utf8(raw)
        .map_err(|_| Refusal::BadRequest("X-Scope-OrgID is not valid text".into()))?
        .trim();
    if t.contains('|') {
        return Err(Refusal::BadRequest(format!(
            "X-Scope-OrgID {t:?} names several tenants; a write goes to exactly one"
        )));
    }
    validate_tenant(t).map_err(Refusal::BadRequest)?;
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_of_writes() {
        assert_eq!(write_tenant(false, None).unwrap(), "single-tenant");
        assert_eq!(write_tenant(true, Some(b"team-a")).unwrap(), "team-a");
        assert!(matches!(
            write_tenant(true, None),
            Err(Refusal::Unauthenticated(_))
        ));
        assert!(matches!(
            write_tenant(true, Some(b"a|b")),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(
            write_tenant(true, Some(b"a/b")),
            Err(Refusal::BadRequest(_))
        ));
        assert_eq!(Refusal::RateLimited(String::new()).http_status(), 429);
        assert_eq!(
            Refusal::RateLimited(String::new()).grpc_code(),
            tonic::Code::ResourceExhausted
        );
    }
}
