//! The span table as DataFusion sees it: blocks grouped by schema, plus the live head.
//!
//! Blocks choose their hot columns independently, so two blocks may disagree on the schema.
//! Rather than widening every block to a union schema (and losing the typed column of a key
//! whose type flips between blocks), blocks with the same hot columns form one
//! [`BlocksTable`], and the planner translates each query once per group. Pruning by tenant and
//! time uses `meta.json` before any Parquet is opened; inside a group, DataFusion prunes row
//! groups, pages and bloom filters with the pushed-down predicate.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};

use crate::block::meta::{BlockMeta, BlockSlice};
use crate::catalog::Catalog;
pub use crate::query::block_reader::block_file;
use crate::query::block_reader::{BlockReaderFactory, slice_file};
use crate::query::sampled_scan::{SampledBlock, SampledScanExec, SampledScanSpec};
use crate::schema::{HotColumn, span_schema};

/// The Parquet reader factory block scans read through: footers, page indexes and page
/// checksums from `catalog`'s caches; each file's [`BlockMeta`] rides in its extensions.
pub fn block_readers(
    catalog: &Arc<Catalog>,
) -> Arc<dyn datafusion::datasource::physical_plan::ParquetFileReaderFactory> {
    Arc::new(BlockReaderFactory::new(catalog.clone()))
}

/// Where the object store is registered in a query session.
pub const STORE_URL: &str = "allegro://blocks";

/// A tenant's live spans ([`LiveSpans::live_batches`]), and the blocks they left for lately.
#[derive(Debug, Default)]
pub struct LiveBatches {
    /// Span-table batches in groups of whole traces.
    pub groups: Vec<Vec<RecordBatch>>,
    /// Per group, what a block of its spans would record of their attribute keys, types and
    /// values (may hold more: traces that left the group); `None`, or no entry, when not
    /// known (another member's group). Queries read the head as blocks with them: the
    /// translator leaves out slots no span fills, and tag values come from the lists.
    pub recorded: Vec<Option<Arc<crate::block::recorded::RecordedKeys>>>,
    /// Per group, its traces listed when it was converted; `None`, or no entry, when not
    /// listed (the query lists them from the rows).
    pub traces: Vec<Option<Arc<crate::query::head_traces::GroupTraces>>>,
    /// Blocks whose spans left the head lately, none of them in `groups`: a querier that has
    /// not listed one of them yet (another ring member's, known only by polling the bucket)
    /// reads it by ID, so each span is seen in the head or in a block.
    pub flushed: Vec<uuid::Uuid>,
}

/// Spans not yet in a block, for queries: the live head of one tenant (with sharded ingest,
/// of every ingester).
#[async_trait::async_trait]
pub trait LiveSpans: Send + Sync {
    /// The tenant's live spans as span-table batches without hot columns (every attribute in
    /// the overflow maps), nested sets computed per trace; in groups, each holding its traces'
    /// live spans whole (a trace in two groups is treated as split), so that a search can read
    /// them newest first and stop early, as it does blocks.
    async fn live_batches(&self, tenant: &str) -> crate::error::Result<LiveBatches>;

    /// The tenant's live spans of trace `id`, as received (none unless the head keeps them).
    async fn live_trace(
        &self,
        _tenant: &str,
        _id: &crate::ids::TraceId,
    ) -> crate::error::Result<Vec<crate::otlp::trace::v1::ResourceSpans>> {
        Ok(Vec::new())
    }
}

/// The per-span weight column of a sampled [`BlocksTable`] (Float64).
pub const SAMPLE_WEIGHT: &str = "__sample_weight";

/// One partition of a table scanned a part at a time: a block, or one time slice of it.
#[derive(Debug, Clone)]
pub struct BlockPart {
    /// The block.
    pub block: Arc<BlockMeta>,
    /// Which of its slices (`None`: the whole block).
    pub slice: Option<usize>,
}

impl BlockPart {
    /// The latest span end of the part: no trace in it starts later.
    pub fn end(&self) -> u64 {
        self.slice
            .and_then(|i| self.block.slices.as_ref()?.get(i))
            .map_or(self.block.end_unix_nano, |s| s.end_unix_nano)
    }
}

