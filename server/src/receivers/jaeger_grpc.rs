//! Jaeger gRPC: `jaeger.api_v2.CollectorService/PostSpans` (port 14250), what Jaeger agents and
//! the Jaeger SDKs' gRPC reporters send. Tenant from `x-scope-orgid` metadata, as for OTLP.

use std::sync::Arc;

use allegro_ingest::Ingester;
use allegro_ingest::jaeger::api_v2::{PostSpansRequest, PostSpansResponse};
use allegro_ingest::jaeger::{proto, translate};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{Refusal, write_tenant};

/// The generated service (`proto/jaeger/api_v2/collector.proto`, built by `build.rs`).
#[allow(missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/jaeger.api_v2.rs"));
}

use generated::collector_service_server::{CollectorService, CollectorServiceServer};

/// The Jaeger collector service.
pub struct JaegerGrpc {
    /// Where spans go.
    pub ingester: Arc<Ingester>,
    /// Require `x-scope-orgid` metadata.
    pub multitenancy: bool,
}

impl JaegerGrpc {
    /// The tonic service, accepting gzip and messages up to `max_bytes`.
    pub fn service(self, max_bytes: usize) -> CollectorServiceServer<Self> {
        CollectorServiceServer::new(self)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes)
    }
}

#[tonic::async_trait]
impl CollectorService for JaegerGrpc {
    async fn post_spans(
        &self,
        req: Request<PostSpansRequest>,
    ) -> Result<Response<PostSpansResponse>, Status> {
        let tenant = write_tenant(
            self.multitenancy,
            req.metadata().get("x-scope-orgid").map(|v| v.as_bytes()),
        )
        .map_err(status)?;
        let req = req.into_inner();
        let bytes = req.encoded_len();
        let batch = proto::from_proto(req.batch.unwrap_or_default())
            .map_err(|e| status(Refusal::BadRequest(e.to_string())))?;
        let o = self
            .ingester
            .push(
                &tenant,
                "jaeger_grpc",
                translate::to_otlp(vec![batch]),
                bytes,
            )
            .await
            .map_err(|e| status(e.into()))?;
        if o.rejected > 0 {
            // PostSpans has no partial success: the refusal is the answer, as Jaeger's
            // collector answers a batch it could not take whole.
            return Err(Status::invalid_argument(o.message));
        }
        Ok(Response::new(PostSpansResponse {}))
    }
}

fn status(r: Refusal) -> Status {
    r.grpc_status("Jaeger PostSpans")
}
