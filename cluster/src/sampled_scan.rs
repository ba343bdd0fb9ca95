//! A sampled scan of blocks that can travel: what `with(sample=…)` TraceQL metrics read, a
//! leading row range of each row group per block (`SampledScanExec`), sent to an executor
//! as its blocks' names and sampling, not as rows planned here.
//!
//! The rows a sample reads follow from a block's footer and the trace-ID buckets kept
//! ([`allegro_engine::query::sampled_scan::SampledBlock::plan`]), so an executor finds each
//! block's meta and footer in the store (cached) and plans the same rows. Like a
//! [`crate::block_scan::BlockScanExec`], the node has a child Ballista cuts to a task's
//! partitions, which names the global partition each of the task's partitions reads.

use std::fmt;
use std::sync::Arc;

use allegro_engine::catalog::Catalog;
use allegro_engine::query::sampled_scan::SampledScanSpec;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::TryStreamExt;

use crate::block_scan::{global_partition, partition_indexes, partition_indexes_of};

/// A sampled scan that can be sent to an executor; see the module docs.
#[derive(Debug)]
pub struct SampledBlockScanExec {
    spec: Arc<SampledScanSpec>,
    /// Where it was planned: the scan itself. Where it was decoded: `None`, and `catalog`.
    planned: Option<Arc<dyn ExecutionPlan>>,
    catalog: Option<Arc<Catalog>>,
    /// The global partition each of this node's partitions reads.
    indexes: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl SampledBlockScanExec {
    /// `scan` (a [`SampledScanExec`] of `spec`), planned here; every partition of it.
    pub fn planned(spec: Arc<SampledScanSpec>, scan: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let partitions = scan.properties().output_partitioning().partition_count();
        Ok(Self::new(
            spec,
            Some(scan),
            None,
            partition_indexes(partitions)?,
        ))
    }

    fn new(
        spec: Arc<SampledScanSpec>,
        planned: Option<Arc<dyn ExecutionPlan>>,
        catalog: Option<Arc<Catalog>>,
        indexes: Arc<dyn ExecutionPlan>,
    ) -> Self {
        let mut s = Self {
            spec,
            planned,
            catalog,
            indexes,
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(Arc::new(Schema::empty())),
                Partitioning::UnknownPartitioning(0),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
        };
        s.properties = s.properties_now();
        s
    }

    /// The scan of `spec`, decoded on an executor over `catalog`'s blocks, running the global
    /// partitions `indexes` names.
    pub fn decoded(
        spec: Arc<SampledScanSpec>,
        catalog: Arc<Catalog>,
        indexes: Arc<dyn ExecutionPlan>,
    ) -> Self {
        Self::new(spec, None, Some(catalog), indexes)
    }

    /// What it scans.
    pub fn spec(&self) -> &SampledScanSpec {
        &self.spec
    }

    /// Its properties: a sampled scan's, with as many partitions as `indexes` names.
    fn properties_now(&self) -> Arc<PlanProperties> {
        let partitions = self
            .indexes
            .properties()
            .output_partitioning()
            .partition_count();
        Arc::new(PlanProperties::new(
            EquivalenceProperties::new(self.spec.schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ))
    }
}

impl DisplayAs for SampledBlockScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let blocks: usize = self.spec.groups.iter().map(Vec::len).sum();
        write!(
            f,
            "SampledBlockScanExec: blocks={blocks}, buckets={}, projection={:?}",
            self.spec.buckets, self.spec.projection
        )
    }
}

impl ExecutionPlan for SampledBlockScanExec {
    fn name(&self) -> &str {
        "SampledBlockScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.indexes]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indexes = partition_indexes_of(children, "SampledBlockScanExec")?;
        Ok(Arc::new(Self::new(
            self.spec.clone(),
            self.planned.clone(),
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
        if let Some(scan) = &self.planned {
            return scan.execute(partition, context);
        }
        let Some(catalog) = self.catalog.clone() else {
            return Err(DataFusionError::Internal(
                "a sampled scan with neither its plan nor a store".into(),
            ));
        };
        let spec = self.spec.clone();
        let schema = self.spec.schema.clone();
        let start = async move {
            let scan = spec
                .plan_partition(&catalog, partition)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            scan.execute(0, context)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(start).try_flatten(),
        )))
    }
}
