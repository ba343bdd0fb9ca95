//! Reading a block: footer with page index, and the rows of one trace with pruning by row-group
//! statistics and page index before any data page is fetched.

use std::sync::Arc;

use arrow::array::{BooleanArray, FixedSizeBinaryArray, RecordBatch};
use futures::TryStreamExt;
use object_store::ObjectStore;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter, RowSelection, RowSelector,
};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;

use super::checksums::PageSums;
use super::meta::{BlockMeta, objects};
use super::object_reader::ObjectReader;
use super::writer::block_path;
use crate::error::{EngineError, Result};
use crate::ids::TraceId;
use crate::schema::col;
use crate::storage::whole_object;

/// A reader of a block's data object that fetches footer and page index in one read.
pub(crate) fn object_reader(store: &Arc<dyn ObjectStore>, meta: &BlockMeta) -> ObjectReader {
    // The footer size is in meta.json, so the footer (with page index) comes in one read.
    let hint = (meta.footer_size.max(8) as usize).min(meta.size as usize);
    ObjectReader::new(
        store.clone(),
        block_path(&meta.tenant_id, &meta.block_id, objects::DATA),
        meta.size,
        hint,
    )
    .verified(meta.checksums.clone(), meta.footer_size)
}

/// The page checksums of `meta`'s block placed by its footer `md`; `None` for a block written
/// before checksums. A footer whose pages do not match them makes the block damaged.
pub(crate) fn page_sums(meta: &BlockMeta, md: &ParquetMetaData) -> Result<Option<Arc<PageSums>>> {
    let Some(sums) = &meta.checksums else {
        return Ok(None);
    };
    PageSums::new(md, sums)
        .map(|p| Some(Arc::new(p)))
        .map_err(|m| {
            EngineError::corrupt(
                block_path(&meta.tenant_id, &meta.block_id, objects::DATA),
                m,
            )
        })
}

pub(crate) fn parquet_err(meta: &BlockMeta, e: parquet::errors::ParquetError) -> EngineError {
    let path = block_path(&meta.tenant_id, &meta.block_id, objects::DATA);
    // A block deleted after it was listed is not damaged.
    if EngineError::missing_in(&e).is_some() {
        return EngineError::BlockGone {
            path: path.to_string(),
        };
    }
    // A read that failed (network, permissions) is not damage: the block stays in service.
    let storage_failed = crate::error::chain(&e).any(|c| c.is::<object_store::Error>());
    if EngineError::damaged_in(&e).is_none() && storage_failed {
        return EngineError::storage(
            &path,
            object_store::Error::Generic {
                store: "block",
                source: Box::new(e),
            },
        );
    }
    EngineError::corrupt(path, e)
}

/// Reads all of a block and checks it: its bloom filter, its whole data file and each of its
/// pages against their checksums (blocks written before checksums: decoding alone), and every
/// page decoded, the row count against `meta.json`.
/// What `allegro blocks --check` runs; a block that passes reads cleanly whole.
pub async fn verify_block(store: &Arc<dyn ObjectStore>, meta: &BlockMeta) -> Result<()> {
    let bloom_path = block_path(&meta.tenant_id, &meta.block_id, objects::BLOOM);
    let bloom = whole_object(store.as_ref(), &bloom_path).await?;
    if let Some(sums) = &meta.checksums {
        sums.verify_bloom(&bloom)
            .map_err(|m| EngineError::corrupt(&bloom_path, m))?;
    }
    super::bloom::TraceBloom::from_bytes(bloom_path.as_ref(), &bloom)?;
    if let Some(info) = &meta.rollup {
        let path = block_path(&meta.tenant_id, &meta.block_id, objects::ROLLUP);
        let rollup = super::rollup::read(
            path.as_ref(),
            whole_object(store.as_ref(), &path).await?,
            info,
        )?;
        let counted = super::rollup::spans_counted(&rollup);
        if counted != meta.total_spans {
            return Err(EngineError::corrupt(
                path,
                format!(
                    "the rollup counts {counted} spans where meta.json records {}",
                    meta.total_spans
                ),
            ));
        }
    }
    let data_path = block_path(&meta.tenant_id, &meta.block_id, objects::DATA);
    if let Some(sums) = &meta.checksums {
        let data = whole_object(store.as_ref(), &data_path).await?;
        sums.verify_file(&data)
            .map_err(|m| EngineError::corrupt(&data_path, m))?;
    }
    let footer = load_footer(store, meta).await?;
    let reader = object_reader(store, meta).with_pages(page_sums(meta, footer.metadata())?);
    let rows: usize = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer)
        .build()
        .map_err(|e| parquet_err(meta, e))?
        .map_ok(|b| b.num_rows())
        .try_fold(0, |n, r| async move { Ok(n + r) })
        .await
        .map_err(|e| parquet_err(meta, e))?;
    if rows as u64 != meta.total_spans {
        return Err(EngineError::corrupt(
            data_path,
            format!(
                "{rows} rows where meta.json records {} spans",
                meta.total_spans
            ),
        ));
    }
    Ok(())
}

