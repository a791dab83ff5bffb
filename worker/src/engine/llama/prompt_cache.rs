//! The host-memory prompt cache: KV states of slots, kept in RAM after the
//! slot's cells were cut for another prompt, and restored into a slot when
//! a new prompt shares a longer prefix with one of them than with any free
//! slot (as llama-server's `--cache-ram`).
//!
//! The slots themselves keep their prompt after a generation ends, but a
//! worker with more conversations than slots keeps cutting them: a free slot
//! holds someone else's prompt, and the next request computes its whole
//! prompt again. The cache saves a slot's state before its cells are cut,
//! bounded in bytes; the least recently used states go first.

use llama_cpp_2::SeqState;
use llama_cpp_2::token::LlamaToken;

/// A state is restored only if it saves at least one token in this many
/// of its own: copying a cell back is far cheaper than computing it, but a
/// long state that shares only a chat template's opening is not worth it.
const MAX_COPIED_PER_SAVED: usize = 16;

/// A saved sequence state: only its size matters here.
pub trait StateBytes {
    fn byte_len(&self) -> usize;
}

impl StateBytes for SeqState {
    fn byte_len(&self) -> usize {
        SeqState::byte_len(self)
    }
}

/// Saved slot states, at most `limit` bytes of them.
pub struct PromptCache<S> {
    limit: u64,
    used: u64,
    /// Ticks on every lookup that restores and every save (LRU order).
    clock: u64,
    entries: Vec<Entry<S>>,
}

struct Entry<S> {
    /// The tokens whose KV cells the state holds, in position order.
    tokens: Vec<LlamaToken>,
    state: S,
    bytes: u64,
    used_at: u64,
}

impl<S: StateBytes> PromptCache<S> {
    /// An empty cache holding at most `limit` bytes (0: nothing is kept).
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: 0,
            clock: 0,
            entries: Vec::new(),
        }
    }

    /// Whether the cache may hold anything.
    pub fn is_on(&self) -> bool {
        self.limit > 0
    }

    /// Bytes of the states held.
    pub fn bytes(&self) -> u64 {
        self.used
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a state of `tokens` taking `bytes` is worth saving: it fits,
    /// and no saved state already holds all of `tokens`.
    pub fn wants(&self, tokens: &[LlamaToken], bytes: usize) -> bool {
        !tokens.is_empty()
            && (bytes as u64) <= self.limit
            && !self
                .entries
                .iter()
                .any(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(tokens))
    }

    /// Keeps the state of `tokens`, replacing saved states that hold only a
    /// part of them, then drops the least recently used states until the
    /// cache is within its limit.
    pub fn save(&mut self, tokens: Vec<LlamaToken>, state: S) {
        let bytes = state.byte_len() as u64;
        if bytes > self.limit {
            return;
        }
        let mut used = self.used;
        self.entries.retain(|e| {
            let covered = tokens.starts_with(&e.tokens);
            if covered {
                used -= e.bytes;
            }
            !covered
        });
        self.used = used;
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            state,
            bytes,
            used_at: self.clock,
        });
        self.used += bytes;
        while self.used > self.limit {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used_at)
                .map(|(i, _)| i)
            else {
                break;
            };
            let gone = self.entries.swap_remove(oldest);
            self.used -= gone.bytes;
        }
    }

    /// The saved state sharing the longest prefix with `prompt`, if that is
    /// longer than `than` tokens (what the chosen slot already shares) by
    /// one token in [`MAX_COPIED_PER_SAVED`] of the state's; among equals
    /// the shortest (the least to copy). Returns its tokens and state,
    /// marked as used.
    pub fn lookup(&mut self, prompt: &[LlamaToken], than: usize) -> Option<(&[LlamaToken], &S)> {
        let (best, _) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt)))
            .filter(|&(i, shared)| {
                shared > than
                    && (shared - than) * MAX_COPIED_PER_SAVED >= self.entries[i].tokens.len()
            })
            .max_by_key(|&(i, shared)| (shared, std::cmp::Reverse(self.entries[i].tokens.len())))?;
        self.clock += 1;
        let entry = &mut self.entries[best];
        entry.used_at = self.clock;
        Some((&entry.tokens, &entry.state))
    }

    /// Drops the state of exactly `tokens` (one that could not be restored).
    pub fn forget(&mut self, tokens: &[LlamaToken]) {
        if let Some(i) = self.entries.iter().position(|e| e.tokens == tokens) {
            let gone = self.entries.swap_remove(i);
            self.used -= gone.bytes;
        }
    }
}

