//! How Allegro's nodes travel in a physical plan from the scheduler to an executor: block
//! scans (see [`crate::block_scan`]), sampled scans, scans of served rows
//! ([`crate::served_rows`]) and the per-trace stage of searches and metrics
//! (`TraceFilterExec`). Everything else, Ballista's shuffle nodes first, is Ballista's.

use std::sync::Arc;

use allegro_engine::catalog::{Catalog, IncompleteTraces};
use allegro_engine::ids::TraceId;
use allegro_engine::query::sampled_scan::SampledScanSpec;
use allegro_engine::query::search::trace_filter::{Pass, TraceFilterExec};
use allegro_udfs::spansets::program::Program;
use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf::PhysicalPlanNode;
use prost::Message;

use crate::block_scan::{BlockFile, BlockScanExec, partition_indexes_of};
use crate::logical_codec::block_id;
use crate::sampled_scan::SampledBlockScanExec;
use crate::served_rows::{self, ServedRowsExec};
use crate::wire;

/// Allegro's physical extension codec; see the module docs.
#[derive(Debug)]
pub struct AllegroPhysicalCodec {
    /// Where decoded scans find their blocks (an executor's store); `None` on a node that only
    /// encodes.
    catalog: Option<Arc<Catalog>>,
    ballista: BallistaPhysicalExtensionCodec,
}

impl AllegroPhysicalCodec {
    /// A codec whose decoded scans read `catalog`'s blocks.
    pub fn new(catalog: Option<Arc<Catalog>>) -> Self {
        Self {
            catalog,
            ballista: BallistaPhysicalExtensionCodec::default(),
        }
    }

    fn decode_scan(
        &self,
        body: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (indexes, catalog) = self.scan_inputs(inputs, "a block scan")?;
        let msg: wire::BlockScan = wire::decode("block scan", body)?;
        let node = PhysicalPlanNode::decode(msg.scan.as_slice())
            .map_err(|e| DataFusionError::Internal(format!("malformed block scan: {e}")))?;
        let plan =
            converter.proto_to_execution_plan(&node, &PhysicalPlanDecodeContext::new(ctx, self))?;
        let Some(scan) = plan.downcast_ref::<DataSourceExec>() else {
            return Err(DataFusionError::Internal(format!(
                "a block scan decoded as {}",
                plan.name()
            )));
        };
        let groups = per_file(&msg.groups, "a block scan", |f, block| {
            Ok(BlockFile {
                tenant: block.tenant.clone(),
                block: block_id(block)?,
                row_groups: f.row_group_count.map(|n| {
                    (
                        n as usize,
                        f.row_groups.iter().map(|&g| g as usize).collect(),
                    )
                }),
            })
        })?;
        Ok(Arc::new(BlockScanExec::decoded(
            Arc::new(scan.clone()),
            groups,
            catalog,
            indexes,
        )))
    }
}

impl AllegroPhysicalCodec {
    /// A decoded scan's partition indexes (its one input) and the store it reads.
    fn scan_inputs(
        &self,
        inputs: &[Arc<dyn ExecutionPlan>],
        what: &str,
    ) -> Result<(Arc<dyn ExecutionPlan>, Arc<Catalog>)> {
        let [indexes] = inputs else {
            return Err(DataFusionError::Internal(format!(
                "{what} with {} inputs, not its partition indexes",
                inputs.len()
            )));
        };
        let Some(catalog) = self.catalog.clone() else {
            return Err(DataFusionError::Internal(format!(
                "{what} arrived where no block store is configured"
            )));
        };
        Ok((indexes.clone(), catalog))
    }

