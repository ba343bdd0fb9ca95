//! Cached benchmark datasets: generated once per scale, reused by every run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use allegro_datasets::{BlockCut, GenOptions, write_blocks};
use allegro_engine::block::writer::{BlockCompression, BlockWriteOptions};
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::ids::TraceId;
use allegro_engine::storage::{StorageBackend, open_store};
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::Common;

/// The tenant benchmark blocks are written for.
pub const TENANT: &str = "bench";

/// What a cached dataset holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Spans.
    pub spans: u64,
    /// Traces.
    pub traces: u64,
    /// Blocks.
    pub blocks: usize,
    /// Bytes of all `data.parquet`.
    pub data_bytes: u64,
    /// Seconds it took to generate and write.
    pub write_seconds: f64,
}

/// Fixed generation options for a scale, so cached data is comparable between runs.
pub fn gen_options(c: &Common) -> GenOptions {
    GenOptions {
        seed: c.seed,
        spans: c.spans,
        start_unix_nano: 1_767_225_600_000_000_000,
        duration_nano: (c.duration_secs() * 1e9) as u64,
    }
}

/// Block options for the run.
pub fn write_options(c: &Common) -> Result<BlockWriteOptions, String> {
    let compression = BlockCompression::parse(&c.compression).map_err(|e| e.to_string())?;
    Ok(BlockWriteOptions {
        compression,
        ..Default::default()
    })
}

/// The cached dataset for `c`, generated first if missing. Returns its store and facts.
pub async fn ensure(c: &Common) -> Result<(Arc<dyn ObjectStore>, PathBuf, DatasetInfo), String> {
    // The default 24h keeps the names of datasets cached before `--duration` existed.
    let span = if c.duration == "24h" {
        String::new()
    } else {
        format!("-{}", c.duration)
    };
    let split = match c.split_every {
        0 => String::new(),
        n => format!("-split{n}"),
    };
    let dir = c.data.join(format!(
        "spans{}-seed{}-block{}-{}{span}{split}",
        c.spans,
        c.seed,
        c.block_spans,
        c.compression.replace(':', "")
    ));
    let marker = dir.join("dataset.json");
    let store = local_store(&dir)?;
    if let Ok(bytes) = std::fs::read(&marker)
        && let Ok(info) = serde_json::from_slice::<DatasetInfo>(&bytes)
    {
        return Ok((store, dir, info));
    }
    // A half-written dataset from an interrupted run is discarded.
    let _ = std::fs::remove_dir_all(&dir);
    let store = local_store(&dir)?;
    eprintln!(
        "generating dataset {} (once; cached for later runs)…",
        dir.display()
    );
    let t0 = std::time::Instant::now();
    let mut last = 0;
    let summary = write_blocks(
        &store,
        TENANT,
        gen_options(c),
        BlockCut {
            spans: c.block_spans,
            split_every: c.split_every,
        },
        &write_options(c)?,
        &mut |n| {
            if n >= last + 1_000_000 {
                eprintln!("  {n} spans");
                last = n;
            }
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let info = DatasetInfo {
        spans: summary.spans,
        traces: summary.traces,
        blocks: summary.blocks.len(),
        data_bytes: summary.blocks.iter().map(|b| b.size).sum(),
        write_seconds: t0.elapsed().as_secs_f64(),
    };
    std::fs::write(
        &marker,
        serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    Ok((store, dir, info))
}

/// The object store over the local directory `dir`.
pub fn local_store(dir: &Path) -> Result<Arc<dyn ObjectStore>, String> {
    open_store(&StorageBackend::Local {
        path: dir.to_path_buf(),
    })
    .map_err(|e| e.to_string())
}

/// Trace by ID as a process's first lookup: each of `ids` looked up by a fresh catalog over
/// `dir` (empty caches, so the clock includes listing the blocks and reading every
/// `meta.json`; the OS page cache stays warm, as on a machine that has served before, and
/// object-store latency is not simulated). The latencies, and the bytes read in all.
pub async fn cold_trace_lookups(
    dir: &Path,
    ids: &[TraceId],
) -> Result<(Vec<Duration>, u64), String> {
    let (mut took, mut bytes) = (Vec::with_capacity(ids.len()), 0);
    for id in ids {
        let fresh = Catalog::new(local_store(dir)?, CatalogConfig::default());
        let t0 = Instant::now();
        let found = fresh
            .find_trace(TENANT, id, None)
            .await
            .map_err(|e| e.to_string())?;
        took.push(t0.elapsed());
        if found.resource_spans.is_empty() {
            return Err(format!("trace {id} not found"));
        }
        bytes += fresh.read_counters().1;
    }
    Ok((took, bytes))
}

/// A query engine over the dataset in `dir` (no live head), and the end of its newest block:
/// the query suites' ranges end there.
pub async fn open_engine(
    dir: &std::path::Path,
) -> Result<(allegro_engine::query::QueryEngine, u64), String> {
    let catalog = Arc::new(Catalog::new(local_store(dir)?, CatalogConfig::default()));
    let data_end = catalog
        .blocks(TENANT)
        .await
        .map_err(|e| e.to_string())?
        .iter()
        .map(|b| b.end_unix_nano)
        .max()
        .unwrap_or(0);
    let engine =
        allegro_engine::query::QueryEngine::new(catalog, None).map_err(|e| e.to_string())?;
    Ok((engine, data_end))
}
