//! Scenario and property tests of the scheduler's state machine.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::context::Priority;
use crate::routing::{LeastLoaded, PrefixAffinity};

const T0_SECS: u64 = 0;

struct Harness {
    core: SchedulerCore,
    t0: Instant,
    revision: u64,
    granted: Vec<(u64, Grant)>,
    rejected: Vec<(u64, Rejection)>,
    loads: Vec<LoadOrder>,
    unloads: Vec<UnloadOrder>,
}

fn settings() -> Settings {
    Settings {
        aging: Duration::from_secs(10),
        replica_after: Duration::from_secs(2),
        evict_hold: Duration::ZERO,
        keep_alive: KeepAlive::For(Duration::from_secs(300)),
    }
}

fn limits() -> Limits {
    Limits {
        max_queue: 100,
        keep_alive: None,
    }
}

fn model_status(name: &str, loaded: bool, slots: u32, busy: u32, memory: u64) -> pb::ModelStatus {
    pb::ModelStatus {
        name: name.into(),
        id: format!("sha256:{name}"),
        loaded,
        on_demand: !loaded,
        slots_total: slots,
        slots_busy: busy,
        memory_bytes: memory,
        ..Default::default()
    }
}

fn key(name: &str) -> ModelKey {
    ModelKey::of(&model_status(name, true, 1, 0, 0))
}

impl Harness {
    fn new() -> Self {
        Self::with_policy(Arc::new(LeastLoaded))
    }

    fn with_policy(policy: Arc<dyn RoutingPolicy>) -> Self {
        Self {
            core: SchedulerCore::new(settings(), policy),
            t0: Instant::now(),
            revision: 0,
            granted: Vec::new(),
            rejected: Vec::new(),
            loads: Vec::new(),
            unloads: Vec::new(),
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn collect(&mut self) {
        for effect in self.core.take_effects() {
            match effect {
                Effect::Granted { ticket, grant } => self.granted.push((ticket, grant)),
                Effect::Rejected { ticket, rejection } => self.rejected.push((ticket, rejection)),
                Effect::Load(order) => self.loads.push(order),
                Effect::Unload(order) => self.unloads.push(order),
            }
        }
    }

    /// A worker with `limit` bytes and these models (name, loaded, slots,
    /// busy, memory).
    fn status(
        &mut self,
        worker: &str,
        limit: u64,
        models: &[(&str, bool, u32, u32, u64)],
        secs: u64,
    ) {
        self.revision += 1;
        let status = pb::StatusResponse {
            revision: self.revision,
            memory_limit_bytes: limit,
            models: models
                .iter()
                .map(|(n, l, s, b, m)| model_status(n, *l, *s, *b, *m))
                .collect(),
            ..Default::default()
        };
        self.core
            .worker_status(&worker.into(), &status, self.at(secs));
        self.collect();
    }

    fn request(&mut self, model: &str, tenant: &str, priority: Priority, secs: u64) -> u64 {
        self.request_ctx(model, tenant, priority, secs, true, None)
    }

    fn request_ctx(
        &mut self,
        model: &str,
        tenant: &str,
        priority: Priority,
        secs: u64,
        needs_slot: bool,
        prefix_key: Option<u64>,
    ) -> u64 {
        let mut ctx = crate::routing::testing::context(prefix_key);
        ctx.tenant = tenant.into();
        ctx.priority = priority;
        ctx.needs_slot = needs_slot;
        let ticket = self.core.enqueue(
            Enqueue {
                model: key(model),
                ctx: Arc::new(ctx),
                limits: limits(),
                ticket: None,
            },
            self.at(secs),
        );
        self.collect();
        ticket
    }

    fn grant_of(&self, ticket: u64) -> Option<&Grant> {
        self.granted
            .iter()
            .find(|(t, _)| *t == ticket)
            .map(|(_, g)| g)
    }

    fn release(&mut self, ticket: u64, outcome: Outcome, secs: u64) {
        let grant = self.grant_of(ticket).expect("granted").clone();
        self.core
            .release(&grant, outcome, Duration::from_secs(1), self.at(secs));
        self.collect();
    }

    fn finish_load(&mut self, index: usize, slots: u32, secs: u64) {
        let order = self.loads[index].clone();
        let loaded = model_status(
            order.model.as_str().trim_start_matches("sha256:"),
            true,
            slots,
            0,
            100,
        );
        self.core.load_done(&order, &loaded, 0, self.at(secs));
        self.collect();
    }
}

#[test]
fn a_free_slot_is_granted_at_once() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", true, 2, 0, 100)], T0_SECS);
    let t = h.request("m", "a", Priority::Normal, 0);
    let grant = h.grant_of(t).unwrap();
    assert_eq!((&*grant.worker, grant.name.as_str()), ("w1", "m"));
}

#[test]
fn a_waiting_request_takes_the_first_slot_any_worker_frees() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", true, 1, 0, 100)], 0);
    h.status("w2", 1000, &[("m", true, 1, 0, 100)], 0);
    let a = h.request("m", "t", Priority::Normal, 0);
    let b = h.request("m", "t", Priority::Normal, 0);
    let waiting = h.request("m", "t", Priority::Normal, 0);
    assert!(h.grant_of(waiting).is_none());
    let on_w2 = if &*h.grant_of(a).unwrap().worker == "w2" {
        a
    } else {
        b
    };
    h.release(on_w2, Outcome::Done, 1);
    assert_eq!(&*h.grant_of(waiting).unwrap().worker, "w2");
}

