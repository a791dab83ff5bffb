//! The scheduler's state machine: every event (a request arrives or leaves,
//! a lease ends, a worker's status changes, a load finishes, time passes)
//! goes in as a method call, and what must happen comes out as
//! [`Effect`]s — grants and rejections for waiting requests, loads and
//! unloads for the shell to send to workers. No I/O, no clock of its own:
//! the shell passes `now`, so every decision is reproducible in tests.
//!
//! Admit, then pick: a request waits in its model's queue (one per model,
//! across all workers) and takes the first slot any replica frees; the
//! routing policy ranks the replicas that have one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_proto::error::WorkerFailure;
use herd_proto::v1 as pb;

use super::KeepAlive;
use super::placement::{self, Target};
use super::pool::{KeyMap, ModelKey, Replica, WorkerState};
use super::queue::{ModelQueue, Waiting};
use crate::context::RequestContext;
use crate::routing::{Candidate, RoutingPolicy};

/// First wait after a failed load before the model is tried again; it
/// doubles with each failure in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// After another gateway turned out to hold a model's cluster-wide load
/// claim, how long the model waits for that load to show in a worker's
/// status before it is planned again.
pub const CLAIM_WAIT: Duration = Duration::from_secs(2);

/// Timing settings that hold for every model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub aging: Duration,
    pub replica_after: Duration,
    /// A replica used this recently is not evicted for a model whose
    /// oldest request has waited less (see `placement`).
    pub evict_hold: Duration,
    pub keep_alive: KeepAlive,
}

/// What a model's configuration says, resolved by the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_queue: usize,
    /// `None`: [`Settings::keep_alive`].
    pub keep_alive: Option<KeepAlive>,
}

/// Why a waiting request is turned away.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    QueueFull {
        retry_after: Duration,
    },
    /// Loading the model failed (now or moments ago).
    LoadFailed {
        failure: Arc<WorkerFailure>,
        retry_after: Duration,
    },
    /// No worker's whole budget holds the model.
    TooLarge {
        need: u64,
        largest: u64,
    },
    ShuttingDown {
        retry_after: Duration,
    },
}

/// A slot (or, for slotless requests, a replica) given to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub worker: Arc<str>,
    pub model: ModelKey,
    /// The name to send in `Generate` / `Embed`.
    pub name: String,
    pub slot: bool,
}

/// Something to load on a worker, after unloading `evict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOrder {
    pub model: ModelKey,
    pub worker: Arc<str>,
    /// The name to load: its name there, or the reference to pull.
    pub name: String,
    pub pull: bool,
    pub evict: Vec<UnloadOrder>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnloadOrder {
    pub model: ModelKey,
    pub worker: Arc<str>,
    pub name: String,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Granted { ticket: u64, grant: Grant },
    Rejected { ticket: u64, rejection: Rejection },
    Load(LoadOrder),
    Unload(UnloadOrder),
}

/// How a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The request ran (or the client left).
    Done,
    /// The worker refused it: every slot busy. The request is put back.
    Busy,
    /// The worker no longer has the model loaded.
    ReplicaGone,
    /// The worker could not be reached.
    WorkerGone,
    /// Never used: the request left before it could, or the worker turned
    /// it down as malformed. Not counted as served.
    Unused,
}

/// A model's counters since the gateway started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelStats {
    pub served: u64,
    pub loads: u64,
    pub load_failures: u64,
    /// Idle replicas unloaded to make room for another model.
    pub evictions: u64,
    /// Replicas unloaded after their keep-alive, or on request.
    pub unloads: u64,
    pub rejected: u64,
}

#[derive(Debug)]
struct Failure {
    failure: Arc<WorkerFailure>,
    until: Instant,
}

#[derive(Debug)]
struct ModelState {
    queue: ModelQueue<()>,
    /// Slotless requests waiting for any replica, by ticket.
    slotless: Vec<u64>,
    loading: Option<Arc<str>>,
    /// Another gateway is loading it: not planned before then.
    claimed_until: Option<Instant>,
    failure: Option<Failure>,
    backoff: Duration,
    limits: Limits,
    stats: ModelStats,
    /// Mean time a request holds its slot (EWMA), for `Retry-After`.
    service_time: Duration,
}

