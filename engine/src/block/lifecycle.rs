//! A store that lives: which blocks to compact, and which to delete.
//!
//! Compaction ([`super::compact`]) merges the blocks of one closed time window (blocks grouped
//! by the window their newest span falls in, `compaction_window`, 1h by default): the oldest
//! window holding two blocks or more goes first: all its blocks when one merge can take them
//! (at most [`MAX_MERGE_INPUTS`] blocks and [`MAX_MERGE_RUNS`] runs), else those of the lowest
//! compaction level that has two, in start order, within the same bounds; always up to
//! `max_compaction_objects` traces and `max_block_bytes`. The window still filling is left
//! alone, so a new five-minute block never makes the whole hour be written again.
//!
//! Why bounded: a merge reads every input at once, and what it holds follows how many runs it
//! reads (see [`MAX_MERGE_RUNS`]). A busy tenant's hour once held 70 blocks; merging them at
//! once took 2.4 GiB (docs/benchmarks.md, the soak's third run). Merging the lowest level
//! first, as Tempo does (it merges at most 4), writes each span about once per level: 70
//! blocks become 5, then 1, twice the writing of one merge. The last step takes every level at
//! once: a window of 34 blocks of 300k spans was 16 + 16, then the two merged blocks, then
//! that with the one left, writing its 10M spans 2.9 times; now 16 + 16, then the three, 1.95
//! times (docs/benchmarks.md, "one 10-minute window of 10M spans"). What a merge writes goes
//! to local disk until stored ([`super::spill`]).
//!
//! Retention deletes what nobody may read any more: blocks whose newest span is older than
//! `block_retention`; blocks a merged block retired, once that block has been visible for
//! `compacted_block_retention` (queries planned before it appeared finish on the inputs); and
//! directories left without `meta.json` by a write that failed, once as old. `meta.json` goes
//! first, so a deletion cut short leaves an invisible directory, which the next pass removes.
//! Writes and deletions mark the directory `pending` before they begin, so a directory that
//! holds data without `meta.json` and without that mark is a whole block that lost its
//! `meta.json`: it is quarantined and kept, never taken for an orphan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

use super::claim::{Claim, claim, process_owner};
use super::compact::Compacted;
use super::meta::BlockMeta;
use super::pace::Pace;
use super::tenant_index::TenantIndex;
use super::writer::BlockWriteOptions;
use crate::catalog::Catalog;
use crate::error::{EngineError, Result};

/// Tempo's `compactor.compaction` settings that Allegro honours.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleConfig {
    /// Blocks are merged within windows of this length (`compaction_window`).
    pub window: Duration,
    /// Most traces in one merged block (`max_compaction_objects`).
    pub max_objects: u64,
    /// Most bytes of input per merged block (`max_block_bytes`).
    pub max_block_bytes: u64,
    /// Blocks whose newest span is older are deleted (`block_retention`; zero keeps all).
    pub block_retention: Duration,
    /// Tenants with a `block_retention` of their own (`overrides`).
    pub tenant_retention: std::collections::HashMap<String, Duration>,
    /// Retired inputs of a merged block are deleted this long after it appeared
    /// (`compacted_block_retention`).
    pub compacted_block_retention: Duration,
    /// How long a compactor's claim on the blocks it merges holds (see [`super::claim`]).
    pub claim_lease: Duration,
    /// Who this compactor is in claims: the same across restarts of one deployment (so a
    /// restarted process takes back the claims of the one that died), different between
    /// processes sharing a bucket.
    pub owner: String,
    /// With sharded ingest, the ring that gives each tenant's compaction and retention to
    /// exactly one of the processes sharing the bucket; `None`: this process does every
    /// tenant's (claims still keep two processes off the same blocks).
    pub ring: Option<std::sync::Arc<crate::ring::Ring>>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(3600),
            max_objects: 6_000_000,
            max_block_bytes: 100 << 30,
            block_retention: Duration::from_secs(14 * 24 * 3600),
            tenant_retention: Default::default(),
            compacted_block_retention: Duration::from_secs(3600),
            claim_lease: Duration::from_secs(3600),
            owner: process_owner().to_string(),
            ring: None,
        }
    }
}

