//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The service is written out by hand rather than generated so the request reaches the ingester
//! as bytes: most requests are regrouped by trace without being decoded
//! ([`allegro_ingest::wire`]), which halves the receive path's CPU.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use allegro_engine::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use allegro_ingest::Ingester;
use bytes::{Buf, Bytes};
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use super::{Refusal, write_tenant};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC trace service.
pub struct OtlpGrpc {
    /// Where spans go.
    pub ingester: Arc<Ingester>,
    /// Require `x-scope-orgid` metadata.
    pub multitenancy: bool,
}

impl OtlpGrpc {
    /// The tonic service, accepting gzip and messages up to `max_bytes`.
    pub fn service(self, max_bytes: usize) -> OtlpGrpcService {
        OtlpGrpcService {
            inner: Arc::new(self),
            max_bytes,
        }
    }

    async fn export(&self, req: Request<Bytes>) -> Result<ExportTraceServiceResponse, Status> {
        let tenant = write_tenant(
            self.multitenancy,
            req.metadata().get("x-scope-orgid").map(|v| v.as_bytes()),
        )
        .map_err(status)?;
        let body = req.into_inner();
        let o = self
            .ingester
            .push_encoded(&tenant, "otlp_grpc", &body)
            .await
            .map_err(|e| status(e.into()))?;
        Ok(ExportTraceServiceResponse {
            partial_success: (o.rejected > 0).then_some(ExportTracePartialSuccess {
                rejected_spans: o.rejected as i64,
                error_message: o.message,
            }),
        })
    }
}

fn status(r: Refusal) -> Status {
    r.grpc_status("OTLP/gRPC export")
}

/// `TraceService` as a tower service for tonic's router.
#[derive(Clone)]
pub struct OtlpGrpcService {
    inner: Arc<OtlpGrpc>,
    max_bytes: usize,
}

impl NamedService for OtlpGrpcService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct Export(Arc<OtlpGrpc>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.export(request).await.map(Response::new) })
    }
}

impl<B> Service<http::Request<B>> for OtlpGrpcService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT {
            return Box::pin(async move {
                Ok(
                    Status::unimplemented(format!("unknown method {}", req.uri().path()))
                        .into_http(),
                )
            });
        }
        let export = Export(self.inner.clone());
        let max = self.max_bytes;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = Grpc::new(RawRequestCodec)
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max), None);
            Ok(too_large_is_exhausted(grpc.unary(export, req).await, max))
        })
    }
}

/// tonic refuses a message over the size limit with OUT_OF_RANGE, which OTLP exporters retry
/// (the same request, forever); OTLP's answer for a request too large is RESOURCE_EXHAUSTED
/// without retry information, which they do not. Nothing else here answers OUT_OF_RANGE.
fn too_large_is_exhausted(
    resp: http::Response<tonic::body::Body>,
    max: usize,
) -> http::Response<tonic::body::Body> {
    let out_of_range = resp
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    if !out_of_range {
        return resp;
    }
    Status::resource_exhausted(format!(
        "request too large: over {max} bytes \
         (distributor.receivers.otlp.protocols.grpc.max_recv_msg_size_mib)"
    ))
    .into_http()
}

/// Hands the request message over as bytes; encodes the response with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawRequestCodec;

struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the response: {e}")))
    }
}

impl Codec for RawRequestCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> BytesDecoder {
        BytesDecoder
    }
}
