//! Writing a block: sort, number, choose hot columns, encode Parquet, then store it.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use uuid::Uuid;

use super::bloom::TraceBloom;
use super::meta::{BlockMeta, BlockSlice, RollupInfo, objects, rfc3339_seconds};
use super::recorded::RecordedKeys;
use super::rollup::RollupBuilder;
use super::row_groups::{RowGroups, Rows, Written};
use super::spill::{BlockData, Sink};
use super::tag_values::ValueScan;
use crate::convert::flatten::FlatSpan;
use crate::convert::to_arrow::spans_to_batch;
use crate::error::{EngineError, Result};
use crate::hot::{HotPolicy, KeyScan};
use crate::ids::TraceId;
use crate::nested_set::prepare_traces;
use crate::schema::{FORMAT_V1, FORMAT_V2, HotColumn, col, span_schema};

/// How blocks are encoded.
/// Page compression of `data.parquet`.
///
/// LZ4 is the default: parquet-rs builds a zstd compressor and decompressor for every column
/// chunk it opens, which costs more than the decompression itself for point reads (a trace
/// lookup opens ~100 column chunks). zstd makes blocks ~15% smaller at about 4x the lookup
/// latency (see docs/benchmarks.md); choose it for archival storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockCompression {
    /// LZ4 (raw block format).
    Lz4,
    /// zstd at the given level (1–22).
    Zstd(i32),
    /// Snappy.
    Snappy,
    /// No compression.
    None,
}

impl BlockCompression {
    /// Parses `lz4`, `zstd`, `zstd:LEVEL`, `snappy` or `none`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "lz4" => Ok(Self::Lz4),
            "zstd" => Ok(Self::Zstd(3)),
            "snappy" => Ok(Self::Snappy),
            "none" => Ok(Self::None),
            other => match other
                .strip_prefix("zstd:")
                .and_then(|l| l.parse::<i32>().ok())
            {
                Some(l) if (1..=22).contains(&l) => Ok(Self::Zstd(l)),
                _ => Err(EngineError::InvalidInput(format!(
                    "compression {other:?} is not one of lz4, zstd, zstd:LEVEL (1-22), snappy, none"
                ))),
            },
        }
    }

    fn parquet(self) -> Result<Compression> {
        Ok(match self {
            Self::Lz4 => Compression::LZ4_RAW,
            Self::Zstd(l) => Compression::ZSTD(
                ZstdLevel::try_new(l)
                    .map_err(|e| EngineError::InvalidInput(format!("zstd level: {e}")))?,
            ),
            Self::Snappy => Compression::SNAPPY,
            Self::None => Compression::UNCOMPRESSED,
        })
    }
}