impl ModelState {
    fn new(limits: Limits) -> Self {
        Self {
            queue: ModelQueue::default(),
            slotless: Vec::new(),
            loading: None,
            claimed_until: None,
            failure: None,
            backoff: FIRST_BACKOFF,
            limits,
            stats: ModelStats::default(),
            service_time: Duration::from_secs(1),
        }
    }

    fn has_waiters(&self) -> bool {
        !self.queue.is_empty() || !self.slotless.is_empty()
    }
}

#[derive(Debug)]
struct Ticket {
    model: ModelKey,
    ctx: Arc<RequestContext>,
}

/// A request to enqueue.
#[derive(Debug, Clone)]
pub struct Enqueue {
    pub model: ModelKey,
    pub ctx: Arc<RequestContext>,
    pub limits: Limits,
    /// Set when a request is put back: it keeps its ticket, place and
    /// waiting time.
    pub ticket: Option<(u64, Instant)>,
}

/// One model's state, for `/herd/v1/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelReport {
    pub model: ModelKey,
    /// A name clients know it by.
    pub name: String,
    pub queued: usize,
    /// Of `queued` (slot requests), by the priority asked for: low,
    /// normal, high.
    pub queued_by_priority: [usize; 3],
    pub running: u32,
    pub replicas: Vec<Arc<str>>,
    /// The replicas in detail, in the order of `replicas`.
    pub placements: Vec<ReplicaReport>,
    pub loading: Option<Arc<str>>,
    pub stats: ModelStats,
}

/// One replica, for `/engines/ps`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaReport {
    pub worker: Arc<str>,
    /// The name it is loaded under there.
    pub name: String,
    pub slots: u32,
    pub busy: u32,
    /// Since the last request finished (or started) on it.
    pub idle_for: Duration,
    /// The keep-alive that applies to it now.
    pub keep_alive: KeepAlive,
}

/// What `unload_now` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnloadReport {
    pub unloaded: Vec<UnloadOrder>,
    /// Replicas left loaded because requests run on or wait for them.
    pub skipped_busy: Vec<UnloadOrder>,
}

/// The state machine.
#[derive(Debug)]
pub struct SchedulerCore {
    settings: Settings,
    policy: Arc<dyn RoutingPolicy>,
    workers: BTreeMap<Arc<str>, WorkerState>,
    models: KeyMap<ModelState>,
    tickets: HashMap<u64, Ticket>,
    next_ticket: u64,
    shutting_down: bool,
    effects: Vec<Effect>,
}

impl SchedulerCore {
    pub fn new(settings: Settings, policy: Arc<dyn RoutingPolicy>) -> Self {
        Self {
            settings,
            policy,
            workers: BTreeMap::new(),
            models: KeyMap::default(),
            tickets: HashMap::new(),
            next_ticket: 1,
            shutting_down: false,
            effects: Vec::new(),
        }
    }

