//! Where to load a model: a pure choice over the workers' states.
//!
//! 1. A healthy worker where it fits now (its memory budget minus what its
//!    replicas and loads in flight take, and its model limit): those that
//!    have it stored first (no pull), then the most free memory, then the
//!    lowest id.
//! 2. Else, if eviction is allowed: a worker where unloading idle models —
//!    least recently used first — makes room. An idle model has nothing
//!    running (here or from other gateways) and nothing queued; a model
//!    with running or waiting requests is never evicted. Fewest evictions
//!    first, then stored, then the lowest id. A model used less than
//!    `evict_hold` ago is not a victim until the model to place has waited
//!    that long: requests for it gather meanwhile and one load serves them
//!    all, where evicting at once would swap models back and forth.
//! 3. Else nothing now: the requests keep waiting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pool::{ModelKey, WorkerState};

/// A decision to load `model` on `worker`, after unloading `evict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub worker: Arc<str>,
    /// The worker has it stored or configured: no pull.
    pub stored: bool,
    /// Memory the model is expected to take there.
    pub memory: u64,
    /// Replicas to unload first, least recently used first.
    pub evict: Vec<ModelKey>,
}

/// What the chooser needs to know about the model.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub model: &'a ModelKey,
    /// Memory when the worker does not say (the largest any worker says).
    pub memory: u64,
    /// Whether a worker that has not stored it may pull it.
    pub pullable: bool,
    pub allow_evict: bool,
    /// How long a replica must have been idle to be evicted now.
    pub evict_idle_for: Duration,
    pub now: Instant,
}

/// How good a plan is: fewer evictions, then stored, then more free
/// memory (smaller is better).
type Rank = (usize, bool, std::cmp::Reverse<u64>);

/// Picks a worker for `target`; `busy(model)` says whether a model has
/// requests waiting (its replicas are then not evictable).
pub fn choose(
    workers: &BTreeMap<Arc<str>, WorkerState>,
    target: Target<'_>,
    busy: impl Fn(&ModelKey) -> bool,
) -> Option<Plan> {
    let candidates = workers.iter().filter(|(_, w)| {
        w.healthy
            && !w.replicas.contains_key(target.model)
            && !w.loading.contains_key(target.model)
            && (target.pullable || w.loadable.contains_key(target.model))
    });
    let mut best: Option<(Plan, Rank)> = None;
    for (id, worker) in candidates {
        let stored = worker.loadable.get(target.model);
        let memory = stored.map_or(target.memory, |l| l.memory.max(1));
        let free = worker.memory_limit.saturating_sub(worker.used_memory());
        let plan = if free >= memory && worker.below_model_limit(0) {
            Some(Vec::new())
        } else if target.allow_evict {
            victims(worker, memory, &target, &busy)
        } else {
            None
        };
        let Some(evict) = plan else { continue };
        // Fewer evictions, then stored, then more free memory; the map's
        // order (ids ascending) breaks ties since later equals lose.
        let rank = (evict.len(), stored.is_none(), std::cmp::Reverse(free));
        if best.as_ref().is_none_or(|(_, r)| rank < *r) {
            best = Some((
                Plan {
                    worker: id.clone(),
                    stored: stored.is_some(),
                    memory,
                    evict,
                },
                rank,
            ));
        }
    }
    best.map(|(plan, _)| plan)
}

/// The least recently used idle replicas whose unloading makes room for
/// `memory` (and a model slot), if there are enough.
fn victims(
    worker: &WorkerState,
    memory: u64,
    target: &Target<'_>,
    busy: &impl Fn(&ModelKey) -> bool,
) -> Option<Vec<ModelKey>> {
    let mut idle: Vec<_> = worker
        .replicas
        .iter()
        .filter(|(key, r)| {
            r.idle()
                && !busy(key)
                && target.now.saturating_duration_since(r.last_used) >= target.evict_idle_for
        })
        .collect();
    idle.sort_by_key(|(key, r)| (r.last_used, (*key).clone()));
    let mut free = worker.memory_limit.saturating_sub(worker.used_memory());
    let mut evict = Vec::new();
    for (key, replica) in idle {
        if free >= memory && worker.below_model_limit(evict.len()) {
            break;
        }
        free = free.saturating_add(replica.memory);
        evict.push(key.clone());
    }
    (free >= memory && worker.below_model_limit(evict.len())).then_some(evict)
}