/// How many leading tokens `a` and `b` share.
pub fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state of so many bytes.
    struct Fake(usize);

    impl StateBytes for Fake {
        fn byte_len(&self) -> usize {
            self.0
        }
    }

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().copied().map(LlamaToken).collect()
    }

    #[test]
    fn the_longest_shared_prefix_is_found_only_when_it_beats_the_slot() {
        let mut cache = PromptCache::new(1000);
        cache.save(toks(&[1, 2, 3, 4]), Fake(10));
        cache.save(toks(&[1, 2, 9]), Fake(10));
        let prompt = toks(&[1, 2, 3, 7]);
        let (tokens, _) = cache.lookup(&prompt, 0).unwrap();
        assert_eq!(tokens, &toks(&[1, 2, 3, 4])[..]);
        assert!(
            cache.lookup(&prompt, 3).is_none(),
            "the slot shares as much"
        );
        assert!(cache.lookup(&toks(&[5]), 0).is_none());
    }

    #[test]
    fn a_long_state_sharing_only_a_short_head_is_not_restored() {
        let mut cache = PromptCache::new(1000);
        let long: Vec<i32> = (0..40).collect();
        cache.save(toks(&long), Fake(10));
        assert!(cache.lookup(&toks(&[0, 1, 99]), 0).is_none(), "2 of 40");
        assert!(cache.lookup(&toks(&[0, 1, 2, 99]), 0).is_some(), "3 of 40");
    }

    #[test]
    fn a_state_that_holds_only_part_of_a_newer_one_is_replaced() {
        let mut cache = PromptCache::new(1000);
        cache.save(toks(&[1, 2]), Fake(10));
        assert!(!cache.wants(&toks(&[1]), 10), "already held");
        assert!(!cache.wants(&toks(&[1, 2]), 10), "already held");
        assert!(cache.wants(&toks(&[1, 2, 3]), 10));
        cache.save(toks(&[1, 2, 3]), Fake(30));
        assert_eq!((cache.len(), cache.bytes()), (1, 30));
    }

    #[test]
    fn the_least_recently_used_state_goes_first_and_the_bound_holds() {
        let mut cache = PromptCache::new(100);
        cache.save(toks(&[1]), Fake(40));
        cache.save(toks(&[2]), Fake(40));
        // Using [1] makes [2] the oldest.
        assert!(cache.lookup(&toks(&[1, 5]), 0).is_some());
        cache.save(toks(&[3]), Fake(40));
        assert_eq!(cache.bytes(), 80);
        assert!(cache.lookup(&toks(&[2]), 0).is_none(), "evicted");
        assert!(cache.lookup(&toks(&[1]), 0).is_some());
        assert!(cache.lookup(&toks(&[3]), 0).is_some());
    }

    #[test]
    fn a_state_larger_than_the_cache_is_not_kept() {
        let mut cache = PromptCache::new(10);
        assert!(!cache.wants(&toks(&[1]), 11));
        cache.save(toks(&[1]), Fake(11));
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
        let mut off = PromptCache::new(0);
        off.save(toks(&[1]), Fake(1));
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn a_state_that_failed_to_restore_is_forgotten() {
        let mut cache = PromptCache::new(100);
        cache.save(toks(&[1, 2]), Fake(10));
        cache.forget(&toks(&[1, 2]));
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    proptest::proptest! {
        #[test]
        fn the_cache_never_holds_more_than_its_limit(
            saves in proptest::collection::vec(
                (proptest::collection::vec(0i32..4, 1..6), 1usize..60),
                0..40,
            ),
        ) {
            let mut cache = PromptCache::new(100);
            for (ids, bytes) in saves {
                cache.save(toks(&ids), Fake(bytes));
                let sum: u64 = cache.entries.iter().map(|e| e.bytes).sum();
                proptest::prop_assert_eq!(sum, cache.bytes());
                proptest::prop_assert!(cache.bytes() <= 100);
            }
        }
    }
}
