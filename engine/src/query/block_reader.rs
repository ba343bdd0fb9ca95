//! Parquet readers for DataFusion's scans of blocks, with footers and page indexes from the
//! catalog's cache.
//!
//! DataFusion's own reader caches a footer without its page index (the opener asks for the
//! footer first and loads the page index separately, outside the cache), so every query decoded
//! the page index of every block again: a fifth of the CPU of a metrics query over 100 blocks.
//! Blocks are immutable and their footer size is in `meta.json`, so the footer and page index
//! are read in one request, decoded once and kept in the catalog's byte-bounded cache, shared
//! with trace-by-ID.

use std::ops::Range;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::parquet::ParquetFileMetrics;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;

use crate::block::meta::{BlockMeta, objects};
use crate::block::object_reader::ObjectReader;
use crate::block::writer::block_path;
use crate::catalog::Catalog;
use crate::error::EngineError;

/// Makes a reader per block file; the file's [`BlockMeta`] rides in its extensions.
#[derive(Debug)]
pub struct BlockReaderFactory {
    catalog: Arc<Catalog>,
}

impl BlockReaderFactory {
    /// Readers over `catalog`'s store and footer cache.
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog }
    }

    /// The catalog whose store and footer cache the readers use.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }
}

/// The scan's file for `meta`'s data object, whose Arrow schema is `schema`.
pub fn block_file(meta: &Arc<BlockMeta>, schema: &SchemaRef) -> PartitionedFile {
    let path = block_path(&meta.tenant_id, &meta.block_id, objects::DATA);
    // With the schema given, the reader skips decoding the file's embedded Arrow schema (an
    // IPC message, a third of opening a block).
    let mut f = PartitionedFile::new(path.to_string(), meta.size).with_arrow_schema(schema.clone());
    f.extensions.insert_arc(meta.clone());
    f
}

/// The scan's file for time slice `slice` of `meta`'s data object: the block with a
/// [`ParquetAccessPlan`] that reads only the slice's row groups (pruning by statistics and
/// page index then works within them). `BlockMeta::parse` checked the slices' row groups.
pub fn slice_file(
    meta: &Arc<BlockMeta>,
    schema: &SchemaRef,
    slice: usize,
) -> crate::error::Result<PartitionedFile> {
    let groups = meta
        .slices
        .as_ref()
        .and_then(|s| s.get(slice))
        .ok_or_else(|| {
            EngineError::Internal(format!("block {} has no slice {slice}", meta.block_id))
        })?;
    let mut plan = ParquetAccessPlan::new_none(meta.row_groups as usize);
    for &g in &groups.row_groups {
        plan.scan(g as usize);
    }
    let mut f = block_file(meta, schema);
    f.extensions.insert(plan);
    Ok(f)
}

impl ParquetFileReaderFactory for BlockReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        _metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::common::Result<Box<dyn AsyncFileReader + Send>> {
        let Some(meta) = file.extensions.get_arc::<BlockMeta>() else {
            return datafusion::common::internal_err!(
                "block scan of {} without its block meta",
                file.object_meta.location
            );
        };
        let metrics =
            ParquetFileMetrics::new(partition_index, file.object_meta.location.as_ref(), metrics);
        Ok(Box::new(BlockReader {
            inner: crate::block::reader::object_reader(self.catalog.store(), &meta),
            checked: meta.checksums.is_none(),
            catalog: self.catalog.clone(),
            meta,
            metrics,
        }))
    }
}

struct BlockReader {
    inner: ObjectReader,
    /// Whether `inner` checks pages already (or the block has no checksums). DataFusion makes
    /// fresh readers after loading the footer (for bloom filters, then for decoding), so each
    /// reader takes the block's page checksums before its first read of data.
    checked: bool,
    catalog: Arc<Catalog>,
    meta: Arc<BlockMeta>,
    metrics: ParquetFileMetrics,
}

impl BlockReader {
    /// Makes `inner` check every page it reads against the block's checksums.
    async fn check_pages(&mut self) -> parquet::errors::Result<()> {
        if !self.checked {
            self.inner = self
                .catalog
                .checked_reader(self.catalog.store(), &self.meta)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))?;
            self.checked = true;
        }
        Ok(())
    }
}

impl AsyncFileReader for BlockReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.metrics
            .bytes_scanned
            .add((range.end - range.start) as usize);
        async move {
            self.check_pages().await?;
            self.inner.get_bytes(range).await
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let n: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        self.metrics.bytes_scanned.add(n as usize);
        async move {
            self.check_pages().await?;
            self.inner.get_byte_ranges(ranges).await
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        // Always with the page index, whatever was asked: the opener then finds it present
        // and skips its own (uncached) load.
        async move {
            let footer = self
                .catalog
                .footer(self.catalog.store(), &self.meta)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))?;
            Ok(footer.metadata().clone())
        }
        .boxed()
    }
}
