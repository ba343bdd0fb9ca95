//! The catalog: blocks per tenant, with byte-bounded caches of block metas, Parquet footers
//! (with page indexes) and trace-ID blooms, and trace lookup by ID across blocks.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::{StreamExt, TryStreamExt};
use moka::future::Cache;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutOptions, PutPayload};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use uuid::Uuid;

use crate::block::bloom::TraceBloom;
use crate::block::checksums::PageSums;
use crate::block::meta::{BlockMeta, objects};
use crate::block::object_reader::ObjectReader;
use crate::block::quarantine::{Quarantine, Quarantined};
use crate::block::reader::{load_footer, object_reader, page_sums, read_trace};
use crate::block::scan_footer::ScanFooter;
use crate::block::tenant_index::TenantIndex;
use crate::block::writer::{EncodedBlock, block_path, put_block_data, put_block_meta};
use crate::convert::from_arrow::batches_to_resource_spans;
use crate::convert::normalize::normalize;
use crate::error::{EngineError, Result};
use crate::ids::TraceId;
use crate::storage::{CountingStore, ReadCounters};

/// Cache sizes and refresh period of the catalog.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// Bytes of block metas kept.
    pub meta_cache_bytes: u64,
    /// Bytes of Parquet footers and page indexes kept.
    pub footer_cache_bytes: u64,
    /// Bytes of bloom filters kept.
    pub bloom_cache_bytes: u64,
    /// Bytes of block rollups (span counts per minute) kept, decoded.
    pub rollup_cache_bytes: u64,
    /// How long a tenant's block list is trusted before storage is listed again
    /// (Tempo's `blocklist_poll`).
    pub blocklist_poll: Duration,
    /// Blocks read at once by one lookup.
    pub read_concurrency: usize,
    /// How old a tenant index may be and still be read instead of listing storage (Tempo's
    /// `blocklist_poll_stale_tenant_index`; zero trusts any age, `None` never reads one).
    pub index_stale_after: Option<Duration>,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            meta_cache_bytes: 64 << 20,
            footer_cache_bytes: 256 << 20,
            bloom_cache_bytes: 256 << 20,
            rollup_cache_bytes: 128 << 20,
            blocklist_poll: Duration::from_secs(30),
            read_concurrency: 8,
            index_stale_after: Some(Duration::from_secs(300)),
        }
    }
}

/// What a trace lookup found and what it cost.
#[derive(Debug, Default)]
pub struct TraceLookup {
    /// The trace, normalised (merged across blocks, exact duplicates removed); empty if absent.
    pub resource_spans: Vec<ResourceSpans>,
    /// Blocks of the tenant considered.
    pub total_blocks: usize,
    /// Blocks whose data pages were read.
    pub blocks_read: usize,
    /// Bytes fetched from storage by this lookup (0 when everything was cached and absent).
    pub inspected_bytes: u64,
}

/// Most damaged blocks one query sets aside and runs again without, before it fails.
pub const MAX_DAMAGED_PER_QUERY: usize = 16;

/// Blocks per tenant and the caches in front of them.
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    counters: Arc<ReadCounters>,
    cfg: CatalogConfig,
    tenants: Cache<String, Arc<Vec<Arc<BlockMeta>>>>,
    /// Bumped whenever a tenant's block list changes here (a block published, compacted or
    /// deleted): a listing that began before a change is not cached over it.
    changes: AtomicU64,
    metas: Cache<Path, Arc<BlockMeta>>,
    footers: Cache<Uuid, Arc<ArrowReaderMetadata>>,
    scan_footers: Cache<Uuid, Arc<ScanFooter>>,
    /// Page checksums placed by each block's footer (see [`crate::block::checksums`]).
    page_sums: Cache<Uuid, Arc<PageSums>>,
    /// `None` for a bloom found damaged: the block is read as if it said "maybe".
    blooms: Cache<Uuid, Option<Arc<TraceBloom>>>,
    /// Decoded rollups; `None` for one found damaged (the block is then read span by span).
    rollups: Cache<Uuid, Option<Arc<RecordBatch>>>,
    /// Damaged blocks, skipped by every query.
    quarantine: Quarantine,
    incomplete: Cache<Uuid, Arc<IncompleteTraces>>,
    /// Tenants whose storage this catalog has listed at least once (until then a tenant index
    /// is not trusted: it may predate blocks this process wrote before a restart).
    listed: Mutex<std::collections::HashSet<String>>,
    /// Blocks published here, with when, that a tenant index may not name yet.
    recent: Mutex<HashMap<String, Vec<Published>>>,
}

