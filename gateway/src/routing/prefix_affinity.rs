//! Prefix affinity: requests whose prompts start alike (the request
//! context's prefix key: a long system prompt, or a conversation's first
//! messages) go to the same replica, where that prefix is already in a
//! slot's KV cache. The order is rendezvous hashing of the key over the
//! worker ids — stable as replicas come and go, and the same in every
//! gateway — with a load bound (consistent hashing with bounded loads):
//! a replica that would go above `factor` × the mean load is moved behind
//! the others, so a hot prefix spills over instead of queueing on one
//! worker. Requests without a key are ranked least-loaded.

use super::least_loaded::{least_loaded_free, sort_by_load};
use super::{Candidate, RoutingPolicy, hash};
use crate::context::RequestContext;

#[derive(Debug, Clone, Copy)]
pub struct PrefixAffinity {
    /// How far above the mean load a replica may go: 1.25.
    pub factor: f64,
}

impl Default for PrefixAffinity {
    fn default() -> Self {
        Self { factor: 1.25 }
    }
}

impl RoutingPolicy for PrefixAffinity {
    fn name(&self) -> &'static str {
        "prefix_affinity"
    }

    fn rank<'a>(
        &self,
        ctx: &RequestContext,
        mut candidates: Vec<Candidate<'a>>,
    ) -> Vec<Candidate<'a>> {
        let Some(key) = ctx.prefix_key else {
            sort_by_load(&mut candidates);
            return candidates;
        };
        candidates.sort_by_cached_key(|c| std::cmp::Reverse(hash::rendezvous(key, c.id_hash)));
        let Some(bound) = LoadBound::of(self.factor, &candidates) else {
            return candidates;
        };
        // Stable: hash order within each group.
        let (mut ranked, over): (Vec<_>, Vec<_>) =
            candidates.into_iter().partition(|c| bound.within(c));
        ranked.extend(over);
        ranked
    }

    fn best<'a>(
        &self,
        ctx: &RequestContext,
        candidates: Vec<Candidate<'a>>,
    ) -> Option<Candidate<'a>> {
        let Some(key) = ctx.prefix_key else {
            return least_loaded_free(candidates);
        };
        let bound = LoadBound::of(self.factor, &candidates);
        // The highest score within the bound, else the highest over it;
        // the first of equal scores, as the stable sort keeps them.
        let mut within: Option<(u64, Candidate<'a>)> = None;
        let mut over: Option<(u64, Candidate<'a>)> = None;
        for c in candidates.into_iter().filter(|c| c.free > 0) {
            let score = hash::rendezvous(key, c.id_hash);
            let group = if bound.as_ref().is_none_or(|b| b.within(&c)) {
                &mut within
            } else {
                &mut over
            };
            if group.as_ref().is_none_or(|(best, _)| score > *best) {
                *group = Some((score, c));
            }
        }
        within.or(over).map(|(_, c)| c)
    }
}

/// Consistent hashing with bounded loads: how much of the pool's load a
/// replica may carry with this request added.
struct LoadBound {
    factor: f64,
    total_busy: u64,
    total_slots: u64,
}

impl LoadBound {
    /// `None` when the candidates have no slots at all (no bound applies).
    fn of(factor: f64, candidates: &[Candidate<'_>]) -> Option<Self> {
        let total_busy = candidates.iter().map(|c| u64::from(c.busy)).sum();
        let total_slots = candidates.iter().map(|c| u64::from(c.slots)).sum();
        (total_slots > 0).then_some(Self {
            factor,
            total_busy,
            total_slots,
        })
    }

    /// This request's share of the load `c` may carry.
    fn within(&self, c: &Candidate<'_>) -> bool {
        let bound = (self.factor * (self.total_busy + 1) as f64 * f64::from(c.slots)
            / self.total_slots as f64)
            .ceil();
        f64::from(c.busy + 1) <= bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::testing::{candidate, context, order};

    fn workers(busy: [u32; 4]) -> Vec<Candidate<'static>> {
        ["w1", "w2", "w3", "w4"]
            .iter()
            .zip(busy)
            .map(|(w, b)| candidate(w, 4, b))
            .collect()
    }

    #[test]
    fn the_same_key_picks_the_same_worker_whatever_the_input_order() {
        let policy = PrefixAffinity::default();
        for key in 0..50u64 {
            let a = policy.rank(&context(Some(key)), workers([0; 4]));
            let mut reversed = workers([0; 4]);
            reversed.reverse();
            let b = policy.rank(&context(Some(key)), reversed);
            assert_eq!(order(&a), order(&b));
        }
    }

    #[test]
    fn keys_spread_over_workers() {
        let policy = PrefixAffinity::default();
        let mut counts = std::collections::HashMap::new();
        for key in 0..400u64 {
            let first = policy.rank(&context(Some(hash::mix(key))), workers([0; 4]))[0]
                .worker
                .clone();
            *counts.entry(first).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 4);
        assert!(
            counts.values().all(|n| (60..=140).contains(n)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_hot_worker_spills_over_and_keeps_no_more_than_its_bound() {
        let policy = PrefixAffinity::default();
        let key = Some(7);
        let two = |busy: [u32; 2]| vec![candidate("w1", 4, busy[0]), candidate("w2", 4, busy[1])];
        let preferred = order(&policy.rank(&context(key), two([0, 0])))[0].to_owned();
        let load = |n: u32| if preferred == "w1" { [n, 0] } else { [0, n] };
        // 2 of 3 requests on the preferred worker: within 1.25 × the mean.
        assert_eq!(
            order(&policy.rank(&context(key), two(load(1))))[0],
            preferred
        );
        // A third would be 3 of 3: it goes to the other worker.
        let ranked = policy.rank(&context(key), two(load(2)));
        assert_ne!(order(&ranked)[0], preferred);
        assert_eq!(order(&ranked)[1], preferred, "still the fallback");
    }

    #[test]
    fn without_a_key_it_is_least_loaded() {
        let ranked = PrefixAffinity::default().rank(&context(None), workers([3, 0, 2, 1]));
        assert_eq!(order(&ranked), ["w2", "w4", "w3", "w1"]);
    }
}
