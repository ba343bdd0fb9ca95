//! The scan of a sampled [`BlocksTable`](super::table::BlocksTable): in each block, the
//! leading rows of every row group that hold the sampled traces.
//!
//! DataFusion's Parquet scan converts each file's Parquet schema to Arrow twice as it opens
//! it (on load, and again after coercing strings to views even when nothing changes) and
//! sets up pruning per file. With the span table's ~180 schema nodes that cost more than
//! reading the few thousand rows a sampled scan takes from a block, so a sampled query cost
//! a fixed share of an exact one whatever the rate. This node opens a block from its cached
//! [`ScanFooter`] and reads the chosen rows; nothing else. Filters stay in the plan above it
//! (the table's pushdown is `Inexact`): on a sample they run over few rows.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, RecordBatchOptions};
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    SendableRecordBatchStream,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::file::metadata::ParquetMetaData;

use crate::block::meta::BlockMeta;
use crate::block::object_reader::ObjectReader;
use crate::block::scan_footer::ScanFooter;
use crate::block::trace_cuts::TraceCuts;
use crate::catalog::Catalog;

/// What a sampled scan reads of one block.
#[derive(Debug, Clone)]
pub struct SampledBlock {
    meta: Arc<BlockMeta>,
    /// The footer the rows were planned from, which the read then uses.
    footer: Arc<ScanFooter>,
    rows: SampleRows,
}

impl SampledBlock {
    /// The rows of the traces in the lowest `buckets` trace-ID buckets: a leading range of each
    /// row group, weighted by the block's rows over the rows read. A block without cuts (written
    /// before them), or with no sampled trace, is read whole with weight 1.
    pub fn plan(meta: Arc<BlockMeta>, footer: Arc<ScanFooter>, buckets: usize) -> Self {
        let rows: Vec<usize> = footer
            .reader
            .metadata()
            .row_groups()
            .iter()
            .map(|rg| rg.num_rows().max(0) as usize)
            .collect();
        let rows = sample_rows(&rows, footer.cuts.as_ref(), buckets);
        Self { meta, footer, rows }
    }

    /// Bytes of the block's data this reads, roughly.
    pub fn bytes(&self) -> u64 {
        (self.meta.size as f64 * self.rows.share) as u64
    }
}

/// The rows of one block a sample reads.
#[derive(Debug, Clone, PartialEq)]
struct SampleRows {
    row_groups: Vec<usize>,
    /// Rows of `row_groups` (concatenated) to read; `None`: all of them.
    selection: Option<RowSelection>,
    /// Weight of each row read.
    weight: f64,
    /// Share of the block's rows read.
    share: f64,
}

/// The rows below `buckets` of row groups of `rows` rows with `cuts`; all of them, weighing
/// 1, without cuts or when none is below.
fn sample_rows(rows: &[usize], cuts: Option<&TraceCuts>, buckets: usize) -> SampleRows {
    let whole = SampleRows {
        row_groups: (0..rows.len()).collect(),
        selection: None,
        weight: 1.0,
        share: 1.0,
    };
    let Some(cuts) = cuts else {
        return whole;
    };
    let (mut row_groups, mut selectors) = (Vec::new(), Vec::new());
    let (mut kept, mut total) = (0usize, 0usize);
    for (rg, &n) in rows.iter().enumerate() {
        let below = (cuts.rows_below(rg, buckets).unwrap_or(0) as usize).min(n);
        total += n;
        if below == 0 {
            continue;
        }
        kept += below;
        row_groups.push(rg);
        selectors.push(RowSelector::select(below));
        if below < n {
            selectors.push(RowSelector::skip(n - below));
        }
    }
    if kept == 0 {
        return whole;
    }
    SampleRows {
        row_groups,
        selection: Some(RowSelection::from(selectors)),
        weight: total as f64 / kept as f64,
        share: kept as f64 / total as f64,
    }
}

