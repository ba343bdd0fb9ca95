//! How Allegro's tables travel in a logical plan from the process that planned a query to the
//! scheduler: a table of blocks as its blocks' names, a table of rows (the live head, an
//! empty tenant, `traceql()` matches) as its rows or, when this process serves rows to
//! executors, as where to fetch them ([`crate::served_rows`]), TraceQL's per-span table (`SpansTable`,
//! which is a physical plan: every input translated for its block) as that plan, its block
//! scans wrapped as the scheduler wraps them ([`crate::block_scan`]). Everything else is
//! Ballista's.

use std::sync::Arc;

use allegro_engine::catalog::Catalog;
use allegro_engine::query::spans_table::SpansTable;
use allegro_engine::query::table::BlocksTable;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use uuid::Uuid;

use crate::block_scan::WrapBlockScans;
use crate::named_blocks::NamedBlocksTable;
use crate::physical_codec::AllegroPhysicalCodec;
use crate::served_rows::{self, RowsServer, ServedRowsTable};
use crate::wire;

/// Allegro's logical extension codec; see the module docs.
#[derive(Debug)]
pub struct AllegroLogicalCodec {
    /// Where decoded tables find their blocks (the scheduler's store); `None` on a node that
    /// only encodes.
    catalog: Option<Arc<Catalog>>,
    /// Where this process serves the rows of its tables of rows to executors; without it,
    /// they travel inside the plan.
    rows: Option<Arc<RowsServer>>,
    ballista: BallistaLogicalExtensionCodec,
}

impl AllegroLogicalCodec {
    /// A codec whose decoded tables read `catalog`'s blocks.
    pub fn new(catalog: Option<Arc<Catalog>>) -> Self {
        Self {
            catalog,
            rows: None,
            ballista: BallistaLogicalExtensionCodec::default(),
        }
    }

    /// This codec, sending tables of rows as references to `rows` (see [`crate::served_rows`]).
    pub fn serving_rows(mut self, rows: Arc<RowsServer>) -> Self {
        self.rows = Some(rows);
        self
    }

    /// The rows of `t`, per partition (the batches shared, not copied).
    fn partitions(t: &MemTable) -> Result<Vec<Vec<RecordBatch>>> {
        t.batches
            .iter()
            .map(|p| {
                p.try_read().map(|b| b.clone()).map_err(|_| {
                    DataFusionError::Internal("a table of rows is being written to".into())
                })
            })
            .collect()
    }

    fn blocks_table(t: &BlocksTable) -> wire::BlocksTable {
        let blocks = t.blocks();
        let index: std::collections::HashMap<Uuid, usize> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (b.block_id, i))
            .collect();
        wire::BlocksTable {
            blocks: blocks
                .iter()
                .map(|b| wire::BlockRef {
                    tenant: b.tenant_id.clone(),
                    id: b.block_id.as_bytes().to_vec(),
                })
                .collect(),
            sample: t.sample_buckets().map(|b| b as u64),
            per_part: t.is_per_part(),
            parts: t
                .parts()
                .iter()
                .filter_map(|p| {
                    Some(wire::Part {
                        block: *index.get(&p.block.block_id)? as u32,
                        slice: p.slice.map(|s| s as u32),
                    })
                })
                .collect(),
        }
    }

    fn rows_table(partitions: &[Vec<RecordBatch>], schema: &SchemaRef) -> Result<wire::RowsTable> {
        let mut encoded = Vec::with_capacity(partitions.len());
        for batches in partitions {
            let mut buf = Vec::new();
            let mut w = StreamWriter::try_new(&mut buf, schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            encoded.push(buf);
        }
        Ok(wire::RowsTable {
            partitions: encoded,
        })
    }
}

/// The block ID in `r`.
pub(crate) fn block_id(r: &wire::BlockRef) -> Result<Uuid> {
    Uuid::from_slice(&r.id)
        .map_err(|e| DataFusionError::Internal(format!("malformed block ID in a plan: {e}")))
}

impl LogicalExtensionCodec for AllegroLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match wire::unframe(buf) {
            Some((wire::KIND_BLOCKS_TABLE, body)) => {
                let t: wire::BlocksTable = wire::decode("table of blocks", body)?;
                let Some(catalog) = self.catalog.clone() else {
                    return Err(DataFusionError::Internal(
                        "a table of blocks arrived where no block store is configured".into(),
                    ));
                };
                let blocks = t
                    .blocks
                    .iter()
                    .map(|b| Ok((b.tenant.clone(), block_id(b)?)))
                    .collect::<Result<Vec<_>>>()?;
                let parts = t.per_part.then(|| {
                    t.parts
                        .iter()
                        .map(|p| (p.block as usize, p.slice.map(|s| s as usize)))
                        .collect()
                });
                Ok(Arc::new(NamedBlocksTable::new(
                    catalog,
                    schema,
                    blocks,
                    t.sample.map(|s| s as usize),
                    parts,
                )))
            }
            Some((wire::KIND_ROWS_TABLE, body)) => {
                let t: wire::RowsTable = wire::decode("table of rows", body)?;
                let mut partitions = Vec::with_capacity(t.partitions.len());
                for p in &t.partitions {
                    let reader = StreamReader::try_new(p.as_slice(), None)?;
                    partitions.push(reader.collect::<Result<Vec<RecordBatch>, _>>()?);
                }
                if partitions.is_empty() {
                    partitions.push(Vec::new());
                }
                Ok(Arc::new(MemTable::try_new(schema, partitions)?))
            }
            Some((wire::KIND_SERVED_TABLE, body)) => {
                let t: wire::ServedTable = wire::decode("served table", body)?;
                Ok(Arc::new(ServedRowsTable::new(
                    served_rows::from_wire(&t)?,
                    schema,
                )))
            }
            Some((wire::KIND_PLANNED_TABLE, body)) => {
                let t: wire::PlannedTable = wire::decode("planned table", body)?;
                let codec = AllegroPhysicalCodec::new(self.catalog.clone());
                let plan = physical_plan_from_bytes_with_extension_codec(&t.plan, ctx, &codec)?;
                Ok(Arc::new(SpansTable::from_plan(plan)))
            }
            _ => self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(t) = BlocksTable::of(node.as_ref()) {
            wire::frame(wire::KIND_BLOCKS_TABLE, &Self::blocks_table(t), buf);
            return Ok(());
        }
        if let Some(t) = (node.as_ref() as &dyn std::any::Any).downcast_ref::<MemTable>() {
            // Served when this process serves rows and the table is big enough; else inline.
            let partitions = Self::partitions(t)?;
            let served = self
                .rows
                .as_ref()
                .and_then(|r| r.register(node.schema(), partitions.clone()));
            match served {
                Some(at) => wire::frame(wire::KIND_SERVED_TABLE, &served_rows::to_wire(&at), buf),
                None => {
                    let rows = Self::rows_table(&partitions, &node.schema())?;
                    wire::frame(wire::KIND_ROWS_TABLE, &rows, buf);
                }
            }
            return Ok(());
        }
        if let Some(t) = (node.as_ref() as &dyn std::any::Any).downcast_ref::<SpansTable>() {
            let plan = WrapBlockScans.optimize(t.plan().clone(), &Default::default())?;
            let codec = AllegroPhysicalCodec::new(None);
            let plan = physical_plan_to_bytes_with_extension_codec(plan, &codec)?.to_vec();
            wire::frame(wire::KIND_PLANNED_TABLE, &wire::PlannedTable { plan }, buf);
            return Ok(());
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
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
