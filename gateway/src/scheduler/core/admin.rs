//! What operators ask of the scheduler: unload now, and the per-model
//! report behind `/herd/v1/status` and `/engines/ps`.

use super::*;

impl SchedulerCore {
    /// Unloads the replicas of `models` (every model if `None`) that
    /// nothing runs on or waits for; reports the others as skipped.
    pub fn unload_now(&mut self, models: Option<&[ModelKey]>) -> UnloadReport {
        let mut report = UnloadReport::default();
        for (id, worker) in &mut self.workers {
            let keys: Vec<ModelKey> = worker
                .replicas
                .keys()
                .filter(|k| models.is_none_or(|m| m.contains(k)))
                .cloned()
                .collect();
            for key in keys {
                let waiting = self.models.get(&key).is_some_and(ModelState::has_waiters);
                let Some(replica) = worker.replicas.get(&key) else {
                    continue;
                };
                let order = UnloadOrder {
                    model: key.clone(),
                    worker: id.clone(),
                    name: replica.name.clone(),
                };
                if replica.idle() && !waiting {
                    worker.replicas.remove(&key);
                    worker.unloading.insert(key.clone());
                    stats_of(&mut self.models, &key).unloads += 1;
                    self.effects.push(Effect::Unload(order.clone()));
                    report.unloaded.push(order);
                } else {
                    report.skipped_busy.push(order);
                }
            }
        }
        report
    }

    /// Per-model state, by model key.
    pub fn report(&self, now: Instant) -> Vec<ModelReport> {
        let mut keys: Vec<&ModelKey> = self.models.keys().collect();
        for worker in self.workers.values() {
            keys.extend(worker.replicas.keys());
            keys.extend(worker.loadable.keys());
        }
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                let model = self.models.get(key);
                let replicas: Vec<(&Arc<str>, &Replica)> = self
                    .workers
                    .iter()
                    .filter_map(|(id, w)| w.replicas.get(key).map(|r| (id, r)))
                    .collect();
                let name = replicas
                    .first()
                    .map(|(_, r)| r.name.clone())
                    .or_else(|| {
                        self.workers
                            .values()
                            .find_map(|w| w.loadable.get(key).map(|l| l.name.clone()))
                    })
                    .unwrap_or_else(|| key.to_string());
                ModelReport {
                    model: key.clone(),
                    name,
                    queued: model.map_or(0, |m| m.queue.len() + m.slotless.len()),
                    queued_by_priority: model.map_or([0; 3], |m| m.queue.len_by_priority()),
                    running: replicas.iter().map(|(_, r)| r.in_flight + r.slotless).sum(),
                    replicas: replicas.iter().map(|(id, _)| (*id).clone()).collect(),
                    placements: replicas
                        .iter()
                        .map(|(id, r)| ReplicaReport {
                            worker: (*id).clone(),
                            name: r.name.clone(),
                            slots: r.slots,
                            busy: r.busy() + r.slotless,
                            idle_for: now.saturating_duration_since(r.last_used),
                            keep_alive: r
                                .keep_alive
                                .or(model.and_then(|m| m.limits.keep_alive))
                                .unwrap_or(self.settings.keep_alive),
                        })
                        .collect(),
                    loading: model.and_then(|m| m.loading.clone()),
                    stats: model.map(|m| m.stats).unwrap_or_default(),
                }
            })
            .collect()
    }
}