/// A block published by this catalog, with when (unix nanoseconds).
type Published = (Arc<BlockMeta>, u64);

/// The traces whose part in a block is incomplete (see [`BlockMeta::incomplete_traces`]).
pub type IncompleteTraces = std::collections::HashSet<TraceId, foldhash::fast::RandomState>;

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("store", &self.store.to_string())
            .finish()
    }
}

fn weigh(bytes: usize) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX).max(1)
}

impl Catalog {
    /// A catalog over `store`; reads are counted.
    pub fn new(store: Arc<dyn ObjectStore>, cfg: CatalogConfig) -> Self {
        let counting = CountingStore::new(store);
        let counters = counting.counters.clone();
        Self {
            store: Arc::new(counting),
            counters,
            tenants: Cache::builder().time_to_live(cfg.blocklist_poll).build(),
            changes: AtomicU64::new(0),
            metas: Cache::builder()
                .weigher(|_, m: &Arc<BlockMeta>| weigh(m.memory_size()))
                .max_capacity(cfg.meta_cache_bytes)
                .build(),
            footers: Cache::builder()
                .weigher(|_, f: &Arc<ArrowReaderMetadata>| weigh(f.metadata().memory_size()))
                .max_capacity(cfg.footer_cache_bytes)
                .build(),
            // A quarter of the footers' budget: an entry is a few percent of its footer.
            scan_footers: Cache::builder()
                .weigher(|_, f: &Arc<ScanFooter>| weigh(f.memory_size()))
                .max_capacity(cfg.footer_cache_bytes / 4)
                .build(),
            // A quarter of the footers' budget: 24 bytes a page against the footer's ~100.
            page_sums: Cache::builder()
                .weigher(|_, p: &Arc<PageSums>| weigh(p.memory_size()))
                .max_capacity(cfg.footer_cache_bytes / 4)
                .build(),
            blooms: Cache::builder()
                .weigher(|_, b: &Option<Arc<TraceBloom>>| {
                    weigh(b.as_ref().map_or(64, |b| b.byte_size()))
                })
                .max_capacity(cfg.bloom_cache_bytes)
                .build(),
            rollups: Cache::builder()
                .weigher(|_, r: &Option<Arc<RecordBatch>>| {
                    weigh(r.as_ref().map_or(64, |r| r.get_array_memory_size()))
                })
                .max_capacity(cfg.rollup_cache_bytes)
                .build(),
            // Shares the metas' budget: the lists are usually empty or short.
            incomplete: Cache::builder()
                .weigher(|_, t: &Arc<IncompleteTraces>| weigh(64 + t.len() * 24))
                .max_capacity(cfg.meta_cache_bytes)
                .build(),
            listed: Default::default(),
            recent: Default::default(),
            quarantine: Quarantine::default(),
            cfg,
        }
    }

    /// How long a tenant's block list is trusted before storage is read again.
    pub fn poll(&self) -> Duration {
        self.cfg.blocklist_poll
    }

    /// The (counting) object store behind the catalog.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Read requests and bytes fetched from storage so far.
    pub fn read_counters(&self) -> (u64, u64) {
        self.counters.snapshot()
    }

    /// Drops every cache (for cold-cache measurements).
    pub fn clear_caches(&self) {
        self.tenants.invalidate_all();
        self.metas.invalidate_all();
        self.footers.invalidate_all();
        self.scan_footers.invalidate_all();
        self.blooms.invalidate_all();
        self.rollups.invalidate_all();
        self.incomplete.invalidate_all();
    }

