//! Placement as the core carries it out: which model to load where (the
//! choice itself is `scheduler::placement`), models too large for any
//! worker, and keep-alive expiry.

use super::*;

impl SchedulerCore {
    /// Loads `key` somewhere if it has waiting requests and no replica can
    /// take them: a first replica (evicting idle models if needed), or one
    /// more when its oldest request has waited `replica_after` (free
    /// memory only).
    pub(super) fn place(&mut self, key: &ModelKey, now: Instant) {
        let Some(model) = self.models.get(key) else {
            return;
        };
        if model.loading.is_some()
            || model.failure.as_ref().is_some_and(|f| now < f.until)
            || model.claimed_until.is_some_and(|t| now < t)
        {
            return;
        }
        let replicas = self
            .workers
            .values()
            .filter(|w| w.healthy && w.replicas.contains_key(key))
            .count();
        let allow_evict = replicas == 0;
        let waited = model
            .queue
            .oldest()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let waited_long = waited >= self.settings.replica_after;
        if replicas > 0 && !waited_long {
            return;
        }
        let memory = self.memory_of(key);
        let reference = self.reference_of(key);
        let models = &self.models;
        let busy = |k: &ModelKey| k == key || models.get(k).is_some_and(ModelState::has_waiters);
        let target = Target {
            model: key,
            memory,
            pullable: reference.is_some(),
            allow_evict,
            evict_idle_for: if waited >= self.settings.evict_hold {
                Duration::ZERO
            } else {
                self.settings.evict_hold
            },
            now,
        };
        let Some(plan) = placement::choose(&self.workers, target, busy) else {
            if replicas == 0 && !placement::fits_anywhere(&self.workers, memory) {
                self.reject_too_large(key, memory);
            }
            return;
        };
        let Some(worker) = self.workers.get_mut(&plan.worker) else {
            return;
        };
        let mut evict = Vec::new();
        for victim in &plan.evict {
            if let Some(replica) = worker.replicas.remove(victim) {
                worker.unloading.insert(victim.clone());
                evict.push(UnloadOrder {
                    model: victim.clone(),
                    worker: plan.worker.clone(),
                    name: replica.name,
                });
            }
        }
        let name = match worker.loadable.get(key) {
            Some(loadable) => loadable.name.clone(),
            None => reference.unwrap_or_default(),
        };
        worker.loading.insert(key.clone(), plan.memory);
        for order in &evict {
            stats_of(&mut self.models, &order.model).evictions += 1;
        }
        if let Some(model) = self.models.get_mut(key) {
            model.loading = Some(plan.worker.clone());
        }
        tracing::info!(
            model = %key,
            worker = %plan.worker,
            pull = !plan.stored,
            evict = evict.len(),
            "placing a model"
        );
        self.effects.push(Effect::Load(LoadOrder {
            model: key.clone(),
            worker: plan.worker,
            name,
            pull: !plan.stored,
            evict,
        }));
    }

    pub(super) fn reject_too_large(&mut self, key: &ModelKey, need: u64) {
        let largest = self
            .workers
            .values()
            .filter(|w| w.healthy)
            .map(|w| w.memory_limit)
            .max()
            .unwrap_or(0);
        // No healthy worker at all: wait for one rather than refuse.
        if largest == 0 {
            return;
        }
        self.reject_waiting(key, &Rejection::TooLarge { need, largest });
    }

    /// Turns away every request waiting for `key` with `rejection`.
    pub(super) fn reject_waiting(&mut self, key: &ModelKey, rejection: &Rejection) {
        let Some(model) = self.models.get_mut(key) else {
            return;
        };
        let waiting: Vec<u64> = model
            .queue
            .drain()
            .into_iter()
            .map(|w| w.seq)
            .chain(model.slotless.drain(..))
            .collect();
        for ticket in waiting {
            self.tickets.remove(&ticket);
            model.stats.rejected += 1;
            self.effects.push(Effect::Rejected {
                ticket,
                rejection: rejection.clone(),
            });
        }
    }

    /// Unloads replicas idle past their keep-alive (of one worker, or all).
    pub(super) fn expire_idle(&mut self, only: Option<&Arc<str>>, now: Instant) {
        let default = self.settings.keep_alive;
        for (id, worker) in &mut self.workers {
            if only.is_some_and(|only| only != id) {
                continue;
            }
            let expired: Vec<ModelKey> = worker
                .replicas
                .iter()
                .filter(|(key, r)| {
                    let model = self.models.get(*key);
                    let keep_alive = r
                        .keep_alive
                        .or(model.and_then(|m| m.limits.keep_alive))
                        .unwrap_or(default);
                    r.idle()
                        && !model.is_some_and(ModelState::has_waiters)
                        && keep_alive.expired(now.saturating_duration_since(r.last_used))
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                let Some(replica) = worker.replicas.remove(&key) else {
                    continue;
                };
                worker.unloading.insert(key.clone());
                stats_of(&mut self.models, &key).unloads += 1;
                tracing::info!(model = %key, worker = %id, "unloading an idle model (keep-alive)");
                self.effects.push(Effect::Unload(UnloadOrder {
                    model: key,
                    worker: id.clone(),
                    name: replica.name,
                }));
            }
        }
    }

    /// Memory `key` takes: the largest any worker reports.
    pub(super) fn memory_of(&self, key: &ModelKey) -> u64 {
        self.workers
            .values()
            .flat_map(|w| {
                w.loadable
                    .get(key)
                    .map(|l| l.memory)
                    .into_iter()
                    .chain(w.replicas.get(key).map(|r| r.memory))
            })
            .max()
            .unwrap_or(0)
    }

    /// The reference a worker that has not stored `key` can pull it by: a
    /// stored model's tag, as some worker lists it. Models served from a
    /// file (no ID) cannot be pulled.
    pub(super) fn reference_of(&self, key: &ModelKey) -> Option<String> {
        if key.as_str().starts_with("name:") {
            return None;
        }
        self.workers
            .values()
            .find_map(|w| w.loadable.get(key).map(|l| l.name.clone()))
    }
}
