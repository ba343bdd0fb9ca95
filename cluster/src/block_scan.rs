//! A scan of blocks that can travel: the Parquet scan a block table plans, with the blocks its
//! files belong to named, so that an executor reads them through Allegro's block reader.
//!
//! DataFusion serializes a Parquet scan itself, but only what its protobuf holds: paths, byte
//! ranges, the predicate. Allegro's reader (footers from the catalog's cache, page checksums
//! verified) and the row groups of a time slice ride in each file's extensions, which do not
//! travel: an executor would read every block through DataFusion's plain reader, and a time
//! slice as its whole block, once per slice. So [`WrapBlockScans`], the scheduler's last
//! physical optimizer rule (after filters reached the scan), wraps every block scan in a
//! [`BlockScanExec`] that the codec encodes as the scan plus its files' blocks; an executor
//! finds each block's `meta.json` (cached) when it starts a partition, and scans as one
//! process does.
//!
//! Ballista's scheduler cuts each stage's plan down to the partitions of one task before it
//! sends it (`restrict_plan_to_partitions`): it rewrites the leaves it knows — file scans,
//! in-memory scans, shuffle readers — and leaves any other leaf whole. A task then runs its
//! plan's partitions `0..k` and expects them to be its global partitions. A block scan that
//! was a leaf stayed whole, so a task of partition 3 read the scan's partition 0: some
//! blocks were read twice and others never (every answer over 100 blocks counted each span
//! twice with one task slot per executor). So a [`BlockScanExec`] has a child Ballista does
//! restrict: an in-memory table with one row per partition holding that partition's global
//! index ([`partition_indexes`]). After restriction, local partition `j` reads the child's
//! row `j` and scans the global partition it names.

use std::fmt;
use std::sync::Arc;

use allegro_engine::block::meta::BlockMeta;
use allegro_engine::catalog::Catalog;
use allegro_engine::query::sampled_scan::SampledScanExec;
use allegro_engine::query::table::{STORE_URL, block_file, block_readers};

use crate::sampled_scan::SampledBlockScanExec;
use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::ParquetAccessPlan;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

/// A file of a block scan: the block it is the data of, and the row groups it reads when
/// not all (`(count, read)`).
#[derive(Debug, Clone, PartialEq)]
pub struct BlockFile {
    /// The block's tenant.
    pub tenant: String,
    /// The block's ID.
    pub block: Uuid,
    /// The block's row group count and the row groups read, for a time slice.
    pub row_groups: Option<(usize, Vec<usize>)>,
}

/// A block scan that can be sent to an executor; see the module docs.
#[derive(Debug)]
pub struct BlockScanExec {
    /// The Parquet scan. Where it was planned its files carry their metas; where it was
    /// decoded they do not, and [`BlockScanExec::execute`] finds them first.
    scan: Arc<DataSourceExec>,
    /// The files' blocks, per partition (as the scan's file groups).
    groups: Vec<Vec<BlockFile>>,
    /// The catalog metas are found in, where the scan was decoded.
    catalog: Option<Arc<Catalog>>,
    /// The global partition each of this node's partitions scans ([`partition_indexes`]),
    /// cut down to a task's partitions by Ballista's scheduler.
    indexes: Arc<dyn ExecutionPlan>,
    /// The scan's properties with as many partitions as `indexes` has.
    properties: Arc<PlanProperties>,
}

/// An in-memory table of `n` partitions, partition `i` one row holding `i`: the child of a
/// [`BlockScanExec`] that tells it, once Ballista has restricted it to a task, which global
/// partitions it runs.
pub fn partition_indexes(n: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "partition",
        DataType::UInt32,
        false,
    )]));
    let partitions = (0..n)
        .map(|i| {
            let index = u32::try_from(i).map_err(|_| {
                DataFusionError::Internal(format!("a block scan of {n} partitions"))
            })?;
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(UInt32Array::from(vec![index]))],
            )?;
            Ok(vec![batch])
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(MemorySourceConfig::try_new_exec(&partitions, schema, None)?)
}

/// The one child of a scan node `name` (its partition indexes), from `children`.
pub(crate) fn partition_indexes_of(
    children: Vec<Arc<dyn ExecutionPlan>>,
    name: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    let [indexes] = <[_; 1]>::try_from(children).map_err(|c| {
        DataFusionError::Internal(format!(
            "{name} takes one child (its partition indexes), not {}",
            c.len()
        ))
    })?;
    Ok(indexes)
}

