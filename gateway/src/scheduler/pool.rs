//! The scheduler's view of each worker: its budget, the replicas it runs
//! (with this gateway's requests on them and the slots others use), what it
//! could load, and the loads in flight. Kept in step with the worker's
//! pushed status ([`WorkerState::apply`]) and with this gateway's own
//! actions, which are counted at once rather than when the next status
//! shows them.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use herd_proto::v1 as pb;

use super::KeepAlive;

/// A model's identity across the pool: its stored model ID (a manifest
/// digest, the same on every worker), or the name of a model a worker
/// serves from a file.
///
/// It carries its own hash, taken once when made: a decision looks its
/// model up on every worker, and hashing the 71-byte digest again per
/// worker (and reading each stored key's text to compare) was most of a
/// decision's time over 100 workers. Keys with different hashes differ
/// without their text being read.
#[derive(Clone)]
pub struct ModelKey {
    text: Arc<str>,
    hash: u64,
}

impl ModelKey {
    pub fn of(status: &pb::ModelStatus) -> Self {
        if status.id.is_empty() {
            Self::new(format!("name:{}", status.name).into())
        } else {
            Self::new(status.id.as_str().into())
        }
    }

    fn new(text: Arc<str>) -> Self {
        let hash = crate::routing::hash::fnv1a(text.as_bytes());
        Self { text, hash }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for ModelKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.text, &other.text) || (self.hash == other.hash && self.text == other.text)
    }
}

impl Eq for ModelKey {}

impl std::hash::Hash for ModelKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for ModelKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ModelKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ModelKey").field(&self.text).finish()
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A map by model key. The key brings its hash (see [`ModelKey`]);
/// foldhash mixes that one word per lookup.
pub type KeyMap<V> = HashMap<ModelKey, V, foldhash::fast::RandomState>;

/// A model loaded on a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The name the worker serves it under (what `Generate` names).
    pub name: String,
    pub slots: u32,
    /// Slots this gateway holds (granted, not yet released).
    pub in_flight: u32,
    /// Slotless requests (embeddings) this gateway runs on it.
    pub slotless: u32,
    /// Slots busy beyond this gateway's, as of the last status.
    pub others: u32,
    /// The worker refused a request as busy since its last status.
    pub saturated: bool,
    pub memory: u64,
    /// When a request last finished (or started) on it.
    pub last_used: Instant,
    /// The keep-alive the last request asked for.
    pub keep_alive: Option<KeepAlive>,
}

impl Replica {
    pub fn new(status: &pb::ModelStatus, now: Instant) -> Self {
        Self {
            name: status.name.clone(),
            slots: status.slots_total,
            in_flight: 0,
            slotless: 0,
            others: status.slots_busy,
            saturated: false,
            memory: status.memory_bytes,
            last_used: now,
            keep_alive: None,
        }
    }

    pub fn busy(&self) -> u32 {
        self.in_flight + self.others
    }

    /// Slots that may be handed out now.
    pub fn free(&self) -> u32 {
        if self.saturated {
            0
        } else {
            self.slots.saturating_sub(self.busy())
        }
    }

    /// Nothing runs on it, here or from other gateways.
    pub fn idle(&self) -> bool {
        self.in_flight == 0 && self.slotless == 0 && self.others == 0
    }
}

/// A model a worker could load without pulling it (stored or configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loadable {
    pub name: String,
    pub memory: u64,
}

/// One worker.
#[derive(Debug, Clone, Default)]
pub struct WorkerState {
    /// Its id's rendezvous hash ([`crate::routing::hash::worker_hash`]),
    /// taken once: prefix affinity scores every worker per decision.
    pub id_hash: u64,
    /// Its status stream is up and it is not draining: requests are
    /// granted and models placed here.
    pub healthy: bool,
    pub memory_limit: u64,
    /// 0: no limit but memory.
    pub max_loaded: u32,
    pub replicas: KeyMap<Replica>,
    /// Every model it has (loaded ones too), by key.
    pub loadable: KeyMap<Loadable>,
    /// Loads this gateway asked for that have not finished: memory reserved.
    pub loading: KeyMap<u64>,
    /// Unloads this gateway asked for that the worker has not confirmed: a
    /// status that still shows them loaded does not bring them back.
    pub unloading: std::collections::HashSet<ModelKey, foldhash::fast::RandomState>,
    /// The newest status revision applied; older statuses are stale.
    pub revision: u64,
}

/// What a status changed, for the scheduler to act on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Slots may have freed (or replicas appeared): try to grant.
    pub capacity: bool,
    /// The status was older than what is known and was ignored.
    pub stale: bool,
}

impl WorkerState {
    /// A worker not heard from yet.
    pub fn new(id: &str) -> Self {
        Self {
            id_hash: crate::routing::hash::worker_hash(id),
            ..Self::default()
        }
    }

    /// Memory taken by replicas and reserved by loads in flight.
    pub fn used_memory(&self) -> u64 {
        self.replicas
            .values()
            .map(|r| r.memory)
            .chain(self.loading.values().copied())
            .fold(0u64, u64::saturating_add)
    }

