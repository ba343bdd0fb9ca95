//! WAL records and their framing: `[u32 body length][u32 CRC-32 of body][body]`, little endian.

use allegro_engine::ids::TraceId;
use bytes::Bytes;

use crate::prepare::TraceChunk;

/// Magic bytes that open every segment file (format version 1).
pub const SEGMENT_MAGIC: &[u8; 8] = b"ALWAL\x00\x01\n";
/// Bytes before a record's body.
pub const FRAME_HEADER: usize = 8;
/// Largest body a reader accepts; anything larger is a torn or corrupt length.
pub const MAX_BODY: usize = 1 << 30;

const KIND_APPEND: u8 = 1;
const KIND_FLUSHED: u8 = 2;
/// Every record kind: the first byte of a body.
pub const KINDS: [u8; 2] = [KIND_APPEND, KIND_FLUSHED];

/// One logical WAL entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Spans accepted for `tenant`, one chunk per trace.
    Append {
        /// The tenant.
        tenant: String,
        /// The chunks.
        chunks: Vec<TraceChunk>,
    },
    /// These traces' data up to the given sequence numbers is in block `block`. Written after
    /// the block's data is stored but before it is published; replay honours it only when the
    /// block was published, so a crash in between neither loses nor duplicates spans.
    Flushed {
        /// The tenant.
        tenant: String,
        /// The block's ID (UUID bytes).
        block: [u8; 16],
        /// (trace, last sequence number included in the block).
        traces: Vec<(TraceId, u64)>,
    },
}

impl PartialEq for TraceChunk {
    fn eq(&self, o: &Self) -> bool {
        self.id == o.id && self.spans == o.spans && self.data == o.data
    }
}

impl Record {
    /// The record's tenant.
    pub fn tenant(&self) -> &str {
        match self {
            Record::Append { tenant, .. } | Record::Flushed { tenant, .. } => tenant,
        }
    }

    /// Appends the framed record with sequence number `seq` to `out`.
    pub fn encode(&self, seq: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; FRAME_HEADER]);
        let body = out.len();
        let (kind, tenant) = match self {
            Record::Append { tenant, .. } => (KIND_APPEND, tenant),
            Record::Flushed { tenant, .. } => (KIND_FLUSHED, tenant),
        };
        out.push(kind);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
        out.extend_from_slice(tenant.as_bytes());
        match self {
            Record::Append { chunks, .. } => {
                out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
                for c in chunks {
                    out.extend_from_slice(&c.id.0);
                    out.extend_from_slice(&c.spans.to_le_bytes());
                    out.extend_from_slice(&(c.data.len() as u32).to_le_bytes());
                    out.extend_from_slice(&c.data);
                }
            }
            Record::Flushed { traces, block, .. } => {
                out.extend_from_slice(block);
                out.extend_from_slice(&(traces.len() as u32).to_le_bytes());
                for (id, upto) in traces {
                    out.extend_from_slice(&id.0);
                    out.extend_from_slice(&upto.to_le_bytes());
                }
            }
        }
        let len = (out.len() - body) as u32;
        let crc = crc32fast::hash(&out[body..]);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What reading one frame found.
#[derive(Debug)]
pub enum Frame {
    /// A whole, checksummed record and the bytes it took.
    Record(u64, Record, usize),
    /// The bytes end here cleanly.
    End,
    /// A record that is cut short or fails its checksum: everything from here on is unusable.
    Torn(String),
}

/// Reads the frame at the start of `buf` (which is shared so chunk data is not copied).
pub fn read_frame(buf: &Bytes) -> Frame {
    if buf.is_empty() {
        return Frame::End;
    }
    if buf.len() < FRAME_HEADER {
        return Frame::Torn(format!("{} stray bytes after the last record", buf.len()));
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_BODY || FRAME_HEADER + len > buf.len() {
        return Frame::Torn(format!(
            "record of {len} bytes is cut short ({} bytes remain)",
            buf.len() - FRAME_HEADER
        ));
    }
    let body = buf.slice(FRAME_HEADER..FRAME_HEADER + len);
    if crc32fast::hash(&body) != crc {
        return Frame::Torn("record checksum mismatch".into());
    }
    match decode_body(&body) {
        Some((seq, rec)) => Frame::Record(seq, rec, FRAME_HEADER + len),
        None => Frame::Torn("record body is malformed".into()),
    }
}

struct Cursor<'a> {
    buf: &'a Bytes,
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        let end = self.at.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        let out = self.buf.slice(self.at..end);
        self.at = end;
        Some(out)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?[..].try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?[..].try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?[..].try_into().ok()?))
    }
    fn id(&mut self) -> Option<TraceId> {
        Some(TraceId(self.take(16)?[..].try_into().ok()?))
    }
}

fn decode_body(body: &Bytes) -> Option<(u64, Record)> {
    let mut c = Cursor { buf: body, at: 0 };
    let kind = c.u8()?;
    let seq = c.u64()?;
    let tlen = c.u16()? as usize;
    let tenant = String::from_utf8(c.take(tlen)?.to_vec()).ok()?;
    let block = if kind == KIND_FLUSHED {
        Some(c.id()?.0)
    } else {
        None
    };
    let n = c.u32()? as usize;
    let rec = match (kind, block) {
        (KIND_APPEND, _) => {
            let mut chunks = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                let id = c.id()?;
                let spans = c.u32()?;
                let len = c.u32()? as usize;
                chunks.push(TraceChunk {
                    id,
                    spans,
                    data: c.take(len)?,
                });
            }
            Record::Append { tenant, chunks }
        }
        (KIND_FLUSHED, Some(block)) => {
            let mut traces = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                traces.push((c.id()?, c.u64()?));
            }
            Record::Flushed {
                tenant,
                block,
                traces,
            }
        }
        _ => return None,
    };
    (c.at == body.len()).then_some((seq, rec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(u64, Record)> {
        vec![
            (
                7,
                Record::Append {
                    tenant: "t1".into(),
                    chunks: vec![
                        TraceChunk {
                            id: TraceId([1; 16]),
                            spans: 3,
                            data: Bytes::from_static(b"abc"),
                        },
                        TraceChunk {
                            id: TraceId([2; 16]),
                            spans: 1,
                            data: Bytes::new(),
                        },
                    ],
                },
            ),
            (
                8,
                Record::Flushed {
                    tenant: "single-tenant".into(),
                    block: [9; 16],
                    traces: vec![(TraceId([1; 16]), 7)],
                },
            ),
        ]
    }

    #[test]
    fn records_round_trip() {
        let mut buf = Vec::new();
        for (seq, r) in sample() {
            r.encode(seq, &mut buf);
        }
        let mut rest = Bytes::from(buf);
        let mut got = Vec::new();
        loop {
            match read_frame(&rest) {
                Frame::Record(seq, r, n) => {
                    got.push((seq, r));
                    rest = rest.slice(n..);
                }
                Frame::End => break,
                Frame::Torn(m) => panic!("{m}"),
            }
        }
        assert_eq!(got, sample());
    }

    #[test]
    fn every_cut_and_every_flipped_bit_is_detected() {
        let mut buf = Vec::new();
        sample()[0].1.encode(1, &mut buf);
        for cut in 1..buf.len() {
            let b = Bytes::copy_from_slice(&buf[..cut]);
            assert!(matches!(read_frame(&b), Frame::Torn(_)), "cut at {cut}");
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    matches!(read_frame(&Bytes::from(b)), Frame::Torn(_)),
                    "flip {byte}.{bit}"
                );
            }
        }
    }
}