    /// Tenants that have at least one block directory in storage.
    pub async fn list_tenants(&self) -> Result<Vec<String>> {
        let r = self
            .store
            .list_with_delimiter(None)
            .await
            .map_err(|e| EngineError::storage("/", e))?;
        let mut out: Vec<String> = r
            .common_prefixes
            .iter()
            .filter_map(|p| p.parts().next_back())
            // Allegro's own directories have names no tenant can have.
            .filter_map(|part| crate::tenant::tenant_of_dir(part.as_ref()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The complete blocks of `tenant`, oldest first, listed from storage at most once per
    /// `blocklist_poll`.
    pub async fn blocks(&self, tenant: &str) -> Result<Arc<Vec<Arc<BlockMeta>>>> {
        let listed = self.listed_blocks(tenant).await?;
        if !self.quarantine.any(tenant) {
            return Ok(listed);
        }
        let healthy = listed
            .iter()
            .filter(|m| !self.quarantine.contains(tenant, &m.block_id.to_string()))
            .cloned()
            .collect();
        Ok(Arc::new(healthy))
    }

    /// The damaged blocks of `tenant` set aside so far (see [`crate::block::quarantine`]).
    pub fn quarantined(&self, tenant: &str) -> Vec<Quarantined> {
        self.quarantine.of(tenant)
    }

    /// Quarantined blocks per tenant, for `/metrics`.
    pub fn quarantined_counts(&self) -> std::collections::BTreeMap<String, usize> {
        self.quarantine.counts()
    }

    /// Quarantines the block `e` found damaged, if it names one; true when it was newly set
    /// aside (a query may then run again without it).
    pub fn quarantine_damaged(&self, e: &EngineError) -> bool {
        match e.damaged() {
            Some((path, reason)) => self.quarantine.add(path, reason),
            None => false,
        }
    }

    /// Every visible block of `tenant`, quarantined ones included.
    async fn listed_blocks(&self, tenant: &str) -> Result<Arc<Vec<Arc<BlockMeta>>>> {
        if let Some(b) = self.tenants.get(tenant).await {
            return Ok(b);
        }
        let before = self.changes.load(SeqCst);
        let list = Arc::new(self.list_blocks(tenant).await?);
        // A block published (or merged, or deleted) while this listing ran may be missing
        // from it, or a deleted one in it: such a listing answers this call only.
        if self.changes.load(SeqCst) == before {
            self.tenants.insert(tenant.to_string(), list.clone()).await;
        }
        Ok(list)
    }

    /// The block directories of `tenant`.
    async fn block_dirs(&self, tenant: &str) -> Result<Vec<Path>> {
        let prefix = Path::from(tenant);
        let dirs = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| EngineError::storage(&prefix, e))?;
        Ok(dirs.common_prefixes)
    }

    /// The visible blocks of `tenant`: from its index when one is fresh enough and storage
    /// was listed once before, else from a listing.
    async fn list_blocks(&self, tenant: &str) -> Result<Vec<Arc<BlockMeta>>> {
        let trusted = self.listed.lock().contains(tenant);
        if let (true, Some(stale)) = (trusted, self.cfg.index_stale_after)
            && let Some(ix) = TenantIndex::read(&self.store, tenant).await?
        {
            let now = crate::now_unix_nanos();
            let age = Duration::from_nanos(now.saturating_sub(ix.created_unix_nano));
            if stale.is_zero() || age <= stale {
                return self.indexed_blocks(tenant, &ix).await;
            }
        }
        let started = crate::now_unix_nanos();
        let out = self.list_storage(tenant).await?;
        self.listed.lock().insert(tenant.to_string());
        if let Some(r) = self.recent.lock().get_mut(tenant) {
            r.retain(|(_, at)| *at >= started);
        }
        Ok(out)
    }

    /// The visible blocks of `tenant` as `ix` names them, with the blocks published here since.
    async fn indexed_blocks(&self, tenant: &str, ix: &TenantIndex) -> Result<Vec<Arc<BlockMeta>>> {
        let paths: Vec<Path> = ix
            .blocks
            .iter()
            .map(|b| block_path(tenant, &b.id, objects::META))
            .collect();
        let mut out = self.metas_at(paths).await?;
        let mut recent = self.recent.lock();
        if let Some(r) = recent.get_mut(tenant) {
            r.retain(|(_, at)| *at >= ix.created_unix_nano);
            let named: std::collections::HashSet<Uuid> = out.iter().map(|m| m.block_id).collect();
            out.extend(
                r.iter()
                    .filter(|(m, _)| !named.contains(&m.block_id))
                    .map(|(m, _)| m.clone()),
            );
        }
        drop(recent);
        retire_compacted(&mut out);
        out.sort_by_key(|m| (m.start_unix_nano, m.block_id));
        Ok(out)
    }

    /// The visible blocks of `tenant` from a listing of storage (every block directory), not
    /// from its index: what a compactor checks before merging, and writes the index from.
    pub async fn list_storage(&self, tenant: &str) -> Result<Vec<Arc<BlockMeta>>> {
        let paths: Vec<Path> = self
            .block_dirs(tenant)
            .await?
            .iter()
            .map(|d| d.clone().join(objects::META))
            .collect();
        let mut out = self.metas_at(paths).await?;
        retire_compacted(&mut out);
        out.sort_by_key(|m| (m.start_unix_nano, m.block_id));
        Ok(out)
    }

    /// The metas at `paths`, 16 reads at a time; absent and unreadable ones left out.
    async fn metas_at(&self, paths: Vec<Path>) -> Result<Vec<Arc<BlockMeta>>> {
        let metas: Vec<Option<Arc<BlockMeta>>> = futures::stream::iter(paths)
            .map(|p| async move { self.meta(&p).await })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        Ok(metas.into_iter().flatten().collect())
    }

    /// Everything stored for `tenant`, hidden blocks included, for retention: the visible
    /// blocks; the blocks a visible block was compacted from, each with when that block
    /// appeared; and directories without `meta.json`, with when they were last written.
    pub async fn list_all(&self, tenant: &str) -> Result<Listing> {
        let mut out = Listing::default();
        let mut metas: Vec<Arc<BlockMeta>> = Vec::new();
        for d in &self.block_dirs(tenant).await? {
            let meta_path = d.clone().join(objects::META);
            if let Some(m) = self.meta(&meta_path).await? {
                // A block quarantined for its meta.json that reads whole again was restored.
                self.quarantine
                    .release_for(tenant, &m.block_id.to_string(), objects::META);
                metas.push(m);
                continue;
            }
            // A meta.json that exists but does not parse is damage, not an orphan.
            if self.written_at(&meta_path).await?.is_some() {
                continue;
            }
            let Some(name) = d.parts().next_back() else {
                continue;
            };
            let left: Vec<_> = self
                .store
                .list(Some(d))
                .try_collect()
                .await
                .map_err(|e| EngineError::storage(d, e))?;
            let has = |object: &str| left.iter().any(|o| o.location.filename() == Some(object));
            // Data without the pending mark was a whole block: its meta.json was lost after
            // it was published. Its spans are nowhere else, so it is kept, quarantined.
            if has(objects::DATA) && !has(objects::PENDING) {
                self.quarantine.add(
                    meta_path.as_ref(),
                    "meta.json missing from a published block: its data is kept, unread, \
                     until meta.json is restored or the directory is deleted",
                );
                continue;
            }
            // Whatever else is left: data and bloom of a write cut short, or of a deletion
            // cut short, or a compactor's claim outliving one.
            let last = left
                .iter()
                .map(|o| o.last_modified.timestamp_nanos_opt().unwrap_or(0).max(0) as u64)
                .max();
            if let Some(at) = last {
                out.orphans.push((name.as_ref().to_string(), at));
            }
        }
        let by_id: HashMap<Uuid, Arc<BlockMeta>> =
            metas.iter().map(|m| (m.block_id, m.clone())).collect();
        let (retired, superseded) = retirements(&metas);
        // A retired block goes once the block retiring it has been visible long enough; a
        // superseded merge, once it has itself been there as long.
        let since = retired
            .iter()
            .map(|(id, by)| (*id, *by))
            .chain(superseded.iter().map(|id| (*id, *id)));
        for (id, by) in since {
            let Some(m) = by_id.get(&id) else {
                continue;
            };
            let at = self
                .written_at(&block_path(tenant, &by, objects::META))
                .await?
                .unwrap_or(u64::MAX);
            out.retired.push((m.clone(), at));
        }
        out.visible = metas;
        retire_compacted(&mut out.visible);
        Ok(out)
    }

    /// When the object at `path` was last written (unix nanoseconds); `None` if absent.
    async fn written_at(&self, path: &Path) -> Result<Option<u64>> {
        match self.store.head(path).await {
            Ok(m) => Ok(Some(
                m.last_modified.timestamp_nanos_opt().unwrap_or(0).max(0) as u64,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(EngineError::storage(path, e)),
        }
    }

    /// Deletes block directory `dir` of `tenant`: `meta.json` first, so what is left of a
    /// deletion cut short is invisible; the block leaves every cache, and no listing that saw
    /// it is kept.
    pub async fn delete_block(&self, tenant: &str, dir: &str) -> Result<()> {
        self.forget(tenant).await;
        let base = Path::from(tenant).join(dir);
        let meta = base.clone().join(objects::META);
        self.metas.invalidate(&meta).await;
        // Marked pending first: what a deletion cut short leaves is an orphan, not a block
        // that lost its meta.json.
        let pending = base.clone().join(objects::PENDING);
        self.store
            .put_opts(&pending, PutPayload::new(), PutOptions::default())
            .await
            .map_err(|e| EngineError::storage(&pending, e))?;
        self.delete_object(&meta).await?;
        let rest: Vec<_> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(|e| EngineError::storage(&base, e))?;
        for o in rest.iter().filter(|o| o.location != pending) {
            self.delete_object(&o.location).await?;
        }
        self.delete_object(&pending).await?;
        if let Ok(id) = Uuid::parse_str(dir) {
            if let Some(r) = self.recent.lock().get_mut(tenant) {
                r.retain(|(m, _)| m.block_id != id);
            }
            self.footers.invalidate(&id).await;
            self.scan_footers.invalidate(&id).await;
            self.page_sums.invalidate(&id).await;
            self.blooms.invalidate(&id).await;
            self.incomplete.invalidate(&id).await;
        }
        self.quarantine.release(tenant, dir);
        self.forget(tenant).await;
        Ok(())
    }

    /// Deletes the object at `path`; one already gone is no error.
    async fn delete_object(&self, path: &Path) -> Result<()> {
        crate::storage::delete_if_present(self.store.as_ref(), path).await
    }

    /// Drops what is cached of `tenant`'s block list, so the next query lists storage.
    pub async fn forget(&self, tenant: &str) {
        self.changes.fetch_add(1, SeqCst);
        self.tenants.invalidate(tenant).await;
    }

    /// Block `id` of `tenant` by its ID alone, from the meta cache or its `meta.json`: how a
    /// node that was sent a plan naming blocks (a cluster's scheduler and executors) finds
    /// them without listing the tenant's storage.
    pub async fn block_meta(&self, tenant: &str, id: &Uuid) -> Result<Arc<BlockMeta>> {
        let path = block_path(tenant, id, objects::META);
        // A block named by a plan was listed when the plan was made: gone now means retired
        // (merged or expired) since, and the query asked again sees what replaced it.
        self.meta(&path)
            .await?
            .ok_or_else(|| EngineError::BlockGone {
                path: path.to_string(),
            })
    }

    /// One block's meta; `None` while the block is incomplete (no meta.json yet) or unreadable.
    async fn meta(&self, path: &Path) -> Result<Option<Arc<BlockMeta>>> {
        if let Some(m) = self.metas.get(path).await {
            return Ok(Some(m));
        }
        let bytes = match self.store.get_opts(path, GetOptions::default()).await {
            Ok(r) => r.bytes().await.map_err(|e| EngineError::storage(path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(EngineError::storage(path, e)),
        };
        match BlockMeta::parse(path.as_ref(), &bytes) {
            Ok(m) => {
                let m = Arc::new(m);
                self.metas.insert(path.clone(), m.clone()).await;
                Ok(Some(m))
            }
            // One bad block must not hide the others: a damaged one is quarantined (logged
            // once, counted, listed) and skipped; one of a format this build cannot read, skipped.
            Err(e) => {
                match e.damaged() {
                    Some((_, reason)) => {
                        self.quarantine.add(path.as_ref(), reason);
                    }
                    None => tracing::warn!(path = %path, error = %e, "skipping block"),
                }
                Ok(None)
            }
        }
    }

    /// Stores an encoded block and makes it visible at once.
    pub async fn add_block(&self, block: &EncodedBlock) -> Result<()> {
        put_block_data(&self.store, block).await?;
        self.publish_block(block).await
    }

    /// Stores a block's data without making it visible; [`Catalog::publish_block`] does that.
    /// Lets a writer record elsewhere that the block exists before anyone can read it.
    pub async fn stage_block(&self, block: &EncodedBlock) -> Result<()> {
        put_block_data(&self.store, block).await
    }

    /// True when the block's `meta.json` is in storage (the block is visible).
    pub async fn block_is_published(&self, tenant: &str, block_id: &Uuid) -> Result<bool> {
        let path = block_path(tenant, block_id, objects::META);
        let head = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&path, head).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(EngineError::storage(&path, e)),
        }
    }

    /// Writes a staged block's `meta.json` and makes it visible at once.
    pub async fn publish_block(&self, block: &EncodedBlock) -> Result<()> {
        put_block_meta(&self.store, block).await?;
        self.changes.fetch_add(1, SeqCst);
        let meta = Arc::new(block.meta.clone());
        let path = block_path(&meta.tenant_id, &meta.block_id, objects::META);
        self.metas.insert(path, meta.clone()).await;
        if self.cfg.index_stale_after.is_some() {
            self.recent
                .lock()
                .entry(meta.tenant_id.clone())
                .or_default()
                .push((meta.clone(), crate::now_unix_nanos()));
        }
        if let Some(list) = self.tenants.get(&meta.tenant_id).await {
            let mut v = (*list).clone();
            v.push(meta.clone());
            retire_compacted(&mut v);
            self.tenants
                .insert(meta.tenant_id.clone(), Arc::new(v))
                .await;
        }
        Ok(())
    }

    /// A block's bloom filter; `None` when it is damaged (logged once per load): the filter is
    /// an index, so the block is read as if it said "maybe" instead of failing lookups.
    async fn bloom(
        &self,
        store: &Arc<dyn ObjectStore>,
        meta: &BlockMeta,
    ) -> Result<Option<Arc<TraceBloom>>> {
        let path = block_path(&meta.tenant_id, &meta.block_id, objects::BLOOM);
        let store = store.clone();
        let sums = meta.checksums.clone();
        self.blooms
            .try_get_with(meta.block_id, async move {
                let bytes = crate::storage::whole_object(store.as_ref(), &path).await?;
                let checked = match &sums {
                    Some(s) => s.verify_bloom(&bytes).map_err(|m| EngineError::corrupt(&path, m)),
                    None => Ok(()),
                };
                match checked.and_then(|()| TraceBloom::from_bytes(path.as_ref(), &bytes)) {
                    Ok(b) => Ok::<_, EngineError>(Some(Arc::new(b))),
                    Err(e) => {
                        tracing::warn!(error = %e, "damaged bloom filter: the block is read without it");
                        Ok(None)
                    }
                }
            })
            .await
            .map_err(unwrap_arc)
    }

    /// A block's span counts per minute ([`crate::block::rollup`]), cached; `None` when the
    /// block has none or it is damaged (logged once per load): a rollup is an index, so the
    /// block is then read span by span.
    pub(crate) async fn rollup(&self, meta: &BlockMeta) -> Option<Arc<RecordBatch>> {
        let info = meta.rollup.clone()?;
        let path = block_path(&meta.tenant_id, &meta.block_id, objects::ROLLUP);
        let store = self.store.clone();
        let loaded = self
            .rollups
            .try_get_with(meta.block_id, async move {
                let bytes = crate::storage::whole_object(store.as_ref(), &path).await?;
                match crate::block::rollup::read(path.as_ref(), bytes, &info) {
                    Ok(r) => Ok::<_, EngineError>(Some(Arc::new(r))),
                    Err(e) => {
                        tracing::warn!(error = %e, "damaged rollup: the block is read span by span");
                        Ok(None)
                    }
                }
            })
            .await;
        // A read that failed (not cached: it may succeed next time) costs only the shortcut.
        loaded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "rollup not read: the block is read span by span");
            None
        })
    }

    /// The Parquet footer and page index of a block, cached; loaded through `store`.
    pub(crate) async fn footer(
        &self,
        store: &Arc<dyn ObjectStore>,
        meta: &BlockMeta,
    ) -> Result<Arc<ArrowReaderMetadata>> {
        let store = store.clone();
        let m = meta.clone();
        self.footers
            .try_get_with(meta.block_id, async move {
                Ok::<_, EngineError>(Arc::new(load_footer(&store, &m).await?))
            })
            .await
            .map_err(unwrap_arc)
    }

    /// A reader of `meta`'s data through `store` that checks every footer, page index and page
    /// it fetches against the block's checksums (page checksums cached per block).
    pub(crate) async fn checked_reader(
        &self,
        store: &Arc<dyn ObjectStore>,
        meta: &BlockMeta,
    ) -> Result<ObjectReader> {
        let reader = object_reader(store, meta);
        if meta.checksums.is_none() {
            return Ok(reader);
        }
        if let Some(p) = self.page_sums.get(&meta.block_id).await {
            return Ok(reader.with_pages(Some(p)));
        }
        let footer = self.footer(store, meta).await?;
        let pages = page_sums(meta, footer.metadata())?;
        if let Some(p) = &pages {
            self.page_sums.insert(meta.block_id, p.clone()).await;
        }
        Ok(reader.with_pages(pages))
    }

    /// A block's footer converted to the Arrow `schema` of a sampled scan, with its trace-ID
    /// cuts decoded; cached per block.
    pub(crate) async fn scan_footer(
        &self,
        meta: &BlockMeta,
        schema: &SchemaRef,
    ) -> Result<Arc<ScanFooter>> {
        if let Some(f) = self.scan_footers.get(&meta.block_id).await
            && f.has_schema(schema)
        {
            return Ok(f);
        }
        let footer = self.footer(&self.store, meta).await?;
        let f = ScanFooter::try_new(&footer, schema)
            .map(Arc::new)
            .map_err(|e| crate::block::reader::parquet_err(meta, e))?;
        self.scan_footers.insert(meta.block_id, f.clone()).await;
        Ok(f)
    }

    /// The traces whose part in `meta`'s block is incomplete: from `meta.json`, or read from
    /// the block (two narrow columns) when it does not list them; cached per block.
    pub async fn incomplete_traces(&self, meta: &BlockMeta) -> Result<Arc<IncompleteTraces>> {
        if let Some(hit) = self.incomplete.get(&meta.block_id).await {
            return Ok(hit);
        }
        let ids: Vec<TraceId> = match &meta.incomplete_traces {
            Some(list) => list
                .iter()
                .map(|h| TraceId::parse_hex(h))
                .collect::<Result<_>>()?,
            None => {
                let footer = self.footer(&self.store, meta).await?;
                let reader = self.checked_reader(&self.store, meta).await?;
                crate::block::reader::read_incomplete_traces(reader, meta, &footer).await?
            }
        };
        let set = Arc::new(ids.into_iter().collect::<IncompleteTraces>());
        self.incomplete.insert(meta.block_id, set.clone()).await;
        Ok(set)
    }

    /// Finds every span of trace `id` in `tenant`'s blocks overlapping `[start, end]`
    /// (unix nanoseconds). Blocks are pruned by time range, then min/max trace ID, then the
    /// bloom filter; only the survivors' footers and pages are read.
    pub async fn find_trace(
        &self,
        tenant: &str,
        id: &TraceId,
        range: Option<(u64, u64)>,
    ) -> Result<TraceLookup> {
        let mut listed_again = false;
        let mut damaged = 0;
        loop {
            match self.find_trace_once(tenant, id, range).await {
                // A block deleted after it was listed (merged or expired, maybe by another
                // process): list again and look once more.
                Err(e) if e.missing_object().is_some() && !listed_again => {
                    listed_again = true;
                    self.forget(tenant).await;
                }
                // A damaged block: set aside, and the lookup runs again without it.
                Err(e) if damaged < MAX_DAMAGED_PER_QUERY && self.quarantine_damaged(&e) => {
                    damaged += 1;
                }
                r => return r,
            }
        }
    }

    async fn find_trace_once(
        &self,
        tenant: &str,
        id: &TraceId,
        range: Option<(u64, u64)>,
    ) -> Result<TraceLookup> {
        // Reads of this lookup go through its own counter, so concurrent lookups do not mix.
        let counting = CountingStore::new(self.store.clone());
        let mine = counting.counters.clone();
        let store: Arc<dyn ObjectStore> = Arc::new(counting);
        let store = &store;
        let blocks = self.blocks(tenant).await?;
        let candidates: Vec<Arc<BlockMeta>> = blocks
            .iter()
            .filter(|m| range.is_none_or(|(s, e)| m.overlaps(s, e)) && m.may_contain_id(id))
            .cloned()
            .collect();
        let found: Vec<Option<Vec<RecordBatch>>> = futures::stream::iter(candidates)
            .map(|m| async move {
                if let Some(bloom) = self.bloom(store, &m).await?
                    && !bloom.may_contain(id)
                {
                    return Ok::<_, EngineError>(None);
                }
                let footer = self.footer(store, &m).await?;
                let reader = self.checked_reader(store, &m).await?;
                // Of a block in time slices, only the slices overlapping the range.
                let only = range.and_then(|(s, e)| m.row_groups_overlapping(s, e));
                Ok(Some(
                    read_trace(reader, &m, &footer, id, only.as_deref()).await?,
                ))
            })
            .buffer_unordered(self.cfg.read_concurrency.max(1))
            .try_collect()
            .await?;
        let blocks_read = found.iter().filter(|f| f.is_some()).count();
        let batches: Vec<RecordBatch> = found.into_iter().flatten().flatten().collect();
        let resource_spans = normalize(batches_to_resource_spans(&batches)?);
        Ok(TraceLookup {
            resource_spans,
            total_blocks: blocks.len(),
            blocks_read,
            inspected_bytes: mine.snapshot().1,
        })
    }
}

fn unwrap_arc(e: Arc<EngineError>) -> EngineError {
    Arc::try_unwrap(e).unwrap_or_else(EngineError::Shared)
}

/// Leaves out of `blocks` every block that a block in it was compacted from: the merged block's
/// `meta.json` retires its inputs in the write that makes it visible.
fn retire_compacted(blocks: &mut Vec<Arc<BlockMeta>>) {
    let (retired, superseded) = retirements(blocks);
    if !retired.is_empty() || !superseded.is_empty() {
        blocks.retain(|m| !retired.contains_key(&m.block_id) && !superseded.contains(&m.block_id));
    }
}

/// Which of `blocks` are retired (each with the merged block that retired it) and which merged
/// blocks are superseded. Two processes sharing a bucket claim their inputs before merging
/// (`block::claim`), but a claim can lapse under a merge slower than its lease: should two
/// merged blocks name the same input, the one with the lower ID (the same choice in every
/// process) counts and the other is hidden, so no span shows twice; retention deletes it as
/// it deletes retired inputs.
fn retirements(
    blocks: &[Arc<BlockMeta>],
) -> (HashMap<Uuid, Uuid>, std::collections::HashSet<Uuid>) {
    let mut merged: Vec<&Arc<BlockMeta>> = blocks
        .iter()
        .filter(|m| m.compacted_from.is_some())
        .collect();
    merged.sort_by_key(|m| m.block_id);
    let mut retired: HashMap<Uuid, Uuid> = HashMap::new();
    let mut superseded = std::collections::HashSet::new();
    for m in merged {
        let from = m.compacted_from.iter().flatten();
        if from.clone().any(|id| retired.contains_key(id)) {
            superseded.insert(m.block_id);
            continue;
        }
        retired.extend(from.map(|id| (*id, m.block_id)));
    }
    (retired, superseded)
}

/// A tenant's storage as retention sees it ([`Catalog::list_all`]).
#[derive(Debug, Default)]
pub struct Listing {
    /// Blocks queries read.
    pub visible: Vec<Arc<BlockMeta>>,
    /// Blocks retired by a merged block, with when it appeared (unix nanoseconds).
    pub retired: Vec<(Arc<BlockMeta>, u64)>,
    /// Block directories without `meta.json`, with when they were last written.
    pub orphans: Vec<(String, u64)>,
}
