//! `POST /api/sql`: one read-only SQL query in the body (plain text, or JSON
//! `{"query": "..."}`), answered as JSON rows, CSV or an Arrow IPC stream by `Accept`; at most
//! [`HTTP_MAX_ROWS`] rows (`"truncated": true` when more matched). The tenant is
//! `X-Scope-OrgID`, as for every query.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::api::error::ApiError;
use crate::api::sql::{HTTP_MAX_ROWS, SqlFormat, encode};
use crate::tenant::request_tenants;

/// The query text of a request body.
fn query_of(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = if ct.starts_with("application/json") {
        #[derive(serde::Deserialize)]
        struct Body {
            query: String,
        }
        serde_json::from_slice::<Body>(body)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "invalid JSON body: {e}; send {{\"query\": \"SELECT ...\"}}"
                ))
            })?
            .query
    } else {
        String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("the SQL query is not valid UTF-8"))?
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(
            "no SQL query: send it as the request body",
        ));
    }
    Ok(text)
}

/// `POST /api/sql`.
pub async fn sql(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenants = request_tenants(state.multitenancy, &headers)?;
    let query = query_of(&headers, &body)?;
    let answer = state.query.sql(&tenants, &query, HTTP_MAX_ROWS).await?;
    let format = SqlFormat::from_accept(
        headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    );
    let bytes = encode(&answer, format)?;
    Ok(([(CONTENT_TYPE, format.content_type())], bytes).into_response())
}