/// Blocks that share one schema, scanned as one table.
#[derive(Debug)]
pub struct BlocksTable {
    /// The blocks' file schema.
    schema: SchemaRef,
    blocks: Vec<Arc<BlockMeta>>,
    readers: Arc<BlockReaderFactory>,
    /// Trace-ID buckets kept by a sampled scan, see [`BlocksTable::sampled`].
    sample: Option<usize>,
    /// The parts scanned, in this order, one partition per part ([`BlocksTable::per_part`])
    /// or per `parts_per_partition` of them.
    parts: Option<Vec<BlockPart>>,
    /// Consecutive parts scanned by one partition ([`BlocksTable::parts_per_partition`]);
    /// 1 but for a search's wave on a cluster, which is planned where it is made (so this is
    /// not sent with the table).
    parts_per_partition: usize,
}

impl BlocksTable {
    /// A table over `catalog`'s `blocks`, which must all have `hot` columns.
    pub fn new(catalog: &Arc<Catalog>, hot: &[HotColumn], blocks: Vec<Arc<BlockMeta>>) -> Self {
        Self {
            schema: span_schema(hot),
            blocks,
            readers: Arc::new(BlockReaderFactory::new(catalog.clone())),
            sample: None,
            parts: None,
            parts_per_partition: 1,
        }
    }

    /// A table as [`BlocksTable::new`] made it and its variants shaped it, rebuilt from its
    /// parts where it was sent (a cluster's scheduler): `schema` is the file schema
    /// ([`BlocksTable::file_schema`]), `parts` name blocks by their index in `blocks`.
    pub fn restore(
        catalog: &Arc<Catalog>,
        schema: SchemaRef,
        blocks: Vec<Arc<BlockMeta>>,
        sample: Option<usize>,
        parts: Option<Vec<(usize, Option<usize>)>>,
    ) -> crate::error::Result<Self> {
        let parts = match parts {
            None => None,
            Some(p) => Some(
                p.into_iter()
                    .map(|(i, slice)| match blocks.get(i) {
                        Some(block) => Ok(BlockPart {
                            block: block.clone(),
                            slice,
                        }),
                        None => Err(crate::error::EngineError::Internal(format!(
                            "a part names block {i} of {}",
                            blocks.len()
                        ))),
                    })
                    .collect::<crate::error::Result<Vec<_>>>()?,
            ),
        };
        Ok(Self {
            schema,
            blocks,
            readers: Arc::new(BlockReaderFactory::new(catalog.clone())),
            sample,
            parts,
            parts_per_partition: 1,
        })
    }

    /// The blocks' file schema as this table reads it (without a sample's weight column).
    pub fn file_schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The trace-ID buckets a sampled table keeps ([`BlocksTable::sampled`]).
    pub fn sample_buckets(&self) -> Option<usize> {
        self.sample
    }

    /// Whether this table is scanned one partition per part ([`BlocksTable::per_part`]).
    pub fn is_per_part(&self) -> bool {
        self.parts.is_some()
    }

    /// The same blocks scanned one partition per part: a block, or each time slice of a block
    /// that has them, leaving out slices outside `range`. Partition `i` is part `i` of
    /// [`BlocksTable::parts`]: newest-first search reads parts one by one and stops early. The
    /// session must not split file scans (`repartition_file_scans = false`).
    pub fn per_part(&self, range: Option<(u64, u64)>) -> Self {
        self.parts_where(&|_, s| match (s, range) {
            (Some(s), Some((from, to))) => s.overlaps(from, to),
            _ => true,
        })
    }

