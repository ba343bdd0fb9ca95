//! What a query reads: the tenant's blocks in range, grouped by schema into tables, and the
//! live head, each with what its metadata says about attribute keys and types (for the
//! translator) and about its time range and incomplete traces (for newest-first search).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, AsArray, FixedSizeBinaryArray, RecordBatch};
use arrow::datatypes::Int32Type;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;

use super::plan::Range;
use super::table::{BlocksTable, group_by_schema};
use super::translate::{KnownKeys, KnownTypes, Translator};
use super::{QueryEngine, df_err};
use crate::block::meta::BlockMeta;
use crate::catalog::IncompleteTraces;
use crate::error::Result;
use crate::hot::AttributeKeys;
use crate::ids::TraceId;
use crate::schema::{AttrScope, HotColumn, col as c};
use crate::tempopb::SearchMetrics;

/// One searchable table: its hot columns and provider.
pub(crate) struct Source {
    pub(crate) hot: Vec<HotColumn>,
    /// Keys that may hold arrays (`None`: unknown, any may).
    pub(crate) others: Option<HashSet<(AttrScope, String)>>,
    /// Attribute keys present per scope (`None`: unknown).
    pub(crate) keys: Option<KnownKeys>,
    /// Scalar types per attribute key (`None`: unknown).
    pub(crate) types: Option<KnownTypes>,
    pub(crate) table: Arc<dyn TableProvider>,
}

impl Source {
    /// The same source read through `table` (the same data, scanned differently).
    pub(crate) fn with_table(&self, table: Arc<dyn TableProvider>) -> Source {
        Source {
            hot: self.hot.clone(),
            others: self.others.clone(),
            keys: self.keys.clone(),
            types: self.types.clone(),
            table,
        }
    }

    /// The translator for this source's schema and recorded keys.
    pub(crate) fn translator(&self) -> Translator<'_> {
        Translator::new(&self.hot)
            .with_others(self.others.as_ref())
            .with_keys(self.keys.as_ref())
            .with_types(self.types.as_ref())
    }
}

/// What a tenant's search reads.
pub(crate) struct Sources {
    pub(crate) tables: Vec<Source>,
    pub(crate) blocks: Vec<Arc<BlockMeta>>,
    pub(crate) live_spans: u64,
    pub(crate) live_traces: u64,
    /// The head's traces whose part there is incomplete (no root, or a span whose parent is
    /// not in the head): their other parts are in blocks.
    pub(crate) live_split: IncompleteTraces,
}

impl Sources {
    /// Spans held in blocks and the head.
    pub(crate) fn spans(&self) -> u64 {
        self.blocks.iter().map(|b| b.total_spans).sum::<u64>() + self.live_spans
    }

    /// Traces held in blocks and the head (as many as root spans, give or take broken traces).
    pub(crate) fn traces(&self) -> u64 {
        self.blocks.iter().map(|b| b.total_objects).sum::<u64>() + self.live_traces
    }

    /// Adds what these sources hold (blocks, bytes, spans, traces) and one job to `m`.
    pub(crate) fn account(&self, m: &mut SearchMetrics) {
        m.total_blocks += self.blocks.len() as u32;
        m.total_block_bytes += self.blocks.iter().map(|b| b.size).sum::<u64>();
        m.inspected_spans += self.spans();
        let traces = self.traces();
        m.inspected_traces = m
            .inspected_traces
            .saturating_add(traces.min(u32::MAX as u64) as u32);
        m.total_jobs += 1;
        m.completed_jobs += 1;
    }
}

impl QueryEngine {
    pub(crate) async fn sources(&self, tenant: &str, range: Range) -> Result<Sources> {
        self.sources_picked(tenant, range, &|_| true, true).await
    }

    /// The sources of `tenant` in range: blocks `keep` accepts, and the head when `live`.
    pub(crate) async fn sources_picked(
        &self,
        tenant: &str,
        range: Range,
        keep: &(dyn Fn(&BlockMeta) -> bool + Sync),
        live: bool,
    ) -> Result<Sources> {
        let all = self.catalog.blocks(tenant).await?;
        let blocks: Vec<Arc<BlockMeta>> = all
            .iter()
            .filter(|b| range.is_none_or(|(s, e)| b.overlaps(s, e)) && keep(b))
            .cloned()
            .collect();
        let mut tables: Vec<Source> = group_by_schema(&blocks)
            .into_iter()
            .map(|(hot, metas)| {
                let others = metas.iter().try_fold(HashSet::new(), |mut acc, m| {
                    acc.extend(
                        m.other_keys
                            .as_ref()?
                            .iter()
                            .map(|k| (k.scope, k.key.clone())),
                    );
                    Some(acc)
                });
                let keys = metas.iter().try_fold(KnownKeys::new(), |mut acc, m| {
                    let k = m.attribute_keys.as_ref()?;
                    for scope in AttributeKeys::SCOPES {
                        acc.entry(scope)
                            .or_default()
                            .extend(k.scope(scope).iter().cloned());
                    }
                    Some(acc)
                });
                let types = metas.iter().try_fold(KnownTypes::new(), |mut acc, m| {
                    for k in m.key_types.as_ref()? {
                        acc.entry((k.scope, k.key.clone()))
                            .or_default()
                            .extend(k.types.iter().copied());
                    }
                    Some(acc)
                });
                Source {
                    table: Arc::new(BlocksTable::new(&self.catalog, &hot, metas)),
                    hot,
                    others,
                    keys,
                    types,
                }
            })
            .collect();
        let (mut live_spans, mut live_traces) = (0, 0);
        let mut live_split = IncompleteTraces::default();
        if let Some(head) = self.live.as_ref().filter(|_| live) {
            let batches = head.live_batches(tenant)?;
            if let Some(first) = batches.first() {
                live_spans = batches.iter().map(|b| b.num_rows() as u64).sum();
                let (traces, split) = trace_ids(&batches);
                live_traces = traces;
                live_split = split;
                let mem = MemTable::try_new(first.schema(), vec![batches]).map_err(df_err)?;
                tables.push(Source {
                    hot: Vec::new(),
                    others: None,
                    keys: None,
                    types: None,
                    table: Arc::new(mem),
                });
            }
        }
        Ok(Sources {
            tables,
            blocks,
            live_spans,
            live_traces,
            live_split,
        })
    }
}

/// How many traces `batches` hold, and those whose part is incomplete: a span without
/// nested-set numbers (no root, or a parent not in the batches).
fn trace_ids(batches: &[RecordBatch]) -> (u64, IncompleteTraces) {
    let mut ids = IncompleteTraces::default();
    let mut split = IncompleteTraces::default();
    for b in batches {
        let id = b
            .column_by_name(c::TRACE_ID)
            .and_then(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>());
        let left = b
            .column_by_name(c::NESTED_SET_LEFT)
            .and_then(|a| a.as_primitive_opt::<Int32Type>());
        let (Some(id), Some(left)) = (id, left) else {
            continue;
        };
        for i in 0..id.len() {
            let Ok(t) = TraceId::from_bytes(id.value(i)) else {
                continue;
            };
            ids.insert(t);
            if left.value(i) == 0 {
                split.insert(t);
            }
        }
    }
    (ids.len() as u64, split)
}