/// Whether any healthy worker could ever hold `memory` (its whole budget).
pub fn fits_anywhere(workers: &BTreeMap<Arc<str>, WorkerState>, memory: u64) -> bool {
    workers
        .values()
        .any(|w| w.healthy && w.memory_limit >= memory)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use herd_proto::v1 as pb;
    use proptest::prelude::*;

    use super::*;
    use crate::scheduler::pool::{Loadable, Replica};

    fn key(name: &str) -> ModelKey {
        ModelKey::of(&pb::ModelStatus {
            name: name.into(),
            ..Default::default()
        })
    }

    fn replica(name: &str, memory: u64, last_used: Instant, running: u32) -> Replica {
        let mut r = Replica::new(
            &pb::ModelStatus {
                name: name.into(),
                slots_total: 4,
                memory_bytes: memory,
                loaded: true,
                ..Default::default()
            },
            last_used,
        );
        r.in_flight = running;
        r
    }

    fn worker(limit: u64, replicas: &[(&str, u64, u64, u32)], stored: &[&str]) -> WorkerState {
        let t0 = Instant::now();
        let mut w = WorkerState {
            healthy: true,
            memory_limit: limit,
            ..WorkerState::default()
        };
        for (name, memory, age, running) in replicas {
            w.replicas.insert(
                key(name),
                replica(name, *memory, t0 + Duration::from_secs(*age), *running),
            );
        }
        for name in stored {
            w.loadable.insert(
                key(name),
                Loadable {
                    name: (*name).into(),
                    memory: 100,
                },
            );
        }
        w
    }

    fn target<'a>(model: &'a ModelKey, allow_evict: bool) -> Target<'a> {
        Target {
            model,
            memory: 100,
            pullable: true,
            allow_evict,
            evict_idle_for: Duration::ZERO,
            now: Instant::now(),
        }
    }

    fn pool(workers: Vec<(&str, WorkerState)>) -> BTreeMap<Arc<str>, WorkerState> {
        workers.into_iter().map(|(id, w)| (id.into(), w)).collect()
    }

    #[test]
    fn prefers_a_worker_where_it_fits_and_is_stored() {
        let m = key("m");
        let workers = pool(vec![
            ("a", worker(1000, &[], &[])),
            ("b", worker(1000, &[("x", 500, 0, 0)], &["m"])),
        ]);
        let plan = choose(&workers, target(&m, true), |_| false).unwrap();
        assert_eq!(
            (&*plan.worker, plan.stored, plan.evict.len()),
            ("b", true, 0)
        );
    }

    #[test]
    fn evicts_the_least_recently_used_idle_model_never_a_busy_one() {
        let m = key("m");
        let workers = pool(vec![(
            "a",
            worker(
                300,
                &[
                    ("old", 100, 0, 0),
                    ("newer", 100, 5, 0),
                    ("running", 100, 1, 1),
                ],
                &[],
            ),
        )]);
        assert!(choose(&workers, target(&m, false), |_| false).is_none());
        let plan = choose(&workers, target(&m, true), |_| false).unwrap();
        assert_eq!(plan.evict, [key("old")]);
        // A model with queued requests is not evicted either.
        let plan = choose(&workers, target(&m, true), |k| *k == key("old")).unwrap();
        assert_eq!(plan.evict, [key("newer")]);
        // Nothing evictable: wait.
        assert!(choose(&workers, target(&m, true), |_| true).is_none());
    }

    #[test]
    fn a_recently_used_model_is_held_until_the_waiters_have_waited_as_long() {
        let m = key("m");
        // "old" was last used 6 s before `now`, "newer" 1 s before.
        let workers = pool(vec![(
            "a",
            worker(200, &[("old", 100, 0, 0), ("newer", 100, 5, 0)], &[]),
        )]);
        let at = |idle_for: u64| Target {
            evict_idle_for: Duration::from_secs(idle_for),
            now: Instant::now() + Duration::from_secs(6),
            ..target(&m, true)
        };
        let plan = choose(&workers, at(3), |_| false).unwrap();
        assert_eq!(plan.evict, [key("old")]);
        // Both used too recently: nothing now, the requests wait.
        assert!(choose(&workers, at(8), |_| false).is_none());
        // Room without evicting needs no hold.
        let roomy = pool(vec![("a", worker(300, &[("old", 100, 0, 0)], &[]))]);
        assert!(choose(&roomy, at(8), |_| false).unwrap().evict.is_empty());
    }

    #[test]
    fn the_model_limit_counts() {
        let m = key("m");
        let mut w = worker(10_000, &[("x", 100, 0, 0)], &[]);
        w.max_loaded = 1;
        let workers = pool(vec![("a", w)]);
        let plan = choose(&workers, target(&m, true), |_| false).unwrap();
        assert_eq!(plan.evict, [key("x")]);
    }

    #[test]
    fn unhealthy_workers_and_unpullable_models_are_skipped() {
        let m = key("m");
        let mut sick = worker(1000, &[], &["m"]);
        sick.healthy = false;
        let workers = pool(vec![("a", sick), ("b", worker(1000, &[], &[]))]);
        let plan = choose(&workers, target(&m, true), |_| false).unwrap();
        assert_eq!((&*plan.worker, plan.stored), ("b", false));
        let mut t = target(&m, true);
        t.pullable = false;
        assert!(choose(&workers, t, |_| false).is_none());
    }

    proptest! {
        /// Whatever the pool, a plan fits the budget after its evictions,
        /// and evicts only idle models nobody waits for.
        #[test]
        fn plans_fit_and_evict_only_idle_models(
            specs in prop::collection::vec(
                (100u64..2000, prop::collection::vec((1u64..800, 0u64..100, 0u32..3), 0..5)),
                1..5,
            ),
            need in 1u64..1500,
            waiting_mask in any::<u8>(),
        ) {
            let m = key("target");
            let names: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
            let mut workers = BTreeMap::new();
            for (i, (limit, replicas)) in specs.iter().enumerate() {
                let list: Vec<(&str, u64, u64, u32)> = replicas
                    .iter()
                    .enumerate()
                    .map(|(j, (mem, age, running))| (names[j].as_str(), *mem, *age, *running))
                    .collect();
                workers.insert(Arc::from(format!("w{i}").as_str()), worker(*limit, &list, &[]));
            }
            let waiting = |k: &ModelKey| {
                names.iter().enumerate().any(|(i, n)| waiting_mask & (1 << i) != 0 && *k == key(n))
            };
            let t = Target { model: &m, memory: need, pullable: true, allow_evict: true, evict_idle_for: Duration::ZERO, now: Instant::now() };
            if let Some(plan) = choose(&workers, t, waiting) {
                let w = &workers[&plan.worker];
                let freed: u64 = plan.evict.iter().map(|k| w.replicas[k].memory).sum();
                prop_assert!(w.memory_limit.saturating_sub(w.used_memory()) + freed >= need);
                for k in &plan.evict {
                    prop_assert!(w.replicas[k].idle());
                    prop_assert!(!waiting(k));
                }
            }
        }
    }
}
