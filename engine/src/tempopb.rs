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

/// `tempopb.SearchResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SearchResponse {
    /// Matching traces, newest first.
    #[prost(message, repeated, tag = "1")]
    pub traces: Vec<TraceSearchMetadata>,
    /// What answering cost.
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
}

/// `tempopb.TraceSearchMetadata`: one trace of a search result.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TraceSearchMetadata {
    /// Hex trace ID, leading zeros stripped as Tempo does.
    #[prost(string, tag = "1")]
    pub trace_id: String,
    /// `service.name` of the root span.
    #[prost(string, tag = "2")]
    pub root_service_name: String,
    /// Name of the root span.
    #[prost(string, tag = "3")]
    pub root_trace_name: String,
    /// Earliest span start.
    #[prost(uint64, tag = "4")]
    pub start_time_unix_nano: u64,
    /// Trace duration in whole milliseconds.
    #[prost(uint32, tag = "5")]
    pub duration_ms: u32,
    /// The matching spansets.
    #[prost(message, repeated, tag = "7")]
    pub span_sets: Vec<SpanSet>,
    /// Spans and errors per service.
    #[prost(btree_map = "string, message", tag = "8")]
    pub service_stats: std::collections::BTreeMap<String, ServiceStats>,
}

/// `tempopb.ServiceStats`.
#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct ServiceStats {
    /// Spans of the service in the trace.
    #[prost(uint32, tag = "1")]
    pub span_count: u32,
    /// Of those, spans with status error.
    #[prost(uint32, tag = "2")]
    pub error_count: u32,
}

/// `tempopb.SpanSet`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SpanSet {
    /// Up to `spss` of the matching spans.
    #[prost(message, repeated, tag = "1")]
    pub spans: Vec<SearchSpan>,
    /// How many spans matched.
    #[prost(uint32, tag = "2")]
    pub matched: u32,
    /// Spanset attributes (`by(...)` values).
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
}

/// `tempopb.Span` of a search result.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SearchSpan {
    /// Hex span ID.
    #[prost(string, tag = "1")]
    pub span_id: String,
    /// Span name.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Start time.
    #[prost(uint64, tag = "3")]
    pub start_time_unix_nano: u64,
    /// Duration.
    #[prost(uint64, tag = "4")]
    pub duration_nanos: u64,
    /// The attributes the query looked at or selected, named as Tempo names them.
    #[prost(message, repeated, tag = "5")]
    pub attributes: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
}

/// `tempopb.SearchMetrics`, limited to the fields Grafana's pinned tempopb knows.
#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct SearchMetrics {
    /// Traces in the searched data.
    #[prost(uint32, tag = "1")]
    pub inspected_traces: u32,
    /// Bytes read from storage.
    #[prost(uint64, tag = "2")]
    pub inspected_bytes: u64,
    /// Blocks in the searched range.
    #[prost(uint32, tag = "3")]
    pub total_blocks: u32,
    /// Jobs done.
    #[prost(uint32, tag = "4")]
    pub completed_jobs: u32,
    /// Jobs planned.
    #[prost(uint32, tag = "5")]
    pub total_jobs: u32,
    /// Bytes of the searched blocks.
    #[prost(uint64, tag = "6")]
    pub total_block_bytes: u64,
    /// Spans in the searched data.
    #[prost(uint64, tag = "7")]
    pub inspected_spans: u64,
}

/// `tempopb.QueryRangeResponse`: a TraceQL metrics range query's series.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct QueryRangeResponse {
    /// One per label set.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<TimeSeries>,
    /// What answering cost.
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
    /// Complete or partial.
    #[prost(enumeration = "PartialStatus", tag = "3")]
    pub status: i32,
    /// Why the result is partial.
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `tempopb.TimeSeries`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TimeSeries {
    /// Typed labels (`__name__`, `by()` attributes, `p`, `__bucket`, `__meta_type`).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    /// Samples at interval ends; NaN intervals left out.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Spans behind the samples.
    #[prost(message, repeated, tag = "4")]
    pub exemplars: Vec<Exemplar>,
}

/// `tempopb.Sample`.
#[derive(Clone, Copy, PartialEq, ::prost::Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// The interval's end, unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp_ms: i64,
}

/// `tempopb.Exemplar`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Exemplar {
    /// `trace:id`, `span:id` and the span's grouping attributes.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    /// The span's value (seconds for durations; NaN for counts).
    #[prost(double, tag = "2")]
    pub value: f64,
    /// The span's start, unix milliseconds.
    #[prost(int64, tag = "3")]
    pub timestamp_ms: i64,
}

/// `tempopb.QueryInstantResponse`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct QueryInstantResponse {
    /// One value per label set.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<InstantSeries>,
    /// What answering cost.
    #[prost(message, optional, tag = "2")]
    pub metrics: Option<SearchMetrics>,
    /// Complete or partial.
    #[prost(enumeration = "PartialStatus", tag = "3")]
    pub status: i32,
    /// Why the result is partial.
    #[prost(string, tag = "4")]
    pub message: String,
}

/// `tempopb.InstantSeries`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct InstantSeries {
    /// Typed labels.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    /// The value over the whole range.
    #[prost(double, tag = "2")]
    pub value: f64,
}