/// Loads the Parquet footer and page index of a block (one or two ranged reads).
pub async fn load_footer(
    store: &Arc<dyn ObjectStore>,
    meta: &BlockMeta,
) -> Result<ArrowReaderMetadata> {
    let mut r = object_reader(store, meta);
    ArrowReaderMetadata::load_async(
        &mut r,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
    )
    .await
    .map_err(|e| parquet_err(meta, e))
}

/// The index of the leaf column `name` in a block's Parquet schema.
pub(crate) fn leaf(md: &ParquetMetaData, name: &str) -> Result<usize> {
    md.file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == name)
        .ok_or_else(|| EngineError::corrupt("data.parquet", format!("no {name} column")))
}

/// Column `name` of a batch read from a block, as `T`; a block without it (or with it of
/// another type) is damaged.
pub(crate) fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    b.column_by_name(name)
        .and_then(|a| a.as_any().downcast_ref::<T>())
        .ok_or_else(|| EngineError::corrupt("data.parquet", format!("no {name} column")))
}

fn in_range(min: Option<&[u8]>, max: Option<&[u8]>, id: &[u8]) -> bool {
    min.is_none_or(|m| m <= id) && max.is_none_or(|m| id <= m)
}

/// Row groups and rows within them that may hold `id`, from statistics and the page index.
/// Returns `None` when nothing can match.
pub fn plan_trace_read(
    md: &ParquetMetaData,
    id: &TraceId,
    only: Option<&[usize]>,
) -> Result<Option<(Vec<usize>, RowSelection)>> {
    let leaf = leaf(md, col::TRACE_ID)?;
    let mut groups = Vec::new();
    let mut selectors: Vec<RowSelector> = Vec::new();
    for rg in 0..md.num_row_groups() {
        if only.is_some_and(|o| !o.contains(&rg)) {
            continue;
        }
        let rgm = md.row_group(rg);
        let rows = rgm.num_rows() as usize;
        if let Some(s) = rgm.column(leaf).statistics()
            && !in_range(s.min_bytes_opt(), s.max_bytes_opt(), &id.0)
        {
            continue;
        }
        let pages = match (md.column_index(), md.offset_index()) {
            (Some(ci), Some(oi)) => match (&ci[rg][leaf], oi[rg][leaf].page_locations()) {
                (ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(idx), locs) if !locs.is_empty() => {
                    let mut sel = Vec::new();
                    for (p, loc) in locs.iter().enumerate() {
                        let first = loc.first_row_index as usize;
                        let next = locs.get(p + 1).map_or(rows, |l| l.first_row_index as usize);
                        let hit = in_range(idx.min_value(p), idx.max_value(p), &id.0);
                        sel.push(if hit {
                            RowSelector::select(next - first)
                        } else {
                            RowSelector::skip(next - first)
                        });
                    }
                    Some(sel)
                }
                _ => None,
            },
            _ => None,
        };
        let sel = pages.unwrap_or_else(|| vec![RowSelector::select(rows)]);
        if sel.iter().all(|s| s.skip) {
            continue;
        }
        groups.push(rg);
        selectors.extend(sel);
    }
    if groups.is_empty() {
        return Ok(None);
    }
    Ok(Some((groups, RowSelection::from(selectors))))
}

