//! What Allegro's codecs put on the wire: protobuf messages (prost, no `.proto` build step)
//! behind a two-byte tag that tells them apart from Ballista's own extension messages.
//!
//! Ballista hands one extension codec every node it cannot serialize itself: its shuffle
//! nodes and Allegro's. A protobuf message never starts with a zero byte (field number 0 is
//! invalid), so Allegro's start with one, followed by a kind byte; anything else is
//! Ballista's and goes to its codec.

use datafusion::error::{DataFusionError, Result};
use prost::Message;

/// A `BlocksTable`: blocks named by tenant and ID (their metas are read where the plan lands).
pub const KIND_BLOCKS_TABLE: u8 = 1;
/// A `MemTable` (the live head, an empty tenant, `traceql()` matches): its rows as Arrow IPC.
pub const KIND_ROWS_TABLE: u8 = 2;
/// A block scan (`BlockScanExec`): the Parquet scan as DataFusion encodes it, and its files.
pub const KIND_BLOCK_SCAN: u8 = 3;
/// A table that is a physical plan (`SpansTable`, TraceQL's per-span rows): the plan.
pub const KIND_PLANNED_TABLE: u8 = 4;
/// A sampled scan of blocks (`SampledBlockScanExec`): its blocks and how they are sampled.
pub const KIND_SAMPLED_SCAN: u8 = 5;
/// A per-trace stage on the executors (`TraceFilterExec`): its program, split traces and
/// what it passes on.
pub const KIND_TRACE_FILTER: u8 = 6;
/// A table of rows the serving process serves (`ServedRowsTable`): where to fetch them.
pub const KIND_SERVED_TABLE: u8 = 7;
/// A scan of served rows (`ServedRowsExec`): where to fetch them, and which columns.
pub const KIND_SERVED_SCAN: u8 = 8;

/// `msg` behind the tag of `kind`.
pub fn frame(kind: u8, msg: &impl Message, buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[0, kind]);
    msg.encode(buf)
        .unwrap_or_else(|_| unreachable!("a Vec grows to fit"));
}

/// The kind and body of one of Allegro's messages; `None` for anyone else's.
pub fn unframe(buf: &[u8]) -> Option<(u8, &[u8])> {
    match buf {
        [0, kind, body @ ..] => Some((*kind, body)),
        _ => None,
    }
}

/// Decodes `body` as `M`, naming what it was meant to be when it is not.
pub fn decode<M: Message + Default>(what: &str, body: &[u8]) -> Result<M> {
    M::decode(body).map_err(|e| DataFusionError::Internal(format!("malformed {what}: {e}")))
}

/// One block, by tenant and ID.
#[derive(Clone, PartialEq, Message)]
pub struct BlockRef {
    /// The tenant the block belongs to.
    #[prost(string, tag = "1")]
    pub tenant: String,
    /// The block's UUID, 16 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
}

/// One partition of a table scanned a part at a time.
#[derive(Clone, PartialEq, Message)]
pub struct Part {
    /// Index into the table's blocks.
    #[prost(uint32, tag = "1")]
    pub block: u32,
    /// The block's time slice; absent for the whole block.
    #[prost(uint32, optional, tag = "2")]
    pub slice: Option<u32>,
}

/// A table of blocks ([`KIND_BLOCKS_TABLE`]).
#[derive(Clone, PartialEq, Message)]
pub struct BlocksTable {
    /// The blocks, in the table's order.
    #[prost(message, repeated, tag = "1")]
    pub blocks: Vec<BlockRef>,
    /// Trace-ID buckets kept by a sampled table.
    #[prost(uint64, optional, tag = "2")]
    pub sample: Option<u64>,
    /// Whether the table is scanned one partition per part, and the parts.
    #[prost(bool, tag = "3")]
    pub per_part: bool,
    /// The parts, when `per_part`.
    #[prost(message, repeated, tag = "4")]
    pub parts: Vec<Part>,
}

/// A table of rows ([`KIND_ROWS_TABLE`]).
#[derive(Clone, PartialEq, Message)]
pub struct RowsTable {
    /// One Arrow IPC stream per partition.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub partitions: Vec<Vec<u8>>,
}

