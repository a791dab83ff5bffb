//! One model's waiting requests, in the order they are served: priority
//! first — with aging, so a `low` request waiting `aging` is served like a
//! `normal` one and after twice that like a `high` one, and is never starved
//! — then round-robin across tenants (the tenant served least recently goes
//! first), then first come, first served within a tenant.
//!
//! Pure data structure: no clocks of its own, no I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::context::Priority;

/// A waiting entry. `seq` orders entries (smaller = earlier) and keeps an
/// entry's place when it is put back.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting<T> {
    pub seq: u64,
    pub priority: Priority,
    pub tenant: Arc<str>,
    pub enqueued_at: Instant,
    pub item: T,
}

/// A queue of entries of one model.
#[derive(Debug)]
pub struct ModelQueue<T> {
    /// FIFO lanes by priority and tenant, each ordered by `seq`.
    lanes: BTreeMap<(Priority, Arc<str>), VecDeque<Waiting<T>>>,
    len: usize,
    /// When each tenant was last served (a counter, not a time).
    last_served: HashMap<Arc<str>, u64>,
    served: u64,
}

impl<T> Default for ModelQueue<T> {
    fn default() -> Self {
        Self {
            lanes: BTreeMap::new(),
            len: 0,
            last_served: HashMap::new(),
            served: 0,
        }
    }
}

/// The priority a request waiting since `since` has at `now`.
pub fn effective(priority: Priority, since: Instant, now: Instant, aging: Duration) -> Priority {
    if aging.is_zero() {
        return priority;
    }
    let steps = now.saturating_duration_since(since).as_nanos() / aging.as_nanos();
    match (priority as u128).saturating_add(steps) {
        0 => Priority::Low,
        1 => Priority::Normal,
        _ => Priority::High,
    }
}