/// The global partition the `local` partition of `indexes` names.
pub(crate) fn global_partition(indexes: &Arc<dyn ExecutionPlan>, local: usize) -> Result<usize> {
    let memory = indexes
        .downcast_ref::<DataSourceExec>()
        .and_then(|d| d.data_source().downcast_ref::<MemorySourceConfig>());
    let index = memory
        .and_then(|m| m.partitions().get(local))
        .and_then(|batches| batches.first())
        .and_then(|b| b.column(0).as_any().downcast_ref::<UInt32Array>())
        .filter(|a| a.len() == 1 && a.null_count() == 0)
        .map(|a| a.value(0) as usize);
    index.ok_or_else(|| {
        DataFusionError::Internal(format!(
            "a block scan's partition {local} does not name the partition it scans"
        ))
    })
}

/// `scan`'s properties with `partitions` partitions, of the same kind.
fn properties_for(scan: &dyn ExecutionPlan, partitions: usize) -> Arc<PlanProperties> {
    let props = scan.properties().as_ref().clone();
    let partitioning = match props.output_partitioning() {
        Partitioning::Hash(exprs, _) => Partitioning::Hash(exprs.clone(), partitions),
        Partitioning::RoundRobinBatch(_) => Partitioning::RoundRobinBatch(partitions),
        _ => Partitioning::UnknownPartitioning(partitions),
    };
    Arc::new(props.with_partitioning(partitioning))
}

impl BlockScanExec {
    /// `scan`, planned here, whose files are `groups`' blocks; every partition of it.
    pub fn planned(scan: Arc<DataSourceExec>, groups: Vec<Vec<BlockFile>>) -> Result<Self> {
        let indexes = partition_indexes(groups.len())?;
        Ok(Self::new(scan, groups, None, indexes))
    }

    /// `scan`, decoded on an executor, whose files' blocks are `groups` and are found in
    /// `catalog`, running the global partitions `indexes` names.
    pub fn decoded(
        scan: Arc<DataSourceExec>,
        groups: Vec<Vec<BlockFile>>,
        catalog: Arc<Catalog>,
        indexes: Arc<dyn ExecutionPlan>,
    ) -> Self {
        Self::new(scan, groups, Some(catalog), indexes)
    }

    fn new(
        scan: Arc<DataSourceExec>,
        groups: Vec<Vec<BlockFile>>,
        catalog: Option<Arc<Catalog>>,
        indexes: Arc<dyn ExecutionPlan>,
    ) -> Self {
        let partitions = indexes.properties().output_partitioning().partition_count();
        let properties = properties_for(scan.as_ref(), partitions);
        Self {
            scan,
            groups,
            catalog,
            indexes,
            properties,
        }
    }

    /// The Parquet scan inside.
    pub fn scan(&self) -> &Arc<DataSourceExec> {
        &self.scan
    }

    /// The files' blocks, per partition.
    pub fn groups(&self) -> &[Vec<BlockFile>] {
        &self.groups
    }

    /// `exec` as a block scan, with its files' blocks, when it is one: a Parquet scan of
    /// Allegro's store whose every file carries its block's meta.
    pub fn of(exec: &DataSourceExec) -> Option<Vec<Vec<BlockFile>>> {
        let conf = exec.data_source().downcast_ref::<FileScanConfig>()?;
        if ObjectStoreUrl::parse(STORE_URL).ok()? != conf.object_store_url {
            return None;
        }
        conf.file_groups
            .iter()
            .map(|g| g.files().iter().map(block_of).collect::<Option<Vec<_>>>())
            .collect()
    }
}

/// The block `f` is the data of, from its extensions.
fn block_of(f: &PartitionedFile) -> Option<BlockFile> {
    let meta = f.extensions.get_arc::<BlockMeta>()?;
    let row_groups = f
        .extensions
        .get::<ParquetAccessPlan>()
        .map(|p| (p.len(), p.row_group_indexes()));
    Some(BlockFile {
        tenant: meta.tenant_id.clone(),
        block: meta.block_id,
        row_groups,
    })
}