/// Most blocks one merge reads at once; see the module docs.
pub const MAX_MERGE_INPUTS: usize = 16;

/// Most runs one merge reads at once: two merged blocks of 16 time slices and one from the
/// head. Each run holds its reader's row group, decoded dictionaries and pages, ~6 MiB
/// whatever its batch size, so a merge's memory follows its runs: 66 took 0.75 GiB of heap
/// and 0.99 GiB RSS, 32 took 0.55 GiB and 0.77 GiB (docs/benchmarks.md).
pub const MAX_MERGE_RUNS: usize = 66;

/// Runs a merge reads `b` as: per time slice, its row groups of root spans and the rest.
pub fn merge_runs(b: &BlockMeta) -> usize {
    2 * b.slices.as_ref().map_or(1, |s| s.len().max(1))
}

/// Most blocking threads of the compactor's runtime (reads of local files, spill uploads).
///
/// A merge reads one range after another, yet Tokio starts a blocking thread whenever none is
/// idle at that instant, so a pool without a bound grew to 27 threads; each kept the allocator
/// pages it had used, and the last merge of a 10M-span window took 1.48 GiB RSS for 0.75 GiB
/// of heap, against 0.98 GiB with two (docs/benchmarks.md).
pub const COMPACTOR_BLOCKING_THREADS: usize = 2;

/// The runtime compaction runs on, on a thread of its own (`serve`'s compactor, the bench).
pub fn compactor_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(COMPACTOR_BLOCKING_THREADS)
        .enable_all()
        .build()
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u64::MAX as u128) as u64
}