    /// What must happen now, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn policy(&self) -> &Arc<dyn RoutingPolicy> {
        &self.policy
    }

    /// Queues a request (or puts one back). Returns its ticket; the grant
    /// or rejection comes as an effect, possibly at once.
    pub fn enqueue(&mut self, request: Enqueue, now: Instant) -> u64 {
        let (ticket, enqueued_at) = request.ticket.unwrap_or_else(|| {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            (ticket, now)
        });
        let model = self
            .models
            .entry(request.model.clone())
            .or_insert_with(|| ModelState::new(request.limits));
        model.limits = request.limits;
        let rejection = if self.shutting_down {
            Some(Rejection::ShuttingDown {
                retry_after: Duration::from_secs(1),
            })
        } else if let Some(f) = model.failure.as_ref().filter(|f| now < f.until) {
            Some(Rejection::LoadFailed {
                failure: f.failure.clone(),
                retry_after: f.until - now,
            })
        } else if request.ticket.is_none() && model.queue.len() >= model.limits.max_queue {
            Some(Rejection::QueueFull {
                retry_after: retry_after(model, &self.workers, &request.model),
            })
        } else {
            None
        };
        if let Some(rejection) = rejection {
            model.stats.rejected += 1;
            self.effects.push(Effect::Rejected { ticket, rejection });
            return ticket;
        }
        if request.ctx.needs_slot {
            model.queue.push(Waiting {
                seq: ticket,
                priority: request.ctx.priority,
                tenant: request.ctx.tenant.as_str().into(),
                enqueued_at,
                item: (),
            });
        } else {
            model.slotless.push(ticket);
        }
        self.tickets.insert(
            ticket,
            Ticket {
                model: request.model,
                ctx: request.ctx,
            },
        );
        self.schedule(now);
        ticket
    }

    /// The request behind `ticket` stopped waiting (client gone, timed
    /// out). Returns whether it was still waiting.
    pub fn cancel(&mut self, ticket: u64) -> bool {
        let Some(t) = self.tickets.remove(&ticket) else {
            return false;
        };
        if let Some(model) = self.models.get_mut(&t.model) {
            model
                .queue
                .remove(ticket, t.ctx.priority, &t.ctx.tenant.as_str().into());
            model.slotless.retain(|s| *s != ticket);
        }
        true
    }

    /// A lease ended after `held`.
    pub fn release(&mut self, grant: &Grant, outcome: Outcome, held: Duration, now: Instant) {
        if let Some(model) = self.models.get_mut(&grant.model)
            && outcome == Outcome::Done
            && grant.slot
        {
            model.stats.served += 1;
            model.service_time = (model.service_time * 7 + held) / 8;
        }
        let Some(worker) = self.workers.get_mut(&grant.worker) else {
            return;
        };
        match outcome {
            Outcome::WorkerGone => worker.down(),
            Outcome::ReplicaGone => {
                worker.replicas.remove(&grant.model);
            }
            Outcome::Done | Outcome::Busy | Outcome::Unused => {}
        }
        if let Some(replica) = worker.replicas.get_mut(&grant.model) {
            if grant.slot {
                replica.in_flight = replica.in_flight.saturating_sub(1);
            } else {
                replica.slotless = replica.slotless.saturating_sub(1);
            }
            replica.last_used = now;
            if outcome == Outcome::Busy {
                replica.saturated = true;
            }
        }
        // Only this replica can have just become idle (keep_alive 0); the
        // tick looks at the others.
        self.expire_idle(Some(&grant.worker), now);
        self.schedule(now);
    }

    /// A worker's status arrived.
    pub fn worker_status(&mut self, id: &Arc<str>, status: &pb::StatusResponse, now: Instant) {
        let worker = self
            .workers
            .entry(id.clone())
            .or_insert_with(|| WorkerState::new(id));
        let applied = worker.apply(status, now);
        if !applied.stale {
            self.schedule(now);
        }
    }

    /// A worker's status stream broke.
    pub fn worker_down(&mut self, id: &Arc<str>) {
        if let Some(worker) = self.workers.get_mut(id) {
            worker.down();
        }
    }

    /// A worker left the pool.
    pub fn worker_removed(&mut self, id: &Arc<str>, now: Instant) {
        self.workers.remove(id);
        for model in self.models.values_mut() {
            if model.loading.as_ref() == Some(id) {
                model.loading = None;
            }
        }
        self.schedule(now);
    }

    /// A load this scheduler ordered finished.
    pub fn load_done(
        &mut self,
        order: &LoadOrder,
        loaded: &pb::ModelStatus,
        revision: u64,
        now: Instant,
    ) {
        if let Some(model) = self.models.get_mut(&order.model) {
            model.loading = None;
            model.failure = None;
            model.backoff = FIRST_BACKOFF;
            model.stats.loads += 1;
        }
        if let Some(worker) = self.workers.get_mut(&order.worker) {
            worker.loading.remove(&order.model);
            worker.revision = worker.revision.max(revision);
            let key = ModelKey::of(loaded);
            worker
                .replicas
                .entry(key)
                .or_insert_with(|| Replica::new(loaded, now));
        }
        self.schedule(now);
    }

    /// A load this scheduler ordered failed. A worker that could not be
    /// reached is marked down and the model placed elsewhere; any other
    /// failure is answered to every waiting request, and the model is not
    /// tried again for a while (1 s, doubling to 60 s).
    pub fn load_failed(&mut self, order: &LoadOrder, failure: WorkerFailure, now: Instant) {
        let gone = failure.class == herd_proto::error::FailureClass::Gone;
        if let Some(worker) = self.workers.get_mut(&order.worker) {
            worker.loading.remove(&order.model);
            if gone {
                worker.down();
            }
        }
        let Some(model) = self.models.get_mut(&order.model) else {
            return;
        };
        model.loading = None;
        if !gone {
            model.stats.load_failures += 1;
            let failure = Arc::new(failure);
            model.failure = Some(Failure {
                failure: failure.clone(),
                until: now + model.backoff,
            });
            let retry_after = model.backoff;
            model.backoff = (model.backoff * 2).min(MAX_BACKOFF);
            self.reject_waiting(
                &order.model,
                &Rejection::LoadFailed {
                    failure,
                    retry_after,
                },
            );
        }
        self.schedule(now);
    }

    /// Another gateway holds the cluster-wide claim on loading
    /// `order.model`, so this order was not sent (its evictions neither).
    /// The model waits for a worker's status to show the replica being
    /// loaded over there; it is planned again only after [`CLAIM_WAIT`],
    /// in case that load fails or lands nowhere this gateway sees.
    pub fn load_claimed_elsewhere(&mut self, order: &LoadOrder, now: Instant) {
        if let Some(worker) = self.workers.get_mut(&order.worker) {
            worker.loading.remove(&order.model);
            for victim in &order.evict {
                worker.unloading.remove(&victim.model);
            }
        }
        for victim in &order.evict {
            // Still loaded: the worker's next status shows it again.
            let stats = stats_of(&mut self.models, &victim.model);
            stats.evictions = stats.evictions.saturating_sub(1);
        }
        if let Some(model) = self.models.get_mut(&order.model) {
            model.loading = None;
            model.claimed_until = Some(now + CLAIM_WAIT);
        }
        self.schedule(now);
    }

    /// An unload was carried out (or failed: the worker's next status
    /// tells what it has).
    pub fn unload_done(&mut self, order: &UnloadOrder, revision: u64) {
        if let Some(worker) = self.workers.get_mut(&order.worker) {
            worker.revision = worker.revision.max(revision);
            worker.unloading.remove(&order.model);
        }
    }

    /// Time passed: unload replicas idle past their keep-alive, add
    /// replicas for models that have waited too long.
    pub fn tick(&mut self, now: Instant) {
        self.expire_idle(None, now);
        self.schedule(now);
    }

    /// No new requests from now on; those waiting keep their place.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
    }

    /// Turns every waiting request away (the end of a drain).
    pub fn reject_all(&mut self) {
        let tickets: Vec<u64> = self.tickets.keys().copied().collect();
        for ticket in tickets {
            self.cancel(ticket);
            self.effects.push(Effect::Rejected {
                ticket,
                rejection: Rejection::ShuttingDown {
                    retry_after: Duration::from_secs(1),
                },
            });
        }
    }

    /// Grants what fits, then plans loads for models still waiting.
    fn schedule(&mut self, now: Instant) {
        let mut pending: Vec<ModelKey> = self
            .models
            .iter()
            .filter(|(_, m)| m.has_waiters())
            .map(|(k, _)| k.clone())
            .collect();
        if pending.is_empty() {
            return;
        }
        for key in &pending {
            self.grant(key, now);
        }
        // The most urgent model places first: highest priority waiting,
        // then the longest wait.
        let aging = self.settings.aging;
        pending.retain(|k| self.models.get(k).is_some_and(ModelState::has_waiters));
        pending.sort_by_cached_key(|k| {
            let m = &self.models[k];
            (
                std::cmp::Reverse(m.queue.top_priority(now, aging)),
                m.queue.oldest().unwrap_or(now),
            )
        });
        for key in pending {
            self.place(&key, now);
        }
    }

    /// Hands `key`'s replicas to its waiting requests: slotless ones first
    /// (they need a replica, not a slot), then the queue in its order, as
    /// long as a replica has a free slot.
    fn grant(&mut self, key: &ModelKey, now: Instant) {
        let aging = self.settings.aging;
        loop {
            let Some(model) = self.models.get(key) else {
                return;
            };
            let (ticket, slot) = match (model.slotless.first(), model.queue.peek(now, aging)) {
                (Some(&ticket), _) => (ticket, false),
                (None, Some(head)) => (head.seq, true),
                (None, None) => return,
            };
            let granted = match self.tickets.get(&ticket).map(|t| t.ctx.clone()) {
                // Cancelled meanwhile: just drop it from the queue.
                None => true,
                Some(ctx) => self.grant_one(key, ticket, &ctx, slot, now),
            };
            if !granted {
                return;
            }
            let Some(model) = self.models.get_mut(key) else {
                return;
            };
            if slot {
                model.queue.pop(now, aging);
            } else {
                model.slotless.remove(0);
            }
        }
    }

    /// Gives `ticket` the replica the policy ranks first among those that
    /// can take it; false when none can now.
    fn grant_one(
        &mut self,
        key: &ModelKey,
        ticket: u64,
        ctx: &RequestContext,
        slot: bool,
        now: Instant,
    ) -> bool {
        let Some(worker) = pick(&self.workers, key, ctx, &*self.policy, slot) else {
            return false;
        };
        let Some(replica) = self
            .workers
            .get_mut(&worker)
            .and_then(|w| w.replicas.get_mut(key))
        else {
            return false;
        };
        self.tickets.remove(&ticket);
        if slot {
            replica.in_flight += 1;
        } else {
            replica.slotless += 1;
        }
        replica.last_used = now;
        if ctx.keep_alive.is_some() {
            replica.keep_alive = ctx.keep_alive;
        }
        self.effects.push(Effect::Granted {
            ticket,
            grant: Grant {
                worker,
                model: key.clone(),
                name: replica.name.clone(),
                slot,
            },
        });
        true
    }
}