/// How blocks are encoded.
#[derive(Debug, Clone)]
pub struct BlockWriteOptions {
    /// How hot attribute columns are chosen.
    pub hot: HotPolicy,
    /// Rows per Parquet row group: small enough for parallel scans on small machines.
    pub row_group_rows: usize,
    /// Rows per data page: the granularity of page-index pruning.
    pub page_rows: usize,
    /// Spans converted to Arrow at a time (bounds memory while writing).
    pub batch_rows: usize,
    /// Page compression.
    pub compression: BlockCompression,
    /// Bloom filter false-positive rate.
    pub bloom_fpp: f64,
    /// Where a merge keeps its output until it is stored (unnamed files, see
    /// [`super::spill`]); `None`: in memory. Flushes of the head always write in memory.
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Default for BlockWriteOptions {
    fn default() -> Self {
        Self {
            hot: HotPolicy::default(),
            row_group_rows: 65_536,
            page_rows: 4_096,
            batch_rows: 8_192,
            compression: BlockCompression::Lz4,
            bloom_fpp: 0.001,
            spill_dir: None,
        }
    }
}

/// A block encoded in memory, ready to be stored.
#[derive(Debug, Clone)]
pub struct EncodedBlock {
    /// Its metadata.
    pub meta: BlockMeta,
    /// `data.parquet`.
    pub data: BlockData,
    /// `bloom`.
    pub bloom: Bytes,
    /// `rollup.parquet` (`None`: the block has none).
    pub rollup: Option<Bytes>,
}

/// The object path of `object` in a block.
pub fn block_path(tenant: &str, block_id: &Uuid, object: &str) -> Path {
    Path::from(format!("{tenant}/{block_id}/{object}"))
}

fn writer_properties(
    opts: &BlockWriteOptions,
    traces: usize,
    schema: &arrow::datatypes::Schema,
) -> Result<WriterProperties> {
    let plain = |p: &str| ColumnPath::from(p);
    let mut b = WriterProperties::builder();
    // Min/max of the strings inside the overflow maps, events and links prune nothing (queries
    // cannot prune on map entries) yet computing them was a fifth of Parquet encoding.
    let parquet = parquet::arrow::ArrowSchemaConverter::new().convert(schema)?;
    for c in parquet.columns() {
        if c.path().parts().len() > 1 {
            b = b.set_column_statistics_enabled(c.path().clone(), EnabledStatistics::None);
        }
    }
    Ok(b.set_compression(opts.compression.parquet()?)
        .set_max_row_group_row_count(Some(opts.row_group_rows))
        .set_data_page_row_count_limit(opts.page_rows)
        .set_write_batch_size(opts.page_rows.min(1024))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(vec![SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]))
        // Unique per span: dictionaries would only cost.
        .set_column_dictionary_enabled(plain(col::SPAN_ID), false)
        .set_column_dictionary_enabled(plain(col::PARENT_SPAN_ID), false)
        .set_column_dictionary_enabled(plain(col::START_TIME), false)
        .set_column_encoding(plain(col::START_TIME), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(plain(col::DURATION), false)
        .set_column_bloom_filter_enabled(plain(col::TRACE_ID), true)
        .set_column_bloom_filter_fpp(plain(col::TRACE_ID), opts.bloom_fpp)
        // Per row group, which holds at most its rows' traces: sized for the block's traces
        // (1 MiB at 210k), each of the up to 32 row groups in progress held one until folded.
        .set_column_bloom_filter_max_ndv(
            plain(col::TRACE_ID),
            traces.clamp(1, opts.row_group_rows.max(1)) as u64,
        )
        .build())
}

/// Encodes spans into a block of `tenant`: sorts by trace ID then start time (root spans in
/// row groups of their own, see [`BlockEncoder`]), computes nested sets and trace-level
/// columns, chooses hot columns, and writes Parquet with page index, statistics and a trace-ID
/// bloom filter.
/// CPU-bound: call from a blocking thread.
pub fn encode_block(
    tenant: &str,
    spans: Vec<FlatSpan>,
    opts: &BlockWriteOptions,
) -> Result<EncodedBlock> {
    BlockEncoder::start(tenant, spans, 0, opts)?.finish()
}

/// An encoded `data.parquet` and where its row groups went.
/// The encoder thread's output: the file, its row groups and the block's rollup.
type ParquetFile = (BlockData, Written, Option<RecordBatch>);

/// Writes a block a batch of whole traces at a time, so memory is bounded by a batch rather
/// than the block: converting spans to Arrow happens on the caller's thread while a second
/// thread encodes Parquet, so a flush uses two cores.
///
/// Batches must arrive in ascending trace-ID order (every trace ID of a batch above every one
/// of the batch before): blocks are sorted by trace ID, and a trace must not be split. A merge
/// writes time slices ([`BlockSlice`]): the order then holds within each slice.
///
/// Root spans (`nestedSetParent < 0`) go to row groups of their own: most of Traces
/// Drilldown's panels select root spans only (about one span in twenty), and with the roots
/// apart every Parquet reader skips the other row groups by their statistics instead of
/// decoding the whole block to find them. Within each part rows stay in trace-ID order, so a
/// trace lookup reads at most one more page per column (the root's).
pub struct BlockEncoder {
    tenant: String,
    opts: BlockWriteOptions,
    hot: Vec<HotColumn>,
    /// What `meta.json` records of attribute keys and values.
    recorded: Recorded,
    bloom: TraceBloom,
    traces: usize,
    spans: u64,
    start: u64,
    end: u64,
    min_id: Option<TraceId>,
    max_id: Option<TraceId>,
    /// Per slice: the time range of its rows and its last trace ID.
    slices: Vec<SliceSoFar>,
    /// Traces with a span whose nested set is unknown (no root, or a parent not in the block).
    incomplete: std::collections::BTreeSet<TraceId>,
    to_parquet: Option<std::sync::mpsc::SyncSender<Rows>>,
    parquet: Option<std::thread::JoinHandle<Result<ParquetFile>>>,
}

/// How the encoder learns what `meta.json` records of the block's keys and values.
enum Recorded {
    /// From the spans as they are written.
    Scanned {
        /// Keys, their types and counts.
        scan: Box<KeyScan>,
        /// Distinct values per key.
        values: Box<ValueScan>,
    },
    /// Given up front (a merge of blocks that recorded theirs).
    Given(Box<RecordedKeys>),
}

/// What a slice of the block being written holds so far.
#[derive(Debug, Clone, Copy)]
struct SliceSoFar {
    start: u64,
    end: u64,
    last_id: Option<TraceId>,
}

impl Default for SliceSoFar {
    fn default() -> Self {
        Self {
            start: u64::MAX,
            end: 0,
            last_id: None,
        }
    }
}

impl std::fmt::Debug for BlockEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockEncoder")
            .field("tenant", &self.tenant)
            .field("spans", &self.spans)
            .finish_non_exhaustive()
    }
}

