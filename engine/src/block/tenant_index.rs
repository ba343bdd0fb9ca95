//! The tenant index: one small object, `<tenant>/index.json.gz`, naming a tenant's visible
//! blocks, so a poll of the block list is one read instead of a listing of every directory.
//!
//! Why: a tenant with a few thousand blocks costs a paged listing (1,000 names a page on S3)
//! on every `blocklist_poll`, in every process that queries it. The compactor lists storage
//! anyway; at the end of each pass it writes what it saw, and other readers fetch that one
//! object (34 KB gzipped for 1,000 blocks) and read `meta.json` only for blocks they have not
//! seen before (metas never change, so they stay cached).
//!
//! Freshness, as in Tempo (`blocklist_poll_stale_tenant_index`): an index older than the
//! stale limit is not trusted and storage is listed instead, as it is when there is no index
//! (no compactor runs) or the index does not parse. A reader adds the blocks it published
//! itself after the index was made, and lists storage the first time it meets a tenant, so a
//! restarted process never misses its own recent blocks. Blocks another process wrote after the
//! index appear with the next index, at most a compaction cycle later.

use std::io::{Read, Write};
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::meta::BlockMeta;
use crate::error::{EngineError, Result};

/// The index object's name in a tenant's directory (Tempo's name for its own index).
pub const INDEX: &str = "index.json.gz";

/// Largest index read, decompressed (about 2M blocks).
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// A tenant's visible blocks as one compactor saw them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantIndex {
    /// When the listing behind the index began (unix nanoseconds): blocks published after it
    /// may be missing.
    pub created_unix_nano: u64,
    /// The process that wrote it.
    pub writer: String,
    /// The blocks.
    pub blocks: Vec<IndexedBlock>,
}

/// One block of a [`TenantIndex`]: its ID and what an operator reading the index wants to see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexedBlock {
    /// Block ID.
    pub id: Uuid,
    /// Earliest span start, nanoseconds.
    pub start_unix_nano: u64,
    /// Latest span end, nanoseconds.
    pub end_unix_nano: u64,
    /// Compaction level.
    pub level: u32,
    /// Bytes of `data.parquet`.
    pub size: u64,
}

/// Where `tenant`'s index lives.
pub fn index_path(tenant: &str) -> Path {
    Path::from(tenant).join(INDEX)
}

impl TenantIndex {
    /// The index of `blocks`, listed from `created_unix_nano` on by `writer`.
    pub fn of(blocks: &[Arc<BlockMeta>], created_unix_nano: u64, writer: &str) -> Self {
        Self {
            created_unix_nano,
            writer: writer.to_string(),
            blocks: blocks
                .iter()
                .map(|m| IndexedBlock {
                    id: m.block_id,
                    start_unix_nano: m.start_unix_nano,
                    end_unix_nano: m.end_unix_nano,
                    level: m.compaction_level,
                    size: m.size,
                })
                .collect(),
        }
    }

    /// Writes the index of `tenant` (one put; readers see the old or the new one).
    pub async fn write(&self, store: &Arc<dyn ObjectStore>, tenant: &str) -> Result<()> {
        let json = serde_json::to_vec(self)
            .map_err(|e| EngineError::Internal(format!("encoding the tenant index: {e}")))?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let path = index_path(tenant);
        let bytes = gz
            .write_all(&json)
            .and_then(|()| gz.finish())
            .map_err(|e| EngineError::Internal(format!("compressing {path}: {e}")))?;
        store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| EngineError::storage(&path, e))?;
        Ok(())
    }

    /// The index of `tenant`; `None` when there is none or it cannot be read (it is only a
    /// shortcut: the caller lists storage instead).
    pub async fn read(store: &Arc<dyn ObjectStore>, tenant: &str) -> Result<Option<Self>> {
        let path = index_path(tenant);
        let bytes = match store.get(&path).await {
            Ok(r) => r
                .bytes()
                .await
                .map_err(|e| EngineError::storage(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(EngineError::storage(&path, e)),
        };
        let mut json = Vec::new();
        let unpacked = flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_INDEX_BYTES)
            .read_to_end(&mut json);
        let parsed = unpacked
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_slice::<Self>(&json).map_err(|e| e.to_string()));
        match parsed {
            Ok(ix) => Ok(Some(ix)),
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "unreadable tenant index; listing storage");
                Ok(None)
            }
        }
    }
}
