//! A small deterministic PRNG (xoshiro256**, seeded by SplitMix64): the same seed gives the
//! same dataset on every platform and every version of our dependencies.

/// Deterministic random numbers.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// Next 64 random bits.
    pub fn u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.u64() % (hi - lo)
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64) as usize]
    }

    /// Index chosen with the given weights.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.f64().max(f64::MIN_POSITIVE);
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal latency with the given median (ns) and spread, plus a Pareto long tail on
    /// `tail_p` of the draws.
    pub fn latency(&mut self, median_ns: f64, sigma: f64, tail_p: f64) -> u64 {
        let mut v = median_ns * (sigma * self.normal()).exp();
        if self.chance(tail_p) {
            // Pareto(alpha = 1.2) multiplier, capped: rare requests 2x–60x slower.
            v *= (1.0 / (1.0 - self.f64()).max(1e-3))
                .powf(1.0 / 1.2)
                .clamp(2.0, 60.0);
        }
        v.max(1_000.0) as u64
    }

    /// `n` random bytes, never all zero.
    pub fn id<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        loop {
            for chunk in out.chunks_mut(8) {
                let b = self.u64().to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
            if out.iter().any(|b| *b != 0) {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_known_first_value() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43).u64(), xs[0]);
        let mean = (0..100_000).map(|_| a.f64()).sum::<f64>() / 100_000.0;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }
}