    fn decode_sampled(
        &self,
        body: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (indexes, catalog) = self.scan_inputs(inputs, "a sampled scan")?;
        let msg: wire::SampledScan = wire::decode("sampled scan", body)?;
        let groups = per_file(&msg.groups, "a sampled scan", |_, block| {
            Ok((block.tenant.clone(), block_id(block)?))
        })?;
        let spec = SampledScanSpec {
            file_schema: schema_of(&msg.file_schema)?,
            schema: schema_of(&msg.schema)?,
            projection: msg.projection.iter().map(|&i| i as usize).collect(),
            buckets: msg.buckets as usize,
            batch_size: msg.batch_size as usize,
            groups,
        };
        Ok(Arc::new(SampledBlockScanExec::decoded(
            Arc::new(spec),
            catalog,
            indexes,
        )))
    }
}

/// Each group's files as `T`s (`f` of the file and the block it names); `what` names the
/// scan in the error when a file names no block.
fn per_file<T>(
    groups: &[wire::ScanGroup],
    what: &str,
    f: impl Fn(&wire::ScanFile, &wire::BlockRef) -> Result<T>,
) -> Result<Vec<Vec<T>>> {
    groups
        .iter()
        .map(|g| {
            g.files
                .iter()
                .map(|file| {
                    let block = file.block.as_ref().ok_or_else(|| {
                        DataFusionError::Internal(format!("{what} file without its block"))
                    })?;
                    f(file, block)
                })
                .collect()
        })
        .collect()
}

/// A per-trace stage as it travels.
fn trace_filter(f: &TraceFilterExec) -> Result<wire::TraceFilter> {
    let program = serde_json::to_string(f.program())
        .map_err(|e| DataFusionError::Internal(format!("a search program as JSON: {e}")))?;
    let mut split: Vec<[u8; 16]> = f.split().iter().map(|id| id.0).collect();
    split.sort_unstable();
    let (limit, matched_spans) = match f.pass() {
        Pass::BestTraces(n) => (n as u64, false),
        Pass::MatchedSpans => (0, true),
    };
    Ok(wire::TraceFilter {
        program,
        split: split.concat(),
        limit,
        matched_spans,
    })
}

/// A per-trace stage over its decoded input.
fn decode_trace_filter(
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let msg: wire::TraceFilter = wire::decode("trace filter", body)?;
    let [input] = inputs else {
        return Err(DataFusionError::Internal(format!(
            "a trace filter with {} inputs",
            inputs.len()
        )));
    };
    let program: Program = serde_json::from_str(&msg.program)
        .map_err(|e| DataFusionError::Internal(format!("malformed search program: {e}")))?;
    if !msg.split.len().is_multiple_of(16) {
        return Err(DataFusionError::Internal(
            "malformed trace filter: split trace IDs not 16 bytes each".into(),
        ));
    }
    let split: IncompleteTraces = msg
        .split
        .chunks_exact(16)
        .map(|id| TraceId::from_bytes(id).map_err(|e| DataFusionError::External(Box::new(e))))
        .collect::<Result<_>>()?;
    Ok(Arc::new(TraceFilterExec::new(
        input.clone(),
        Arc::new(program),
        Arc::new(split),
        match msg.matched_spans {
            true => Pass::MatchedSpans,
            false => Pass::BestTraces(usize::try_from(msg.limit).unwrap_or(usize::MAX)),
        },
    )))
}

/// A scan of served rows, fetching the global partitions its one input names.
fn decode_served_scan(
    body: &[u8],
    inputs: &[Arc<dyn ExecutionPlan>],
) -> Result<Arc<dyn ExecutionPlan>> {
    let msg: wire::ServedScan = wire::decode("served scan", body)?;
    let indexes = partition_indexes_of(inputs.to_vec(), "ServedRowsExec")?;
    let Some(table) = &msg.table else {
        return Err(DataFusionError::Internal(
            "a served scan that names no table".into(),
        ));
    };
    Ok(Arc::new(ServedRowsExec::new(
        served_rows::from_wire(table)?,
        schema_of(&msg.schema)?,
        msg.projected
            .then(|| msg.projection.iter().map(|&i| i as usize).collect()),
        indexes,
    )))
}

/// `schema` as an empty Arrow IPC stream.
fn schema_bytes(schema: &SchemaRef) -> Result<Vec<u8>> {
    let mut w = StreamWriter::try_new(Vec::new(), schema)?;
    w.finish()?;
    Ok(w.into_inner()?)
}