impl BlockEncoder {
    /// Starts a block with its first batch, from which the hot columns are chosen (a sample of
    /// a few tens of thousands of spans picks the same columns as the whole block; pass the
    /// whole block when it is at hand). `expected_traces` sizes the bloom filter (0: the
    /// traces of `first`).
    pub fn start(
        tenant: &str,
        mut first: Vec<FlatSpan>,
        expected_traces: usize,
        opts: &BlockWriteOptions,
    ) -> Result<Self> {
        if first.is_empty() {
            return Err(EngineError::InvalidInput(
                "a block needs at least one span".into(),
            ));
        }
        let traces = prepare_traces(&mut first);
        let mut scan = KeyScan::default();
        scan.add(&first);
        let mut values = ValueScan::default();
        values.add(&first);
        let hot = opts.hot.choose_from(&scan);
        let capacity = expected_traces.max(traces);
        // About 45 bytes per span end up on disk; reserving avoids regrowing a large buffer.
        let reserve = (first.len() as f64 * 48.0 * (capacity as f64 / traces as f64)) as usize;
        let mut enc = Self::open(
            tenant,
            hot,
            Recorded::Scanned {
                scan: Box::new(scan),
                values: Box::new(values),
            },
            capacity,
            reserve,
            None,
            opts,
        )?;
        enc.write(first)?;
        Ok(enc)
    }

    /// Starts a block to be written as Arrow rows already in the block schema of `hot`
    /// ([`BlockEncoder::push_parts`]): a merge of blocks, which records `recorded` of them.
    /// `expected_traces` sizes the bloom filter, `expected_spans` the output buffer.
    pub fn start_rows(
        tenant: &str,
        hot: Vec<HotColumn>,
        recorded: RecordedKeys,
        expected_traces: usize,
        expected_spans: usize,
        opts: &BlockWriteOptions,
    ) -> Result<Self> {
        Self::open(
            tenant,
            hot,
            Recorded::Given(Box::new(recorded)),
            expected_traces.max(1),
            expected_spans.saturating_mul(48),
            opts.spill_dir.as_deref(),
            opts,
        )
    }

    fn open(
        tenant: &str,
        hot: Vec<HotColumn>,
        recorded: Recorded,
        capacity: usize,
        reserve: usize,
        spill_dir: Option<&std::path::Path>,
        opts: &BlockWriteOptions,
    ) -> Result<Self> {
        let schema = span_schema(&hot);
        let props = writer_properties(opts, capacity, &schema)?;
        let mut sink = Sink::new(spill_dir, reserve)?;
        let group_rows = opts.row_group_rows;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Rows>(2);
        let parquet = std::thread::Builder::new()
            .name("allegro-parquet".into())
            .spawn(move || -> Result<ParquetFile> {
                let mut groups = RowGroups::new(&mut sink, schema, props, group_rows)?;
                let mut rollup = RollupBuilder::default();
                for rows in rx {
                    rollup.add(&rows.batch)?;
                    groups.write(rows)?;
                }
                let written = groups.finish()?;
                Ok((sink.finish()?, written, rollup.finish()?))
            })
            .map_err(|e| EngineError::Internal(format!("starting the Parquet encoder: {e}")))?;
        Ok(Self {
            tenant: tenant.to_string(),
            opts: opts.clone(),
            hot,
            recorded,
            bloom: TraceBloom::with_capacity(capacity, opts.bloom_fpp),
            traces: 0,
            spans: 0,
            start: u64::MAX,
            end: 0,
            min_id: None,
            max_id: None,
            slices: Vec::new(),
            incomplete: Default::default(),
            to_parquet: Some(tx),
            parquet: Some(parquet),
        })
    }

    /// Adds a batch of whole traces, every ID above those of earlier batches.
    pub fn push(&mut self, mut spans: Vec<FlatSpan>) -> Result<()> {
        if spans.is_empty() {
            return Ok(());
        }
        prepare_traces(&mut spans);
        if let Recorded::Scanned { scan, values } = &mut self.recorded {
            scan.add(&spans);
            values.add(&spans);
        }
        self.write(spans)
    }

