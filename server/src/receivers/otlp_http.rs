//! OTLP/HTTP: `POST /v1/traces` with `application/x-protobuf` or `application/json`.

use std::sync::Arc;

use allegro_engine::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use allegro_engine::otlp_json::decode_traces_json;
use allegro_ingest::{Ingester, PushOutcome};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use serde_json::json;

use super::{Refusal, RpcStatus, body, write_tenant};
use crate::tenant::ORG_ID_HEADER;

/// What the OTLP/HTTP receiver needs.
#[derive(Clone)]
pub struct OtlpHttp {
    /// Where spans go.
    pub ingester: Arc<Ingester>,
    /// Require `X-Scope-OrgID`.
    pub multitenancy: bool,
    /// Body limit.
    pub max_body: usize,
    /// Store every span here: the shares of writes other ingesters of the ring send
    /// ([`allegro_ingest::peers`]), already split by owner.
    pub here: bool,
}

/// The receiver's routes.
pub fn router(state: OtlpHttp) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .with_state(OtlpHttp {
            here: false,
            ..state
        })
}

/// The route other ingesters of the ring send this one its shares of their writes at
/// ([`allegro_ingest::peers::PUSH_PATH`]): OTLP/HTTP, stored here.
pub fn shares_router(state: OtlpHttp) -> Router {
    Router::new()
        .route(allegro_ingest::peers::PUSH_PATH, post(export))
        .with_state(OtlpHttp {
            here: true,
            ..state
        })
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

fn reply<T: Message>(
    format: Format,
    status: StatusCode,
    msg: &T,
    json: serde_json::Value,
) -> Response {
    match format {
        Format::Protobuf => (
            status,
            [(CONTENT_TYPE, "application/x-protobuf")],
            msg.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (
            status,
            [(CONTENT_TYPE, "application/json")],
            json.to_string(),
        )
            .into_response(),
    }
}

/// A refusal as OTLP/HTTP answers it: the status, and a `google.rpc.Status` body.
pub fn refusal_response(r: &Refusal, json_body: bool) -> Response {
    let st = RpcStatus {
        code: r.grpc_code() as i32,
        message: r.message().to_string(),
    };
    let format = if json_body {
        Format::Json
    } else {
        Format::Protobuf
    };
    let mut resp = reply(
        format,
        r.http_status(),
        &st,
        json!({"code": st.code, "message": st.message}),
    );
    if matches!(r, Refusal::RateLimited(_) | Refusal::Unavailable(_)) {
        resp.headers_mut()
            .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
    }
    resp
}

/// The OTLP answer to an accepted request (partial success when spans were refused).
fn success(format: Format, o: &PushOutcome) -> Response {
    let partial = (o.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: o.rejected as i64,
        error_message: o.message.clone(),
    });
    let json = match &partial {
        Some(p) => {
            json!({"partialSuccess": {"rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message}})
        }
        None => json!({}),
    };
    reply(
        format,
        StatusCode::OK,
        &ExportTraceServiceResponse {
            partial_success: partial,
        },
        json,
    )
}

async fn export(State(s): State<OtlpHttp>, headers: HeaderMap, body: Body) -> Response {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        other => {
            let r = Refusal::UnsupportedMedia(format!(
                "Content-Type {other:?} is not supported; send application/x-protobuf or application/json"
            ));
            return refusal_response(&r, false);
        }
    };
    match handle(&s, &headers, body, format).await {
        Ok(o) => success(format, &o),
        Err(r) => {
            if matches!(r, Refusal::Internal(_)) {
                tracing::error!(error = r.message(), "OTLP/HTTP export failed");
            }
            refusal_response(&r, format == Format::Json)
        }
    }
}

async fn handle(
    s: &OtlpHttp,
    headers: &HeaderMap,
    body: Body,
    format: Format,
) -> Result<PushOutcome, Refusal> {
    let tenant = write_tenant(
        s.multitenancy,
        headers.get(ORG_ID_HEADER).map(|v| v.as_bytes()),
    )?;
    let bytes = body::read(headers, body, s.max_body).await?;
    if format == Format::Protobuf && s.here {
        return Ok(s
            .ingester
            .push_encoded_here(&tenant, "ring", &bytes)
            .await?);
    }
    if format == Format::Protobuf {
        return Ok(s
            .ingester
            .push_encoded(&tenant, "otlp_http_protobuf", &bytes)
            .await?);
    }
    let batches = decode_traces_json(&bytes).map_err(|e| {
        Refusal::BadRequest(format!(
            "malformed OTLP JSON: {}",
            e.to_string().trim_start_matches("invalid input: ")
        ))
    })?;
    if s.here {
        return Ok(s
            .ingester
            .push_here(&tenant, "ring", batches, bytes.len())
            .await?);
    }
    Ok(s.ingester
        .push(&tenant, "otlp_http_json", batches, bytes.len())
        .await?)
}
