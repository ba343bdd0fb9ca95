//! Request bodies: size limits before and after decompression, gzip/deflate.

use std::io::Read;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use bytes::Bytes;

use super::Refusal;

fn too_large(limit: usize) -> Refusal {
    Refusal::TooLarge(format!(
        "request body exceeds max_request_body_size ({limit} bytes); send smaller batches"
    ))
}

/// Reads the body (at most `limit` bytes, compressed or not) and undoes `Content-Encoding`.
pub async fn read(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Refusal> {
    if let Some(len) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = source {
            if s.to_string().contains("length limit exceeded") {
                return too_large(limit);
            }
            source = s.source();
        }
        Refusal::BadRequest(format!("cannot read the request body: {e}"))
    })?;
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => inflate(flate2::read::GzDecoder::new(&raw[..]), limit, "gzip"),
        "deflate" => inflate(flate2::read::ZlibDecoder::new(&raw[..]), limit, "deflate"),
        other => Err(Refusal::UnsupportedMedia(format!(
            "Content-Encoding {other:?} is not supported; use gzip, deflate or none"
        ))),
    }
}

fn inflate(r: impl Read, limit: usize, name: &str) -> Result<Bytes, Refusal> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly at the limit" from "over it".
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Refusal::BadRequest(format!("malformed {name} body: {e}")))?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(out))
}