#[test]
fn a_model_without_replica_is_loaded_once_however_many_wait() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", false, 2, 0, 100)], 0);
    let tickets: Vec<u64> = (0..5)
        .map(|_| h.request("m", "t", Priority::Normal, 0))
        .collect();
    assert_eq!(h.loads.len(), 1);
    let order = &h.loads[0];
    assert_eq!((&*order.worker, order.pull), ("w1", false));
    assert!(h.granted.is_empty());
    h.finish_load(0, 2, 1);
    assert_eq!(h.granted.len(), 2, "both slots of the new replica");
    h.release(tickets[0], Outcome::Done, 2);
    assert_eq!(h.granted.len(), 3);
    assert_eq!(h.loads.len(), 1);
}

#[test]
fn a_worker_that_has_not_stored_the_model_pulls_it() {
    let mut h = Harness::new();
    // w1 stores m but has no room; w2 has room but must pull.
    h.status(
        "w1",
        150,
        &[("m", false, 2, 0, 100), ("x", true, 1, 1, 100)],
        0,
    );
    h.status("w2", 1000, &[], 0);
    h.request("m", "t", Priority::Normal, 0);
    let order = &h.loads[0];
    assert_eq!((&*order.worker, order.pull), ("w2", true));
    assert_eq!(
        order.name, "m",
        "pulled by the name the other worker stores it under"
    );
}

#[test]
fn eviction_takes_the_least_recently_used_idle_model() {
    let mut h = Harness::new();
    h.status(
        "w1",
        200,
        &[
            ("a", true, 1, 0, 100),
            ("b", true, 1, 0, 100),
            ("c", false, 1, 0, 100),
        ],
        0,
    );
    // a is used at 5 s, so b is the least recently used.
    let t = h.request("a", "t", Priority::Normal, 5);
    h.release(t, Outcome::Done, 6);
    h.request("c", "t", Priority::Normal, 7);
    let order = h.loads.last().unwrap();
    assert_eq!(order.evict.len(), 1);
    assert_eq!(order.evict[0].name, "b");
    let report = h.core.report(h.at(7));
    let b = report.iter().find(|r| r.model == key("b")).unwrap();
    assert_eq!(b.stats.evictions, 1);
}

