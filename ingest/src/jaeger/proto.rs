//! Jaeger's protobuf `Batch` (gRPC `jaeger.api_v2.CollectorService/PostSpans`) → the model.

use super::api_v2;
use super::{Batch, DecodeError, Log, Process, RefType, Span, SpanRef, Tag, TagValue};

/// Converts a received `PostSpans` batch; IDs must have Jaeger's fixed widths (16 and 8 bytes).
pub fn from_proto(batch: api_v2::Batch) -> Result<Batch, DecodeError> {
    let spans = batch
        .spans
        .into_iter()
        .enumerate()
        .map(|(i, s)| span(i, s))
        .collect::<Result<_, _>>()?;
    Ok(Batch {
        process: batch.process.map(process),
        spans,
    })
}

fn bad(i: usize, message: String) -> DecodeError {
    DecodeError {
        encoding: "protobuf",
        offset: 0,
        message: format!("span {i}: {message}"),
    }
}

fn fixed<const N: usize>(i: usize, what: &str, b: &[u8]) -> Result<[u8; N], DecodeError> {
    b.try_into()
        .map_err(|_| bad(i, format!("{what} has {} bytes, must have {N}", b.len())))
}

fn span(i: usize, s: api_v2::Span) -> Result<Span, DecodeError> {
    let references = s
        .references
        .iter()
        .map(|r| {
            Ok(SpanRef {
                ref_type: if r.ref_type == api_v2::SpanRefType::FollowsFrom as i32 {
                    RefType::FollowsFrom
                } else {
                    RefType::ChildOf
                },
                trace_id: fixed(i, "a reference's trace_id", &r.trace_id)?,
                span_id: fixed(i, "a reference's span_id", &r.span_id)?,
            })
        })
        .collect::<Result<_, DecodeError>>()?;
    Ok(Span {
        trace_id: fixed(i, "trace_id", &s.trace_id)?,
        span_id: fixed(i, "span_id", &s.span_id)?,
        // The protobuf model carries the parent only as a CHILD_OF reference.
        parent_span_id: [0; 8],
        operation_name: s.operation_name,
        references,
        start_ns: s.start_time.map_or(0, |t| nanos(t.seconds, t.nanos)),
        duration_ns: s.duration.map_or(0, |d| nanos(d.seconds, d.nanos)),
        tags: tags(s.tags),
        logs: s
            .logs
            .into_iter()
            .map(|l| Log {
                time_ns: l.timestamp.map_or(0, |t| nanos(t.seconds, t.nanos)),
                fields: tags(l.fields),
            })
            .collect(),
        process: s.process.map(process),
    })
}

/// Seconds and nanoseconds as nanoseconds; before the epoch is no time.
fn nanos(seconds: i64, nanos: i32) -> u64 {
    let s = u64::try_from(seconds).unwrap_or(0);
    s.saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(nanos).unwrap_or(0))
}

fn process(p: api_v2::Process) -> Process {
    Process {
        service_name: p.service_name,
        tags: tags(p.tags),
    }
}

fn tags(kvs: Vec<api_v2::KeyValue>) -> Vec<Tag> {
    kvs.into_iter()
        .map(|kv| {
            let value = match api_v2::ValueType::try_from(kv.v_type) {
                Ok(api_v2::ValueType::String) => TagValue::Str(kv.v_str),
                Ok(api_v2::ValueType::Bool) => TagValue::Bool(kv.v_bool),
                Ok(api_v2::ValueType::Int64) => TagValue::Long(kv.v_int64),
                Ok(api_v2::ValueType::Float64) => TagValue::Double(kv.v_float64),
                Ok(api_v2::ValueType::Binary) => TagValue::Binary(kv.v_binary),
                Err(_) => TagValue::Str(format!("<Unknown Jaeger TagType {}>", kv.v_type)),
            };
            Tag { key: kv.key, value }
        })
        .collect()
}
