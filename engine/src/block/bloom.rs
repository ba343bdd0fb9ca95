//! A trace-ID bloom filter per block, small enough to keep thousands in memory.
//!
//! Format: magic `ABF1`, `k` (u32 LE), word count (u32 LE), then the bit words (u64 LE).

use crate::error::{EngineError, Result};
use crate::ids::TraceId;

const MAGIC: &[u8; 4] = b"ABF1";

/// A bloom filter over trace IDs.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceBloom {
    k: u32,
    words: Vec<u64>,
}

fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // A final mix so that IDs differing only in their last bytes spread over all bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

impl TraceBloom {
    /// A filter sized for `n` IDs at false-positive rate `fpp`.
    pub fn with_capacity(n: usize, fpp: f64) -> Self {
        let n = n.max(1) as f64;
        let bits = (-(n * fpp.ln()) / (std::f64::consts::LN_2.powi(2)))
            .ceil()
            .max(64.0);
        let k = ((bits / n) * std::f64::consts::LN_2)
            .round()
            .clamp(1.0, 16.0) as u32;
        Self {
            k,
            words: vec![0; (bits as usize).div_ceil(64)],
        }
    }

    fn positions(&self, id: &TraceId) -> impl Iterator<Item = usize> + use<> {
        let m = (self.words.len() * 64) as u64;
        let h1 = fnv1a(0xcbf2_9ce4_8422_2325, &id.0);
        let h2 = fnv1a(0x8422_2325_cbf2_9ce4, &id.0) | 1;
        (0..u64::from(self.k)).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    /// Adds an ID.
    pub fn insert(&mut self, id: &TraceId) {
        for p in self.positions(id) {
            self.words[p / 64] |= 1 << (p % 64);
        }
    }

    /// False means the ID is certainly absent.
    pub fn may_contain(&self, id: &TraceId) -> bool {
        self.positions(id)
            .all(|p| self.words[p / 64] & (1 << (p % 64)) != 0)
    }

    /// Size in memory and on disk.
    pub fn byte_size(&self) -> usize {
        12 + self.words.len() * 8
    }

    /// Serialises the filter.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_size());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.k.to_le_bytes());
        out.extend_from_slice(&(self.words.len() as u32).to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Reads a filter written by [`TraceBloom::to_bytes`].
    pub fn from_bytes(path: &str, b: &[u8]) -> Result<Self> {
        let bad = |m: &str| EngineError::corrupt(path, m);
        if b.len() < 12 || &b[..4] != MAGIC {
            return Err(bad("not an Allegro bloom filter"));
        }
        let k = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let n = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
        if b.len() != 12 + n * 8 || n == 0 || k == 0 {
            return Err(bad("bloom filter length does not match its header"));
        }
        let words = b[12..]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(Self { k, words })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_about_the_requested_false_positive_rate() {
        let ids: Vec<TraceId> = (0..10_000u64)
            .map(|i| {
                let mut b = [0u8; 16];
                b[8..].copy_from_slice(&(i * 7919 + 1).to_be_bytes());
                TraceId(b)
            })
            .collect();
        let mut f = TraceBloom::with_capacity(ids.len(), 0.01);
        ids.iter().for_each(|i| f.insert(i));
        let f = TraceBloom::from_bytes("t", &f.to_bytes()).unwrap();
        assert!(ids.iter().all(|i| f.may_contain(i)));
        let fp = (0..10_000u64)
            .filter(|i| {
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&(i + 1).to_be_bytes());
                f.may_contain(&TraceId(b))
            })
            .count();
        assert!(fp < 250, "false positives {fp} of 10000 at fpp 0.01");
        assert!(TraceBloom::from_bytes("t", b"nope").is_err());
    }
}
