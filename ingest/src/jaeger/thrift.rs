//! Thrift's binary and compact protocols, read as far as Jaeger needs them: a `Batch` (the body
//! of `POST /api/traces`) and the agent's `Agent.emitBatch` call (one UDP packet).
//!
//! Written here rather than taken from the `thrift` crate because the payloads come from the
//! network: every length and count is checked against the bytes left before it is used, nothing
//! is preallocated from a declared size, and nesting is bounded, so a hostile packet costs at
//! most its own size and never panics. Fields a reader does not know, or that carry an
//! unexpected type, are skipped as generated Thrift code skips them.

use super::{Batch, DecodeError, Log, Process, RefType, Span, SpanRef, Tag, TagValue};

/// A Thrift wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `TBinaryProtocol` (HTTP `application/x-thrift`, UDP port 6832).
    Binary,
    /// `TCompactProtocol` (UDP port 6831).
    Compact,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::Binary => "Thrift binary",
            Self::Compact => "Thrift compact",
        }
    }
}

/// Reads a Jaeger `Batch` struct (the body of `POST /api/traces`).
pub fn decode_batch(buf: &[u8], protocol: Protocol) -> Result<Batch> {
    let mut r = Reader::new(buf, protocol);
    let batch = r.batch(0)?;
    r.finished()?;
    Ok(batch)
}

/// Reads an `Agent.emitBatch` call (one UDP packet from a Jaeger client or agent).
pub fn decode_agent_message(buf: &[u8], protocol: Protocol) -> Result<Batch> {
    let mut r = Reader::new(buf, protocol);
    let name = r.message_begin()?;
    if name != "emitBatch" {
        return Err(r.err(format!(
            "method {name:?} is not taken here; Jaeger clients send emitBatch \
             (emitZipkinBatch: send Zipkin v2 JSON to the Zipkin receiver instead)"
        )));
    }
    let mut batch = None;
    r.read_struct(0, |r, id, ty| match (id, ty) {
        (1, Ty::Struct) => {
            batch = Some(r.batch(1)?);
            Ok(true)
        }
        _ => Ok(false),
    })?;
    r.finished()?;
    batch.ok_or_else(|| r.err("emitBatch carries no batch (argument 1)".into()))
}

/// Deeper than any Jaeger struct nests (Batch → Span → Log → Tag is 4).
const MAX_DEPTH: usize = 16;

/// A value's wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Byte,
    Double,
    I16,
    I32,
    I64,
    Binary,
    Struct,
    Map,
    Set,
    List,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    protocol: Protocol,
    /// Compact: the last field ID of each open struct (IDs are sent as deltas).
    last_field: Vec<i16>,
    /// Compact: a boolean field's value, carried in its field header.
    pending_bool: Option<bool>,
}