    /// Models loaded or loading.
    pub fn model_count(&self) -> usize {
        self.replicas.len() + self.loading.len()
    }

    /// Whether one more model may be loaded here, by count.
    pub fn below_model_limit(&self, after_evicting: usize) -> bool {
        self.max_loaded == 0
            || self.model_count().saturating_sub(after_evicting) < self.max_loaded as usize
    }

    /// Takes in a status pushed by the worker.
    pub fn apply(&mut self, status: &pb::StatusResponse, now: Instant) -> Applied {
        if status.revision < self.revision {
            return Applied {
                stale: true,
                ..Applied::default()
            };
        }
        let mut applied = Applied {
            capacity: !self.healthy,
            stale: false,
        };
        self.revision = status.revision;
        // A draining worker finishes what runs; nothing new goes there.
        self.healthy = !status.draining;
        self.memory_limit = status.memory_limit_bytes;
        self.max_loaded = status.max_loaded_models;
        self.loadable = status
            .models
            .iter()
            .map(|m| {
                (
                    ModelKey::of(m),
                    Loadable {
                        name: m.name.clone(),
                        memory: m.memory_bytes,
                    },
                )
            })
            .collect();
        let mut seen = Vec::new();
        for model in status.models.iter().filter(|m| m.loaded) {
            let key = ModelKey::of(model);
            if self.unloading.contains(&key) {
                continue;
            }
            self.loading.remove(&key);
            match self.replicas.get_mut(&key) {
                Some(replica) => {
                    let others = model.slots_busy.saturating_sub(replica.in_flight);
                    applied.capacity |= others < replica.others
                        || replica.saturated
                        || model.slots_total > replica.slots;
                    replica.name.clone_from(&model.name);
                    replica.slots = model.slots_total;
                    replica.memory = model.memory_bytes;
                    replica.others = others;
                    replica.saturated = false;
                }
                None => {
                    // Loaded at the worker's start, or by another gateway.
                    self.replicas.insert(key.clone(), Replica::new(model, now));
                    applied.capacity = true;
                }
            }
            seen.push(key);
        }
        // Unloaded by someone else, or the worker restarted.
        self.replicas.retain(|key, _| seen.contains(key));
        applied
    }

    /// The status stream broke: nothing is placed or granted here until it
    /// is back, and the next status is taken whatever its revision (the
    /// worker may have restarted).
    pub fn down(&mut self) {
        self.healthy = false;
        self.revision = 0;
        self.unloading.clear();
        for replica in self.replicas.values_mut() {
            replica.others = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(revision: u64, models: Vec<pb::ModelStatus>) -> pb::StatusResponse {
        pb::StatusResponse {
            revision,
            memory_limit_bytes: 1000,
            models,
            ..Default::default()
        }
    }

    fn model(name: &str, loaded: bool, busy: u32) -> pb::ModelStatus {
        pb::ModelStatus {
            name: name.into(),
            loaded,
            on_demand: !loaded,
            slots_total: 4,
            slots_busy: busy,
            memory_bytes: 100,
            ..Default::default()
        }
    }

    #[test]
    fn statuses_add_and_remove_replicas_and_count_others() {
        let now = Instant::now();
        let mut w = WorkerState::default();
        let applied = w.apply(
            &status(1, vec![model("a", true, 2), model("b", false, 0)]),
            now,
        );
        assert!(applied.capacity);
        let a = ModelKey::of(&model("a", true, 0));
        assert_eq!(w.replicas.len(), 1);
        assert_eq!(w.replicas[&a].others, 2);
        assert_eq!(w.loadable.len(), 2);
        // Our two requests run there now: the worker's 2 busy are ours.
        w.replicas.get_mut(&a).unwrap().in_flight = 2;
        w.apply(&status(2, vec![model("a", true, 2)]), now);
        assert_eq!(w.replicas[&a].others, 0);
        assert_eq!(w.replicas[&a].free(), 2);
        // A stale status changes nothing.
        assert!(w.apply(&status(1, vec![]), now).stale);
        assert_eq!(w.replicas.len(), 1);
        // Unloaded elsewhere.
        w.apply(&status(3, vec![]), now);
        assert!(w.replicas.is_empty());
    }

    #[test]
    fn a_draining_worker_takes_nothing_new_but_keeps_its_counts() {
        let now = Instant::now();
        let mut w = WorkerState::default();
        w.apply(&status(1, vec![model("a", true, 0)]), now);
        let a = ModelKey::of(&model("a", true, 0));
        w.replicas.get_mut(&a).unwrap().in_flight = 1;
        let mut draining = status(2, vec![model("a", true, 1)]);
        draining.draining = true;
        w.apply(&draining, now);
        assert!(!w.healthy);
        assert_eq!(w.replicas[&a].in_flight, 1);
    }

    #[test]
    fn after_a_break_any_revision_is_taken() {
        let now = Instant::now();
        let mut w = WorkerState::default();
        w.apply(&status(10, vec![model("a", true, 0)]), now);
        w.down();
        assert!(!w.healthy);
        let applied = w.apply(&status(1, vec![]), now);
        assert!(!applied.stale && w.healthy && w.replicas.is_empty());
    }
}
