//! The async shell around the scheduler's state machine: requests wait
//! here for their grant, leases hand slots back when dropped, and the
//! loads and unloads the state machine orders are sent to workers — a load
//! only after this gateway claimed it cluster-wide ([`Claims`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_proto::error::WorkerFailure;
use herd_proto::v1 as pb;
use herd_state::{Claim, ClaimGuard, Claims};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument as _;

use super::core::{
    Effect, Enqueue, Grant, Limits, LoadOrder, ModelReport, Outcome, Rejection, SchedulerCore,
    Settings, UnloadOrder, UnloadReport,
};
use super::pool::ModelKey;
use crate::config::GatewayConfig;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::metrics::GatewayMetrics;
use crate::workers::{Roster, WorkerEvents, WorkerRpc};

/// How often time-driven decisions (keep-alive, replica scaling) are made.
const TICK: Duration = Duration::from_millis(250);

type Reply = Result<Grant, Rejection>;

/// A model as the scheduler knows it, with what is configured for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub key: ModelKey,
    pub limits: Limits,
    /// The longest a request for it waits.
    pub max_wait: Duration,
}

/// Who loads a model, as the cluster-wide claim decided.
enum Claimed {
    /// This gateway (holding the claim, if there is a shared store and it
    /// answered).
    Here(Option<ClaimGuard>),
    /// Another gateway.
    Elsewhere,
}

/// What the state machine ordered, for the order runner.
#[derive(Debug)]
enum Order {
    /// A load, with the span of the longest-waiting request for the model
    /// (its `queue` span): the load's span is its child, so the load shows
    /// in that request's trace.
    Load(LoadOrder, tracing::Span),
    Unload(UnloadOrder),
}

impl Order {
    fn worker(&self) -> &Arc<str> {
        match self {
            Self::Load(order, _) => &order.worker,
            Self::Unload(order) => &order.worker,
        }
    }
}

#[derive(Debug)]
struct Inner {
    core: SchedulerCore,
    waiting: HashMap<u64, Waiting>,
}

/// Where a queued request's grant goes, and what its trace needs.
#[derive(Debug)]
struct Waiting {
    reply: oneshot::Sender<Reply>,
    model: ModelKey,
    /// The request's `queue` span (disabled when nothing records it).
    span: tracing::Span,
}

impl Inner {
    /// The span of the longest-waiting request for `model` (tickets grow
    /// with arrival); a disabled span if none waits.
    fn cause_of(&self, model: &ModelKey) -> tracing::Span {
        self.waiting
            .iter()
            .filter(|(_, w)| w.model == *model && !w.span.is_disabled())
            .min_by_key(|(ticket, _)| **ticket)
            .map_or_else(tracing::Span::none, |(_, w)| w.span.clone())
    }
}

/// The pool scheduler.
#[derive(Debug)]
pub struct Scheduler {
    inner: Mutex<Inner>,
    roster: Arc<Roster>,
    orders: mpsc::UnboundedSender<Order>,
    orders_rx: Mutex<Option<mpsc::UnboundedReceiver<Order>>>,
    /// Cluster-wide load claims (in the shared state store).
    claims: Option<Claims>,
    config: GatewayConfig,
    metrics: Arc<GatewayMetrics>,
}

/// A granted slot (or, for embeddings, a replica). Dropping it gives it
/// back; set its [`Outcome`] first if the worker refused.
#[derive(Debug)]
pub struct Lease {
    scheduler: Arc<Scheduler>,
    pub grant: Grant,
    pub client: WorkerRpc,
    /// How long the request waited for it.
    pub waited: Duration,
    ticket: u64,
    enqueued_at: Instant,
    granted_at: Instant,
    outcome: Outcome,
}

impl Lease {
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// The ticket and arrival time to queue the same request again with.
    pub fn place(&self) -> (u64, Instant) {
        (self.ticket, self.enqueued_at)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let now = Instant::now();
        let held = now - self.granted_at;
        let (grant, outcome) = (&self.grant, self.outcome);
        self.scheduler
            .with_core(|core| core.release(grant, outcome, held, now));
    }
}

/// A request waiting for its grant; if dropped (the client left, the wait
/// timed out), it leaves the queue — and hands back a grant that raced in.
struct Waiter<'a> {
    scheduler: &'a Arc<Scheduler>,
    ticket: u64,
    reply: oneshot::Receiver<Reply>,
    settled: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut inner = self.scheduler.inner.lock();
        inner.waiting.remove(&self.ticket);
        if !inner.core.cancel(self.ticket)
            && let Ok(Ok(grant)) = self.reply.try_recv()
        {
            inner
                .core
                .release(&grant, Outcome::Unused, Duration::ZERO, Instant::now());
        }
        self.scheduler.settle(&mut inner);
    }
}