/// A sampled scan as it travels to another node: its blocks by tenant and ID per partition,
/// and what their rows are planned from; the node finds each block's meta and footer itself
/// and plans the same rows ([`SampledBlock::plan`] is a function of the footer and buckets).
#[derive(Debug, Clone, PartialEq)]
pub struct SampledScanSpec {
    /// The blocks' file schema (footers are read against it).
    pub file_schema: SchemaRef,
    /// The scan's output schema.
    pub schema: SchemaRef,
    /// Output columns: indices into the file schema, or one past its end for the weight.
    pub projection: Vec<usize>,
    /// Trace-ID buckets kept.
    pub buckets: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Per partition, its blocks' `(tenant, block ID)`.
    pub groups: Vec<Vec<(String, uuid::Uuid)>>,
}

impl SampledScanSpec {
    /// Partition `partition` of the scan, planned over `catalog`'s blocks: the blocks' metas
    /// and footers found (cached), their sampled rows planned.
    pub async fn plan_partition(
        &self,
        catalog: &Arc<Catalog>,
        partition: usize,
    ) -> crate::error::Result<SampledScanExec> {
        let ids = self.groups.get(partition).cloned().unwrap_or_default();
        let planned: Vec<SampledBlock> = futures::stream::iter(ids)
            .map(|(tenant, id)| async move {
                let meta = catalog.block_meta(&tenant, &id).await?;
                let footer = catalog.scan_footer(&meta, &self.file_schema).await?;
                Ok::<_, crate::error::EngineError>(SampledBlock::plan(meta, footer, self.buckets))
            })
            .buffered(16)
            .try_collect()
            .await?;
        let mut spec = self.clone();
        spec.groups = vec![Vec::new()];
        Ok(SampledScanExec::new(catalog.clone(), spec, vec![planned]))
    }
}

/// Reads the sampled rows of blocks, `groups[i]` in partition `i`.
#[derive(Debug)]
pub struct SampledScanExec {
    catalog: Arc<Catalog>,
    /// What it scans; its `groups` name the blocks of `groups` below.
    spec: SampledScanSpec,
    groups: Vec<Vec<SampledBlock>>,
    props: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SampledScanExec {
    /// A scan of `spec` whose partition `i` reads `groups[i]`, planned.
    pub fn new(
        catalog: Arc<Catalog>,
        mut spec: SampledScanSpec,
        groups: Vec<Vec<SampledBlock>>,
    ) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(spec.schema.clone()),
            Partitioning::UnknownPartitioning(groups.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        spec.groups = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|b| (b.meta.tenant_id.clone(), b.meta.block_id))
                    .collect()
            })
            .collect();
        Self {
            catalog,
            spec,
            groups,
            props: Arc::new(props),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// What it scans, as it travels to another node.
    pub fn spec(&self) -> &SampledScanSpec {
        &self.spec
    }
}

impl DisplayAs for SampledScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let blocks: usize = self.groups.iter().map(Vec::len).sum();
        write!(
            f,
            "SampledScanExec: blocks={blocks}, partitions={}, projection={:?}",
            self.groups.len(),
            self.spec.projection
        )
    }
}

