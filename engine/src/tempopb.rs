//! Tempo's protobuf messages for trace by ID (`pkg/tempopb/tempo.proto`), wire-compatible with
//! Tempo: its `ResourceSpans` is a copy of OTLP's, so the OTLP types are reused.

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// `tempopb.Trace`: the v1 trace-by-ID response.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Trace {
    /// The trace's spans, grouped by resource and scope.
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `tempopb.TraceByIDMetrics`.
#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct TraceByIdMetrics {
    /// Bytes read from storage to answer.
    #[prost(uint64, tag = "1")]
    pub inspected_bytes: u64,
}

/// `tempopb.PartialStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum PartialStatus {
    /// Every span was found.
    Complete = 0,
    /// The trace was cut short (too large).
    Partial = 1,
}

/// `tempopb.TraceByIDResponse`: the v2 trace-by-ID response.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TraceByIdResponse {
    /// The trace.
    #[prost(message, optional, tag = "1")]
    pub trace: Option<Trace>,
    /// What answering cost.
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<TraceByIdMetrics>,
    /// Complete or partial.
    #[prost(enumeration = "PartialStatus", tag = "3")]
    pub status: i32,
    /// Why the trace is partial.
    #[prost(string, tag = "4")]
    pub message: String,
}
