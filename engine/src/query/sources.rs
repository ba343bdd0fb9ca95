//! What a query reads: the tenant's blocks in range, grouped by schema into tables, and the
//! live head, each with what its metadata says about attribute keys and types (for the
//! translator) and about its time range and incomplete traces (for newest-first search).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;

use super::head_traces::head_traces;
use super::plan::Range;
use super::table::{BlocksTable, group_by_schema};
use super::translate::{KnownKeys, KnownTypes, Translator};
use super::{LiveBatches, QueryEngine, df_err};
use crate::block::meta::BlockMeta;
use crate::block::recorded::{RecordedKeys, Records};
use crate::catalog::IncompleteTraces;
use crate::error::{EngineError, Result};
use crate::hot::AttributeKeys;
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
    /// The head's table: per partition, the latest span start in it (no trace in it starts
    /// later). `None` for blocks, whose parts carry their own.
    pub(crate) live_ends: Option<Vec<u64>>,
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
            live_ends: self.live_ends.clone(),
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
    /// The head's groups as it handed them out, each with what it recorded (if it did).
    pub(crate) live_groups: Vec<LiveGroup>,
}

/// One group of the head's rows, and what its spans record ([`LiveBatches::recorded`]).
pub(crate) type LiveGroup = (Vec<RecordBatch>, Option<Arc<RecordedKeys>>);

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
        // Blocks are listed before the head is read: a block cut in between has its spans in
        // the head's answer or is named in it as flushed.
        let all = self.catalog.blocks(tenant).await?;
        let live = match self.live.as_ref().filter(|_| live) {
            Some(head) => Some(head.live_batches(tenant).await?),
            None => None,
        };
        let unlisted = match &live {
            Some(l) if !l.flushed.is_empty() => {
                self.flushed_unlisted(tenant, &all, &l.flushed).await?
            }
            _ => Vec::new(),
        };
        let blocks: Vec<Arc<BlockMeta>> = all
            .iter()
            .chain(&unlisted)
            .filter(|b| range.is_none_or(|(s, e)| b.overlaps(s, e)) && keep(b))
            .cloned()
            .collect();
        let mut tables: Vec<Source> = group_by_schema(&blocks)
            .into_iter()
            .map(|(hot, metas)| {
                let (others, keys, types) = known(metas.iter().map(|m| m.as_ref()));
                Source {
                    table: Arc::new(BlocksTable::new(&self.catalog, &hot, metas)),
                    hot,
                    others,
                    keys,
                    types,
                    live_ends: None,
                }
            })
            .collect();
        let (mut live_spans, mut live_traces) = (0, 0);
        let mut live_split = IncompleteTraces::default();
        let mut live_groups = Vec::new();
        if let Some(LiveBatches {
            groups,
            recorded,
            traces,
            ..
        }) = live
            && let Some(first) = groups.iter().flatten().next()
        {
            let schema = first.schema();
            live_groups = groups
                .iter()
                .enumerate()
                .map(|(i, g)| (g.clone(), recorded.get(i).cloned().flatten()))
                .collect();
            // Known only when every group's is: a group that did not record may hold any key.
            let all: Option<Vec<&RecordedKeys>> =
                live_groups.iter().map(|(_, r)| r.as_deref()).collect();
            let (others, keys, types) = match all {
                Some(all) => known(all),
                None => (None, None, None),
            };
            live_spans = groups.iter().flatten().map(|b| b.num_rows() as u64).sum();
            let (traces, split) = head_traces(&groups, &traces);
            live_traces = traces;
            live_split = split;
            let (ends, parts) = live_partitions(groups).into_iter().unzip();
            let mem = MemTable::try_new(schema, parts).map_err(df_err)?;
            tables.push(Source {
                hot: Vec::new(),
                others,
                keys,
                types,
                table: Arc::new(mem),
                live_ends: Some(ends),
            });
        }
        Ok(Sources {
            tables,
            blocks,
            live_spans,
            live_traces,
            live_split,
            live_groups,
        })
    }
}