/// One file of a block scan.
#[derive(Clone, PartialEq, Message)]
pub struct ScanFile {
    /// The block the file is the data of.
    #[prost(message, optional, tag = "1")]
    pub block: Option<BlockRef>,
    /// The file's row groups, when only some are read (a time slice).
    #[prost(uint32, optional, tag = "2")]
    pub row_group_count: Option<u32>,
    /// The row groups read, when `row_group_count` is set.
    #[prost(uint32, repeated, tag = "3")]
    pub row_groups: Vec<u32>,
}

/// One partition's files of a block scan.
#[derive(Clone, PartialEq, Message)]
pub struct ScanGroup {
    /// The files, in the scan's order.
    #[prost(message, repeated, tag = "1")]
    pub files: Vec<ScanFile>,
}

/// A block scan ([`KIND_BLOCK_SCAN`]).
#[derive(Clone, PartialEq, Message)]
pub struct BlockScan {
    /// The Parquet scan as DataFusion serializes it (a `PhysicalPlanNode`).
    #[prost(bytes = "vec", tag = "1")]
    pub scan: Vec<u8>,
    /// Its files' blocks, per partition.
    #[prost(message, repeated, tag = "2")]
    pub groups: Vec<ScanGroup>,
}

/// A table that is a physical plan ([`KIND_PLANNED_TABLE`]).
#[derive(Clone, PartialEq, Message)]
pub struct PlannedTable {
    /// The plan as DataFusion serializes it, block scans wrapped (a `PhysicalPlanNode`).
    #[prost(bytes = "vec", tag = "1")]
    pub plan: Vec<u8>,
}

/// A sampled scan of blocks ([`KIND_SAMPLED_SCAN`]).
#[derive(Clone, PartialEq, Message)]
pub struct SampledScan {
    /// The blocks' file schema, as an empty Arrow IPC stream.
    #[prost(bytes = "vec", tag = "1")]
    pub file_schema: Vec<u8>,
    /// The scan's output schema, as an empty Arrow IPC stream.
    #[prost(bytes = "vec", tag = "2")]
    pub schema: Vec<u8>,
    /// Output columns: indices into the file schema, or one past its end for the weight.
    #[prost(uint32, repeated, tag = "3")]
    pub projection: Vec<u32>,
    /// Trace-ID buckets kept.
    #[prost(uint32, tag = "4")]
    pub buckets: u32,
    /// Rows per batch.
    #[prost(uint32, tag = "5")]
    pub batch_size: u32,
    /// Per partition, its blocks (files carry only their block).
    #[prost(message, repeated, tag = "6")]
    pub groups: Vec<ScanGroup>,
}

/// A per-trace stage ([`KIND_TRACE_FILTER`]); its input is the node's child.
#[derive(Clone, PartialEq, Message)]
pub struct TraceFilter {
    /// The per-trace program, as JSON (as the `spansets` UDAF carries it).
    #[prost(string, tag = "1")]
    pub program: String,
    /// The split traces' IDs, 16 bytes each.
    #[prost(bytes = "vec", tag = "2")]
    pub split: Vec<u8>,
    /// A search's: most traces a partition passes on.
    #[prost(uint64, tag = "3")]
    pub limit: u64,
    /// A metrics pipeline's: the spans found spansets hold, not whole traces.
    #[prost(bool, tag = "4")]
    pub matched_spans: bool,
}

/// Where a served table's rows are ([`KIND_SERVED_TABLE`]).
#[derive(Clone, PartialEq, Message)]
pub struct ServedTable {
    /// The serving process's rows address, `host:port`.
    #[prost(string, tag = "1")]
    pub address: String,
    /// The table's ID there, 16 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    /// Rows per partition.
    #[prost(uint64, repeated, tag = "3")]
    pub rows: Vec<u64>,
    /// In-memory bytes per column, all partitions (for the planner's estimates).
    #[prost(uint64, repeated, tag = "4")]
    pub column_bytes: Vec<u64>,
}

/// A scan of served rows ([`KIND_SERVED_SCAN`]); its input is its partition indexes.
#[derive(Clone, PartialEq, Message)]
pub struct ServedScan {
    /// Where the rows are.
    #[prost(message, optional, tag = "1")]
    pub table: Option<ServedTable>,
    /// The scan's output schema, as an empty Arrow IPC stream.
    #[prost(bytes = "vec", tag = "2")]
    pub schema: Vec<u8>,
    /// Column indices fetched, when `projected`.
    #[prost(uint32, repeated, tag = "3")]
    pub projection: Vec<u32>,
    /// Whether only `projection` is fetched.
    #[prost(bool, tag = "4")]
    pub projected: bool,
}