/// One worker with room for two of the models a, b (loaded) and c (not),
/// evictions held 5 s.
fn room_for_two_with_a_5s_hold() -> Harness {
    let mut h = Harness::new();
    h.core = SchedulerCore::new(
        Settings {
            evict_hold: Duration::from_secs(5),
            ..settings()
        },
        Arc::new(LeastLoaded),
    );
    h.status(
        "w1",
        200,
        &[
            ("a", true, 1, 0, 100),
            ("b", true, 1, 0, 100),
            ("c", false, 1, 0, 100),
        ],
        0,
    );
    h
}

#[test]
fn a_model_just_used_is_held_until_the_waiting_model_has_waited_as_long() {
    let mut h = room_for_two_with_a_5s_hold();
    for (model, at) in [("a", 10), ("b", 11)] {
        let t = h.request(model, "t", Priority::Normal, at);
        h.release(t, Outcome::Done, at);
    }
    let c = h.request("c", "t", Priority::Normal, 12);
    // a and b stay in use while c waits.
    for (model, at) in [("a", 13), ("b", 14)] {
        let t = h.request(model, "t", Priority::Normal, at);
        h.release(t, Outcome::Done, at);
    }
    h.core.tick(h.at(16));
    h.collect();
    assert!(h.loads.is_empty(), "c waited 4 s, a was used 3 s ago");
    // c has waited the hold: the least recently used idle model goes.
    h.core.tick(h.at(17));
    h.collect();
    assert_eq!(h.loads.len(), 1);
    assert_eq!(h.loads[0].evict.len(), 1);
    assert_eq!(h.loads[0].evict[0].name, "a");
    assert!(h.grant_of(c).is_none(), "granted once c is loaded");
}

#[test]
fn a_model_idle_for_the_hold_is_evicted_without_waiting_longer() {
    let mut h = room_for_two_with_a_5s_hold();
    let t = h.request("a", "t", Priority::Normal, 10);
    h.release(t, Outcome::Done, 10);
    let t = h.request("b", "t", Priority::Normal, 11);
    h.release(t, Outcome::Done, 11);
    h.request("c", "t", Priority::Normal, 12);
    h.core.tick(h.at(14));
    h.collect();
    assert!(h.loads.is_empty(), "a idle 4 s, c waited 2 s");
    h.core.tick(h.at(15));
    h.collect();
    assert_eq!(h.loads.len(), 1);
    assert_eq!(h.loads[0].evict[0].name, "a", "idle 5 s");
}

#[test]
fn a_model_with_running_or_waiting_requests_is_never_evicted() {
    let mut h = Harness::new();
    h.status(
        "w1",
        100,
        &[("a", true, 1, 0, 100), ("c", false, 1, 0, 100)],
        0,
    );
    let running = h.request("a", "t", Priority::Normal, 0);
    let queued_a = h.request("a", "t", Priority::Normal, 0);
    let c = h.request("c", "t", Priority::Normal, 0);
    assert!(h.loads.is_empty(), "a runs: c waits");
    h.release(running, Outcome::Done, 1);
    assert!(h.grant_of(queued_a).is_some());
    assert!(h.loads.is_empty(), "a still runs");
    h.release(queued_a, Outcome::Done, 2);
    assert_eq!(h.loads.len(), 1, "a is idle and nobody waits for it");
    assert_eq!(h.loads[0].evict[0].name, "a");
    h.finish_load(0, 1, 3);
    assert!(h.grant_of(c).is_some());
}