impl Scheduler {
    /// A scheduler for `roster`'s workers; with `claims`, every load is
    /// claimed cluster-wide first.
    pub fn new(
        config: &GatewayConfig,
        roster: Arc<Roster>,
        claims: Option<Claims>,
        metrics: Arc<GatewayMetrics>,
    ) -> Arc<Self> {
        let scheduler = &config.scheduler;
        let settings = Settings {
            aging: scheduler.aging(),
            replica_after: scheduler.replica_after(),
            evict_hold: scheduler.evict_hold(),
            keep_alive: scheduler.keep_alive,
        };
        let (orders, orders_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            inner: Mutex::new(Inner {
                core: SchedulerCore::new(settings, scheduler.policy.build()),
                waiting: HashMap::new(),
            }),
            roster,
            orders,
            orders_rx: Mutex::new(Some(orders_rx)),
            claims,
            config: config.clone(),
            metrics,
        })
    }

    pub fn roster(&self) -> &Arc<Roster> {
        &self.roster
    }

    /// Runs the order runner and the timer until `shutdown`. Orders for one
    /// worker are carried out one after another, in the order given (an
    /// unload before the load that follows it); different workers' run
    /// side by side.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let Some(mut orders) = self.orders_rx.lock().take() else {
            return;
        };
        let mut per_worker: HashMap<Arc<str>, mpsc::UnboundedSender<Order>> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                Some(order) = orders.recv() => {
                    let worker = order.worker().clone();
                    let queue = per_worker.entry(worker).or_insert_with(|| {
                        let (tx, mut rx) = mpsc::unbounded_channel::<Order>();
                        let scheduler = self.clone();
                        tokio::spawn(async move {
                            while let Some(order) = rx.recv().await {
                                scheduler.clone().carry_out(order).await;
                            }
                        });
                        tx
                    });
                    let _ = queue.send(order);
                }
                _ = tick.tick() => {
                    self.with_core(|core| core.tick(Instant::now()));
                }
                stopped = shutdown.changed() => {
                    if stopped.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }

    /// The model `name` means, and what is configured for it (under the
    /// name given, or its normalised form).
    pub fn resolve(&self, name: &str) -> Result<Resolved, ApiError> {
        let default_registry = &self.config.default_registry;
        let (resolved, key) = self
            .roster
            .snapshot()
            .resolve(name, default_registry)
            .ok_or_else(|| ApiError::ModelNotFound(name.to_owned()))?;
        let settings = self
            .config
            .models
            .get(name)
            .or_else(|| self.config.models.get(&resolved));
        let scheduler = &self.config.scheduler;
        Ok(Resolved {
            key,
            limits: Limits {
                max_queue: settings
                    .and_then(|s| s.max_queue)
                    .unwrap_or(scheduler.max_queue),
                keep_alive: settings.and_then(|s| s.keep_alive),
            },
            max_wait: settings
                .and_then(|s| s.max_queue_wait_secs)
                .map_or(scheduler.max_queue_wait(), Duration::from_secs),
        })
    }

    /// Queues the request and waits for a slot on any worker serving its
    /// model (or, when `retry` is set, puts a refused request back in its
    /// place). Cancel by dropping the future.
    pub async fn admit(
        self: &Arc<Self>,
        ctx: &Arc<RequestContext>,
        model: &Resolved,
        retry: Option<(u64, Instant)>,
    ) -> Result<Lease, ApiError> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let ticket = {
            let mut inner = self.inner.lock();
            let ticket = inner.core.enqueue(
                Enqueue {
                    model: model.key.clone(),
                    ctx: ctx.clone(),
                    limits: model.limits,
                    ticket: retry,
                },
                now,
            );
            inner.waiting.insert(
                ticket,
                Waiting {
                    reply: tx,
                    model: model.key.clone(),
                    span: tracing::Span::current(),
                },
            );
            self.settle(&mut inner);
            ticket
        };
        let enqueued_at = retry.map_or(now, |(_, at)| at);
        let mut waiter = Waiter {
            scheduler: self,
            ticket,
            reply: rx,
            settled: false,
        };
        let mut budget = model.max_wait.saturating_sub(enqueued_at.elapsed());
        if let Some(deadline) = ctx.deadline {
            budget = budget.min(deadline.saturating_duration_since(Instant::now()));
        }
        let reply = match tokio::time::timeout(budget, &mut waiter.reply).await {
            Ok(Ok(reply)) => {
                waiter.settled = true;
                reply
            }
            Ok(Err(_)) => {
                waiter.settled = true;
                return Err(ApiError::ShuttingDown);
            }
            Err(_) => {
                drop(waiter);
                return Err(ApiError::QueueTimeout {
                    model: ctx.model.clone(),
                    waited: enqueued_at.elapsed(),
                }
                .with_retry_after(Duration::from_secs(1)));
            }
        };
        let grant = reply.map_err(|r| rejection_error(r, &ctx.model))?;
        let granted_at = Instant::now();
        let Some(client) = self.roster.client(&grant.worker) else {
            // It left the pool between the grant and now.
            self.with_core(|core| {
                core.release(&grant, Outcome::WorkerGone, Duration::ZERO, granted_at);
            });
            return Err(ApiError::NoCapacity(ctx.model.clone()));
        };
        Ok(Lease {
            scheduler: self.clone(),
            grant,
            client,
            waited: granted_at - enqueued_at,
            ticket,
            enqueued_at,
            granted_at,
            outcome: Outcome::Done,
        })
    }

    /// Unloads idle replicas of `models` (every model if `None`) now.
    pub fn unload_now(&self, models: Option<&[ModelKey]>) -> UnloadReport {
        self.with_core(|core| core.unload_now(models))
    }

    pub fn report(&self) -> Vec<ModelReport> {
        self.inner.lock().core.report(Instant::now())
    }

    pub fn policy_name(&self) -> &'static str {
        self.inner.lock().core.policy().name()
    }

    /// No new requests; the waiting ones keep their place.
    pub fn shut_down(&self) {
        self.with_core(SchedulerCore::shut_down);
    }

    /// Answers every request still waiting with 503 (the end of a drain).
    pub fn reject_all(&self) {
        self.with_core(SchedulerCore::reject_all);
    }

    fn with_core<R>(&self, f: impl FnOnce(&mut SchedulerCore) -> R) -> R {
        let mut inner = self.inner.lock();
        let result = f(&mut inner.core);
        self.settle(&mut inner);
        result
    }

    /// Delivers the state machine's effects: replies to waiting requests
    /// (a grant whose request is gone is handed back at once), orders to
    /// the order runner.
    fn settle(&self, inner: &mut Inner) {
        loop {
            let effects = inner.core.take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Granted { ticket, grant } => {
                        let delivered = inner
                            .waiting
                            .remove(&ticket)
                            .map(|w| w.reply.send(Ok(grant.clone())));
                        if !matches!(delivered, Some(Ok(()))) {
                            inner.core.release(
                                &grant,
                                Outcome::Unused,
                                Duration::ZERO,
                                Instant::now(),
                            );
                        }
                    }
                    Effect::Rejected { ticket, rejection } => {
                        if let Some(w) = inner.waiting.remove(&ticket) {
                            let _ = w.reply.send(Err(rejection));
                        }
                    }
                    Effect::Load(order) => {
                        let cause = inner.cause_of(&order.model);
                        let _ = self.orders.send(Order::Load(order, cause));
                    }
                    Effect::Unload(order) => {
                        let _ = self.orders.send(Order::Unload(order));
                    }
                }
            }
        }
    }

    /// Sends one order to its worker and reports the outcome.
    async fn carry_out(self: Arc<Self>, order: Order) {
        match order {
            Order::Unload(order) => {
                let revision = self.unload(&order).await;
                self.with_core(|core| core.unload_done(&order, revision));
                if revision != 0 {
                    self.metrics.unloaded(&order.name);
                }
            }
            Order::Load(order, cause) => {
                let span = tracing::info_span!(
                    parent: &cause,
                    "load",
                    model = %order.name,
                    worker = %order.worker,
                    pull = order.pull,
                    evict = order.evict.len(),
                );
                self.load(order).instrument(span).await;
            }
        }
    }

    /// Carries out a load order: claims it, evicts what it names, loads.
    async fn load(&self, order: LoadOrder) {
        let claim = match self.claim(&order).await {
            Claimed::Here(claim) => claim,
            Claimed::Elsewhere => return,
        };
        for victim in &order.evict {
            let unload = tracing::info_span!("unload", model = %victim.name);
            let revision = self.unload(victim).instrument(unload).await;
            self.with_core(|core| core.unload_done(victim, revision));
            if revision != 0 {
                self.metrics.unloaded(&victim.name);
            }
        }
        let result = match self.roster.client(&order.worker) {
            Some(mut client) => {
                let mut request = tonic::Request::new(pb::LoadModelRequest {
                    model: order.name.clone(),
                    pull: order.pull,
                });
                crate::traces::inject(request.metadata_mut());
                client
                    .load_model(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
            None => Err(tonic::Status::unavailable("the worker left the pool")),
        };
        let now = Instant::now();
        match result {
            Ok(pb::LoadModelResponse {
                model: Some(loaded),
                revision,
                pull_ms,
                load_ms,
            }) => {
                tracing::info!(model = %order.name, worker = %order.worker, pull_ms, load_ms, "model loaded");
                self.metrics.load_done(
                    &order.name,
                    Some(Duration::from_millis(pull_ms.saturating_add(load_ms))),
                );
                self.with_core(|core| core.load_done(&order, &loaded, revision, now));
            }
            Ok(_) => {
                let failure = WorkerFailure::from_status(&tonic::Status::internal(
                    "the worker did not describe the loaded model",
                ));
                self.with_core(|core| core.load_failed(&order, failure, now));
            }
            Err(status) => {
                tracing::warn!(model = %order.name, worker = %order.worker, %status, "model load failed");
                self.metrics.load_done(&order.name, None);
                let failure = WorkerFailure::from_status(&status);
                self.with_core(|core| core.load_failed(&order, failure, now));
            }
        }
        if let Some(claim) = claim {
            claim.release().await;
        }
    }

    /// Claims `order`'s load cluster-wide. When another gateway is loading
    /// the model, the state machine is told and the order dropped.
    async fn claim(&self, order: &LoadOrder) -> Claimed {
        let Some(claims) = &self.claims else {
            return Claimed::Here(None);
        };
        match claims.claim(order.model.as_str(), &order.worker).await {
            Ok(Claim::Won(guard)) => Claimed::Here(Some(guard)),
            Ok(Claim::Held(holder)) => {
                tracing::info!(
                    model = %order.name,
                    gateway = %holder.gateway,
                    worker = %holder.worker,
                    "another gateway is loading the model; waiting for it"
                );
                self.with_core(|core| core.load_claimed_elsewhere(order, Instant::now()));
                // Victims planned for eviction were not unloaded: the
                // worker's status shows them again.
                if !order.evict.is_empty() {
                    self.roster.refresh_worker(&order.worker).await;
                }
                Claimed::Elsewhere
            }
            Err(e) => {
                // Loading anyway keeps the pool serving through a state
                // store outage, at the risk of a second load.
                tracing::warn!(model = %order.name, error = %e, "cannot claim the load cluster-wide; loading anyway");
                Claimed::Here(None)
            }
        }
    }

    /// Unloads on the worker; returns its status revision after (0 if the
    /// call failed: the worker's next status tells).
    async fn unload(&self, order: &UnloadOrder) -> u64 {
        let Some(mut client) = self.roster.client(&order.worker) else {
            return 0;
        };
        match client
            .unload_model(pb::UnloadModelRequest {
                model: order.name.clone(),
            })
            .await
        {
            Ok(response) => response.into_inner().revision,
            Err(status) => {
                tracing::warn!(model = %order.name, worker = %order.worker, %status, "unload failed");
                0
            }
        }
    }
}

impl WorkerEvents for Scheduler {
    fn status(&self, worker: &Arc<str>, status: &pb::StatusResponse) {
        self.with_core(|core| core.worker_status(worker, status, Instant::now()));
    }

    fn down(&self, worker: &Arc<str>) {
        self.with_core(|core| core.worker_down(worker));
    }

    fn removed(&self, worker: &Arc<str>) {
        self.with_core(|core| core.worker_removed(worker, Instant::now()));
    }
}

/// What the client is told when the scheduler turns a request away.
fn rejection_error(rejection: Rejection, model: &str) -> ApiError {
    match rejection {
        Rejection::QueueFull { retry_after } => ApiError::QueueFull {
            model: model.to_owned(),
        }
        .with_retry_after(retry_after),
        Rejection::LoadFailed {
            failure,
            retry_after,
        } => ApiError::from_worker(&failure, model).with_retry_after(retry_after),
        Rejection::TooLarge { need, largest } => ApiError::ModelTooLarge {
            model: model.to_owned(),
            need,
            largest,
        },
        Rejection::ShuttingDown { retry_after } => {
            ApiError::ShuttingDown.with_retry_after(retry_after)
        }
    }
}
