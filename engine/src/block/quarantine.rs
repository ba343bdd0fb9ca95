//! Damaged blocks, set aside: skipped by every query, logged once, counted and listed.
//!
//! A block whose `meta.json`, footer or data fails its checksum or does not decode used to
//! fail every query over its time range with a 500 (a damaged footer), or vanish without a
//! trace (a damaged `meta.json`). Here it is quarantined instead: the query that found the
//! damage runs again without it and says its answer is partial, later queries skip it, and
//! `allegro blocks` and `/metrics` show it until an operator deletes or restores it. The
//! quarantine lives in memory: after a restart the damage is found again on first read.
//! Nothing is deleted: the damaged bytes stay where they are, for inspection.

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// One quarantined block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// The tenant.
    pub tenant: String,
    /// The block's directory name (its ID when readable).
    pub block: String,
    /// The object found damaged (`meta.json`, `data.parquet`).
    pub object: String,
    /// What was wrong.
    pub reason: String,
    /// When it was found (unix nanoseconds).
    pub since_unix_nano: u64,
}

/// The quarantined blocks of every tenant, keyed by (tenant, block).
#[derive(Debug, Default)]
pub struct Quarantine {
    blocks: Mutex<BTreeMap<(String, String), Quarantined>>,
}

impl Quarantine {
    /// Quarantines the block holding the object at `path` (`<tenant>/<block>/<object>`) for
    /// `reason`. True when it was not quarantined before (the one time it is logged).
    pub fn add(&self, path: &str, reason: &str) -> bool {
        let Some((tenant, block, object)) = split_block_path(path) else {
            return false;
        };
        let key = (tenant.to_string(), block.to_string());
        let mut blocks = self.blocks.lock();
        if blocks.contains_key(&key) {
            return false;
        }
        tracing::error!(
            tenant,
            block,
            object,
            reason,
            "damaged block quarantined: queries skip it and answer partial until it is restored or deleted"
        );
        blocks.insert(
            key,
            Quarantined {
                tenant: tenant.to_string(),
                block: block.to_string(),
                object: object.to_string(),
                reason: reason.to_string(),
                since_unix_nano: crate::now_unix_nanos(),
            },
        );
        true
    }

    /// Is `block` of `tenant` quarantined?
    pub fn contains(&self, tenant: &str, block: &str) -> bool {
        let blocks = self.blocks.lock();
        !blocks.is_empty() && blocks.contains_key(&(tenant.to_string(), block.to_string()))
    }

    /// Does `tenant` have any quarantined block?
    pub fn any(&self, tenant: &str) -> bool {
        self.blocks.lock().keys().any(|(t, _)| t == tenant)
    }

    /// The quarantined blocks of `tenant`.
    pub fn of(&self, tenant: &str) -> Vec<Quarantined> {
        self.blocks
            .lock()
            .values()
            .filter(|q| q.tenant == tenant)
            .cloned()
            .collect()
    }

    /// Quarantined blocks per tenant.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (t, _) in self.blocks.lock().keys() {
            *out.entry(t.clone()).or_insert(0) += 1;
        }
        out
    }

    /// Lifts the quarantine of a block (deleted, or restored and verified).
    pub fn release(&self, tenant: &str, block: &str) {
        self.blocks
            .lock()
            .remove(&(tenant.to_string(), block.to_string()));
    }

    /// Lifts the quarantine of a block set aside for `object` (one that reads whole again);
    /// a block quarantined for another object stays.
    pub fn release_for(&self, tenant: &str, block: &str, object: &str) {
        let mut blocks = self.blocks.lock();
        if blocks.is_empty() {
            return;
        }
        let key = (tenant.to_string(), block.to_string());
        if blocks.get(&key).is_some_and(|q| q.object == object) {
            blocks.remove(&key);
        }
    }
}

/// `(tenant, block, object)` of a block object's path.
fn split_block_path(path: &str) -> Option<(&str, &str, &str)> {
    let mut parts = path.trim_start_matches('/').rsplitn(3, '/');
    let object = parts.next()?;
    let block = parts.next()?;
    let tenant = parts.next()?;
    (!tenant.is_empty() && !block.is_empty()).then_some((tenant, block, object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_quarantined_once_and_per_tenant() {
        let q = Quarantine::default();
        assert!(q.add("t1/b1/data.parquet", "checksum mismatch"));
        assert!(!q.add("t1/b1/meta.json", "again"), "logged once");
        assert!(!q.add("no-block-path", "x"));
        assert!(q.contains("t1", "b1") && !q.contains("t2", "b1"));
        assert_eq!(q.of("t1")[0].object, "data.parquet");
        assert!(q.of("t2").is_empty());
        assert_eq!(q.counts().get("t1"), Some(&1));
        q.release_for("t1", "b1", "meta.json");
        assert!(
            q.contains("t1", "b1"),
            "quarantined for its data, not its meta"
        );
        q.release_for("t1", "b1", "data.parquet");
        assert!(!q.any("t1"));
        q.add("t1/b1/meta.json", "missing");
        q.release("t1", "b1");
        assert!(!q.any("t1"));
    }
}
