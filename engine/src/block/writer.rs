//! Writing a block: sort, number, choose hot columns, encode Parquet, then store it.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use uuid::Uuid;

use super::bloom::TraceBloom;
use super::meta::{BlockMeta, objects, rfc3339_seconds};
use crate::convert::flatten::FlatSpan;
use crate::convert::to_arrow::spans_to_batch;
use crate::error::{EngineError, Result};
use crate::hot::HotPolicy;
use crate::nested_set::prepare_traces;
use crate::schema::{FORMAT_V1, col, span_schema};

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
        }
    }
}

/// A block encoded in memory, ready to be stored.
#[derive(Debug, Clone)]
pub struct EncodedBlock {
    /// Its metadata.
    pub meta: BlockMeta,
    /// `data.parquet`.
    pub data: Bytes,
    /// `bloom`.
    pub bloom: Bytes,
}

/// The object path of `object` in a block.
pub fn block_path(tenant: &str, block_id: &Uuid, object: &str) -> Path {
    Path::from(format!("{tenant}/{block_id}/{object}"))
}

fn writer_properties(opts: &BlockWriteOptions, traces: usize) -> Result<WriterProperties> {
    let plain = |p: &str| ColumnPath::from(p);
    Ok(WriterProperties::builder()
        .set_compression(opts.compression.parquet()?)
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
        .set_column_bloom_filter_max_ndv(plain(col::TRACE_ID), traces.max(1) as u64)
        .build())
}

/// Encodes spans into a block of `tenant`: sorts by trace ID then start time, computes nested
/// sets and trace-level columns, chooses hot columns, and writes zstd Parquet with page index,
/// statistics and a trace-ID bloom filter. CPU-bound: call from a blocking thread.
pub fn encode_block(
    tenant: &str,
    mut spans: Vec<FlatSpan>,
    opts: &BlockWriteOptions,
) -> Result<EncodedBlock> {
    if spans.is_empty() {
        return Err(EngineError::InvalidInput(
            "a block needs at least one span".into(),
        ));
    }
    let traces = prepare_traces(&mut spans);
    let (hot, other_keys, attribute_keys) = opts.hot.choose_and_scan_keys(&spans);
    let schema = span_schema(&hot);
    // About 40 bytes per span end up on disk; reserving avoids regrowing a large buffer.
    let mut data = Vec::with_capacity(spans.len() * 48);
    let mut writer =
        ArrowWriter::try_new(&mut data, schema, Some(writer_properties(opts, traces)?))?;
    let mut bloom = TraceBloom::with_capacity(traces, opts.bloom_fpp);
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut last = None;
    for s in &spans {
        start = start.min(s.span.start_time_unix_nano);
        end = end.max(s.span.end_time_unix_nano.max(s.span.start_time_unix_nano));
        // Spans are sorted by trace, so each trace is inserted once.
        if last != Some(s.trace_id) {
            bloom.insert(&s.trace_id);
            last = Some(s.trace_id);
        }
    }
    for chunk in spans.chunks(opts.batch_rows.max(1)) {
        writer.write(&spans_to_batch(chunk, &hot)?)?;
    }
    let row_groups = writer.close()?.num_row_groups() as u64;
    let footer_size = footer_len(&data);
    let block_id = Uuid::new_v4();
    let (min_id, max_id) = match (spans.first(), spans.last()) {
        (Some(a), Some(b)) => (a.trace_id.to_hex(), b.trace_id.to_hex()),
        _ => return Err(EngineError::Internal("block without spans".into())),
    };
    let bloom = bloom.to_bytes();
    let meta = BlockMeta {
        format: FORMAT_V1.to_string(),
        block_id,
        tenant_id: tenant.to_string(),
        start_time: rfc3339_seconds(start, false),
        end_time: rfc3339_seconds(end, true),
        start_unix_nano: start,
        end_unix_nano: end,
        total_objects: traces as u64,
        total_spans: spans.len() as u64,
        size: data.len() as u64,
        footer_size,
        bloom_size: bloom.len() as u64,
        row_groups,
        min_id,
        max_id,
        hot_columns: hot,
        other_keys: Some(other_keys),
        attribute_keys: Some(attribute_keys),
        compaction_level: 0,
    };
    Ok(EncodedBlock {
        meta,
        data: Bytes::from(data),
        bloom: Bytes::from(bloom),
    })
}

fn footer_len(file: &[u8]) -> u64 {
    match file.len().checked_sub(8) {
        Some(at) => {
            u64::from(u32::from_le_bytes([
                file[at],
                file[at + 1],
                file[at + 2],
                file[at + 3],
            ])) + 8
        }
        None => 0,
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

/// Stores a block's data and bloom; it stays invisible until [`put_block_meta`].
pub async fn put_block_data(store: &Arc<dyn ObjectStore>, block: &EncodedBlock) -> Result<()> {
    put_object(store, &block.meta, objects::DATA, block.data.clone()).await?;
    put_object(store, &block.meta, objects::BLOOM, block.bloom.clone()).await
}

/// Stores a block's `meta.json`, which makes it visible.
pub async fn put_block_meta(store: &Arc<dyn ObjectStore>, block: &EncodedBlock) -> Result<()> {
    let meta = serde_json::to_vec_pretty(&block.meta)
        .map_err(|e| EngineError::Internal(format!("meta.json: {e}")))?;
    put_object(store, &block.meta, objects::META, Bytes::from(meta)).await
}