type Result<T> = std::result::Result<T, DecodeError>;

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], protocol: Protocol) -> Self {
        Self {
            buf,
            pos: 0,
            protocol,
            last_field: Vec::new(),
            pending_bool: None,
        }
    }

    fn err(&self, message: String) -> DecodeError {
        DecodeError {
            encoding: self.protocol.name(),
            offset: self.pos,
            message,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn finished(&self) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.err(format!("{} bytes after the end", self.remaining())))
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "needs {n} bytes, {} left (truncated?)",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint longer than 10 bytes".into()))
    }

    fn zigzag(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i16(&mut self) -> Result<i16> {
        match self.protocol {
            Protocol::Binary => Ok(i16::from_be_bytes(self.array()?)),
            Protocol::Compact => {
                let v = self.zigzag()?;
                i16::try_from(v).map_err(|_| self.err(format!("i16 out of range: {v}")))
            }
        }
    }

    fn i32(&mut self) -> Result<i32> {
        match self.protocol {
            Protocol::Binary => Ok(i32::from_be_bytes(self.array()?)),
            Protocol::Compact => {
                let v = self.zigzag()?;
                i32::try_from(v).map_err(|_| self.err(format!("i32 out of range: {v}")))
            }
        }
    }

    fn i64(&mut self) -> Result<i64> {
        match self.protocol {
            Protocol::Binary => Ok(i64::from_be_bytes(self.array()?)),
            Protocol::Compact => self.zigzag(),
        }
    }

    fn double(&mut self) -> Result<f64> {
        Ok(match self.protocol {
            Protocol::Binary => f64::from_be_bytes(self.array()?),
            Protocol::Compact => f64::from_le_bytes(self.array()?),
        })
    }

    fn bool(&mut self) -> Result<bool> {
        if let Some(v) = self.pending_bool.take() {
            return Ok(v);
        }
        Ok(self.byte()? == 1)
    }

    fn size(&mut self, what: &str) -> Result<usize> {
        let n = match self.protocol {
            Protocol::Binary => i64::from(self.i32()?),
            Protocol::Compact => self.varint()?.min(i64::MAX as u64) as i64,
        };
        // Every element or byte takes at least one byte: a larger count is a lie.
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(self.err(format!(
                "{what} of {n} does not fit in the {} bytes left",
                self.remaining()
            ))),
        }
    }

    fn binary(&mut self) -> Result<&'a [u8]> {
        let n = self.size("a string length")?;
        self.take(n)
    }

    /// Strings are UTF-8 by Thrift's rules; a client that sends otherwise loses the bad bytes,
    /// not the span.
    fn string(&mut self) -> Result<String> {
        Ok(String::from_utf8_lossy(self.binary()?).into_owned())
    }

    fn ty(&self, code: u8) -> Result<Ty> {
        let ty = match (self.protocol, code) {
            (Protocol::Binary, 2) | (Protocol::Compact, 1 | 2) => Ty::Bool,
            (Protocol::Binary, 3) | (Protocol::Compact, 3) => Ty::Byte,
            (Protocol::Binary, 4) | (Protocol::Compact, 7) => Ty::Double,
            (Protocol::Binary, 6) | (Protocol::Compact, 4) => Ty::I16,
            (Protocol::Binary, 8) | (Protocol::Compact, 5) => Ty::I32,
            (Protocol::Binary, 10) | (Protocol::Compact, 6) => Ty::I64,
            (Protocol::Binary, 11) | (Protocol::Compact, 8) => Ty::Binary,
            (_, 12) => Ty::Struct,
            (Protocol::Binary, 13) | (Protocol::Compact, 11) => Ty::Map,
            (Protocol::Binary, 14) | (Protocol::Compact, 10) => Ty::Set,
            (Protocol::Binary, 15) | (Protocol::Compact, 9) => Ty::List,
            _ => return Err(self.err(format!("unknown Thrift type code {code}"))),
        };
        Ok(ty)
    }

    /// A call's header; returns the method name.
    fn message_begin(&mut self) -> Result<String> {
        match self.protocol {
            Protocol::Binary => {
                let first = self.i32()?;
                if first < 0 {
                    let version = (first as u32) & 0xffff_0000;
                    if version != 0x8001_0000 {
                        return Err(
                            self.err(format!("unknown binary protocol version {version:#x}"))
                        );
                    }
                    let name = self.string()?;
                    self.i32()?;
                    Ok(name)
                } else {
                    // The old unversioned header: name length, name, type, sequence ID.
                    self.pos -= 4;
                    let name = self.string()?;
                    self.byte()?;
                    self.i32()?;
                    Ok(name)
                }
            }
            Protocol::Compact => {
                let id = self.byte()?;
                if id != 0x82 {
                    return Err(self.err(format!(
                        "not a compact protocol message (first byte {id:#04x}, expected 0x82)"
                    )));
                }
                let version = self.byte()? & 0x1f;
                if version != 1 {
                    return Err(self.err(format!("unknown compact protocol version {version}")));
                }
                self.varint()?;
                self.string()
            }
        }
    }

    /// The next field's ID and type, or `None` at the struct's end.
    fn field_begin(&mut self) -> Result<Option<(i16, Ty)>> {
        match self.protocol {
            Protocol::Binary => {
                let code = self.byte()?;
                if code == 0 {
                    return Ok(None);
                }
                let ty = self.ty(code)?;
                Ok(Some((self.i16()?, ty)))
            }
            Protocol::Compact => {
                let b = self.byte()?;
                if b == 0 {
                    return Ok(None);
                }
                let code = b & 0x0f;
                let ty = self.ty(code)?;
                let delta = i16::from(b >> 4);
                let last = self.last_field.last().copied().unwrap_or(0);
                let id = if delta == 0 {
                    self.i16()?
                } else {
                    last.wrapping_add(delta)
                };
                if let Some(l) = self.last_field.last_mut() {
                    *l = id;
                }
                if ty == Ty::Bool {
                    self.pending_bool = Some(code == 1);
                }
                Ok(Some((id, ty)))
            }
        }
    }

    /// A list or set header: element type and count.
    fn list_begin(&mut self) -> Result<(Ty, usize)> {
        match self.protocol {
            Protocol::Binary => {
                let ty = self.byte()?;
                let ty = self.ty(ty)?;
                Ok((ty, self.size("a list")?))
            }
            Protocol::Compact => {
                let b = self.byte()?;
                let ty = self.ty(b & 0x0f)?;
                let n = usize::from(b >> 4);
                if n != 15 {
                    if n > self.remaining() {
                        return Err(self.err(format!("a list of {n} does not fit")));
                    }
                    return Ok((ty, n));
                }
                Ok((ty, self.size("a list")?))
            }
        }
    }

    /// A struct: calls `field` for each field, which returns whether it read the value (else
    /// the value is skipped).
    fn read_struct(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, i16, Ty) -> Result<bool>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("structs nested deeper than {MAX_DEPTH}")));
        }
        self.last_field.push(0);
        while let Some((id, ty)) = self.field_begin()? {
            if !field(self, id, ty)? {
                self.skip(ty, depth + 1)?;
            }
            self.pending_bool = None;
        }
        self.last_field.pop();
        Ok(())
    }

    /// A list of `want` elements; a list of another element type is skipped (empty).
    fn read_list<T>(
        &mut self,
        depth: usize,
        want: Ty,
        mut elem: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let (ty, n) = self.list_begin()?;
        let mut out = Vec::new();
        for _ in 0..n {
            if ty == want {
                out.push(elem(self)?);
            } else {
                self.skip(ty, depth + 1)?;
            }
        }
        Ok(out)
    }

    fn skip(&mut self, ty: Ty, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("values nested deeper than {MAX_DEPTH}")));
        }
        match ty {
            Ty::Bool => {
                self.bool()?;
            }
            Ty::Byte => {
                self.byte()?;
            }
            Ty::Double => {
                self.double()?;
            }
            Ty::I16 => {
                self.i16()?;
            }
            Ty::I32 => {
                self.i32()?;
            }
            Ty::I64 => {
                self.i64()?;
            }
            Ty::Binary => {
                self.binary()?;
            }
            Ty::Struct => self.read_struct(depth, |_, _, _| Ok(false))?,
            Ty::List | Ty::Set => {
                let (ty, n) = self.list_begin()?;
                for _ in 0..n {
                    self.skip(ty, depth + 1)?;
                }
            }
            Ty::Map => {
                let (k, v, n) = match self.protocol {
                    Protocol::Binary => {
                        let k = self.byte()?;
                        let v = self.byte()?;
                        (self.ty(k)?, self.ty(v)?, self.size("a map")?)
                    }
                    Protocol::Compact => {
                        let n = self.size("a map")?;
                        if n == 0 {
                            return Ok(());
                        }
                        let kv = self.byte()?;
                        (self.ty(kv >> 4)?, self.ty(kv & 0x0f)?, n)
                    }
                };
                for _ in 0..n {
                    self.skip(k, depth + 1)?;
                    self.skip(v, depth + 1)?;
                }
            }
        }
        Ok(())
    }

    fn batch(&mut self, depth: usize) -> Result<Batch> {
        let mut b = Batch::default();
        self.read_struct(depth, |r, id, ty| {
            match (id, ty) {
                (1, Ty::Struct) => b.process = Some(r.process(depth + 1)?),
                (2, Ty::List) => b.spans = r.read_list(depth, Ty::Struct, |r| r.span(depth + 1))?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(b)
    }

    fn process(&mut self, depth: usize) -> Result<Process> {
        let mut p = Process::default();
        self.read_struct(depth, |r, id, ty| {
            match (id, ty) {
                (1, Ty::Binary) => p.service_name = r.string()?,
                (2, Ty::List) => p.tags = r.tags(depth)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(p)
    }

    fn tags(&mut self, depth: usize) -> Result<Vec<Tag>> {
        self.read_list(depth, Ty::Struct, |r| r.tag(depth + 1))
    }

    fn tag(&mut self, depth: usize) -> Result<Tag> {
        let (mut key, mut v_type) = (String::new(), 0i32);
        let (mut s, mut d, mut b, mut l, mut bin) = (String::new(), 0.0, false, 0i64, Vec::new());
        self.read_struct(depth, |r, id, ty| {
            match (id, ty) {
                (1, Ty::Binary) => key = r.string()?,
                (2, Ty::I32) => v_type = r.i32()?,
                (3, Ty::Binary) => s = r.string()?,
                (4, Ty::Double) => d = r.double()?,
                (5, Ty::Bool) => b = r.bool()?,
                (6, Ty::I64) => l = r.i64()?,
                (7, Ty::Binary) => bin = r.binary()?.to_vec(),
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let value = match v_type {
            0 => TagValue::Str(s),
            1 => TagValue::Double(d),
            2 => TagValue::Bool(b),
            3 => TagValue::Long(l),
            4 => TagValue::Binary(bin),
            t => TagValue::Str(format!("<Unknown Jaeger TagType {t}>")),
        };
        Ok(Tag { key, value })
    }

    fn log(&mut self, depth: usize) -> Result<Log> {
        let mut log = Log {
            time_ns: 0,
            fields: Vec::new(),
        };
        self.read_struct(depth, |r, id, ty| {
            match (id, ty) {
                (1, Ty::I64) => log.time_ns = micros_to_nanos(r.i64()?),
                (2, Ty::List) => log.fields = r.tags(depth)?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(log)
    }

    fn span_ref(&mut self, depth: usize) -> Result<SpanRef> {
        let (mut kind, mut low, mut high, mut span) = (0i32, 0i64, 0i64, 0i64);
        self.read_struct(depth, |r, id, ty| {
            match (id, ty) {
                (1, Ty::I32) => kind = r.i32()?,
                (2, Ty::I64) => low = r.i64()?,
                (3, Ty::I64) => high = r.i64()?,
                (4, Ty::I64) => span = r.i64()?,
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(SpanRef {
            ref_type: if kind == 0 {
                RefType::ChildOf
            } else {
                RefType::FollowsFrom
            },
            trace_id: trace_id(high, low),
            span_id: span.to_be_bytes(),
        })
    }

    fn span(&mut self, depth: usize) -> Result<Span> {
        let (mut low, mut high, mut id_seen) = (0i64, 0i64, (false, false));
        let mut span = Span {
            trace_id: [0; 16],
            span_id: [0; 8],
            parent_span_id: [0; 8],
            operation_name: String::new(),
            references: Vec::new(),
            start_ns: 0,
            duration_ns: 0,
            tags: Vec::new(),
            logs: Vec::new(),
            process: None,
        };
        self.read_struct(depth, |r, id, ty| {
            match (id, ty) {
                (1, Ty::I64) => {
                    low = r.i64()?;
                    id_seen.0 = true;
                }
                (2, Ty::I64) => high = r.i64()?,
                (3, Ty::I64) => {
                    span.span_id = r.i64()?.to_be_bytes();
                    id_seen.1 = true;
                }
                (4, Ty::I64) => span.parent_span_id = r.i64()?.to_be_bytes(),
                (5, Ty::Binary) => span.operation_name = r.string()?,
                (6, Ty::List) => {
                    span.references = r.read_list(depth, Ty::Struct, |r| r.span_ref(depth + 1))?
                }
                (8, Ty::I64) => span.start_ns = micros_to_nanos(r.i64()?),
                (9, Ty::I64) => span.duration_ns = micros_to_nanos(r.i64()?),
                (10, Ty::List) => span.tags = r.tags(depth)?,
                (11, Ty::List) => {
                    span.logs = r.read_list(depth, Ty::Struct, |r| r.log(depth + 1))?
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        match id_seen {
            (false, _) => Err(self.err("a span without traceIdLow (field 1)".into())),
            (_, false) => Err(self.err("a span without spanId (field 3)".into())),
            _ => {
                span.trace_id = trace_id(high, low);
                Ok(span)
            }
        }
    }
}

fn trace_id(high: i64, low: i64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&high.to_be_bytes());
    id[8..].copy_from_slice(&low.to_be_bytes());
    id
}

/// Jaeger Thrift times are microseconds; a negative time is no time.
fn micros_to_nanos(us: i64) -> u64 {
    u64::try_from(us).unwrap_or(0).saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Batch with one span, written out by hand in the compact protocol from the Thrift
    /// specification (field headers are `delta << 4 | type`, integers zigzag varints).
    fn compact_batch() -> Vec<u8> {
        let mut b = vec![
            0x1c, // field 1 (process), struct
            0x18, 0x03, b'c', b'a', b't', // field 1 serviceName "cat"
            0x00, // end of process
            0x19, 0x1c, // field 2 (spans), list of 1 struct
            0x16, 0x54, // traceIdLow = zigzag(42) = 84
            0x16, 0x02, // traceIdHigh = 1
            0x16, 0x0e, // spanId = 7
            0x16, 0x06, // parentSpanId = 3
            0x18, 0x02, b'o', b'p', // operationName "op"
            0x25, 0x02, // field 7 flags = 1 (delta 2)
            0x16, 0xd0, 0x0f, // startTime = 1000 µs
            0x16, 0x0a, // duration = 5 µs
            0x19, 0x1c, // tags: list of 1 struct
        ];
        // Tag {key "ok", vType BOOL(2), vBool true}
        b.extend([0x18, 0x02, b'o', b'k', 0x15, 0x04, 0x31, 0x00]);
        b.extend([0x00, 0x00]); // end of span, end of batch
        b
    }

    #[test]
    fn reads_a_compact_batch_written_by_hand() {
        let batch = decode_batch(&compact_batch(), Protocol::Compact).unwrap();
        assert_eq!(batch.process.unwrap().service_name, "cat");
        let s = &batch.spans[0];
        assert_eq!(hex::encode(s.trace_id), "0000000000000001000000000000002a");
        assert_eq!(hex::encode(s.span_id), "0000000000000007");
        assert_eq!(hex::encode(s.parent_span_id), "0000000000000003");
        assert_eq!(s.operation_name, "op");
        assert_eq!((s.start_ns, s.duration_ns), (1_000_000, 5_000));
        assert_eq!(
            s.tags,
            vec![Tag {
                key: "ok".into(),
                value: TagValue::Bool(true)
            }]
        );
    }

    #[test]
    fn reads_an_emit_batch_message_in_the_binary_protocol() {
        // Strict header: version | ONEWAY(4), name, seqid; then args {1: Batch {2: []}}.
        let mut m = vec![0x80, 0x01, 0x00, 0x04, 0, 0, 0, 9];
        m.extend(b"emitBatch");
        m.extend([0, 0, 0, 1]);
        m.extend([12, 0, 1]); // field 1, struct
        m.extend([15, 0, 2, 12, 0, 0, 0, 0]); // field 2, list<struct> of 0
        m.extend([0, 0]); // end of batch, end of args
        let b = decode_agent_message(&m, Protocol::Binary).unwrap();
        assert!(b.spans.is_empty() && b.process.is_none());
    }

    #[test]
    fn hostile_payloads_are_refused_without_allocating_or_panicking() {
        // A list claiming 2^31-1 spans in an 8-byte packet.
        let e =
            decode_batch(&[15, 0, 2, 12, 0x7f, 0xff, 0xff, 0xff], Protocol::Binary).unwrap_err();
        assert!(e.message.contains("does not fit"), "{e}");
        // Every prefix of a valid batch is an error, never a panic.
        let full = compact_batch();
        for n in 0..full.len() {
            assert!(decode_batch(&full[..n], Protocol::Compact).is_err(), "{n}");
        }
        // Nesting without end.
        let deep = vec![0x1c; 10_000];
        let e = decode_batch(&deep, Protocol::Compact).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e}");
        // Not a message at all.
        let e = decode_agent_message(b"hello", Protocol::Compact).unwrap_err();
        assert_eq!(e.offset, 1);
        assert!(e.to_string().contains("Thrift compact"), "{e}");
    }
}