/// The next blocks to merge among a tenant's visible `blocks` at `now` (unix nanoseconds);
/// `None` when no closed window holds two.
pub fn plan_compaction(
    blocks: &[Arc<BlockMeta>],
    cfg: &LifecycleConfig,
    now: u64,
) -> Option<Vec<Arc<BlockMeta>>> {
    let window = nanos(cfg.window).max(1);
    let current = now / window;
    let mut by_window: std::collections::BTreeMap<u64, Vec<Arc<BlockMeta>>> = Default::default();
    for b in blocks {
        let w = b.end_unix_nano / window;
        if w < current {
            by_window.entry(w).or_default().push(b.clone());
        }
    }
    for (_, mut group) in by_window {
        if group.len() < 2 {
            continue;
        }
        // A closed window gets no new blocks, so once one merge can take all of it, it does
        // (merging the lowest level first would write its spans once more). Until then, the
        // lowest level with two blocks.
        let runs: usize = group.iter().map(|b| merge_runs(b)).sum();
        if group.len() > MAX_MERGE_INPUTS || runs > MAX_MERGE_RUNS {
            let mut levels: BTreeMap<u32, usize> = BTreeMap::new();
            for b in &group {
                *levels.entry(b.compaction_level).or_default() += 1;
            }
            if let Some((level, _)) = levels.iter().find(|(_, n)| **n >= 2) {
                group.retain(|b| b.compaction_level == *level);
            }
        }
        group.sort_by_key(|b| (b.start_unix_nano, b.block_id));
        let mut picked = Vec::new();
        let (mut objects, mut bytes, mut runs) = (0u64, 0u64, 0usize);
        for b in group {
            let fits = objects + b.total_objects <= cfg.max_objects
                && bytes + b.size <= cfg.max_block_bytes
                && runs + merge_runs(&b) <= MAX_MERGE_RUNS
                && picked.len() < MAX_MERGE_INPUTS;
            if !fits && picked.len() >= 2 {
                break;
            }
            if !fits {
                // A block alone over the limits is merged with nothing.
                picked.clear();
                objects = 0;
                bytes = 0;
                runs = 0;
                continue;
            }
            objects += b.total_objects;
            bytes += b.size;
            runs += merge_runs(&b);
            picked.push(b);
        }
        if picked.len() >= 2 {
            return Some(picked);
        }
    }
    None
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deleted {
    /// Blocks past `block_retention`.
    pub expired: Vec<uuid::Uuid>,
    /// Inputs of merged blocks.
    pub retired: Vec<uuid::Uuid>,
    /// Directories without `meta.json`.
    pub orphans: Vec<String>,
}

/// Deletes `tenant`'s blocks that nobody may read any more at `now`; see the module docs.
pub async fn apply_retention(
    catalog: &Catalog,
    tenant: &str,
    cfg: &LifecycleConfig,
    now: u64,
) -> Result<Deleted> {
    let listing = catalog.list_all(tenant).await?;
    let mut out = Deleted::default();
    let retention = cfg
        .tenant_retention
        .get(tenant)
        .copied()
        .unwrap_or(cfg.block_retention);
    // Zero keeps everything: nothing ends before 0.
    let keep_after = if retention.is_zero() {
        0
    } else {
        now.saturating_sub(nanos(retention))
    };
    for b in listing
        .visible
        .iter()
        .filter(|b| b.end_unix_nano < keep_after)
    {
        catalog
            .delete_block(&b.tenant_id, &b.block_id.to_string())
            .await?;
        out.expired.push(b.block_id);
    }
    let settled = now.saturating_sub(nanos(cfg.compacted_block_retention));
    for (b, since) in &listing.retired {
        if *since <= settled || b.end_unix_nano < keep_after {
            catalog
                .delete_block(&b.tenant_id, &b.block_id.to_string())
                .await?;
            out.retired.push(b.block_id);
        }
    }
    for (dir, since) in &listing.orphans {
        if *since <= settled {
            catalog.delete_block(tenant, dir).await?;
            out.orphans.push(dir.clone());
        }
    }
    Ok(out)
}

/// Claims `inputs` for this process and checks, from a fresh listing, that they are all still
/// visible (another process may have merged them just before). `None` when the merge is not
/// to be done now; its blocks are then added to `busy`, left for the rest of the pass. With
/// the claim comes the listing, from which the index is written once the merge is done.
async fn claim_inputs(
    catalog: &Catalog,
    tenant: &str,
    inputs: &[Arc<BlockMeta>],
    cfg: &LifecycleConfig,
    busy: &mut std::collections::HashSet<uuid::Uuid>,
) -> Result<Option<(Claim, Listed)>> {
    let now = crate::now_unix_nanos();
    let held = match claim(catalog.store(), inputs, &cfg.owner, cfg.claim_lease, now).await? {
        Ok(held) => held,
        Err(taken) => {
            tracing::info!(%tenant, blocks = ?taken, "blocks claimed by another compactor");
            // Another compactor is on this window: leave all of it, or both would merge
            // parts of it (and merge the parts again later).
            busy.extend(inputs.iter().map(|m| m.block_id));
            return Ok(None);
        }
    };
    let listed = Listed::now(catalog, tenant).await?;
    let visible: std::collections::HashSet<uuid::Uuid> =
        listed.blocks.iter().map(|m| m.block_id).collect();
    if inputs.iter().all(|m| visible.contains(&m.block_id)) {
        return Ok(Some((held, listed)));
    }
    held.release().await?;
    catalog.forget(tenant).await;
    busy.extend(inputs.iter().map(|m| m.block_id));
    Ok(None)
}

/// A tenant's visible blocks as listed from storage, and when the listing began.
struct Listed {
    at: u64,
    blocks: Vec<Arc<BlockMeta>>,
}

impl Listed {
    /// Lists `tenant`'s blocks from storage now.
    async fn now(catalog: &Catalog, tenant: &str) -> Result<Self> {
        let at = crate::now_unix_nanos();
        Ok(Self {
            at,
            blocks: catalog.list_storage(tenant).await?,
        })
    }

    /// The listing as it is once `merged` has replaced its inputs.
    fn after_merge(mut self, merged: BlockMeta) -> Self {
        let from = merged.compacted_from.clone().unwrap_or_default();
        self.blocks.retain(|m| !from.contains(&m.block_id));
        self.blocks.push(Arc::new(merged));
        self
    }

    /// Writes it as `tenant`'s index.
    async fn write_index(
        &self,
        catalog: &Catalog,
        tenant: &str,
        cfg: &LifecycleConfig,
    ) -> Result<()> {
        TenantIndex::of(&self.blocks, self.at, &cfg.owner)
            .write(catalog.store(), tenant)
            .await
    }
}

/// What compaction and retention have done, for `/metrics`.
#[derive(Debug, Default)]
pub struct LifecycleStats {
    compactions: AtomicU64,
    blocks_compacted: AtomicU64,
    spans_compacted: AtomicU64,
    bytes_compacted: AtomicU64,
    duplicates_dropped: AtomicU64,
    /// Nanoseconds compaction waited for flushing to catch up.
    paused_nanos: AtomicU64,
    deleted: [AtomicU64; 3],
    failures: AtomicU64,
    gauges: Mutex<Gauges>,
}

/// Visible blocks per (tenant, level), and blocks waiting in closed windows, per tenant.
type Gauges = (BTreeMap<(String, u32), u64>, BTreeMap<String, u64>);

impl LifecycleStats {
    fn compacted(&self, inputs: usize, done: &Compacted) {
        self.compactions.fetch_add(1, Relaxed);
        self.blocks_compacted.fetch_add(inputs as u64, Relaxed);
        self.spans_compacted.fetch_add(done.spans_in, Relaxed);
        self.bytes_compacted.fetch_add(done.bytes_in, Relaxed);
        self.duplicates_dropped
            .fetch_add(done.spans_in.saturating_sub(done.spans_out), Relaxed);
        self.paused(done.paused);
    }

    fn paused(&self, waited: Duration) {
        self.paused_nanos.fetch_add(nanos(waited), Relaxed);
    }

    fn deleted(&self, d: &Deleted) {
        for (slot, n) in
            self.deleted
                .iter()
                .zip([d.expired.len(), d.retired.len(), d.orphans.len()])
        {
            slot.fetch_add(n as u64, Relaxed);
        }
    }

    /// One line saying what was done.
    pub fn summary(&self) -> String {
        let d: Vec<u64> = self.deleted.iter().map(|v| v.load(Relaxed)).collect();
        format!(
            "{} merges of {} blocks ({} spans, {} received twice dropped); deleted {} expired, \
             {} compacted and {} orphaned blocks; {} failures",
            self.compactions.load(Relaxed),
            self.blocks_compacted.load(Relaxed),
            self.spans_compacted.load(Relaxed),
            self.duplicates_dropped.load(Relaxed),
            d[0],
            d[1],
            d[2],
            self.failures.load(Relaxed)
        )
    }

    /// Appends the Prometheus text of these counters and gauges to `out`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let counters: [(&str, &str, &AtomicU64); 6] = [
            (
                "allegro_compactions_total",
                "Blocks merged by compaction (one per merged block).",
                &self.compactions,
            ),
            (
                "allegro_compaction_blocks_total",
                "Input blocks compacted.",
                &self.blocks_compacted,
            ),
            (
                "allegro_compaction_spans_total",
                "Spans read by compaction.",
                &self.spans_compacted,
            ),
            (
                "allegro_compaction_bytes_total",
                "Bytes of input blocks compacted.",
                &self.bytes_compacted,
            ),
            (
                "allegro_compaction_duplicate_spans_total",
                "Spans received twice, kept once by compaction.",
                &self.duplicates_dropped,
            ),
            (
                "allegro_compaction_failures_total",
                "Compaction or retention passes that failed (logged).",
                &self.failures,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let name = "allegro_compaction_paused_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Time compaction waited for the head's blocks to be written.\n# TYPE {name} counter\n{name} {}",
            self.paused_nanos.load(Relaxed) as f64 / 1e9
        );
        let name = "allegro_retention_deleted_blocks_total";
        let _ = writeln!(
            out,
            "# HELP {name} Blocks deleted by retention, by reason.\n# TYPE {name} counter"
        );
        for (reason, v) in ["expired", "compacted", "orphaned"]
            .iter()
            .zip(&self.deleted)
        {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", v.load(Relaxed));
        }
        let g = self.gauges.lock();
        let name = "allegro_blocks";
        let _ = writeln!(
            out,
            "# HELP {name} Visible blocks per tenant and compaction level.\n# TYPE {name} gauge"
        );
        for ((tenant, level), n) in &g.0 {
            let _ = writeln!(out, "{name}{{tenant=\"{tenant}\",level=\"{level}\"}} {n}");
        }
        let name = "allegro_compaction_backlog_blocks";
        let _ = writeln!(
            out,
            "# HELP {name} Blocks in closed windows waiting to be merged.\n# TYPE {name} gauge"
        );
        for (tenant, n) in &g.1 {
            let _ = writeln!(out, "{name}{{tenant=\"{tenant}\"}} {n}");
        }
    }
}