#[test]
fn a_failed_load_answers_every_waiter_and_backs_off() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", false, 1, 0, 100)], 0);
    let a = h.request("m", "t", Priority::Normal, 0);
    let b = h.request("m", "t", Priority::Normal, 0);
    let order = h.loads[0].clone();
    let failure = WorkerFailure::from_status(
        &herd_proto::error::ErrorDetail::new(
            herd_proto::error::FailureClass::Internal,
            herd_proto::error::ErrorCode::LoadFailed,
        )
        .into_status(tonic::Code::Internal, "bad weights"),
    );
    h.core.load_failed(&order, failure, h.at(1));
    h.collect();
    let rejected: HashSet<u64> = h.rejected.iter().map(|(t, _)| *t).collect();
    assert_eq!(rejected, HashSet::from([a, b]));
    // Within the back-off: refused at once, no new load.
    let c = h.request("m", "t", Priority::Normal, 1);
    assert!(h.rejected.iter().any(|(t, _)| *t == c));
    assert_eq!(h.loads.len(), 1);
    // After it: tried again.
    h.request("m", "t", Priority::Normal, 3);
    assert_eq!(h.loads.len(), 2);
}

#[test]
fn an_unreachable_worker_is_skipped_not_blamed_on_the_model() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", false, 1, 0, 100)], 0);
    h.status("w2", 1000, &[("m", false, 1, 0, 100)], 0);
    let a = h.request("m", "t", Priority::Normal, 0);
    let first = h.loads[0].clone();
    let gone = WorkerFailure::from_status(&tonic::Status::unavailable("connection refused"));
    h.core.load_failed(&first, gone, h.at(1));
    h.collect();
    assert!(h.rejected.is_empty());
    assert_eq!(h.loads.len(), 2);
    assert_ne!(h.loads[1].worker, first.worker);
    h.finish_load(1, 1, 2);
    assert!(h.grant_of(a).is_some());
}

#[test]
fn keep_alive_unloads_idle_models_on_time() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", true, 1, 0, 100)], 0);
    let t = h.request("m", "t", Priority::Normal, 0);
    h.release(t, Outcome::Done, 10);
    h.core.tick(h.at(309));
    h.collect();
    assert!(h.unloads.is_empty());
    h.core.tick(h.at(310));
    h.collect();
    assert_eq!(h.unloads.len(), 1);
}

#[test]
fn a_requests_keep_alive_overrides_the_models() {
    let mut h = Harness::new();
    h.status(
        "w1",
        1000,
        &[("m", true, 1, 0, 100), ("n", true, 1, 0, 100)],
        0,
    );
    let mut zero = crate::routing::testing::context(None);
    zero.keep_alive = Some(KeepAlive::For(Duration::ZERO));
    let t = h.core.enqueue(
        Enqueue {
            model: key("m"),
            ctx: Arc::new(zero),
            limits: limits(),
            ticket: None,
        },
        h.at(0),
    );
    h.collect();
    h.release(t, Outcome::Done, 1);
    assert_eq!(h.unloads.len(), 1, "keep_alive 0 unloads when idle");
    let mut forever = crate::routing::testing::context(None);
    forever.keep_alive = Some(KeepAlive::Forever);
    let t = h.core.enqueue(
        Enqueue {
            model: key("n"),
            ctx: Arc::new(forever),
            limits: limits(),
            ticket: None,
        },
        h.at(1),
    );
    h.collect();
    h.release(t, Outcome::Done, 2);
    h.core.tick(h.at(100_000));
    h.collect();
    assert_eq!(h.unloads.len(), 1, "keep_alive -1 never unloads");
}

#[test]
fn a_full_queue_turns_requests_away_with_retry_after() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", true, 1, 0, 100)], 0);
    for _ in 0..101 {
        h.request("m", "t", Priority::Normal, 0);
    }
    let last = h.request("m", "t", Priority::Normal, 0);
    let (_, rejection) = h.rejected.iter().find(|(t, _)| *t == last).unwrap();
    let Rejection::QueueFull { retry_after } = rejection else {
        panic!("{rejection:?}");
    };
    assert!(*retry_after >= Duration::from_secs(1));
}

