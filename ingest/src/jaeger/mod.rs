//! Jaeger ingest: the span batches Jaeger clients and agents send, as Tempo's (the OpenTelemetry
//! Collector's) Jaeger receiver takes them.
//!
//! Two encodings reach one model: Thrift `Batch`es ([`thrift`]: binary over HTTP and UDP,
//! compact over UDP) and protobuf `Batch`es ([`proto`], gRPC `PostSpans`). [`translate`] turns
//! the model into OTLP, following the Collector's Jaeger translator, so a span sent by a Jaeger
//! client is stored exactly as the same span sent through an OpenTelemetry Collector would be.
//!
//! Decoding never trusts a length or count from the wire: collections grow as elements are read,
//! never preallocated from a declared size, and nesting is bounded, so a hostile payload costs
//! at most its own size.

pub mod proto;
pub mod thrift;
pub mod translate;

/// Jaeger api_v2 protobuf messages, generated from `proto/jaeger/api_v2/` (documented there).
#[allow(missing_docs)]
pub mod api_v2 {
    include!(concat!(env!("OUT_DIR"), "/jaeger.api_v2.rs"));
}

/// A tag's value (Jaeger's five tag types).
#[derive(Debug, Clone, PartialEq)]
pub enum TagValue {
    /// `STRING`.
    Str(String),
    /// `DOUBLE` / `FLOAT64`.
    Double(f64),
    /// `BOOL`.
    Bool(bool),
    /// `LONG` / `INT64`.
    Long(i64),
    /// `BINARY`.
    Binary(Vec<u8>),
}

/// A key/value tag of a span, process or log.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// The key.
    pub key: String,
    /// The value.
    pub value: TagValue,
}

/// The service that produced spans: its name and tags (become the resource).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    /// `serviceName`.
    pub service_name: String,
    /// Process tags.
    pub tags: Vec<Tag>,
}

/// A timestamped structured log of a span (becomes an event).
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    /// When, in nanoseconds since the epoch.
    pub time_ns: u64,
    /// Its fields; `event` names the event.
    pub fields: Vec<Tag>,
}

/// How a span refers to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefType {
    /// `CHILD_OF`.
    ChildOf,
    /// `FOLLOWS_FROM`.
    FollowsFrom,
}

/// A reference to another span (the parent, or a link).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRef {
    /// The kind of reference.
    pub ref_type: RefType,
    /// The referenced span's trace.
    pub trace_id: [u8; 16],
    /// The referenced span.
    pub span_id: [u8; 8],
}

/// One span, in either encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Big-endian 128-bit trace ID (high half zero for 64-bit IDs).
    pub trace_id: [u8; 16],
    /// Big-endian span ID.
    pub span_id: [u8; 8],
    /// Thrift's explicit parent (`parentSpanId`); zero when absent.
    pub parent_span_id: [u8; 8],
    /// `operationName`.
    pub operation_name: String,
    /// References: the parent (when not explicit) and links.
    pub references: Vec<SpanRef>,
    /// Start, in nanoseconds since the epoch.
    pub start_ns: u64,
    /// Duration in nanoseconds.
    pub duration_ns: u64,
    /// Span tags.
    pub tags: Vec<Tag>,
    /// Logs.
    pub logs: Vec<Log>,
    /// The span's own process (protobuf only), overriding the batch's.
    pub process: Option<Process>,
}

/// Spans from one client: the process they share and the spans.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// The batch's process.
    pub process: Option<Process>,
    /// The spans.
    pub spans: Vec<Span>,
}

/// Why a Jaeger payload could not be read: what was wrong and at which byte.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed Jaeger {encoding} payload at byte {offset}: {message}")]
pub struct DecodeError {
    /// `Thrift binary`, `Thrift compact` or `protobuf`.
    pub encoding: &'static str,
    /// Where reading stopped.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}