/// Reads the rows of trace `id` through `reader` from a block whose footer is `footer`.
pub async fn read_trace(
    reader: ObjectReader,
    meta: &BlockMeta,
    footer: &ArrowReaderMetadata,
    id: &TraceId,
    only: Option<&[usize]>,
) -> Result<Vec<RecordBatch>> {
    let Some((groups, selection)) = plan_trace_read(footer.metadata(), id, only)? else {
        return Ok(Vec::new());
    };
    let leaf = leaf(footer.metadata(), col::TRACE_ID)?;
    let want = id.0;
    let mask = ProjectionMask::leaves(footer.parquet_schema(), [leaf]);
    let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .ok_or_else(|| {
                arrow::error::ArrowError::SchemaError("trace_id is not FixedSizeBinary(16)".into())
            })?;
        Ok(BooleanArray::from_iter(
            ids.iter().map(|v| Some(v == Some(&want[..]))),
        ))
    });
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer.clone())
        .with_row_groups(groups)
        .with_row_selection(selection)
        .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
        .build()
        .map_err(|e| parquet_err(meta, e))?;
    let batches: Vec<RecordBatch> = stream
        .try_collect()
        .await
        .map_err(|e| parquet_err(meta, e))?;
    Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
}

/// Reads a whole block (for tools and tests; queries go through DataFusion).
pub async fn read_all(store: &Arc<dyn ObjectStore>, meta: &BlockMeta) -> Result<Vec<RecordBatch>> {
    let footer = load_footer(store, meta).await?;
    let reader = object_reader(store, meta).with_pages(page_sums(meta, footer.metadata())?);
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer)
        .build()
        .map_err(|e| parquet_err(meta, e))?;
    stream.try_collect().await.map_err(|e| parquet_err(meta, e))
}

/// The traces whose part in a block is incomplete (a span numbered 0: no root, or a parent not
/// in the block), read from the block itself: for blocks whose `meta.json` does not list them.
/// Reads two narrow columns.
pub async fn read_incomplete_traces(
    reader: ObjectReader,
    meta: &BlockMeta,
    footer: &ArrowReaderMetadata,
) -> Result<Vec<TraceId>> {
    let md = footer.metadata();
    let (id_leaf, left_leaf) = (leaf(md, col::TRACE_ID)?, leaf(md, col::NESTED_SET_LEFT)?);
    let mask = ProjectionMask::leaves(footer.parquet_schema(), [id_leaf, left_leaf]);
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer.clone())
        .with_projection(mask)
        .build()
        .map_err(|e| parquet_err(meta, e))?;
    let batches: Vec<RecordBatch> = stream
        .try_collect()
        .await
        .map_err(|e| parquet_err(meta, e))?;
    let mut out = std::collections::BTreeSet::new();
    for b in &batches {
        let ids = b
            .column_by_name(col::TRACE_ID)
            .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>());
        let lefts = b
            .column_by_name(col::NESTED_SET_LEFT)
            .and_then(|a| a.as_any().downcast_ref::<arrow::array::Int32Array>());
        let (Some(ids), Some(lefts)) = (ids, lefts) else {
            return Err(EngineError::corrupt(
                block_path(&meta.tenant_id, &meta.block_id, objects::DATA),
                "trace_id or nested_set_left has an unexpected type",
            ));
        };
        for i in 0..b.num_rows() {
            if lefts.value(i) == 0 {
                out.insert(TraceId::from_bytes(ids.value(i))?);
            }
        }
    }
    Ok(out.into_iter().collect())
}