    /// The same blocks scanned one partition per part, as [`BlocksTable::per_part`], keeping
    /// the parts `keep` accepts: a block's slice, or (`None`) a block that has none.
    pub fn parts_where(&self, keep: &dyn Fn(&BlockMeta, Option<&BlockSlice>) -> bool) -> Self {
        let mut parts = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            match &b.slices {
                Some(slices) => parts.extend(
                    slices
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| keep(b, Some(s)))
                        .map(|(i, _)| BlockPart {
                            block: b.clone(),
                            slice: Some(i),
                        }),
                ),
                None if keep(b, None) => parts.push(BlockPart {
                    block: b.clone(),
                    slice: None,
                }),
                None => {}
            }
        }
        Self {
            parts: Some(parts),
            ..self.with_blocks(self.blocks.clone())
        }
    }

    /// The blocks of `parts` scanned one partition per part, in that order (as
    /// [`BlocksTable::per_part`] makes them).
    pub(crate) fn with_parts(&self, parts: Vec<BlockPart>) -> Self {
        let mut blocks: Vec<Arc<BlockMeta>> = Vec::new();
        for p in &parts {
            if !blocks.iter().any(|b| b.block_id == p.block.block_id) {
                blocks.push(p.block.clone());
            }
        }
        Self {
            parts: Some(parts),
            ..self.with_blocks(blocks)
        }
    }

    /// The partitions of [`BlocksTable::per_part`] (empty for a table not scanned so).
    pub fn parts(&self) -> &[BlockPart] {
        self.parts.as_deref().unwrap_or_default()
    }

    /// The blocks, in list order (for the partitions of a table scanned a part at a time, see
    /// [`BlocksTable::parts`]).
    pub fn blocks(&self) -> &[Arc<BlockMeta>] {
        &self.blocks
    }

    /// The same blocks sampled by trace: only spans whose trace ID falls in the lowest
    /// `buckets` of the 1024 trace-ID buckets are read, with a [`SAMPLE_WEIGHT`] column.
    ///
    /// Each row group is sorted by trace ID and its footer records how many rows fall below
    /// every bucket, so the sample is a leading row range of each row group: selected
    /// directly, without decoding trace IDs or testing them row by row. The weight is the
    /// block's spans over its sampled spans (a ratio estimate per block: a block lying
    /// inside one interval contributes its exact span count to it). A block without the
    /// counts (written before them), or too small to hold a sampled trace, is read in full
    /// with weight 1.
    pub fn sampled(&self, buckets: usize) -> Self {
        Self {
            sample: Some(buckets),
            ..self.with_blocks(self.blocks.clone())
        }
    }

    fn with_blocks(&self, blocks: Vec<Arc<BlockMeta>>) -> Self {
        // Parts of blocks left out go too.
        let parts = self.parts.as_ref().map(|p| {
            let kept: std::collections::HashSet<uuid::Uuid> =
                blocks.iter().map(|b| b.block_id).collect();
            p.iter()
                .filter(|x| kept.contains(&x.block.block_id))
                .cloned()
                .collect()
        });
        Self {
            schema: self.schema.clone(),
            blocks,
            readers: self.readers.clone(),
            sample: self.sample,
            parts,
            parts_per_partition: self.parts_per_partition,
        }
    }

    /// The same table, its parts scanned `n` consecutive parts to a partition (partition `i`
    /// reads parts `i*n..(i+1)*n`): each partition still holds whole blocks or time slices.
    /// A search's wave on a cluster reads all its parts at once, and every partition is a
    /// task with a fixed cost in Ballista's scheduler and executors (module docs of
    /// `search::on_cluster`).
    pub(crate) fn parts_per_partition(mut self, n: usize) -> Self {
        self.parts_per_partition = n.max(1);
        self
    }

    /// `table` as a table of blocks, if it is one.
    pub fn of(table: &dyn TableProvider) -> Option<&Self> {
        (table as &dyn std::any::Any).downcast_ref()
    }

    /// The same table over only the blocks `keep` accepts; `None` when none is left.
    pub fn subset(&self, keep: &dyn Fn(&BlockMeta) -> bool) -> Option<Self> {
        let blocks: Vec<Arc<BlockMeta>> = self.blocks.iter().filter(|b| keep(b)).cloned().collect();
        (!blocks.is_empty()).then(|| self.with_blocks(blocks))
    }

    /// The same blocks with every top-level string column read as `Utf8View`: the Parquet
    /// reader then points into the page (or its dictionary) instead of copying each value out.
    /// Metrics scans use it. (A dictionary type was as fast on dictionary-encoded pages but
    /// rebuilt a dictionary for plain ones.)
    pub fn with_string_views(&self) -> Self {
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_data_type(string_view(f.data_type()))
            })
            .collect();
        Self {
            schema: Arc::new(Schema::new_with_metadata(
                fields,
                self.schema.metadata().clone(),
            )),
            ..self.with_blocks(self.blocks.clone())
        }
    }
}

/// A table of blocks as one that reads its string columns as views (the Parquet decoder then
/// points into pages instead of copying every value, as for `service_name` in the service
/// breakdowns and SQL's group-bys); other tables as they are.
pub fn string_views(table: Arc<dyn TableProvider>) -> Arc<dyn TableProvider> {
    match BlocksTable::of(table.as_ref()) {
        Some(blocks) => Arc::new(blocks.with_string_views()),
        None => table,
    }
}

/// `Utf8View` for `Utf8`, any other type as it is.
pub fn string_view(t: &DataType) -> DataType {
    match t {
        DataType::Utf8 => DataType::Utf8View,
        other => other.clone(),
    }
}

