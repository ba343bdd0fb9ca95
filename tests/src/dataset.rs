//! Hand-built trace datasets for the TraceQL golden files, written as indented text:
//!
//! ```text
//! # a comment
//! trace t1                      # later traces start later (10 s apart) unless start=…
//!   A service=shop kind=server dur=100ms status=error span.http.status_code=500
//!     B service=db kind=client dur=20ms resource.env="prod"
//!     C at=50ms
//! ```
//!
//! Indentation makes the tree. A span line is its name, then `key=value` pairs: `service`,
//! `kind`, `status`, `message` (status message), `dur` (negative: the span ends before it
//! starts, as a skewed clock reports it), `at` (offset from the trace start;
//! default: 1 ms after the previous span), `scope` (instrumentation scope name), `event`
//! (adds an event; following `event.x=…` pairs attach to it), and attributes `span.x`,
//! `resource.x`, `instrumentation.x`. Values: `"text"`, integers, floats (with a dot),
//! `true`/`false`, durations (`10ms`), and arrays `[1,2]` / `["a","b"]`.

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// Start of the first trace: 2023-11-14T22:13:20Z.
pub const BASE_NANOS: u64 = 1_700_000_000_000_000_000;

/// A parsed dataset.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Traces in file order.
    pub traces: Vec<Trace>,
}

/// One trace of a dataset.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Its name in the file (`t1`).
    pub name: String,
    /// Its ID.
    pub id: [u8; 16],
    /// One `ResourceSpans` per span (each span has its own resource and scope).
    pub spans: Vec<ResourceSpans>,
    /// Span names by span ID.
    pub names: Vec<([u8; 8], String)>,
}

impl Dataset {
    /// The name of the trace with this hex ID (leading zeros optional).
    pub fn trace_name(&self, hex_id: &str) -> Option<&str> {
        let want = format!("{hex_id:0>32}");
        self.traces
            .iter()
            .find(|t| hex::encode(t.id) == want)
            .map(|t| t.name.as_str())
    }

    /// The name of a span of trace `trace` by hex span ID.
    pub fn span_name(&self, trace: &str, hex_span: &str) -> Option<&str> {
        let t = self.traces.iter().find(|t| t.name == trace)?;
        t.names
            .iter()
            .find(|(id, _)| hex::encode(id) == hex_span)
            .map(|(_, n)| n.as_str())
    }

    /// All spans, for writing blocks or sending.
    pub fn resource_spans(&self) -> Vec<ResourceSpans> {
        self.traces.iter().flat_map(|t| t.spans.clone()).collect()
    }
}

/// Splits a line into tokens; double-quoted strings and brackets may contain spaces.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut depth) = (false, 0);
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if quoted => {
                cur.push(ch);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            '[' if !quoted => {
                depth += 1;
                cur.push(ch);
            }
            ']' if !quoted => {
                depth -= 1;
                cur.push(ch);
            }
            '#' if !quoted && depth == 0 => break,
            c if c.is_whitespace() && !quoted && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(format!("unterminated string in {line:?}"));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Parses a Go-style duration (`100ms`, `1.5s`, `2m`, `250us`, `10ns`).
pub fn parse_duration(s: &str) -> Option<u64> {
    let units = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
        ("h", 3600e9),
    ];
    for (u, mult) in units {
        if let Some(n) = s.strip_suffix(u)
            && let Ok(v) = n.parse::<f64>()
        {
            return Some((v * mult) as u64);
        }
    }
    None
}

fn scalar(s: &str) -> Result<Value, String> {
    if let Some(inner) = s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        return Ok(Value::StringValue(inner.replace("\\\"", "\"")));
    }
    match s {
        "true" => return Ok(Value::BoolValue(true)),
        "false" => return Ok(Value::BoolValue(false)),
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Ok(Value::IntValue(i));
    }
    if s.contains('.')
        && let Ok(f) = s.parse::<f64>()
    {
        return Ok(Value::DoubleValue(f));
    }
    Err(format!("bad value {s:?} (strings need double quotes)"))
}

fn value(s: &str) -> Result<AnyValue, String> {
    let v = match s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        Some(inner) => Value::ArrayValue(ArrayValue {
            values: inner
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| scalar(x).map(|v| AnyValue { value: Some(v) }))
                .collect::<Result<_, _>>()?,
        }),
        None => scalar(s)?,
    };
    Ok(AnyValue { value: Some(v) })
}

fn kv(key: &str, v: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(v),
        ..Default::default()
    }
}

struct Open {
    indent: usize,
    id: [u8; 8],
}

