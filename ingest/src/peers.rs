//! The other ingesters of a ring, over their HTTP APIs: a share of a write sent to the
//! ingester owning its traces, and the live spans each holds, asked for by queries.
//!
//! Three internal routes, served by every `allegro serve` beside Tempo's API (the server's
//! `http/internal.rs`), each for the tenant of `X-Scope-OrgID`:
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /internal/ingest/push` | OTLP `ExportTraceServiceRequest` (protobuf) | OTLP `ExportTraceServiceResponse`, or the refusal's status and text |
//! | `GET /internal/ingest/live-spans` | — | the head's span-table groups and its lately flushed blocks, [`encode_live`] |
//! | `GET /internal/ingest/live-trace/{id}` | — | the head's spans of the trace, an `ExportTraceServiceRequest` |
//!
//! Plain HTTP on the API's port rather than a gRPC service of its own: every member already
//! listens there, the bodies are the same protobuf and Arrow IPC bytes gRPC would carry, and
//! an operator has one port per process to open between members. The calls are blocking
//! (ureq, pooled connections) on Tokio's blocking pool.

use std::io::Cursor;
use std::time::Duration;

use allegro_engine::ids::TraceId;
use allegro_engine::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use allegro_engine::otlp::trace::v1::ResourceSpans;
use allegro_engine::query::LiveBatches;
use allegro_engine::ring::Member;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use prost::Message;
use uuid::Uuid;

use crate::error::{IngestError, Result};
use crate::ingester::PushOutcome;

/// The path a share of a write is sent to.
pub const PUSH_PATH: &str = "/internal/ingest/push";
/// The path a member's live spans are asked for at.
pub const LIVE_SPANS_PATH: &str = "/internal/ingest/live-spans";
/// The path (followed by `/{hex trace ID}`) a member's live spans of one trace are asked for.
pub const LIVE_TRACE_PATH: &str = "/internal/ingest/live-trace";

/// How long a share of a write may take before the write is refused as unavailable.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long asking for a member's live spans may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client of the other members.
#[derive(Clone)]
pub struct Peers {
    push: ureq::Agent,
    read: ureq::Agent,
}

impl Default for Peers {
    fn default() -> Self {
        Self::new()
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// An error answer's text, at most 4 KiB of it.
fn error_text(resp: &mut ureq::http::Response<ureq::Body>) -> String {
    resp.body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl Peers {
    /// A client with its own connection pools.
    pub fn new() -> Self {
        Self {
            push: agent(PUSH_TIMEOUT),
            read: agent(READ_TIMEOUT),
        }
    }

    /// Sends `share` of a write for `tenant` to `member`, which stores it as its own; its
    /// answer as this process's would be (a refusal keeps its class: 400, 429, 503).
    pub async fn push(
        &self,
        member: &Member,
        tenant: &str,
        share: Vec<ResourceSpans>,
    ) -> Result<PushOutcome> {
        let body = ExportTraceServiceRequest {
            resource_spans: share,
        }
        .encode_to_vec();
        let (agent, url, tenant, id) = (
            self.push.clone(),
            format!("{}{PUSH_PATH}", member.address),
            tenant.to_string(),
            member.id.clone(),
        );
        let unreachable = |why: String| {
            IngestError::Peer(format!(
                "ingester {id} ({url}) did not take its share of the write: {why}; retry"
            ))
        };
        let sent = tokio::task::spawn_blocking({
            let (url, tenant) = (url.clone(), tenant.clone());
            move || -> std::result::Result<(u16, Vec<u8>, String), String> {
                let mut resp = agent
                    .post(&url)
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Scope-OrgID", &tenant)
                    .send(&body[..])
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                if status != 200 {
                    return Ok((status, Vec::new(), error_text(&mut resp)));
                }
                let bytes = resp
                    .body_mut()
                    .with_config()
                    .limit(1 << 20)
                    .read_to_vec()
                    .map_err(|e| e.to_string())?;
                Ok((status, bytes, String::new()))
            }
        })
        .await
        .map_err(|e| unreachable(e.to_string()))?;
        let (status, bytes, text) = sent.map_err(unreachable)?;
        let peer = |m: &str| format!("ingester {id}: {m}");
        match status {
            200 => {
                let resp = ExportTraceServiceResponse::decode(bytes.as_slice())
                    .map_err(|e| unreachable(format!("its answer does not decode: {e}")))?;
                let partial = resp.partial_success.unwrap_or_default();
                Ok(PushOutcome {
                    accepted: 0,
                    rejected: partial.rejected_spans.max(0) as u64,
                    message: partial.error_message,
                })
            }
            400 => Err(IngestError::InvalidInput(peer(&text))),
            429 => Err(IngestError::RateLimited(peer(&text))),
            503 => Err(IngestError::Backpressure(peer(&text))),
            s => Err(unreachable(format!("HTTP {s}: {text}"))),
        }
    }

    /// `member`'s live spans of `tenant`, in its groups.
    pub async fn live_spans(&self, member: &Member, tenant: &str) -> Result<LiveBatches> {
        let bytes = self
            .get(
                member,
                tenant,
                format!("{}{LIVE_SPANS_PATH}", member.address),
            )
            .await?;
        decode_live(&bytes).map_err(|e| {
            IngestError::Peer(format!(
                "ingester {}'s live spans do not decode: {e}; retry",
                member.id
            ))
        })
    }

    /// `member`'s live spans of trace `id` of `tenant`.
    pub async fn live_trace(
        &self,
        member: &Member,
        tenant: &str,
        id: &TraceId,
    ) -> Result<Vec<ResourceSpans>> {
        let url = format!("{}{LIVE_TRACE_PATH}/{}", member.address, id.to_hex());
        let bytes = self.get(member, tenant, url).await?;
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).map_err(|e| {
            IngestError::Peer(format!(
                "ingester {}'s live spans of trace {id} do not decode: {e}; retry",
                member.id
            ))
        })?;
        Ok(req.resource_spans)
    }

    /// The body `member` answers a GET of `url` with for `tenant`; anything but 200 is the
    /// member unavailable (its live spans are part of every answer).
    async fn get(&self, member: &Member, tenant: &str, url: String) -> Result<Vec<u8>> {
        let (agent, tenant, id) = (self.read.clone(), tenant.to_string(), member.id.clone());
        let got = tokio::task::spawn_blocking({
            let url = url.clone();
            move || -> std::result::Result<Vec<u8>, String> {
                let mut resp = agent
                    .get(&url)
                    .header("X-Scope-OrgID", &tenant)
                    .call()
                    .map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                if status != 200 {
                    return Err(format!("HTTP {status}: {}", error_text(&mut resp)));
                }
                // A member's head is bounded by its `max_head_bytes`, and so is this.
                resp.body_mut()
                    .with_config()
                    .limit(u64::MAX)
                    .read_to_vec()
                    .map_err(|e| e.to_string())
            }
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        got.map_err(|why| {
            IngestError::Peer(format!(
                "ingester {id} ({url}) did not send its live spans: {why}; retry"
            ))
        })
    }
}

/// `groups` on the wire: each group as an Arrow IPC stream behind its length (8 bytes, little
/// endian). A group keeps its traces whole, as the head's groups do.
pub fn encode_live(live: &LiveBatches) -> Result<Vec<u8>> {
    // The flushed blocks first: their count, then 16 bytes each.
    let mut out = Vec::new();
    out.extend_from_slice(&(live.flushed.len() as u64).to_le_bytes());
    for id in &live.flushed {
        out.extend_from_slice(id.as_bytes());
    }
    for g in live.groups.iter().filter(|g| !g.is_empty()) {
        let mut w = StreamWriter::try_new(Vec::new(), &g[0].schema())
            .map_err(|e| IngestError::Internal(format!("live spans to Arrow IPC: {e}")))?;
        for b in g {
            w.write(b)
                .map_err(|e| IngestError::Internal(format!("live spans to Arrow IPC: {e}")))?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| IngestError::Internal(format!("live spans to Arrow IPC: {e}")))?;
        out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// What [`encode_live`] wrote.
pub fn decode_live(bytes: &[u8]) -> std::result::Result<LiveBatches, String> {
    let (count, mut bytes) = bytes
        .split_first_chunk::<8>()
        .ok_or("the flushed blocks' count is cut short")?;
    let count = usize::try_from(u64::from_le_bytes(*count)).map_err(|e| e.to_string())?;
    if bytes.len() / 16 < count {
        return Err(format!(
            "{count} flushed blocks do not fit {} bytes",
            bytes.len()
        ));
    }
    let mut live = LiveBatches::default();
    for _ in 0..count {
        let (id, rest) = bytes.split_at(16);
        live.flushed
            .push(Uuid::from_slice(id).map_err(|e| e.to_string())?);
        bytes = rest;
    }
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or("a group's length is cut short")?;
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|e| e.to_string())?;
        if rest.len() < len {
            return Err(format!("a group of {len} bytes has only {}", rest.len()));
        }
        let (group, rest) = rest.split_at(len);
        let reader = StreamReader::try_new(Cursor::new(group), None).map_err(|e| e.to_string())?;
        live.groups.push(
            reader
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?,
        );
        bytes = rest;
    }
    Ok(live)
}

/// The members other than this process, for asking each.
pub fn others(ring: &allegro_engine::ring::Ring) -> impl Iterator<Item = &Member> {
    let me = ring.me();
    ring.members()
        .iter()
        .enumerate()
        .filter(move |(i, _)| *i != me)
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;

    #[test]
    fn groups_and_flushed_blocks_survive_the_wire() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = |n: Vec<i64>, s: Vec<Option<&str>>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(n)),
                    Arc::new(StringArray::from(s)),
                ],
            )
            .unwrap()
        };
        let groups = vec![
            vec![
                batch(vec![1, 2], vec![Some("a"), None]),
                batch(vec![3], vec![Some("c")]),
            ],
            vec![],
            vec![batch(vec![4], vec![None])],
        ];
        let flushed = vec![Uuid::from_u128(7), Uuid::from_u128(u128::MAX - 3)];
        let live = LiveBatches {
            groups: groups.clone(),
            recorded: Vec::new(),
            traces: Vec::new(),
            flushed: flushed.clone(),
        };
        let bytes = encode_live(&live).unwrap();
        let back = decode_live(&bytes).unwrap();
        // The empty group is not sent; the others keep their batches and boundaries.
        assert_eq!(back.groups, vec![groups[0].clone(), groups[2].clone()]);
        assert_eq!(back.flushed, flushed);
        let empty = decode_live(&encode_live(&LiveBatches::default()).unwrap()).unwrap();
        assert!(empty.groups.is_empty() && empty.flushed.is_empty());
        assert!(decode_live(&[]).is_err());
        assert!(decode_live(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_live(&bytes[..20]).is_err());
        assert!(decode_live(&bytes[..45]).is_err());
    }
}