    /// Adds Arrow rows in the block's schema, of whole traces numbered over the whole trace, to
    /// time slice `slice` (0 for a block of one run), in trace-ID order (every ID above those of
    /// the slice's earlier rows): `rest` with no root span, `roots` with only root spans (either
    /// may be absent, a trace may have rows in both).
    pub fn push_parts(
        &mut self,
        slice: usize,
        rest: Option<RecordBatch>,
        roots: Option<RecordBatch>,
    ) -> Result<()> {
        let parts: Vec<(bool, RecordBatch)> = [(false, rest), (true, roots)]
            .into_iter()
            .filter_map(|(r, b)| b.filter(|b| b.num_rows() > 0).map(|b| (r, b)))
            .collect();
        if parts.is_empty() {
            return Ok(());
        }
        if self.slices.len() <= slice {
            self.slices.resize(slice + 1, SliceSoFar::default());
        }
        let schema = span_schema(&self.hot);
        let mut distinct: Vec<Vec<TraceId>> = Vec::with_capacity(2);
        for (_, batch) in &parts {
            if batch.schema().fields() != schema.fields() {
                return Err(EngineError::Internal(
                    "rows pushed in another schema than the block's".into(),
                ));
            }
            distinct.push(self.note_rows(batch, slice)?);
        }
        // Traces with rows in both parts count once.
        let mut ids: Vec<TraceId> = distinct.concat();
        ids.sort_unstable();
        ids.dedup();
        let (Some(&first), Some(&last)) = (ids.first(), ids.last()) else {
            return Ok(());
        };
        let so_far = &mut self.slices[slice];
        if so_far.last_id.is_some_and(|m| m >= first) {
            return Err(EngineError::Internal(format!(
                "block rows out of trace-ID order: {} after {}",
                first.to_hex(),
                so_far.last_id.map(|m| m.to_hex()).unwrap_or_default()
            )));
        }
        so_far.last_id = Some(last);
        self.min_id = Some(self.min_id.map_or(first, |m| m.min(first)));
        self.max_id = Some(self.max_id.map_or(last, |m| m.max(last)));
        for id in &ids {
            self.bloom.insert(id);
        }
        self.traces += ids.len();
        let step = self.opts.batch_rows.max(1);
        for (roots, batch) in parts {
            let mut at = 0;
            while at < batch.num_rows() {
                let len = step.min(batch.num_rows() - at);
                self.send(Rows {
                    slice,
                    roots,
                    batch: batch.slice(at, len),
                })?;
                at += len;
            }
        }
        Ok(())
    }

    /// Notes the rows of `batch` in `slice` (time range, spans, incomplete traces); its
    /// distinct trace IDs, in order.
    fn note_rows(&mut self, batch: &RecordBatch, slice: usize) -> Result<Vec<TraceId>> {
        use super::reader::column;
        use arrow::array::{FixedSizeBinaryArray, Int32Array, UInt64Array};
        let ids: &FixedSizeBinaryArray = column(batch, col::TRACE_ID)?;
        let starts: &UInt64Array = column(batch, col::START_TIME)?;
        let durations: &UInt64Array = column(batch, col::DURATION)?;
        let left: &Int32Array = column(batch, col::NESTED_SET_LEFT)?;
        let id_at = |i: usize| -> Result<TraceId> {
            let bytes: [u8; 16] = ids
                .value(i)
                .try_into()
                .map_err(|_| EngineError::Internal("a trace ID of another length".into()))?;
            Ok(TraceId(bytes))
        };
        let mut distinct: Vec<TraceId> = Vec::new();
        let mut previous: Option<&[u8]> = None;
        let (mut start, mut end) = (u64::MAX, 0);
        for i in 0..batch.num_rows() {
            let s = starts.value(i);
            start = start.min(s);
            end = end.max(s.saturating_add(durations.value(i)));
            let id = ids.value(i);
            if previous != Some(id) {
                distinct.push(id_at(i)?);
                previous = Some(id);
            }
            if left.value(i) == 0 {
                self.incomplete.insert(id_at(i)?);
            }
        }
        self.note_times(slice, start, end);
        self.spans += batch.num_rows() as u64;
        Ok(distinct)
    }

    /// Widens the block's and `slice`'s time range to `[start, end]`.
    fn note_times(&mut self, slice: usize, start: u64, end: u64) {
        self.start = self.start.min(start);
        self.end = self.end.max(end);
        if let Some(s) = self.slices.get_mut(slice) {
            s.start = s.start.min(start);
            s.end = s.end.max(end);
        }
    }

    /// Takes spans that were counted in the recorded keys given at the start but not written
    /// (copies dropped by a merge) off their counts.
    pub fn uncount(&mut self, dropped: &KeyScan) {
        if let Recorded::Given(keys) = &mut self.recorded
            && let Some(k) = keys.key_types.as_mut()
        {
            dropped.subtract_from(k);
        }
    }

    /// Spans written so far.
    pub fn spans(&self) -> u64 {
        self.spans
    }

