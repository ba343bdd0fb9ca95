//! Claims: a compactor's hold on the blocks it is about to merge, so two processes sharing a
//! bucket never merge the same blocks twice.
//!
//! Why not Tempo's way: Tempo's compactors share a ring and each owns the jobs that hash to it.
//! Allegro needs no ring: before merging, a compactor writes a small `compaction.claim` object
//! into each input block's directory with a create-only put (`If-None-Match: *` on S3, an
//! atomic link on a local disk). The put fails when the object exists, so of two processes
//! planning the same merge exactly one holds every input; the other sees whose claim it is and
//! plans around those blocks. Claims are taken in block-ID order, so two compactors never hold
//! halves of each other's plan and both give up.
//!
//! A claim carries an expiry (`lease`) so a process killed mid-merge does not hold its blocks
//! forever; an expired claim is deleted and taken. Claims are not released after a merge: they
//! go with the retired inputs, and until then they keep a compactor whose listing is a little
//! behind from claiming blocks that are already merged. A compactor that holds its claims lists
//! storage again and merges only if every input is still visible. Should a merge outlast its
//! lease and be done twice anyway, the catalog keeps one of the two merged blocks (see
//! `Catalog::blocks`), so no span is ever shown twice: claims save work, they do not carry
//! correctness alone.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::meta::BlockMeta;
use super::writer::block_path;
use crate::error::{EngineError, Result};
use crate::storage::delete_if_present;

/// The claim object in a block's directory.
pub const CLAIM: &str = "compaction.claim";

/// What a claim object holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimBody {
    owner: String,
    claimed_unix_nano: u64,
    expires_unix_nano: u64,
}

/// The claims one compactor holds on one merge's inputs.
#[derive(Debug)]
pub struct Claim {
    store: Arc<dyn ObjectStore>,
    paths: Vec<Path>,
}

/// A name for this process in claims when nothing steadier is known: host, process ID and a
/// random part (a restarted process is then a new owner and waits for its old claims to
/// expire like anyone else).
pub fn process_owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        let random = Uuid::new_v4().simple().to_string();
        format!("{}-{}-{}", host_name(), std::process::id(), &random[..8])
    })
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Claims every block of `inputs` for `owner` until `now + lease` (unix nanoseconds). `Ok(Err)`
/// lists the blocks another owner holds (nothing is then held).
pub async fn claim(
    store: &Arc<dyn ObjectStore>,
    inputs: &[Arc<BlockMeta>],
    owner: &str,
    lease: Duration,
    now: u64,
) -> Result<std::result::Result<Claim, Vec<Uuid>>> {
    let mut order: Vec<&Arc<BlockMeta>> = inputs.iter().collect();
    order.sort_by_key(|m| m.block_id);
    let body = ClaimBody {
        owner: owner.to_string(),
        claimed_unix_nano: now,
        expires_unix_nano: now.saturating_add(lease.as_nanos().min(u64::MAX as u128) as u64),
    };
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| EngineError::Internal(format!("encoding a claim: {e}")))?;
    let mut held = Claim {
        store: store.clone(),
        paths: Vec::new(),
    };
    let mut taken = Vec::new();
    for m in order {
        let path = block_path(&m.tenant_id, &m.block_id, CLAIM);
        if take(store, &path, &bytes, owner, now).await? {
            held.paths.push(path);
        } else {
            taken.push(m.block_id);
            break;
        }
    }
    if taken.is_empty() {
        return Ok(Ok(held));
    }
    held.release().await?;
    Ok(Err(taken))
}

