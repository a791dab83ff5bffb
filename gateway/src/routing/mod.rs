//! Which replica serves a request. The scheduler admits a request for a
//! model, then asks the policy to rank the workers that have the model
//! loaded; it takes the first with a free slot, so the ranking is also the
//! fallback order. One file per policy, chosen by `[scheduler] policy`.

pub mod hash;
mod least_loaded;
mod prefix_affinity;
mod round_robin;

use std::fmt::Debug;
use std::sync::Arc;

pub use least_loaded::LeastLoaded;
pub use prefix_affinity::PrefixAffinity;
pub use round_robin::RoundRobin;
use serde::Deserialize;

use crate::context::RequestContext;

/// A worker that has the model loaded, as the scheduler sees it now
/// (borrowed from its state: a decision over 100 workers copies no id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub worker: &'a Arc<str>,
    /// [`hash::worker_hash`] of `worker`.
    pub id_hash: u64,
    /// The model's slots there.
    pub slots: u32,
    /// Slots busy there (this gateway's requests and other gateways').
    pub busy: u32,
    /// Slots the scheduler may hand out now.
    pub free: u32,
}

impl Candidate<'_> {
    /// Busy slots as a fraction of all, compared exactly:
    /// `a.load_cmp(b)` orders by `a.busy / a.slots` against `b.busy / b.slots`.
    pub fn load_cmp(&self, other: &Self) -> std::cmp::Ordering {
        (u64::from(self.busy) * u64::from(other.slots.max(1)))
            .cmp(&(u64::from(other.busy) * u64::from(self.slots.max(1))))
    }
}

/// Ranks the replicas of a model for one request, best first.
pub trait RoutingPolicy: Send + Sync + Debug + 'static {
    fn name(&self) -> &'static str;
    fn rank<'a>(&self, ctx: &RequestContext, candidates: Vec<Candidate<'a>>) -> Vec<Candidate<'a>>;

    /// The first candidate with a free slot in [`rank`](Self::rank)'s
    /// order — what the scheduler grants on every request. Policies whose
    /// order is a comparison find it in one pass, without the sort.
    fn best<'a>(
        &self,
        ctx: &RequestContext,
        candidates: Vec<Candidate<'a>>,
    ) -> Option<Candidate<'a>> {
        self.rank(ctx, candidates).into_iter().find(|c| c.free > 0)
    }
}

/// The policies, by their config name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// The replica with the smallest share of busy slots.
    LeastLoaded,
    /// Replicas in turn (for comparison).
    RoundRobin,
    /// The same replica for the same prompt prefix (where its KV cache
    /// is), unless that replica is above 1.25× the mean load.
    #[default]
    PrefixAffinity,
}

impl PolicyKind {
    pub fn build(self) -> Arc<dyn RoutingPolicy> {
        match self {
            Self::LeastLoaded => Arc::new(LeastLoaded),
            Self::RoundRobin => Arc::new(RoundRobin::default()),
            Self::PrefixAffinity => Arc::new(PrefixAffinity::default()),
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A worker id that lives as long as the tests do (one per name).
    pub fn id(worker: &str) -> &'static Arc<str> {
        static IDS: std::sync::Mutex<Vec<&'static Arc<str>>> = std::sync::Mutex::new(Vec::new());
        let mut ids = IDS.lock().expect("not poisoned");
        if let Some(&id) = ids.iter().find(|&&id| **id == *worker) {
            return id;
        }
        let id: &'static Arc<str> = Box::leak(Box::new(Arc::from(worker)));
        ids.push(id);
        id
    }

    pub fn candidate(worker: &str, slots: u32, busy: u32) -> Candidate<'static> {
        Candidate {
            worker: id(worker),
            id_hash: hash::worker_hash(worker),
            slots,
            busy,
            free: slots.saturating_sub(busy),
        }
    }

    pub fn context(prefix_key: Option<u64>) -> RequestContext {
        let mut ctx =
            RequestContext::from_headers("r".into(), "m".into(), &http::HeaderMap::new(), true)
                .expect("no headers");
        ctx.prefix_key = prefix_key;
        ctx
    }

    pub fn order<'a>(ranked: &[Candidate<'a>]) -> Vec<&'a str> {
        ranked.iter().map(|c| &**c.worker).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::testing::context;
    use super::*;

    /// Up to 12 replicas with distinct ids; free may be below
    /// slots − busy (other gateways' claims).
    fn candidates() -> impl Strategy<Value = Vec<Candidate<'static>>> {
        proptest::collection::vec((0u32..6, 0u32..8, 0u32..8), 0..12).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (slots, busy, free))| {
                    let busy = busy.min(slots);
                    let worker = format!("w{i:02}");
                    Candidate {
                        id_hash: hash::worker_hash(&worker),
                        worker: super::testing::id(&worker),
                        slots,
                        busy,
                        free: free.min(slots - busy),
                    }
                })
                .collect()
        })
    }

    proptest! {
        /// `best` is exactly the first free replica of `rank`'s order.
        #[test]
        fn best_is_the_first_free_in_rank_order(
            mut candidates in candidates(),
            key in proptest::option::of(any::<u64>()),
            reversed in any::<bool>(),
        ) {
            if reversed {
                candidates.reverse();
            }
            let ctx = context(key);
            let policies: [&dyn RoutingPolicy; 2] = [&LeastLoaded, &PrefixAffinity::default()];
            for policy in policies {
                let ranked = policy.rank(&ctx, candidates.clone());
                let expected = ranked.into_iter().find(|c| c.free > 0);
                prop_assert_eq!(policy.best(&ctx, candidates.clone()), expected, "{}", policy.name());
            }
        }
    }
}
