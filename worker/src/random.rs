//! Non-cryptographic randomness for seeds and ids, without a dependency:
//! the standard library's randomly keyed hasher over the current time.

use std::hash::{BuildHasher, Hasher};

/// A fresh random number.
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_differ() {
        assert_ne!(super::random_u64(), super::random_u64());
    }
}
