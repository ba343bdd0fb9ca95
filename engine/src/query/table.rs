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
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::block::meta::BlockMeta;
use crate::catalog::Catalog;
use crate::query::block_reader::{BlockReaderFactory, block_file};
use crate::schema::{HotColumn, span_schema};

/// Where the object store is registered in a query session.
pub const STORE_URL: &str = "allegro://blocks";

/// Spans not yet in a block, for queries: the live head of one tenant.
pub trait LiveSpans: Send + Sync {
    /// The tenant's live spans as span-table batches without hot columns (every attribute in
    /// the overflow maps), nested sets computed per trace.
    fn live_batches(&self, tenant: &str) -> crate::error::Result<Vec<RecordBatch>>;
}

/// Blocks that share one schema, scanned as one table.
#[derive(Debug)]
pub struct BlocksTable {
    schema: SchemaRef,
    blocks: Vec<Arc<BlockMeta>>,
    readers: Arc<BlockReaderFactory>,
}

impl BlocksTable {
    /// A table over `catalog`'s `blocks`, which must all have `hot` columns.
    pub fn new(catalog: &Arc<Catalog>, hot: &[HotColumn], blocks: Vec<Arc<BlockMeta>>) -> Self {
        Self {
            schema: span_schema(hot),
            blocks,
            readers: Arc::new(BlockReaderFactory::new(catalog.clone())),
        }
    }

    /// `table` as a table of blocks, if it is one.
    pub fn of(table: &dyn TableProvider) -> Option<&Self> {
        (table as &dyn std::any::Any).downcast_ref()
    }

    /// The same table over only the blocks `keep` accepts; `None` when none is left.
    pub fn subset(&self, keep: &dyn Fn(&BlockMeta) -> bool) -> Option<Self> {
        let blocks: Vec<Arc<BlockMeta>> = self.blocks.iter().filter(|b| keep(b)).cloned().collect();
        (!blocks.is_empty()).then(|| Self {
            schema: self.schema.clone(),
            blocks,
            readers: self.readers.clone(),
        })
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
            blocks: self.blocks.clone(),
            readers: self.readers.clone(),
        }
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
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::common::Result<Vec<TableProviderFilterPushDown>> {
        // DataFusion keeps the filter above the scan and also pushes it into the Parquet reader
        // (statistics, page index, bloom filters, late materialisation).
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
        let mut groups: Vec<Vec<PartitionedFile>> =
            vec![Vec::new(); partitions.min(self.blocks.len()).max(1)];
        // Largest first onto the emptiest group keeps partitions even.
        let mut blocks = self.blocks.clone();
        blocks.sort_by_key(|b| std::cmp::Reverse(b.size));
        let mut load = vec![0u64; groups.len()];
        for b in blocks {
            let i = (0..load.len()).min_by_key(|&i| load[i]).unwrap_or(0);
            load[i] += b.size;
            groups[i].push(block_file(&b, &self.schema));
        }
        // Built directly rather than through `ParquetFormat`, which would swap in its own
        // reader (footer without page index, a 512 KiB footer read per file).
        let source = ParquetSource::new(self.schema.clone())
            .with_table_parquet_options(state.table_options().parquet.clone())
            .with_parquet_file_reader_factory(self.readers.clone())
            .with_enable_page_index(true)
            .with_bloom_filter_on_read(true)
            .with_pushdown_filters(true)
            .with_reorder_filters(true);
        let conf = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(conf))
    }
}