/// Writes the claim at `path` unless another owner holds an unexpired one there.
async fn take(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    bytes: &[u8],
    owner: &str,
    now: u64,
) -> Result<bool> {
    // Two attempts: the second after deleting an expired (or unreadable) claim.
    for _ in 0..2 {
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match store
            .put_opts(path, PutPayload::from(bytes.to_vec()), create)
            .await
        {
            Ok(_) => return Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(EngineError::storage(path, e)),
        }
        let existing = match store.get(path).await {
            Ok(r) => r.bytes().await.map_err(|e| EngineError::storage(path, e))?,
            // Released between the two calls: try again.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(EngineError::storage(path, e)),
        };
        match serde_json::from_slice::<ClaimBody>(&existing) {
            Ok(c) if c.owner == owner => {
                // Ours, from an attempt that failed before releasing it: renew it.
                store
                    .put(path, PutPayload::from(bytes.to_vec()))
                    .await
                    .map_err(|e| EngineError::storage(path, e))?;
                return Ok(true);
            }
            Ok(c) if c.expires_unix_nano > now => return Ok(false),
            // Expired, or not a claim at all (a write cut short): it holds nothing.
            _ => delete_if_present(store.as_ref(), path).await?,
        }
    }
    Ok(false)
}

impl Claim {
    /// Gives the blocks back (after a merge that failed or was not needed).
    pub async fn release(mut self) -> Result<()> {
        for path in std::mem::take(&mut self.paths) {
            delete_if_present(self.store.as_ref(), &path).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: u128) -> Arc<BlockMeta> {
        let json = format!(
            r#"{{"format":"allegro-1","blockID":"{}","tenantID":"t","startTime":"","endTime":"",
            "startUnixNano":0,"endUnixNano":1,"totalObjects":1,"totalSpans":1,"size":10,
            "footerSize":1,"bloomSize":1,"rowGroups":1,"minID":"","maxID":"","hotColumns":[],
            "compactionLevel":0}}"#,
            Uuid::from_u128(id)
        );
        Arc::new(BlockMeta::parse("meta.json", json.as_bytes()).expect("meta"))
    }

    #[tokio::test]
    async fn one_owner_holds_a_block_until_release_or_expiry() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let (a, b, c) = (meta(1), meta(2), meta(3));
        let lease = Duration::from_secs(60);
        let first = claim(&store, &[a.clone(), b.clone()], "p1", lease, 0)
            .await
            .unwrap()
            .expect("free blocks are claimed");
        // p2 wants b and c: b is p1's, and p2 keeps nothing (c stays free).
        let busy = claim(&store, &[c.clone(), b.clone()], "p2", lease, 1)
            .await
            .unwrap()
            .expect_err("b is held");
        assert_eq!(busy, vec![b.block_id]);
        let c_alone = claim(&store, std::slice::from_ref(&c), "p3", lease, 1)
            .await
            .unwrap();
        assert!(c_alone.is_ok(), "p2 released c");
        // p1's own earlier claim does not stop p1.
        assert!(
            claim(&store, std::slice::from_ref(&a), "p1", lease, 2)
                .await
                .unwrap()
                .is_ok()
        );
        // After the lease anyone may take b; after a release at once.
        let expired = 61_000_000_000;
        assert!(
            claim(&store, std::slice::from_ref(&b), "p2", lease, expired)
                .await
                .unwrap()
                .is_ok()
        );
        first.release().await.unwrap();
        let released = block_path("t", &a.block_id, CLAIM);
        assert!(matches!(
            store.get(&released).await,
            Err(object_store::Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn of_two_racing_owners_exactly_one_holds_every_input() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        for round in 0..20u128 {
            let inputs: Vec<_> = (0..4).map(|i| meta(round * 10 + i)).collect();
            let mut reversed = inputs.clone();
            reversed.reverse();
            let lease = Duration::from_secs(60);
            let (x, y) = tokio::join!(
                claim(&store, &inputs, "p1", lease, 0),
                claim(&store, &reversed, "p2", lease, 0)
            );
            let won = [x.unwrap().is_ok(), y.unwrap().is_ok()];
            assert_eq!(
                won.iter().filter(|w| **w).count(),
                1,
                "round {round}: {won:?}"
            );
        }
    }
}
