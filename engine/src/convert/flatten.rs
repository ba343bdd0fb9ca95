//! OTLP `ResourceSpans` → one [`FlatSpan`] per span, with malformed spans set aside.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

use crate::ids::{TraceId, span_id_from_bytes};

/// The resource a span was reported with, shared by all its spans.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceInfo {
    /// The OTLP resource (attributes, dropped count, entity refs).
    pub resource: Resource,
    /// `ResourceSpans.schema_url`.
    pub schema_url: String,
}

impl ResourceInfo {
    /// The first string `service.name` attribute, if any.
    pub fn service_name(&self) -> Option<&str> {
        self.resource
            .attributes
            .iter()
            .find_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) if kv.key == "service.name" => Some(s.as_str()),
                _ => None,
            })
    }
}

/// The instrumentation scope a span was reported with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScopeInfo {
    /// The OTLP scope (name, version, attributes, dropped count).
    pub scope: InstrumentationScope,
    /// `ScopeSpans.schema_url`.
    pub schema_url: String,
}

/// Numbers and facts computed per trace when a block is written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceLevel {
    /// `service.name` of the root span ("" when the root has not arrived).
    pub root_service: String,
    /// Name of the root span.
    pub root_name: String,
    /// Earliest span start.
    pub start_unix_nano: u64,
    /// Latest span end minus earliest start.
    pub duration_nano: u64,
}

/// Tempo's nested-set numbers of one span (0 = unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NestedSet {
    /// Assigned on the way down.
    pub left: i32,
    /// Assigned on the way up.
    pub right: i32,
    /// The parent's `left`; −1 for a root.
    pub parent: i32,
}

/// One span with everything needed to write its row.
#[derive(Debug, Clone)]
pub struct FlatSpan {
    /// Validated trace ID.
    pub trace_id: TraceId,
    /// Validated span ID.
    pub span_id: [u8; 8],
    /// Validated parent span ID, `None` for roots.
    pub parent_span_id: Option<[u8; 8]>,
    /// The resource, shared.
    pub resource: Arc<ResourceInfo>,
    /// The scope, shared.
    pub scope: Arc<ScopeInfo>,
    /// The OTLP span itself (its ID fields are kept as sent).
    pub span: Span,
    /// Filled in by [`crate::nested_set::prepare_traces`].
    pub nested: NestedSet,
    /// Filled in by [`crate::nested_set::prepare_traces`].
    pub trace: Arc<TraceLevel>,
}

/// A span that could not be taken, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Position of the span in the request (resource, scope, span).
    pub position: (usize, usize, usize),
    /// What was wrong with it.
    pub reason: String,
}

/// Flattens OTLP data. Spans with malformed IDs are returned in the second list, with a reason;
/// the others are kept, so one bad span never loses a whole batch.
pub fn flatten(batches: Vec<ResourceSpans>) -> (Vec<FlatSpan>, Vec<Rejected>) {
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    for (ri, rs) in batches.into_iter().enumerate() {
        let resource = Arc::new(ResourceInfo {
            resource: rs.resource.unwrap_or_default(),
            schema_url: rs.schema_url,
        });
        for (si, ss) in rs.scope_spans.into_iter().enumerate() {
            let scope = Arc::new(ScopeInfo {
                scope: ss.scope.unwrap_or_default(),
                schema_url: ss.schema_url,
            });
            for (pi, span) in ss.spans.into_iter().enumerate() {
                match validate(&span) {
                    Ok((trace_id, span_id, parent_span_id)) => out.push(FlatSpan {
                        trace_id,
                        span_id,
                        parent_span_id,
                        resource: resource.clone(),
                        scope: scope.clone(),
                        span,
                        nested: NestedSet::default(),
                        trace: Arc::default(),
                    }),
                    Err(reason) => rejected.push(Rejected {
                        position: (ri, si, pi),
                        reason,
                    }),
                }
            }
        }
    }
    (out, rejected)
}

type Ids = (TraceId, [u8; 8], Option<[u8; 8]>);

fn validate(span: &Span) -> Result<Ids, String> {
    let trace_id = match TraceId::from_bytes(&span.trace_id) {
        Ok(t) => t,
        Err(_) if span.trace_id.len() == 16 => return Err("trace ID is all zeros".into()),
        Err(_) => {
            return Err(format!(
                "trace ID must be 16 bytes, got {}",
                span.trace_id.len()
            ));
        }
    };
    let span_id = span_id_from_bytes(&span.span_id)
        .map_err(|_| format!("span ID must be 8 bytes, got {}", span.span_id.len()))?;
    let parent = if span.parent_span_id.is_empty() {
        None
    } else {
        Some(span_id_from_bytes(&span.parent_span_id).map_err(|_| {
            format!(
                "parent span ID must be 8 bytes, got {}",
                span.parent_span_id.len()
            )
        })?)
    };
    Ok((trace_id, span_id, parent))
}