    fn write(&mut self, spans: Vec<FlatSpan>) -> Result<()> {
        let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
            return Ok(());
        };
        if self.max_id.is_some_and(|m| m >= first.trace_id) {
            return Err(EngineError::Internal(format!(
                "block batches out of trace-ID order: {} after {}",
                first.trace_id.to_hex(),
                self.max_id.map(|m| m.to_hex()).unwrap_or_default()
            )));
        }
        self.min_id.get_or_insert(first.trace_id);
        self.max_id = Some(last.trace_id);
        if self.slices.is_empty() {
            self.slices.push(SliceSoFar::default());
        }
        let mut previous = None;
        for s in &spans {
            let start = s.span.start_time_unix_nano;
            self.note_times(0, start, s.span.end_time_unix_nano.max(start));
            // Numbering leaves 0s exactly where the part has no root or a missing parent.
            if s.nested.left == 0 {
                self.incomplete.insert(s.trace_id);
            }
            // Spans are sorted by trace, so each trace is inserted once.
            if previous != Some(s.trace_id) {
                self.bloom.insert(&s.trace_id);
                self.traces += 1;
                previous = Some(s.trace_id);
            }
        }
        self.spans += spans.len() as u64;
        let (roots, rest): (Vec<FlatSpan>, Vec<FlatSpan>) =
            spans.into_iter().partition(|s| s.nested.parent < 0);
        for (part, is_roots) in [(rest, false), (roots, true)] {
            for chunk in part.chunks(self.opts.batch_rows.max(1)) {
                let batch = spans_to_batch(chunk, &self.hot)?;
                self.send(Rows {
                    slice: 0,
                    roots: is_roots,
                    batch,
                })?;
            }
        }
        Ok(())
    }

    fn send(&mut self, part: Rows) -> Result<()> {
        let sent = self.to_parquet.as_ref().map(|tx| tx.send(part));
        if matches!(sent, Some(Ok(()))) {
            return Ok(());
        }
        // The encoder thread stopped: its error says why.
        Err(self
            .join()
            .err()
            .unwrap_or_else(|| EngineError::Internal("the Parquet encoder stopped early".into())))
    }

    fn join(&mut self) -> Result<ParquetFile> {
        self.to_parquet = None;
        match self.parquet.take() {
            Some(h) => h
                .join()
                .map_err(|_| EngineError::Internal("the Parquet encoder panicked".into()))?,
            None => Err(EngineError::Internal(
                "the Parquet encoder already finished".into(),
            )),
        }
    }

    /// Closes the Parquet file and builds the block's metadata.
    pub fn finish(mut self) -> Result<EncodedBlock> {
        let (data, written, rollup) = self.join()?;
        let rollup_rows = rollup.as_ref().map_or(0, |r| r.num_rows() as u64);
        let rollup = rollup.as_ref().map(super::rollup::encode).transpose()?;
        // Slices that got rows, with the row groups the file put them in.
        let slices: Vec<BlockSlice> = self
            .slices
            .iter()
            .zip(&written.slices)
            .filter(|(_, groups)| !groups.is_empty())
            .map(|(s, groups)| BlockSlice {
                start_unix_nano: s.start,
                end_unix_nano: s.end,
                row_groups: groups.clone(),
            })
            .collect();
        let row_groups = written.row_groups;
        if written.closed_early > 0 {
            tracing::info!(
                tenant = %self.tenant,
                closed_early = written.closed_early,
                row_groups,
                "row groups closed early to keep the writer within its memory bound"
            );
        }
        let (Some(min_id), Some(max_id)) = (self.min_id, self.max_id) else {
            return Err(EngineError::Internal("block without spans".into()));
        };
        let footer_size = data.footer_len()?;
        let bloom = self.bloom.to_bytes();
        let checksums = data.checksums(footer_size, &bloom)?;
        let keys = match std::mem::replace(&mut self.recorded, Recorded::Given(Default::default()))
        {
            Recorded::Scanned { scan, values } => RecordedKeys::of_scans(&scan, *values),
            Recorded::Given(keys) => *keys,
        };
        let sliced = slices.len() > 1;
        let meta = BlockMeta {
            format: if sliced { FORMAT_V2 } else { FORMAT_V1 }.to_string(),
            block_id: Uuid::new_v4(),
            tenant_id: self.tenant,
            start_time: rfc3339_seconds(self.start, false),
            end_time: rfc3339_seconds(self.end, true),
            start_unix_nano: self.start,
            end_unix_nano: self.end,
            total_objects: self.traces as u64,
            total_spans: self.spans,
            size: data.len(),
            footer_size,
            bloom_size: bloom.len() as u64,
            row_groups,
            min_id: min_id.to_hex(),
            max_id: max_id.to_hex(),
            other_keys: keys.other_keys,
            key_types: keys.key_types,
            attribute_keys: keys.attribute_keys,
            tag_values: keys.tag_values,
            hot_columns: self.hot,
            incomplete_traces: (self.incomplete.len()
                <= crate::block::meta::MAX_RECORDED_INCOMPLETE)
                .then(|| self.incomplete.iter().map(TraceId::to_hex).collect()),
            compaction_level: 0,
            compacted_from: None,
            slices: sliced.then_some(slices),
            checksums: Some(checksums),
            rollup: rollup.as_ref().map(|r| RollupInfo {
                size: r.len() as u64,
                rows: rollup_rows,
                crc32: crc32fast::hash(r),
            }),
            meta_crc32: None,
        };
        Ok(EncodedBlock {
            meta,
            data,
            bloom: Bytes::from(bloom),
            rollup,
        })
    }
}