impl ExecutionPlan for SampledScanExec {
    fn name(&self) -> &str {
        "SampledScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let blocks = self.groups.get(partition).cloned().unwrap_or_default();
        // The reader returns the projected roots in file order.
        let file_columns = self.spec.file_schema.fields().len();
        let mut roots: Vec<usize> = self
            .spec
            .projection
            .iter()
            .copied()
            .filter(|&i| i < file_columns)
            .collect();
        roots.sort_unstable();
        roots.dedup();
        let read = Arc::new(BlockRead {
            catalog: self.catalog.clone(),
            file_columns,
            schema: schema.clone(),
            projection: self.spec.projection.clone(),
            roots,
            batch_size: self.spec.batch_size,
            bytes: MetricBuilder::new(&self.metrics).counter("bytes_scanned", partition),
        });
        // The next block's pages are fetched while this one decodes.
        let batches = futures::stream::iter(blocks)
            .map(move |b| read.clone().block(b))
            .buffered(2)
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// What every block read of one partition shares.
struct BlockRead {
    catalog: Arc<Catalog>,
    file_columns: usize,
    schema: SchemaRef,
    projection: Vec<usize>,
    /// The file columns of `projection`, sorted.
    roots: Vec<usize>,
    batch_size: usize,
    bytes: Count,
}

impl BlockRead {
    async fn block(self: Arc<Self>, b: SampledBlock) -> Result<Vec<RecordBatch>> {
        let (roots, footer, rows) = (&self.roots, &b.footer, b.rows);
        let reader = CountingReader {
            inner: self
                .catalog
                .checked_reader(self.catalog.store(), &b.meta)
                .await
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
            bytes: self.bytes.clone(),
        };
        let mask = ProjectionMask::roots(footer.reader.parquet_schema(), roots.iter().copied());
        let mut builder =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer.reader.clone())
                .with_projection(mask)
                .with_row_groups(rows.row_groups)
                .with_batch_size(self.batch_size);
        if let Some(sel) = rows.selection {
            builder = builder.with_row_selection(sel);
        }
        let read: Vec<RecordBatch> = builder.build()?.try_collect().await?;
        read.into_iter()
            .map(|batch| {
                let n = batch.num_rows();
                let columns = self
                    .projection
                    .iter()
                    .map(|&i| match roots.binary_search(&i) {
                        Ok(at) => Ok(batch.column(at).clone()),
                        Err(_) if i == self.file_columns => {
                            Ok(Arc::new(Float64Array::from_value(rows.weight, n)) as ArrayRef)
                        }
                        Err(_) => datafusion::common::internal_err!(
                            "sampled scan projection {i} outside the schema"
                        ),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let opts = RecordBatchOptions::new().with_row_count(Some(n));
                Ok(RecordBatch::try_new_with_options(
                    self.schema.clone(),
                    columns,
                    &opts,
                )?)
            })
            .collect()
    }
}

/// An [`ObjectReader`] that adds the bytes it fetches to a metric.
struct CountingReader {
    inner: ObjectReader,
    bytes: Count,
}

impl AsyncFileReader for CountingReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.bytes.add((range.end - range.start) as usize);
        self.inner.get_bytes(range)
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.bytes
            .add(ranges.iter().map(|r| (r.end - r.start) as usize).sum());
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        // Not reached: the builder is given the metadata.
        self.inner.get_metadata(options).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_the_leading_rows_of_each_row_group_weighted_per_block() {
        // Three row groups of 4, 3 and 2 rows with these trace-ID buckets (sorted in each).
        let rows = [4, 3, 2];
        let cuts = TraceCuts::from_buckets(&rows, &[0, 1, 5, 9, 2, 3, 700, 800, 900]).unwrap();
        // Below bucket 3: 2 rows of the first group, 1 of the second, none of the third.
        let got = sample_rows(&rows, Some(&cuts), 3);
        let want = SampleRows {
            row_groups: vec![0, 1],
            selection: Some(RowSelection::from(vec![
                RowSelector::select(2),
                RowSelector::skip(2),
                RowSelector::select(1),
                RowSelector::skip(2),
            ])),
            weight: 9.0 / 3.0,
            share: 3.0 / 9.0,
        };
        assert_eq!(got, want);
        // Everything below: whole groups, no skips, weight 1.
        let all = sample_rows(&rows, Some(&cuts), 1024);
        assert_eq!(all.row_groups, [0, 1, 2]);
        assert_eq!(all.weight, 1.0);
        assert_eq!(all.selection.map(|s| s.row_count()), Some(9));
        // No sampled trace, or no cuts: the whole block at weight 1.
        for s in [
            sample_rows(&rows, Some(&cuts), 0),
            sample_rows(&rows, None, 3),
        ] {
            assert_eq!(
                (s.row_groups, s.selection, s.weight),
                (vec![0, 1, 2], None, 1.0)
            );
        }
    }
}