/// Groups blocks by their hot columns (equal hot columns ⇒ equal schema).
pub fn group_by_schema(blocks: &[Arc<BlockMeta>]) -> Vec<(Vec<HotColumn>, Vec<Arc<BlockMeta>>)> {
    let mut groups: BTreeMap<Vec<HotColumn>, Vec<Arc<BlockMeta>>> = BTreeMap::new();
    for b in blocks {
        groups
            .entry(b.hot_columns.clone())
            .or_default()
            .push(b.clone());
    }
    groups.into_iter().collect()
}

#[async_trait]
impl TableProvider for BlocksTable {
    fn schema(&self) -> SchemaRef {
        match self.sample {
            None => self.schema.clone(),
            Some(_) => {
                let mut fields: Vec<_> = self.schema.fields().iter().cloned().collect();
                fields.push(Arc::new(weight_field()));
                Arc::new(Schema::new_with_metadata(
                    fields,
                    self.schema.metadata().clone(),
                ))
            }
        }
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // DataFusion keeps the filter above the scan and also pushes it into the Parquet reader
        // (statistics, page index, bloom filters, late materialisation); a sampled scan
        // leaves it above.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let partitions = state.config().target_partitions().max(1);
        let n = partitions.min(self.blocks.len()).max(1);
        // Largest first onto the emptiest group keeps partitions even.
        let mut blocks = self.blocks.clone();
        blocks.sort_by_key(|b| std::cmp::Reverse(b.size));
        if let Some(buckets) = self.sample {
            // A limit stays in the plan above the scan, which need not honour it.
            return self
                .sampled_scan(state, projection, blocks, buckets, n)
                .await;
        }
        let groups: Vec<Vec<PartitionedFile>> = if let Some(parts) = &self.parts {
            parts
                .iter()
                .map(|p| match p.slice {
                    Some(i) => slice_file(&p.block, &self.schema, i),
                    None => Ok(block_file(&p.block, &self.schema)),
                })
                .collect::<crate::error::Result<Vec<_>>>()
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
                .chunks(self.parts_per_partition)
                .map(<[_]>::to_vec)
                .collect()
        } else {
            let mut groups = vec![Vec::new(); n];
            let mut load = vec![0u64; n];
            for b in blocks {
                let i = emptiest(&load);
                load[i] += b.size;
                groups[i].push(block_file(&b, &self.schema));
            }
            groups
        };
        // Built directly rather than through `ParquetFormat`, which would swap in its own
        // reader (footer without page index, a 512 KiB footer read per file). Filter pushdown
        // into the decoder follows the session (`QueryEngine::session` turns it on).
        let source = ParquetSource::new(TableSchema::from(self.schema.clone()))
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_parquet_file_reader_factory(self.readers.clone())
            .with_enable_page_index(true)
            .with_bloom_filter_on_read(true);
        let conf = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(conf))
    }
}

fn weight_field() -> Field {
    Field::new(SAMPLE_WEIGHT, DataType::Float64, false)
}

/// The index of the smallest load.
fn emptiest(load: &[u64]) -> usize {
    (0..load.len()).min_by_key(|&i| load[i]).unwrap_or(0)
}

impl BlocksTable {
    /// The scan of a sampled table: [`SampledScanExec`] over `blocks`, in `partitions` groups.
    async fn sampled_scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        blocks: Vec<Arc<BlockMeta>>,
        buckets: usize,
        partitions: usize,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let catalog = self.readers.catalog().clone();
        let schema = self.schema.clone();
        // Footers are fetched concurrently (cached after the first query), as a cold object
        // store answers each in tens of milliseconds.
        let planned: Vec<SampledBlock> = futures::stream::iter(blocks)
            .map(|b| {
                let (catalog, schema) = (catalog.clone(), schema.clone());
                async move {
                    let footer = catalog.scan_footer(&b, &schema).await?;
                    Ok::<_, crate::error::EngineError>(SampledBlock::plan(b, footer, buckets))
                }
            })
            .buffered(32)
            .try_collect()
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let mut groups: Vec<Vec<SampledBlock>> = vec![Vec::new(); partitions];
        let mut load = vec![0u64; partitions];
        for b in planned {
            let i = emptiest(&load);
            load[i] += b.bytes();
            groups[i].push(b);
        }
        let full = self.schema();
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..full.fields().len()).collect(),
        };
        let spec = SampledScanSpec {
            file_schema: self.schema.clone(),
            schema: Arc::new(full.project(&projection)?),
            projection,
            buckets,
            batch_size: state.config().batch_size(),
            groups: Vec::new(),
        };
        Ok(Arc::new(SampledScanExec::new(catalog, spec, groups)))
    }
}
