//! A fast hasher for the agent's hot maps (request ids, endpoints, span ids), seeded per process.
//!
//! The std `RandomState` (SipHash-1-3) costs more than the rest of a map lookup for the short
//! keys used here. This hasher consumes eight bytes per step with a folded 64x64->128-bit
//! multiply, starting from a random per-process seed (taken from `RandomState`), so that colliding
//! keys cannot simply be precomputed. It is not a cryptographic hash; every map it serves is
//! bounded in size by the agent's limits.

use std::hash::{BuildHasher, Hasher};

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// The high and low halves of the 128-bit product, xored.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline]
fn word(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

/// Builds [`FastHasher`]s that share one random per-process seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastState {
    seed: u64,
}

impl FastState {
    /// A state with a fresh random seed.
    pub(crate) fn new() -> Self {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5c07_u64);
        Self { seed: seed | 1 }
    }
}

impl Default for FastState {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            h: self.seed,
            seed: self.seed,
        }
    }
}

/// The hasher built by [`FastState`].
#[derive(Debug, Clone)]
pub(crate) struct FastHasher {
    h: u64,
    seed: u64,
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.h;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            h = fold(h ^ word(c), K1);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            h = fold(h ^ word(rest), K2 ^ rest.len() as u64);
        }
        self.h = h;
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.h = fold(self.h ^ u64::from(i), K2);
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.h = fold(self.h ^ i, K1);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.h ^ self.seed.rotate_left(23), K1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_keys_spread() {
        let s = FastState::new();
        let mut low_bits = HashSet::new();
        for i in 0..4096u32 {
            let key = format!("span-{i:08x}-4173-4c93-a752-18027d8216d8");
            low_bits.insert(s.hash_one(key.as_str()) & 0xfff);
        }
        // A uniform hash fills about 63 % of 4096 buckets with 4096 keys.
        assert!(low_bits.len() > 2300, "{}", low_bits.len());
        assert_eq!(s.hash_one("abc"), s.hash_one("abc"));
        assert_ne!(s.hash_one("abc"), s.hash_one("abd"));
        assert_ne!(s.hash_one(""), s.hash_one("\0"));
    }
}