/// Stores an encoded block. `meta.json` goes last: a block is visible only once complete.
pub async fn put_block(store: &Arc<dyn ObjectStore>, block: &EncodedBlock) -> Result<()> {
    put_block_data(store, block).await?;
    put_block_meta(store, block).await
}

async fn put_object(
    store: &Arc<dyn ObjectStore>,
    m: &BlockMeta,
    object: &str,
    bytes: Bytes,
) -> Result<()> {
    let path = block_path(&m.tenant_id, &m.block_id, object);
    store
        .put_opts(&path, PutPayload::from_bytes(bytes), PutOptions::default())
        .await
        .map_err(|e| EngineError::storage(&path, e))?;
    Ok(())
}

/// Stores a block's data, rollup and bloom; it stays invisible until [`put_block_meta`]. The
/// directory is marked pending first, so what a write cut short leaves is known for an orphan.
pub async fn put_block_data(store: &Arc<dyn ObjectStore>, block: &EncodedBlock) -> Result<()> {
    put_object(store, &block.meta, objects::PENDING, Bytes::new()).await?;
    let m = &block.meta;
    block
        .data
        .put(store, &block_path(&m.tenant_id, &m.block_id, objects::DATA))
        .await?;
    if let Some(r) = &block.rollup {
        put_object(store, &block.meta, objects::ROLLUP, r.clone()).await?;
    }
    put_object(store, &block.meta, objects::BLOOM, block.bloom.clone()).await
}

