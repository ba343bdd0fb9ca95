//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

use std::sync::Arc;

use allegro_engine::otlp::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use allegro_engine::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use allegro_ingest::Ingester;
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{Refusal, write_tenant};

/// The gRPC trace service.
pub struct OtlpGrpc {
    /// Where spans go.
    pub ingester: Arc<Ingester>,
    /// Require `x-scope-orgid` metadata.
    pub multitenancy: bool,
}

impl OtlpGrpc {
    /// The tonic service, accepting gzip and messages up to `max_bytes`.
    pub fn service(self, max_bytes: usize) -> TraceServiceServer<Self> {
        TraceServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes)
    }
}

fn status(r: Refusal) -> Status {
    if matches!(r, Refusal::Internal(_)) {
        tracing::error!(error = r.message(), "OTLP/gRPC export failed");
    }
    Status::new(r.grpc_code(), r.message())
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = write_tenant(
            self.multitenancy,
            req.metadata().get("x-scope-orgid").map(|v| v.as_bytes()),
        )
        .map_err(status)?;
        let msg = req.into_inner();
        let bytes = msg.encoded_len();
        let o = self
            .ingester
            .push(&tenant, "otlp_grpc", msg.resource_spans, bytes)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: (o.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: o.rejected as i64,
                error_message: o.message,
            }),
        }))
    }
}