/// What `recorded` (a group of blocks, or the head's groups) together know of keys holding
/// arrays, attribute keys and key types; each `None` when one of them did not record it.
#[allow(clippy::type_complexity)]
fn known<'a, R: Records + 'a>(
    recorded: impl IntoIterator<Item = &'a R> + Clone,
) -> (
    Option<HashSet<(AttrScope, String)>>,
    Option<KnownKeys>,
    Option<KnownTypes>,
) {
    let others = recorded
        .clone()
        .into_iter()
        .try_fold(HashSet::new(), |mut acc, m| {
            acc.extend(m.other_keys()?.iter().map(|k| (k.scope, k.key.clone())));
            Some(acc)
        });
    let keys = recorded
        .clone()
        .into_iter()
        .try_fold(KnownKeys::new(), |mut acc, m| {
            let k = m.attribute_keys()?;
            for scope in AttributeKeys::SCOPES {
                acc.entry(scope)
                    .or_default()
                    .extend(k.scope(scope).iter().cloned());
            }
            Some(acc)
        });
    let types = recorded
        .into_iter()
        .try_fold(KnownTypes::new(), |mut acc, m| {
            for k in m.key_types()? {
                acc.entry((k.scope, k.key.clone()))
                    .or_default()
                    .extend(k.types.iter().copied());
            }
            Some(acc)
        });
    (others, keys, types)
}

impl QueryEngine {
    /// Of the blocks `flushed` (a head's, lately), those `listed` does not hold, read by ID:
    /// another ring member's new blocks before this process's next poll of the bucket. A block
    /// gone since (merged and retired past its grace) or merged into a listed block is left
    /// out: its spans are in what is listed.
    async fn flushed_unlisted(
        &self,
        tenant: &str,
        listed: &[Arc<BlockMeta>],
        flushed: &[uuid::Uuid],
    ) -> Result<Vec<Arc<BlockMeta>>> {
        let known: HashSet<uuid::Uuid> = listed
            .iter()
            .flat_map(|b| {
                std::iter::once(b.block_id).chain(b.compacted_from.iter().flatten().copied())
            })
            .collect();
        let mut out = Vec::new();
        for id in flushed.iter().filter(|id| !known.contains(id)) {
            match self.catalog.block_meta(tenant, id).await {
                Ok(m) => out.push(m),
                Err(EngineError::BlockGone { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if !out.is_empty() {
            tracing::debug!(
                tenant,
                blocks = out.len(),
                "flushed blocks read before they are listed"
            );
        }
        Ok(out)
    }
}

/// Partitions of the head's table, about: the head's groups are its parts (a queried tenant's
/// arrivals are sealed into a part four times a second: a few thousand spans each at 15k
/// spans/s, hundreds of them), and a partition costs a task and a plan's streams.
const LIVE_PARTITIONS: usize = 32;

/// The head's `groups` as the partitions of its table, each with the latest span start in it:
/// groups in order of that latest start, neighbours merged up to a [`LIVE_PARTITIONS`]th of
/// the rows. A search reads partitions newest first and stops once none left can hold a newer
/// trace than those found, as it does blocks; each keeps its traces whole, as the groups do.
fn live_partitions(groups: Vec<Vec<RecordBatch>>) -> Vec<(u64, Vec<RecordBatch>)> {
    let mut ended: Vec<(u64, Vec<RecordBatch>)> = groups
        .into_iter()
        .filter(|g| g.iter().any(|b| b.num_rows() > 0))
        .map(|g| (latest_start(&g), g))
        .collect();
    ended.sort_by_key(|(end, _)| *end);
    let total: usize = ended
        .iter()
        .flat_map(|(_, g)| g)
        .map(RecordBatch::num_rows)
        .sum();
    let least = total / LIVE_PARTITIONS;
    let mut out: Vec<(u64, Vec<RecordBatch>)> = Vec::new();
    // Rows of the last partition.
    let mut rows = 0;
    for (end, g) in ended {
        let n: usize = g.iter().map(RecordBatch::num_rows).sum();
        match out.last_mut() {
            Some((e, last)) if rows < least => {
                *e = end;
                last.extend(g);
                rows += n;
            }
            _ => {
                out.push((end, g));
                rows = n;
            }
        }
    }
    out
}

/// The latest span start in `batches`; `u64::MAX` (read first) when it cannot be told.
fn latest_start(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .map(|b| {
            b.column_by_name(c::START_TIME)
                .and_then(|a| a.as_primitive_opt::<UInt64Type>())
                .map_or(Some(u64::MAX), arrow::compute::max)
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::head_traces::one_span_group;

    /// A group holding one span of trace 7: `span`, child of `parent` (0: a root).
    fn group(span: u8, parent: u8, start: u64) -> Vec<RecordBatch> {
        one_span_group(7, span, parent, start)
    }

    #[test]
    fn the_heads_partitions_are_ordered_by_their_latest_start() {
        let parts = live_partitions(vec![group(1, 0, 300), Vec::new(), group(2, 0, 100)]);
        let ends: Vec<u64> = parts.iter().map(|(e, _)| *e).collect();
        assert_eq!(ends, [100, 300]);
    }
}