/// Stores a block's `meta.json`, which makes it visible, and lifts its pending mark.
pub async fn put_block_meta(store: &Arc<dyn ObjectStore>, block: &EncodedBlock) -> Result<()> {
    let meta = block.meta.to_sealed_json()?;
    put_object(store, &block.meta, objects::META, Bytes::from(meta)).await?;
    // The block is whole and visible now; a mark left by a failure here only means that a
    // later loss of this `meta.json` is taken for a write cut short.
    let pending = block_path(
        &block.meta.tenant_id,
        &block.meta.block_id,
        objects::PENDING,
    );
    if let Err(e) = crate::storage::delete_if_present(store.as_ref(), &pending).await {
        tracing::warn!(error = %e, "pending mark of a published block not removed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;
    use crate::convert::flatten::flatten;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    /// Trace `t` (ID `t`): a root and two children; trace 55 carries a rare key and an array.
    fn trace(t: u8) -> Vec<FlatSpan> {
        let span = |i: u8, parent: Option<u8>| {
            let mut attributes = vec![kv(
                "http.route",
                any_value::Value::StringValue(format!("/r{}", t % 3)),
            )];
            if t == 55 && i == 1 {
                attributes.push(kv("rare", any_value::Value::IntValue(7)));
                attributes.push(kv(
                    "tags",
                    any_value::Value::ArrayValue(ArrayValue { values: vec![] }),
                ));
            }
            Span {
                trace_id: vec![t; 16],
                span_id: vec![t, i, 0, 0, 0, 0, 0, 1],
                parent_span_id: parent
                    .map(|p| vec![t, p, 0, 0, 0, 0, 0, 1])
                    .unwrap_or_default(),
                name: format!("op{i}"),
                start_time_unix_nano: 1_000 * u64::from(t) + u64::from(i),
                end_time_unix_nano: 1_000 * u64::from(t) + 10,
                attributes,
                ..Default::default()
            }
        };
        let rs = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue(format!("svc{}", t % 4)),
                )],
                ..Default::default()
            }),
            // Children before the root: the encoder sorts within a batch.
            scope_spans: vec![ScopeSpans {
                spans: vec![span(2, Some(0)), span(1, Some(0)), span(0, None)],
                ..Default::default()
            }],
            ..Default::default()
        };
        flatten(vec![rs]).0
    }

    fn rows(block: &EncodedBlock) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(block.data.to_bytes().unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    /// All rows of a `data.parquet` as one batch.
    fn rows_of(data: Bytes) -> RecordBatch {
        let r: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(data)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        arrow::compute::concat_batches(&r[0].schema(), &r).unwrap()
    }

    #[test]
    fn a_block_streamed_in_batches_equals_the_block_written_at_once() {
        let opts = BlockWriteOptions {
            batch_rows: 7,
            row_group_rows: 50,
            page_rows: 8,
            ..Default::default()
        };
        let traces: Vec<u8> = (1..=60).collect();
        // Given out of order at once; in ID order, a batch of whole traces at a time, streamed.
        let all: Vec<FlatSpan> = traces.iter().rev().flat_map(|t| trace(*t)).collect();
        let whole = encode_block("t", all, &opts).unwrap();
        let batch = |ts: &[u8]| -> Vec<FlatSpan> { ts.iter().flat_map(|t| trace(*t)).collect() };
        let mut enc = BlockEncoder::start("t", batch(&traces[..20]), 60, &opts).unwrap();
        enc.push(batch(&traces[20..45])).unwrap();
        enc.push(Vec::new()).unwrap();
        enc.push(batch(&traces[45..])).unwrap();
        assert_eq!(enc.spans(), 180);
        let streamed = enc.finish().unwrap();

        let (a, b) = (&whole.meta, &streamed.meta);
        assert_eq!((b.total_spans, b.total_objects), (180, 60));
        assert_eq!(
            (b.min_id.as_str(), b.max_id.as_str()),
            (&*"01".repeat(16), &*"3c".repeat(16))
        );
        assert_eq!((b.start_unix_nano, b.end_unix_nano), (1_000, 60_010));
        // 120 child spans (parent = the root's left, 1) in groups of 50, 50 and 20, and the 60
        // roots (parent -1) in groups of their own of 50 and 10, each group closed into the
        // file as it fills (the first root group between the second and third child groups).
        assert_eq!(b.row_groups, 5);
        let footer = parquet::file::metadata::ParquetMetaDataReader::new()
            .parse_and_finish(&streamed.data.to_bytes().unwrap())
            .unwrap();
        let leaf = crate::block::reader::leaf(&footer, col::NESTED_SET_PARENT).unwrap();
        let parents: Vec<(i32, i32, i64)> = footer
            .row_groups()
            .iter()
            .map(|rg| match rg.column(leaf).statistics() {
                Some(parquet::file::statistics::Statistics::Int32(s)) => {
                    (*s.min_opt().unwrap(), *s.max_opt().unwrap(), rg.num_rows())
                }
                other => panic!("nested_set_parent statistics: {other:?}"),
            })
            .collect();
        // Readers skip the non-root groups for `nestedSetParent < 0` by statistics alone.
        assert_eq!(
            parents,
            [
                (1, 1, 50),
                (1, 1, 50),
                (-1, -1, 50),
                (1, 1, 20),
                (-1, -1, 10)
            ]
        );
        // Trace t (ID [t; 16]) is in trace-ID bucket 257·t >> 6: traces 1–12 lie below bucket
        // 52, so the footer counts 24 of their children in the first group, 12 roots in the
        // third, and none in the fourth (the children of traces 51–60).
        let cuts = crate::block::trace_cuts::TraceCuts::from_footer(&footer)
            .expect("the footer records trace-ID cuts");
        let below: Vec<Option<u32>> = (0..5).map(|rg| cuts.rows_below(rg, 52)).collect();
        assert_eq!(below, [Some(24), Some(0), Some(12), Some(0), Some(0)]);
        assert_eq!(cuts.rows_below(4, 1024), Some(10));
        assert_eq!(a.hot_columns, b.hot_columns);
        assert!(b.hot_columns.iter().any(|h| h.key == "http.route"));
        // Keys first seen after the sample batch are still recorded.
        let keys = b.attribute_keys.as_ref().unwrap();
        assert_eq!(keys.span, ["http.route", "rare", "tags"]);
        assert_eq!(b.other_keys.as_ref().unwrap()[0].key, "tags");
        assert_eq!(
            (&a.attribute_keys, &a.other_keys),
            (&b.attribute_keys, &b.other_keys)
        );
        assert_eq!(whole.bloom, streamed.bloom);
        let (ra, rb) = (rows(&whole), rows(&streamed));
        let concat = |r: &[RecordBatch]| arrow::compute::concat_batches(&r[0].schema(), r).unwrap();
        let (ra, rb) = (concat(&ra), concat(&rb));
        assert_eq!(rb.num_rows(), 180);
        assert_eq!(ra, rb);
    }

    #[test]
    fn a_meta_whose_slices_name_row_groups_the_block_lacks_is_refused() {
        let opts = BlockWriteOptions {
            row_group_rows: 50,
            ..Default::default()
        };
        let mut meta = encode_block("t", (1..=60).flat_map(trace).collect(), &opts)
            .unwrap()
            .meta;
        let slice = |row_groups: Vec<u32>| crate::block::meta::BlockSlice {
            start_unix_nano: meta.start_unix_nano,
            end_unix_nano: meta.end_unix_nano,
            row_groups,
        };
        let last = meta.row_groups as u32 - 1;
        meta.slices = Some(vec![slice(vec![0]), slice(vec![last])]);
        let json = meta.to_sealed_json().unwrap();
        assert_eq!(BlockMeta::parse("m", &json).unwrap().slices, meta.slices);
        meta.slices = Some(vec![slice(vec![0]), slice(vec![last + 1])]);
        let json = meta.to_sealed_json().unwrap();
        let e = BlockMeta::parse("m", &json).unwrap_err();
        assert!(matches!(e, EngineError::Corrupt { .. }), "{e}");
        assert!(
            e.to_string().contains(&format!("row group {}", last + 1)),
            "{e}"
        );
    }

    #[test]
    fn a_merge_spilled_to_disk_writes_the_block_it_writes_in_memory() {
        use arrow::array::{Array, Int32Array};
        let opts = BlockWriteOptions {
            row_group_rows: 50,
            page_rows: 8,
            ..Default::default()
        };
        let all: Vec<FlatSpan> = (1..=60).flat_map(trace).collect();
        let source = encode_block("t", all, &opts).unwrap();
        let rows = rows(&source);
        let rows = arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
        let parent = rows
            .column_by_name(col::NESTED_SET_PARENT)
            .unwrap()
            .as_any()
            .downcast_ref::<Int32Array>()
            .unwrap();
        let is_root: arrow::array::BooleanArray = (0..parent.len())
            .map(|i| Some(parent.value(i) < 0))
            .collect();
        let roots = arrow::compute::filter_record_batch(&rows, &is_root).unwrap();
        let rest =
            arrow::compute::filter_record_batch(&rows, &arrow::compute::not(&is_root).unwrap())
                .unwrap();
        assert_eq!((rest.num_rows(), roots.num_rows()), (120, 60));
        let spill = tempfile::tempdir().unwrap();
        let write = |spill_dir: Option<std::path::PathBuf>| {
            let opts = BlockWriteOptions {
                spill_dir,
                ..opts.clone()
            };
            let keys = RecordedKeys::default();
            let hot = source.meta.hot_columns.clone();
            let mut enc = BlockEncoder::start_rows("t", hot, keys, 60, 180, &opts).unwrap();
            // The roots arrive in two batches, as a merge hands them over.
            enc.push_parts(0, Some(rest.slice(0, 60)), Some(roots.slice(0, 30)))
                .unwrap();
            enc.push_parts(0, Some(rest.slice(60, 60)), Some(roots.slice(30, 30)))
                .unwrap();
            enc.finish().unwrap()
        };
        let (kept, spilled) = (write(None), write(Some(spill.path().join("spill"))));
        assert!(matches!(kept.data, BlockData::Memory(_)));
        assert!(matches!(spilled.data, BlockData::Spilled(_)));
        // Unnamed files: nothing is left in the directory, even while the block is held.
        assert_eq!(
            std::fs::read_dir(spill.path().join("spill"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            kept.data.to_bytes().unwrap(),
            spilled.data.to_bytes().unwrap()
        );
        assert_eq!(kept.meta.checksums, spilled.meta.checksums);
        assert_eq!(kept.meta.size, spilled.meta.size);
        assert_eq!(kept.meta.footer_size, spilled.meta.footer_size);
        assert_eq!(kept.meta.row_groups, source.meta.row_groups);
        // Stored in parts, it reads back whole.
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stored = rt.block_on(async {
            put_block(&store, &spilled).await.unwrap();
            let m = &spilled.meta;
            let path = block_path(&m.tenant_id, &m.block_id, objects::DATA);
            use object_store::ObjectStoreExt;
            store.get(&path).await.unwrap().bytes().await.unwrap()
        });
        assert_eq!(stored, kept.data.to_bytes().unwrap());
        let back = rows_of(stored);
        assert_eq!(back, rows);
    }

    #[test]
    fn batches_out_of_trace_order_are_refused() {
        let opts = BlockWriteOptions::default();
        let mut enc = BlockEncoder::start("t", trace(5), 2, &opts).unwrap();
        let e = enc.push(trace(3)).unwrap_err().to_string();
        assert!(e.contains("out of trace-ID order"), "{e}");
        // The same trace again would split it across batches.
        assert!(enc.push(trace(5)).is_err());
        assert!(BlockEncoder::start("t", Vec::new(), 0, &opts).is_err());
    }
}