/// Parses a dataset file.
pub fn parse(text: &str) -> Result<Dataset, String> {
    let mut ds = Dataset::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut trace_start = BASE_NANOS;
    let mut last_start = 0u64;
    for (n, raw) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", n + 1);
        let toks = tokens(raw).map_err(at)?;
        if toks.is_empty() {
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if toks[0] == "trace" && indent == 0 {
            let idx = ds.traces.len() as u64 + 1;
            let name = toks
                .get(1)
                .cloned()
                .ok_or_else(|| at("trace needs a name".into()))?;
            trace_start = BASE_NANOS + (idx - 1) * 10_000_000_000;
            for t in &toks[2..] {
                if let Some(v) = t.strip_prefix("start=") {
                    trace_start = BASE_NANOS
                        + parse_duration(v).ok_or_else(|| at(format!("bad start {v}")))?;
                }
            }
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&(0xa11e_0000_0000_0000 + idx).to_be_bytes());
            ds.traces.push(Trace {
                name,
                id,
                spans: Vec::new(),
                names: Vec::new(),
            });
            stack.clear();
            last_start = trace_start;
            continue;
        }
        let trace = ds
            .traces
            .last_mut()
            .ok_or_else(|| at("a span before any trace".into()))?;
        while stack.last().is_some_and(|o| o.indent >= indent) {
            stack.pop();
        }
        let parent = stack.last();
        let mut span_id = [0u8; 8];
        span_id[..4].copy_from_slice(&(ds_trace_index(trace) as u32).to_be_bytes());
        span_id[4..].copy_from_slice(&(trace.names.len() as u32 + 1).to_be_bytes());
        let mut span = Span {
            trace_id: trace.id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|p| p.id.to_vec()).unwrap_or_default(),
            name: toks[0].clone(),
            kind: 1,
            status: Some(Status::default()),
            ..Default::default()
        };
        let mut resource = Resource::default();
        let mut scope = InstrumentationScope {
            name: "golden".into(),
            ..Default::default()
        };
        let mut start = last_start + 1_000_000;
        let mut dur = 10_000_000u64;
        // A negative `dur` ends the span before it starts (clock skew).
        let mut backwards = false;
        for t in &toks[1..] {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| at(format!("expected key=value, got {t}")))?;
            match k {
                "service" => resource
                    .attributes
                    .push(kv("service.name", value(&format!("\"{v}\"")).map_err(at)?)),
                "kind" => {
                    span.kind = match v {
                        "unspecified" => 0,
                        "internal" => 1,
                        "server" => 2,
                        "client" => 3,
                        "producer" => 4,
                        "consumer" => 5,
                        _ => return Err(at(format!("bad kind {v}"))),
                    }
                }
                "status" => {
                    let code = match v {
                        "unset" => 0,
                        "ok" => 1,
                        "error" => 2,
                        _ => return Err(at(format!("bad status {v}"))),
                    };
                    span.status.get_or_insert_default().code = code;
                }
                "message" => {
                    if let Value::StringValue(s) = scalar(v).map_err(at)? {
                        span.status.get_or_insert_default().message = s;
                    }
                }
                "dur" => {
                    backwards = v.starts_with('-');
                    let v = v.trim_start_matches('-');
                    dur = parse_duration(v).ok_or_else(|| at(format!("bad duration {v}")))?
                }
                "at" => {
                    start = trace_start
                        + parse_duration(v).ok_or_else(|| at(format!("bad offset {v}")))?
                }
                "scope" => scope.name = v.to_string(),
                "event" => span.events.push(Event {
                    name: v.trim_matches('"').to_string(),
                    time_unix_nano: start,
                    ..Default::default()
                }),
                _ => {
                    let v = value(v).map_err(at)?;
                    if let Some(key) = k.strip_prefix("span.") {
                        span.attributes.push(kv(key, v));
                    } else if let Some(key) = k.strip_prefix("resource.") {
                        resource.attributes.push(kv(key, v));
                    } else if let Some(key) = k.strip_prefix("instrumentation.") {
                        scope.attributes.push(kv(key, v));
                    } else if let Some(key) = k.strip_prefix("event.") {
                        let e = span
                            .events
                            .last_mut()
                            .ok_or_else(|| at("event.x before event=".into()))?;
                        e.attributes.push(kv(key, v));
                    } else {
                        return Err(at(format!("unknown key {k}")));
                    }
                }
            }
        }
        span.start_time_unix_nano = start;
        span.end_time_unix_nano = if backwards { start - dur } else { start + dur };
        for e in &mut span.events {
            e.time_unix_nano = start;
        }
        last_start = start;
        trace.names.push((span_id, span.name.clone()));
        trace.spans.push(ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        });
        stack.push(Open {
            indent,
            id: span_id,
        });
    }
    Ok(ds)
}

fn ds_trace_index(t: &Trace) -> u64 {
    u64::from_be_bytes(t.id[8..].try_into().unwrap_or_default()) - 0xa11e_0000_0000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indentation_builds_the_tree() {
        let ds = parse(
            "trace t1\n  A service=shop kind=server span.n=1 span.s=\"x y\"\n    B dur=5ms\n    C\n  D\n",
        )
        .unwrap();
        let t = &ds.traces[0];
        let span = |i: usize| &t.spans[i].scope_spans[0].spans[0];
        assert_eq!(span(1).parent_span_id, span(0).span_id);
        assert_eq!(span(2).parent_span_id, span(0).span_id);
        assert!(span(0).parent_span_id.is_empty());
        // Back at A's indentation: a second root.
        assert!(span(3).parent_span_id.is_empty());
        assert_eq!(span(0).kind, 2);
        assert_eq!(
            span(1).end_time_unix_nano - span(1).start_time_unix_nano,
            5_000_000
        );
        assert_eq!(span(0).attributes.len(), 2);
        assert_eq!(ds.trace_name(&hex::encode(t.id)), Some("t1"));
    }
}