#[test]
fn a_long_wait_adds_a_replica_where_memory_is_free() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", true, 1, 0, 100)], 0);
    h.status("w2", 1000, &[("m", false, 1, 0, 100)], 0);
    h.request("m", "t", Priority::Normal, 0);
    h.request("m", "t", Priority::Normal, 0);
    assert!(h.loads.is_empty());
    h.core.tick(h.at(2));
    h.collect();
    assert_eq!(h.loads.len(), 1);
    assert_eq!(&*h.loads[0].worker, "w2");
    assert!(h.loads[0].evict.is_empty());
}

#[test]
fn unload_now_skips_busy_models() {
    let mut h = Harness::new();
    h.status(
        "w1",
        1000,
        &[("busy", true, 1, 0, 100), ("idle", true, 1, 0, 100)],
        0,
    );
    h.request("busy", "t", Priority::Normal, 0);
    let report = h.core.unload_now(None);
    h.collect();
    let names = |o: &[UnloadOrder]| o.iter().map(|u| u.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&report.unloaded), ["idle"]);
    assert_eq!(names(&report.skipped_busy), ["busy"]);
    assert_eq!(h.unloads.len(), 1);
}

#[test]
fn a_busy_refusal_puts_the_request_back_in_its_place_until_the_worker_reports() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", true, 1, 0, 100)], 0);
    let first = h.request("m", "t", Priority::Normal, 0);
    let second = h.request("m", "t", Priority::Normal, 0);
    // The worker refused: the slot was not free after all.
    h.release(first, Outcome::Busy, 0);
    let ctx = Arc::new(crate::routing::testing::context(None));
    h.core.enqueue(
        Enqueue {
            model: key("m"),
            ctx,
            limits: limits(),
            ticket: Some((first, h.at(0))),
        },
        h.at(0),
    );
    h.collect();
    assert!(h.grant_of(second).is_none(), "the replica is saturated");
    // The worker's next status shows the slot free: the first goes first.
    h.status("w1", 1000, &[("m", true, 1, 0, 100)], 1);
    let grants: Vec<u64> = h.granted.iter().map(|(t, _)| *t).collect();
    assert_eq!(grants, [first, first]);
}

#[test]
fn requests_sharing_a_prefix_go_to_the_same_worker() {
    let mut h = Harness::with_policy(Arc::new(PrefixAffinity::default()));
    for w in ["w1", "w2", "w3"] {
        h.status(w, 1000, &[("m", true, 4, 0, 100)], 0);
    }
    let mut workers = HashSet::new();
    for _ in 0..5 {
        let t = h.request_ctx("m", "t", Priority::Normal, 0, true, Some(1234));
        workers.insert(h.grant_of(t).unwrap().worker.clone());
        h.release(t, Outcome::Done, 0);
    }
    assert_eq!(workers.len(), 1);
}

#[test]
fn slotless_requests_need_a_replica_not_a_slot() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", false, 1, 0, 100)], 0);
    let embed = h.request_ctx("m", "t", Priority::Normal, 0, false, None);
    assert_eq!(h.loads.len(), 1);
    h.finish_load(0, 1, 1);
    let running = h.request("m", "t", Priority::Normal, 1);
    assert!(h.grant_of(embed).is_some());
    assert!(h.grant_of(running).is_some());
    let another_embed = h.request_ctx("m", "t", Priority::Normal, 1, false, None);
    assert!(
        h.grant_of(another_embed).is_some(),
        "the slot is busy, the replica is there"
    );
}

#[test]
fn a_model_larger_than_any_worker_is_refused() {
    let mut h = Harness::new();
    h.status("w1", 50, &[("m", false, 1, 0, 100)], 0);
    let t = h.request("m", "t", Priority::Normal, 0);
    assert!(matches!(
        h.rejected.iter().find(|(x, _)| *x == t),
        Some((
            _,
            Rejection::TooLarge {
                need: 100,
                largest: 50
            }
        ))
    ));
}