/// One pass over every tenant at `now`: merges the blocks of closed windows (for at most
/// `budget` per tenant), then applies retention. A tenant's failure is logged and counted;
/// the others go on.
pub async fn run_cycle(
    catalog: &Catalog,
    cfg: &LifecycleConfig,
    opts: &BlockWriteOptions,
    stats: &LifecycleStats,
    pace: &Pace,
    budget: Duration,
    now: u64,
) -> Result<()> {
    let mut blocks_gauge = BTreeMap::new();
    let mut backlog_gauge = BTreeMap::new();
    for tenant in catalog.list_tenants().await? {
        if cfg.ring.as_ref().is_some_and(|r| !r.owns_tenant(&tenant)) {
            continue;
        }
        let started = std::time::Instant::now();
        let pass = async {
            // Blocks another process holds, planned around for the rest of this pass.
            let mut busy = std::collections::HashSet::new();
            while started.elapsed() < budget {
                let blocks = catalog.blocks(&tenant).await?;
                let free: Vec<Arc<BlockMeta>> = blocks
                    .iter()
                    .filter(|b| !busy.contains(&b.block_id))
                    .cloned()
                    .collect();
                let Some(inputs) = plan_compaction(&free, cfg, now) else {
                    break;
                };
                // Not even a merge's first read while the head's blocks wait to be written.
                stats.paused(pace.step().await);
                let Some((held, listed)) =
                    claim_inputs(catalog, &tenant, &inputs, cfg, &mut busy).await?
                else {
                    continue;
                };
                // The claims stay with the inputs after a merge; after a failure they are
                // given back so another process need not wait for them to expire.
                let (merged, done) = match super::compact::compact(catalog, &inputs, opts, pace)
                    .await
                {
                    Ok(m) => m,
                    Err(e) => {
                        if let Err(r) = held.release().await {
                            tracing::warn!(%tenant, error = %r, "claims not released; they expire");
                        }
                        // A damaged input is set aside; the window merges without it.
                        if catalog.quarantine_damaged(&e) {
                            continue;
                        }
                        return Err(e);
                    }
                };
                stats.compacted(inputs.len(), &done);
                tracing::info!(
                    %tenant,
                    block = %merged.block_id,
                    inputs = inputs.len(),
                    level = merged.compaction_level,
                    spans = done.spans_out,
                    duplicates = done.spans_in - done.spans_out,
                    took_ms = started.elapsed().as_millis() as u64,
                    paused_ms = done.paused.as_millis() as u64,
                    "compacted blocks"
                );
                // Other processes learn of the merge before its inputs can go (retention may
                // delete them later in this very pass); the claim's listing with the merge done
                // is what storage now holds.
                listed
                    .after_merge(merged)
                    .write_index(catalog, &tenant, cfg)
                    .await?;
            }
            // Blocks merged in this pass count from when they appeared, which is after `now`.
            let later = now.max(crate::now_unix_nanos());
            let deleted = apply_retention(catalog, &tenant, cfg, later).await?;
            stats.deleted(&deleted);
            if deleted != Deleted::default() {
                tracing::info!(
                    %tenant,
                    expired = deleted.expired.len(),
                    compacted = deleted.retired.len(),
                    orphaned = deleted.orphans.len(),
                    "retention deleted blocks"
                );
            }
            Listed::now(catalog, &tenant)
                .await?
                .write_index(catalog, &tenant, cfg)
                .await?;
            Ok::<_, EngineError>(())
        };
        if let Err(e) = pass.await {
            stats.failures.fetch_add(1, Relaxed);
            tracing::error!(%tenant, error = %e, "compaction or retention failed; next cycle retries");
        }
        let blocks = catalog.blocks(&tenant).await?;
        for b in blocks.iter() {
            *blocks_gauge
                .entry((tenant.clone(), b.compaction_level))
                .or_insert(0u64) += 1;
        }
        let window = nanos(cfg.window).max(1);
        let mut per_window: BTreeMap<u64, u64> = BTreeMap::new();
        for b in blocks
            .iter()
            .filter(|b| b.end_unix_nano / window < now / window)
        {
            *per_window.entry(b.end_unix_nano / window).or_default() += 1;
        }
        backlog_gauge.insert(tenant, per_window.values().filter(|n| **n >= 2).sum());
    }
    *stats.gauges.lock() = (blocks_gauge, backlog_gauge);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::meta::BlockSlice;

    fn block(start_s: u64, end_s: u64, objects: u64) -> Arc<BlockMeta> {
        leveled(start_s, end_s, objects, 0)
    }

    fn leveled(start_s: u64, end_s: u64, objects: u64, level: u32) -> Arc<BlockMeta> {
        let json = format!(
            r#"{{"format":"allegro-1","blockID":"{}","tenantID":"t","startTime":"","endTime":"",
            "startUnixNano":{},"endUnixNano":{},"totalObjects":{objects},"totalSpans":1,"size":10,
            "footerSize":1,"bloomSize":1,"rowGroups":1,"minID":"","maxID":"","hotColumns":[],
            "compactionLevel":{level}}}"#,
            uuid::Uuid::new_v4(),
            start_s * 1_000_000_000,
            end_s * 1_000_000_000
        );
        Arc::new(BlockMeta::parse("meta.json", json.as_bytes()).expect("meta"))
    }

    #[test]
    fn the_oldest_closed_window_with_two_blocks_is_merged_within_the_limits() {
        let cfg = LifecycleConfig {
            window: Duration::from_secs(3600),
            max_objects: 100,
            ..Default::default()
        };
        let h = 3600;
        let blocks = vec![
            block(0, 100, 10),     // window 0, alone
            block(h, h + 100, 60), // window 1
            block(h + 100, h + 200, 30),
            block(h + 200, h + 300, 30), // over 100 traces with the two before
            block(2 * h, 2 * h + 10, 1), // window 2: still open at `now`
            block(2 * h + 10, 2 * h + 20, 1),
        ];
        let now = (2 * h + 30) * 1_000_000_000;
        let picked = plan_compaction(&blocks, &cfg, now).expect("a plan");
        let ids: Vec<_> = picked.iter().map(|b| b.block_id).collect();
        assert_eq!(ids, [blocks[1].block_id, blocks[2].block_id]);
        // Once window 2 closes, it is not chosen before window 1.
        let later = (3 * h + 1) * 1_000_000_000;
        let picked = plan_compaction(&blocks[1..3], &cfg, later);
        assert_eq!(picked.map(|p| p.len()), Some(2));
        assert_eq!(plan_compaction(&blocks[..1], &cfg, later), None);
    }

    #[test]
    fn a_window_of_many_blocks_is_merged_in_bounded_steps_lowest_level_first_then_all_at_once() {
        let cfg = LifecycleConfig::default();
        let h = 3600;
        let later = (2 * h) * 1_000_000_000;
        // 40 blocks of level 0 and 2 of level 1 in one hour.
        let mut blocks: Vec<_> = (0..40).map(|i| block(i * 60, i * 60 + 59, 1)).collect();
        blocks.push(leveled(0, 1000, 1, 1));
        blocks.push(leveled(1000, 2000, 1, 1));
        let picked = plan_compaction(&blocks, &cfg, later).expect("a plan");
        assert_eq!(picked.len(), MAX_MERGE_INPUTS);
        assert!(picked.iter().all(|b| b.compaction_level == 0));
        // The earliest level-0 blocks, in start order.
        let first: Vec<_> = blocks[..MAX_MERGE_INPUTS]
            .iter()
            .map(|b| b.block_id)
            .collect();
        assert_eq!(picked.iter().map(|b| b.block_id).collect::<Vec<_>>(), first);
        // Once one merge can take the whole window, it takes every level at once (merging
        // the two level-1 blocks first would write them twice).
        let rest = vec![blocks[0].clone(), blocks[40].clone(), blocks[41].clone()];
        let picked = plan_compaction(&rest, &cfg, later).expect("a plan");
        let mut levels: Vec<u32> = picked.iter().map(|b| b.compaction_level).collect();
        levels.sort();
        assert_eq!(levels, [0, 1, 1]);
        // More than one merge takes, with one level-0 block: the level-1 blocks first.
        let mut many: Vec<_> = (0..MAX_MERGE_INPUTS as u64)
            .map(|i| leveled(i * 100, i * 100 + 99, 1, 1))
            .collect();
        many.push(blocks[0].clone());
        let picked = plan_compaction(&many, &cfg, later).expect("a plan");
        assert!(picked.iter().all(|b| b.compaction_level == 1));
        let mixed = vec![blocks[0].clone(), blocks[40].clone()];
        assert_eq!(
            plan_compaction(&mixed, &cfg, later).map(|p| p.len()),
            Some(2)
        );
    }

    /// A merged block as 16 time slices (32 runs).
    fn sliced(start_s: u64, end_s: u64, level: u32) -> Arc<BlockMeta> {
        let mut m = (*leveled(start_s, end_s, 1, level)).clone();
        m.slices = Some(
            (0..16)
                .map(|i| BlockSlice {
                    start_unix_nano: start_s * 1_000_000_000,
                    end_unix_nano: end_s * 1_000_000_000,
                    row_groups: vec![i],
                })
                .collect(),
        );
        Arc::new(m)
    }

    #[test]
    fn a_merge_reads_at_most_max_merge_runs_runs() {
        let cfg = LifecycleConfig::default();
        let later = 7200 * 1_000_000_000;
        let head = |i: u64| block(3000 + i * 10, 3000 + i * 10 + 9, 1);
        // Two merged blocks and one from the head: 66 runs, one merge.
        let soak = vec![sliced(0, 1000, 1), sliced(1000, 2000, 1), head(0)];
        assert_eq!(soak.iter().map(|b| merge_runs(b)).sum::<usize>(), 66);
        assert_eq!(
            plan_compaction(&soak, &cfg, later).map(|p| p.len()),
            Some(3)
        );
        // One more from the head is 68: lowest level first, the two from the head.
        let more = [soak.clone(), vec![head(1)]].concat();
        let picked = plan_compaction(&more, &cfg, later).expect("a plan");
        assert_eq!(
            picked.iter().map(|b| b.block_id).collect::<Vec<_>>(),
            [more[2].block_id, more[3].block_id]
        );
        // Five merged blocks: two at a time, never three.
        let five: Vec<_> = (0..5).map(|i| sliced(i * 600, i * 600 + 599, 1)).collect();
        let picked = plan_compaction(&five, &cfg, later).expect("a plan");
        assert_eq!(picked.len(), 2);
        assert!(picked.iter().map(|b| merge_runs(b)).sum::<usize>() <= MAX_MERGE_RUNS);
    }
}
