//! A block's footer as a sampled scan needs it: reader metadata already converted to the
//! scan's Arrow types, and the decoded trace-ID cuts.
//!
//! Converting the span table's Parquet schema (about 180 nodes) to Arrow costs more than
//! reading the few thousand rows a sampled scan takes from a block, and decoding the cuts
//! (base64 varints) costs a tenth of that again. Blocks are immutable, so both are done once
//! per block and cached next to the footer.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};

use super::trace_cuts::TraceCuts;

/// Reader metadata with a given Arrow schema, plus the block's trace-ID cuts.
#[derive(Debug)]
pub struct ScanFooter {
    /// The footer, page index and field levels for the scan's schema.
    pub reader: ArrowReaderMetadata,
    /// The cuts, when the block has them and they fit its row groups.
    pub cuts: Option<TraceCuts>,
}

impl ScanFooter {
    /// `footer` converted to `schema` (which must match the file's columns).
    pub fn try_new(
        footer: &ArrowReaderMetadata,
        schema: &SchemaRef,
    ) -> parquet::errors::Result<Self> {
        let md = footer.metadata();
        let reader = ArrowReaderMetadata::try_new(
            md.clone(),
            ArrowReaderOptions::new().with_schema(schema.clone()),
        )?;
        Ok(Self {
            reader,
            cuts: TraceCuts::from_footer(md),
        })
    }

    /// Whether this was converted to `schema`.
    pub fn has_schema(&self, schema: &SchemaRef) -> bool {
        Arc::ptr_eq(self.reader.schema(), schema) || self.reader.schema() == schema
    }

    /// Approximate heap bytes beyond the shared footer: the converted schema and field levels
    /// (a few hundred bytes per node) and the cuts.
    pub fn memory_size(&self) -> usize {
        let nodes = self.reader.parquet_schema().num_columns() * 2;
        nodes * 512 + self.cuts.as_ref().map_or(0, TraceCuts::memory_size)
    }
}