#[test]
fn a_load_claimed_by_another_gateway_waits_for_its_replica_without_replanning() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", false, 2, 0, 100)], 0);
    let first = h.request("m", "t", Priority::Normal, 0);
    assert_eq!(h.loads.len(), 1);
    let order = h.loads[0].clone();
    // The claim was taken elsewhere: nothing was sent.
    h.core.load_claimed_elsewhere(&order, h.at(0));
    h.collect();
    // More requests and time within the wait: no new plan, no tight loop.
    let second = h.request("m", "t", Priority::Normal, 1);
    h.core.tick(h.at(1));
    h.collect();
    assert_eq!(h.loads.len(), 1);
    assert!(h.rejected.is_empty());
    // The other gateway's load shows in the worker's status.
    h.status("w1", 1000, &[("m", true, 2, 0, 100)], 1);
    assert!(h.grant_of(first).is_some() && h.grant_of(second).is_some());
    h.core.tick(h.at(10));
    h.collect();
    assert_eq!(h.loads.len(), 1, "loaded once, by the other gateway");
    assert_eq!(h.core.report(h.at(10))[0].stats.loads, 0);
}

#[test]
fn a_claimed_load_that_never_shows_is_planned_again_after_the_wait() {
    let mut h = Harness::new();
    h.status("w1", 1000, &[("m", false, 2, 0, 100)], 0);
    h.request("m", "t", Priority::Normal, 0);
    let order = h.loads[0].clone();
    h.core.load_claimed_elsewhere(&order, h.at(0));
    h.collect();
    h.core.tick(h.at(CLAIM_WAIT.as_secs()));
    h.collect();
    assert_eq!(h.loads.len(), 2);
}

#[derive(Debug, Clone)]
enum Event {
    Request { model: u8, tenant: u8 },
    Cancel { nth: u8 },
    Release { nth: u8, busy: bool },
    FinishLoad,
    FailLoad,
    ClaimedElsewhere,
    Status { worker: u8 },
    Tick { secs: u8 },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0u8..3, 0u8..3).prop_map(|(model, tenant)| Event::Request { model, tenant }),
        1 => any::<u8>().prop_map(|nth| Event::Cancel { nth }),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(nth, busy)| Event::Release { nth, busy }),
        2 => Just(Event::FinishLoad),
        1 => Just(Event::FailLoad),
        1 => Just(Event::ClaimedElsewhere),
        1 => (0u8..2).prop_map(|worker| Event::Status { worker }),
        1 => (0u8..20).prop_map(|secs| Event::Tick { secs }),
    ]
}