/// The counters of `key`, whether or not it was ever asked for.
fn stats_of<'a>(models: &'a mut KeyMap<ModelState>, key: &ModelKey) -> &'a mut ModelStats {
    &mut models
        .entry(key.clone())
        .or_insert_with(|| {
            ModelState::new(Limits {
                max_queue: usize::MAX,
                keep_alive: None,
            })
        })
        .stats
}

/// The worker whose replica of `key` the policy ranks first among those
/// that can take the request now.
fn pick(
    workers: &BTreeMap<Arc<str>, WorkerState>,
    key: &ModelKey,
    ctx: &RequestContext,
    policy: &dyn RoutingPolicy,
    slot: bool,
) -> Option<Arc<str>> {
    let candidates: Vec<Candidate> = workers
        .iter()
        .filter(|(_, w)| w.healthy)
        .filter_map(|(id, w)| {
            w.replicas.get(key).map(|r| Candidate {
                worker: id,
                id_hash: w.id_hash,
                slots: r.slots,
                busy: r.busy(),
                free: if slot { r.free() } else { r.slots.max(1) },
            })
        })
        .collect();
    if candidates.is_empty() || candidates.iter().all(|c| c.free == 0) {
        return None;
    }
    policy.best(ctx, candidates).map(|c| c.worker.clone())
}

/// When to try again: the queue ahead divided among the model's slots,
/// times its mean service time; between 1 and 60 seconds.
fn retry_after(
    model: &ModelState,
    workers: &BTreeMap<Arc<str>, WorkerState>,
    key: &ModelKey,
) -> Duration {
    let slots: u32 = workers
        .values()
        .filter_map(|w| w.replicas.get(key).map(|r| r.slots))
        .sum();
    let ahead = model.queue.len() as u32;
    let estimate = model.service_time * ahead / slots.max(1);
    Duration::from_secs(estimate.as_secs_f64().ceil().clamp(1.0, 60.0) as u64)
}

mod admin;
mod place;

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