impl<T> ModelQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries waiting by the priority they asked for (low, normal, high).
    pub fn len_by_priority(&self) -> [usize; 3] {
        let mut counts = [0; 3];
        for ((priority, _), lane) in &self.lanes {
            counts[*priority as usize] += lane.len();
        }
        counts
    }

    /// Adds an entry (or puts one back: its `seq` keeps its place).
    pub fn push(&mut self, waiting: Waiting<T>) {
        let lane = self
            .lanes
            .entry((waiting.priority, waiting.tenant.clone()))
            .or_default();
        let at = lane.partition_point(|w| w.seq < waiting.seq);
        lane.insert(at, waiting);
        self.len += 1;
    }

    /// The entry to serve next at `now`, without removing it.
    pub fn peek(&self, now: Instant, aging: Duration) -> Option<&Waiting<T>> {
        self.best(now, aging)
            .and_then(|key| self.lanes.get(&key))
            .and_then(VecDeque::front)
    }

    /// Removes and returns the entry to serve next at `now`.
    pub fn pop(&mut self, now: Instant, aging: Duration) -> Option<Waiting<T>> {
        let key = self.best(now, aging)?;
        let lane = self.lanes.get_mut(&key)?;
        let waiting = lane.pop_front()?;
        if lane.is_empty() {
            self.lanes.remove(&key);
        }
        self.len -= 1;
        self.served += 1;
        self.last_served.insert(waiting.tenant.clone(), self.served);
        Some(waiting)
    }

    /// Removes the entry `seq` of that priority and tenant, if it waits.
    pub fn remove(
        &mut self,
        seq: u64,
        priority: Priority,
        tenant: &Arc<str>,
    ) -> Option<Waiting<T>> {
        let key = (priority, tenant.clone());
        let lane = self.lanes.get_mut(&key)?;
        let at = lane.binary_search_by_key(&seq, |w| w.seq).ok()?;
        let waiting = lane.remove(at)?;
        if lane.is_empty() {
            self.lanes.remove(&key);
        }
        self.len -= 1;
        Some(waiting)
    }

    /// When the longest-waiting entry arrived.
    pub fn oldest(&self) -> Option<Instant> {
        self.lanes
            .values()
            .filter_map(VecDeque::front)
            .map(|w| w.enqueued_at)
            .min()
    }

    /// The highest effective priority waiting at `now`.
    pub fn top_priority(&self, now: Instant, aging: Duration) -> Option<Priority> {
        self.peek(now, aging)
            .map(|w| effective(w.priority, w.enqueued_at, now, aging))
    }

    /// Removes every entry, oldest first.
    pub fn drain(&mut self) -> Vec<Waiting<T>> {
        let mut all: Vec<Waiting<T>> = std::mem::take(&mut self.lanes)
            .into_values()
            .flatten()
            .collect();
        all.sort_by_key(|w| w.seq);
        self.len = 0;
        all
    }

    /// The lane to serve next: highest effective priority of its head,
    /// then the tenant served least recently, then the earliest entry.
    fn best(&self, now: Instant, aging: Duration) -> Option<(Priority, Arc<str>)> {
        self.lanes
            .iter()
            .filter_map(|(key, lane)| lane.front().map(|head| (key, head)))
            .max_by(|(_, a), (_, b)| {
                let rank = |w: &Waiting<T>| {
                    (
                        effective(w.priority, w.enqueued_at, now, aging),
                        std::cmp::Reverse(self.last_served.get(&w.tenant).copied().unwrap_or(0)),
                        std::cmp::Reverse(w.seq),
                    )
                };
                rank(a).cmp(&rank(b))
            })
            .map(|(key, _)| key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AGING: Duration = Duration::from_secs(10);

    struct Queue {
        q: ModelQueue<u64>,
        seq: u64,
        t0: Instant,
    }

    impl Queue {
        fn new() -> Self {
            Self {
                q: ModelQueue::default(),
                seq: 0,
                t0: Instant::now(),
            }
        }

        fn push(&mut self, tenant: &str, priority: Priority, at_secs: u64) -> u64 {
            self.seq += 1;
            self.q.push(Waiting {
                seq: self.seq,
                priority,
                tenant: tenant.into(),
                enqueued_at: self.t0 + Duration::from_secs(at_secs),
                item: self.seq,
            });
            self.seq
        }

        fn pop(&mut self, at_secs: u64) -> Option<(String, u64)> {
            self.q
                .pop(self.t0 + Duration::from_secs(at_secs), AGING)
                .map(|w| (w.tenant.to_string(), w.item))
        }
    }

    #[test]
    fn a_tenant_with_one_request_goes_before_anothers_hundredth() {
        let mut q = Queue::new();
        for _ in 0..100 {
            q.push("big", Priority::Normal, 0);
        }
        let small = q.push("small", Priority::Normal, 0);
        let first_two: Vec<u64> = (0..2).map(|_| q.pop(0).unwrap().1).collect();
        assert!(first_two.contains(&small), "{first_two:?}");
    }

    #[test]
    fn fifo_within_a_tenant_and_round_robin_across() {
        let mut q = Queue::new();
        let a: Vec<u64> = (0..3).map(|_| q.push("a", Priority::Normal, 0)).collect();
        let b: Vec<u64> = (0..3).map(|_| q.push("b", Priority::Normal, 0)).collect();
        let order: Vec<u64> = (0..6).map(|_| q.pop(0).unwrap().1).collect();
        assert_eq!(order, [a[0], b[0], a[1], b[1], a[2], b[2]]);
    }

    #[test]
    fn priority_first_then_aging_lifts_the_low() {
        let mut q = Queue::new();
        let low = q.push("t", Priority::Low, 0);
        let normal = q.push("t", Priority::Normal, 5);
        let high = q.push("t", Priority::High, 5);
        assert_eq!(q.pop(5).unwrap().1, high);
        // At 10 s the low one is aged to normal and was there first.
        assert_eq!(q.pop(10).unwrap().1, low);
        assert_eq!(q.pop(10).unwrap().1, normal);
        assert!(q.pop(10).is_none());
    }

    #[test]
    fn a_low_request_is_never_starved_by_a_stream_of_high_ones() {
        let mut q = Queue::new();
        let low = q.push("t", Priority::Low, 0);
        for second in 0..100 {
            q.push("t", Priority::High, second);
            if q.pop(second).unwrap().1 == low {
                assert!(second <= 2 * AGING.as_secs(), "served at {second}s");
                return;
            }
        }
        panic!("the low request was starved");
    }

    #[test]
    fn a_put_back_entry_keeps_its_place() {
        let mut q = Queue::new();
        let first = q.push("t", Priority::Normal, 0);
        q.push("t", Priority::Normal, 0);
        let w = q.q.pop(q.t0, AGING).unwrap();
        assert_eq!(w.item, first);
        q.q.push(w);
        assert_eq!(q.pop(0).unwrap().1, first);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push { tenant: u8, priority: u8, at: u8 },
        Pop { at: u8 },
        Remove { nth: u8 },
        PutBack,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4, 0u8..3, 0u8..60).prop_map(|(tenant, priority, at)| Op::Push {
                tenant,
                priority,
                at
            }),
            (0u8..120).prop_map(|at| Op::Pop { at }),
            any::<u8>().prop_map(|nth| Op::Remove { nth }),
            Just(Op::PutBack),
        ]
    }

    proptest! {
        /// Whatever happens, every entry comes out exactly once (served or
        /// removed), and `len` always counts what waits.
        #[test]
        fn no_entry_is_lost_or_served_twice(ops in prop::collection::vec(op(), 1..200)) {
            let mut q = Queue::new();
            let mut waiting: Vec<(u64, Priority, Arc<str>)> = Vec::new();
            let mut out: Vec<u64> = Vec::new();
            let mut last_popped: Option<Waiting<u64>> = None;
            let priorities = [Priority::Low, Priority::Normal, Priority::High];
            for op in ops {
                match op {
                    Op::Push { tenant, priority, at } => {
                        let tenant = format!("t{tenant}");
                        let priority = priorities[priority as usize];
                        let seq = q.push(&tenant, priority, u64::from(at));
                        waiting.push((seq, priority, tenant.into()));
                    }
                    Op::Pop { at } => {
                        if let Some(w) = q.q.pop(q.t0 + Duration::from_secs(u64::from(at)), AGING) {
                            waiting.retain(|(s, _, _)| *s != w.seq);
                            out.push(w.item);
                            last_popped = Some(w);
                        } else {
                            prop_assert!(waiting.is_empty());
                        }
                    }
                    Op::Remove { nth } => {
                        if !waiting.is_empty() {
                            let (seq, priority, tenant) = waiting.remove(nth as usize % waiting.len());
                            let w = q.q.remove(seq, priority, &tenant);
                            prop_assert_eq!(w.map(|w| w.item), Some(seq));
                            out.push(seq);
                        }
                    }
                    Op::PutBack => {
                        if let Some(w) = last_popped.take() {
                            out.retain(|s| *s != w.seq);
                            waiting.push((w.seq, w.priority, w.tenant.clone()));
                            q.q.push(w);
                        }
                    }
                }
                prop_assert_eq!(q.q.len(), waiting.len());
            }
            for w in q.q.drain() {
                out.push(w.item);
            }
            let mut sorted = out.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), out.len(), "an entry came out twice");
            prop_assert_eq!(out.len() as u64, q.seq, "an entry was lost");
        }
    }
}