proptest! {
    /// Whatever happens, no request is granted twice or both granted and
    /// rejected, no replica hands out more slots than it has, and every
    /// request ends (granted, rejected or cancelled) once the pool has
    /// room and time passes.
    #[test]
    fn no_request_is_lost_or_served_twice(events in prop::collection::vec(event(), 1..150)) {
        let mut h = Harness::new();
        let models = ["a", "b", "c"];
        // Two workers, each with room for two of the three models.
        let worker_models: Vec<(&str, bool, u32, u32, u64)> =
            models.iter().map(|m| (*m, false, 2, 0, 100)).collect();
        h.status("w0", 200, &worker_models, 0);
        h.status("w1", 200, &worker_models, 0);
        let mut waiting: Vec<u64> = Vec::new();
        let mut running: Vec<u64> = Vec::new();
        let mut finished: HashSet<u64> = HashSet::new();
        let mut pending_loads = 0usize;
        let mut secs = 0u64;
        let mut seen_grants = 0usize;
        let mut seen_rejections = 0usize;
        for event in events {
            match event {
                Event::Request { model, tenant } => {
                    let t = h.request(models[model as usize], &format!("t{tenant}"), Priority::Normal, secs);
                    waiting.push(t);
                }
                Event::Cancel { nth } if !waiting.is_empty() => {
                    let t = waiting.remove(nth as usize % waiting.len());
                    if h.core.cancel(t) {
                        finished.insert(t);
                    } else {
                        waiting.push(t);
                    }
                }
                Event::Release { nth, busy } if !running.is_empty() => {
                    let t = running.remove(nth as usize % running.len());
                    let outcome = if busy { Outcome::Busy } else { Outcome::Done };
                    h.release(t, outcome, secs);
                    finished.insert(t);
                }
                Event::FinishLoad if pending_loads < h.loads.len() => {
                    h.finish_load(pending_loads, 2, secs);
                    pending_loads += 1;
                }
                Event::FailLoad if pending_loads < h.loads.len() => {
                    let order = h.loads[pending_loads].clone();
                    pending_loads += 1;
                    let failure = WorkerFailure::from_status(&tonic::Status::internal("boom"));
                    h.core.load_failed(&order, failure, h.at(secs));
                    h.collect();
                }
                Event::ClaimedElsewhere if pending_loads < h.loads.len() => {
                    let order = h.loads[pending_loads].clone();
                    pending_loads += 1;
                    h.core.load_claimed_elsewhere(&order, h.at(secs));
                    h.collect();
                }
                Event::Status { worker } => {
                    // The worker reports what it has: our loads done so far.
                    let id: Arc<str> = format!("w{worker}").into();
                    let loaded: Vec<(&str, bool, u32, u32, u64)> = models
                        .iter()
                        .map(|m| {
                            let here = h.core.workers[&id].replicas.get(&key(m));
                            (*m, here.is_some(), 2, here.map_or(0, |r| r.in_flight), 100)
                        })
                        .collect();
                    h.status(&id, 200, &loaded, secs);
                }
                Event::Tick { secs: dt } => {
                    secs += u64::from(dt);
                    h.core.tick(h.at(secs));
                    h.collect();
                }
                _ => {}
            }
            for (t, _) in &h.granted[seen_grants..] {
                prop_assert!(waiting.contains(t), "granted twice or never asked: {t}");
                waiting.retain(|w| w != t);
                running.push(*t);
            }
            seen_grants = h.granted.len();
            for (t, _) in &h.rejected[seen_rejections..] {
                prop_assert!(waiting.contains(t), "rejected twice or after a grant: {t}");
                waiting.retain(|w| w != t);
                finished.insert(*t);
            }
            seen_rejections = h.rejected.len();
            for worker in h.core.workers.values() {
                for r in worker.replicas.values() {
                    prop_assert!(r.in_flight <= r.slots, "{r:?}");
                }
                prop_assert!(worker.used_memory() <= worker.memory_limit);
            }
        }
        // Drain: finish every load and release everything, repeatedly.
        for _ in 0..50 {
            while pending_loads < h.loads.len() {
                h.finish_load(pending_loads, 2, secs);
                pending_loads += 1;
            }
            for (t, _) in &h.granted[seen_grants..] {
                waiting.retain(|w| w != t);
                running.push(*t);
            }
            seen_grants = h.granted.len();
            for (t, _) in &h.rejected[seen_rejections..] {
                waiting.retain(|w| w != t);
            }
            seen_rejections = h.rejected.len();
            while let Some(t) = running.pop() {
                h.release(t, Outcome::Done, secs);
            }
            for worker in ["w0", "w1"] {
                let id: Arc<str> = worker.into();
                let loaded: Vec<(&str, bool, u32, u32, u64)> = models
                    .iter()
                    .map(|m| {
                        let here = h.core.workers[&id].replicas.get(&key(m));
                        (*m, here.is_some(), 2, here.map_or(0, |r| r.in_flight), 100)
                    })
                    .collect();
                h.status(worker, 200, &loaded, secs);
            }
            secs += 70;
            h.core.tick(h.at(secs));
            h.collect();
        }
        prop_assert!(waiting.is_empty(), "still waiting: {waiting:?}");
    }
}