/// The schema of an empty Arrow IPC stream.
fn schema_of(bytes: &[u8]) -> Result<SchemaRef> {
    Ok(StreamReader::try_new(bytes, None)?.schema())
}

impl PhysicalExtensionCodec for AllegroPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match wire::unframe(buf) {
            Some((wire::KIND_BLOCK_SCAN, body)) => self.decode_scan(body, inputs, ctx, converter),
            Some((wire::KIND_SAMPLED_SCAN, body)) => self.decode_sampled(body, inputs),
            Some((wire::KIND_TRACE_FILTER, body)) => decode_trace_filter(body, inputs),
            Some((wire::KIND_SERVED_SCAN, body)) => decode_served_scan(body, inputs),
            _ => self.ballista.try_decode(buf, inputs, ctx, converter),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(sampled) = node.downcast_ref::<SampledBlockScanExec>() {
            let spec = sampled.spec();
            let index = |i: usize| {
                u32::try_from(i).map_err(|_| {
                    DataFusionError::Internal(format!("a sampled scan's value {i} is too large"))
                })
            };
            let msg = wire::SampledScan {
                file_schema: schema_bytes(&spec.file_schema)?,
                schema: schema_bytes(&spec.schema)?,
                projection: spec
                    .projection
                    .iter()
                    .map(|&i| index(i))
                    .collect::<Result<_>>()?,
                buckets: index(spec.buckets)?,
                batch_size: index(spec.batch_size)?,
                groups: spec
                    .groups
                    .iter()
                    .map(|g| wire::ScanGroup {
                        files: g
                            .iter()
                            .map(|(tenant, id)| wire::ScanFile {
                                block: Some(wire::BlockRef {
                                    tenant: tenant.clone(),
                                    id: id.as_bytes().to_vec(),
                                }),
                                row_group_count: None,
                                row_groups: Vec::new(),
                            })
                            .collect(),
                    })
                    .collect(),
            };
            wire::frame(wire::KIND_SAMPLED_SCAN, &msg, buf);
            return Ok(());
        }
        if let Some(filter) = node.downcast_ref::<TraceFilterExec>() {
            wire::frame(wire::KIND_TRACE_FILTER, &trace_filter(filter)?, buf);
            return Ok(());
        }
        if let Some(served) = node.downcast_ref::<ServedRowsExec>() {
            let msg = wire::ServedScan {
                table: Some(served_rows::to_wire(served.served())),
                schema: schema_bytes(&served.schema())?,
                projection: served
                    .projection()
                    .into_iter()
                    .flatten()
                    .map(|&i| i as u32)
                    .collect(),
                projected: served.projection().is_some(),
            };
            wire::frame(wire::KIND_SERVED_SCAN, &msg, buf);
            return Ok(());
        }
        let Some(scan) = node.downcast_ref::<BlockScanExec>() else {
            return self.ballista.try_encode(node, buf, converter);
        };
        let inner: Arc<dyn ExecutionPlan> = scan.scan().clone();
        let msg = wire::BlockScan {
            scan: converter
                .execution_plan_to_proto(&inner, self)?
                .encode_to_vec(),
            groups: scan
                .groups()
                .iter()
                .map(|g| wire::ScanGroup {
                    files: g
                        .iter()
                        .map(|f| wire::ScanFile {
                            block: Some(wire::BlockRef {
                                tenant: f.tenant.clone(),
                                id: f.block.as_bytes().to_vec(),
                            }),
                            row_group_count: f.row_groups.as_ref().map(|(n, _)| *n as u32),
                            row_groups: f
                                .row_groups
                                .as_ref()
                                .map(|(_, r)| r.iter().map(|&g| g as u32).collect())
                                .unwrap_or_default(),
                        })
                        .collect(),
                })
                .collect(),
        };
        wire::frame(wire::KIND_BLOCK_SCAN, &msg, buf);
        Ok(())
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}
