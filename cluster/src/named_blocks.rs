//! A table of blocks as it arrives at the scheduler: blocks named by tenant and ID, whose metas
//! are found when the table is scanned (planning is async; decoding a plan is not).

use std::sync::Arc;

use allegro_engine::block::meta::BlockMeta;
use allegro_engine::catalog::Catalog;
use allegro_engine::query::table::BlocksTable;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};
use uuid::Uuid;

/// A [`BlocksTable`] by name; see the module docs.
#[derive(Debug)]
pub struct NamedBlocksTable {
    catalog: Arc<Catalog>,
    /// The table's schema, as the plan carries it (a sample's weight column included).
    schema: SchemaRef,
    blocks: Vec<(String, Uuid)>,
    sample: Option<usize>,
    parts: Option<Vec<(usize, Option<usize>)>>,
}

impl NamedBlocksTable {
    /// The table over `blocks` of `catalog`, with `schema`, sampled and split as given.
    pub fn new(
        catalog: Arc<Catalog>,
        schema: SchemaRef,
        blocks: Vec<(String, Uuid)>,
        sample: Option<usize>,
        parts: Option<Vec<(usize, Option<usize>)>>,
    ) -> Self {
        Self {
            catalog,
            schema,
            blocks,
            sample,
            parts,
        }
    }

    /// The blocks table itself, its metas read (cached by the catalog).
    async fn resolve(&self) -> Result<BlocksTable> {
        let metas: Vec<Arc<BlockMeta>> = futures::stream::iter(self.blocks.clone())
            .map(|(tenant, id)| {
                let catalog = self.catalog.clone();
                async move { catalog.block_meta(&tenant, &id).await }
            })
            .buffered(32)
            .try_collect()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // A sampled table's schema ends with its weight column, which the files do not hold.
        let file_schema = match self.sample {
            None => self.schema.clone(),
            Some(_) => {
                let n = self.schema.fields().len().saturating_sub(1);
                Arc::new(Schema::new_with_metadata(
                    self.schema.fields()[..n].to_vec(),
                    self.schema.metadata().clone(),
                ))
            }
        };
        BlocksTable::restore(
            &self.catalog,
            file_schema,
            metas,
            self.sample,
            self.parts.clone(),
        )
        .map_err(|e| DataFusionError::External(Box::new(e)))
    }
}

#[async_trait]
impl TableProvider for NamedBlocksTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // As the blocks table: kept above the scan, pushed into Parquet by the physical planner.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.resolve()
            .await?
            .scan(state, projection, filters, limit)
            .await
    }
}
