//! Stable hashing for routing: the same key and worker give the same score
//! in every gateway process and Rust version (std's hashers promise
//! neither), so several gateways agree on where a prefix lives.

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::default();
    h.write(bytes);
    h.finish()
}

/// splitmix64's finaliser: spreads the bits of `x` (FNV alone leaves
/// nearby keys close).
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The rendezvous (highest-random-weight) score of `worker` for `key`.
pub fn score(key: u64, worker: &str) -> u64 {
    rendezvous(key, worker_hash(worker))
}

/// A worker id's half of [`score`], taken once per worker.
pub fn worker_hash(worker: &str) -> u64 {
    mix(fnv1a(worker.as_bytes()))
}

/// [`score`] from the worker's [`worker_hash`].
pub fn rendezvous(key: u64, worker_hash: u64) -> u64 {
    mix(key ^ worker_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        // Fixed across processes and versions: gateways must agree.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(score(1, "w1"), score(1, "w2"));
        assert_eq!(score(42, "w1"), score(42, "w1"));
        assert_eq!(score(42, "w1"), rendezvous(42, worker_hash("w1")));
    }
}