/// The scan file of `file` over `meta`, as the block table made it, keeping what DataFusion
/// did to the decoded one since (a byte range, statistics).
fn restored(
    meta: Arc<BlockMeta>,
    file: &BlockFile,
    decoded: &PartitionedFile,
    conf: &FileScanConfig,
) -> PartitionedFile {
    let mut f = block_file(&meta, conf.file_schema());
    f.range = decoded.range.clone();
    f.statistics = decoded.statistics.clone();
    f.partition_values = decoded.partition_values.clone();
    if let Some((count, read)) = &file.row_groups {
        let mut plan = ParquetAccessPlan::new_none(*count);
        for &g in read {
            plan.scan(g);
        }
        f.extensions.insert(plan);
    }
    f
}

impl DisplayAs for BlockScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let files: usize = self.groups.iter().map(Vec::len).sum();
        write!(f, "BlockScanExec: files={files}, ")?;
        self.scan.fmt_as(t, f)
    }
}

impl ExecutionPlan for BlockScanExec {
    fn name(&self) -> &str {
        "BlockScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.indexes]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.scan.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indexes = partition_indexes_of(children, "BlockScanExec")?;
        Ok(Arc::new(Self::new(
            self.scan.clone(),
            self.groups.clone(),
            self.catalog.clone(),
            indexes,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partition = global_partition(&self.indexes, partition)?;
        let Some(catalog) = self.catalog.clone() else {
            return self.scan.execute(partition, context);
        };
        let conf = self
            .scan
            .data_source()
            .downcast_ref::<FileScanConfig>()
            .ok_or_else(|| {
                DataFusionError::Internal("a block scan that is not a file scan".into())
            })?
            .clone();
        let (Some(files), Some(decoded)) =
            (self.groups.get(partition), conf.file_groups.get(partition))
        else {
            return Err(DataFusionError::Internal(format!(
                "block scan partition {partition} of {}",
                self.groups.len()
            )));
        };
        let (files, decoded) = (files.clone(), decoded.files().to_vec());
        let schema = self.schema();
        let start = async move {
            let metas: Vec<Arc<BlockMeta>> = futures::stream::iter(files.clone())
                .map(|f| {
                    let catalog = catalog.clone();
                    async move { catalog.block_meta(&f.tenant, &f.block).await }
                })
                .buffered(16)
                .try_collect()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let mut group: Vec<PartitionedFile> = metas
                .into_iter()
                .zip(files.iter().zip(&decoded))
                .map(|(m, (f, d))| restored(m, f, d, &conf))
                .collect();
            let source = conf
                .file_source()
                .downcast_ref::<ParquetSource>()
                .ok_or_else(|| {
                    DataFusionError::Internal("a block scan that is not a Parquet scan".into())
                })?
                .clone()
                .with_parquet_file_reader_factory(block_readers(&catalog));
            // Only this task's partition holds files: DataFusion lets a partition's stream take
            // files of its sibling partitions once its own are read (work stealing), and on an
            // executor the siblings are other tasks, elsewhere, reading those files themselves.
            let mut conf = conf;
            conf.file_source = Arc::new(source);
            for (i, g) in conf.file_groups.iter_mut().enumerate() {
                *g = FileGroup::new(if i == partition {
                    std::mem::take(&mut group)
                } else {
                    Vec::new()
                });
            }
            DataSourceExec::from_data_source(conf).execute(partition, context)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(start).try_flatten(),
        )))
    }
}

/// Wraps every block scan of a plan in a [`BlockScanExec`], and every sampled scan in a
/// [`SampledBlockScanExec`]; see the module docs. Runs last,
/// so the scans it wraps are final (filters pushed in, files split as they will be read).
#[derive(Debug, Default)]
pub struct WrapBlockScans;

impl PhysicalOptimizerRule for WrapBlockScans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(sampled) = node.downcast_ref::<SampledScanExec>() {
                return Ok(Transformed::yes(Arc::new(SampledBlockScanExec::planned(
                    Arc::new(sampled.spec().clone()),
                    node.clone(),
                )?)));
            }
            let Some(scan) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            match BlockScanExec::of(scan) {
                Some(groups) => {
                    let scan = Arc::new(scan.clone());
                    Ok(Transformed::yes(Arc::new(BlockScanExec::planned(
                        scan, groups,
                    )?)))
                }
                None => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "wrap_block_scans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
