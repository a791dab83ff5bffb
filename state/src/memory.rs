//! The in-process store of `herd serve` (and of tests): etcd's semantics —
//! one revision counter, leases that expire unless renewed, watches from a
//! revision — behind one mutex. History for watches is bounded; a watch
//! from before it is told to list again, as etcd does after a compaction.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::store::{
    Created, Event, EventKind, EventStream, KeyValue, LeaseId, Listing, Revision, StateError,
    StateStore,
};

/// Changes kept for watches that start in the past.
const HISTORY: usize = 4096;
/// How often expired leases are reaped when nothing else happens.
const REAP_EVERY: Duration = Duration::from_millis(100);

/// Cluster state in this process.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<Event>,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    kvs: BTreeMap<String, Stored>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: i64,
    history: VecDeque<Event>,
    /// The newest revision no longer in `history`.
    compacted: Revision,
}

#[derive(Debug)]
struct Stored {
    value: Vec<u8>,
    mod_revision: Revision,
    lease: Option<LeaseId>,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store. Inside a Tokio runtime, a background task reaps
    /// expired leases (until the store is dropped); outside one, they are
    /// reaped on the next call.
    pub fn new() -> Self {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            events: broadcast::channel(HISTORY).0,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reap(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Runs `f` on the state after reaping expired leases.
    fn with_state<T>(&self, f: impl FnOnce(&mut State, &broadcast::Sender<Event>) -> T) -> T {
        let mut state = self.inner.state.lock();
        state.expire(Instant::now(), &self.inner.events);
        f(&mut state, &self.inner.events)
    }
}

async fn reap(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.state.lock().expire(Instant::now(), &inner.events);
    }
}

impl State {
    fn record(&mut self, event: Event, events: &broadcast::Sender<Event>) {
        if self.history.len() == HISTORY
            && let Some(old) = self.history.pop_front()
        {
            self.compacted = old.revision;
        }
        self.history.push_back(event.clone());
        // No receiver is not an error: nobody watches.
        let _ = events.send(event);
    }

    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
        events: &broadcast::Sender<Event>,
    ) -> Result<Revision, StateError> {
        if let Some(lease) = lease
            && !self.leases.contains_key(&lease)
        {
            return Err(StateError::LeaseNotFound(lease));
        }
        self.revision += 1;
        let revision = self.revision;
        self.kvs.insert(
            key.to_owned(),
            Stored {
                value: value.clone(),
                mod_revision: revision,
                lease,
            },
        );
        self.record(
            Event {
                kind: EventKind::Put,
                key: key.to_owned(),
                value,
                revision,
            },
            events,
        );
        Ok(revision)
    }

    fn delete(&mut self, key: &str, events: &broadcast::Sender<Event>) -> bool {
        if self.kvs.remove(key).is_none() {
            return false;
        }
        self.revision += 1;
        let revision = self.revision;
        self.record(
            Event {
                kind: EventKind::Delete,
                key: key.to_owned(),
                value: Vec::new(),
                revision,
            },
            events,
        );
        true
    }

    fn end_lease(&mut self, lease: LeaseId, events: &broadcast::Sender<Event>) -> bool {
        if self.leases.remove(&lease).is_none() {
            return false;
        }
        let keys: Vec<String> = self
            .kvs
            .iter()
            .filter(|(_, v)| v.lease == Some(lease))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.delete(&key, events);
        }
        true
    }

    fn expire(&mut self, now: Instant, events: &broadcast::Sender<Event>) {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for lease in expired {
            self.end_lease(lease, events);
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StateError> {
        Ok(self.with_state(|state, _| {
            state.next_lease += 1;
            let id = LeaseId(state.next_lease);
            state.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline: Instant::now() + ttl,
                },
            );
            id
        }))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StateError> {
        Ok(
            self.with_state(|state, _| match state.leases.get_mut(&lease) {
                Some(l) => {
                    l.deadline = Instant::now() + l.ttl;
                    true
                }
                None => false,
            }),
        )
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StateError> {
        if self.with_state(|state, events| state.end_lease(lease, events)) {
            Ok(())
        } else {
            Err(StateError::LeaseNotFound(lease))
        }
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StateError> {
        self.with_state(|state, events| state.put(key, value, lease, events))
    }

    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Created, StateError> {
        self.with_state(|state, events| {
            if let Some(held) = state.kvs.get(key) {
                return Ok(Created::Exists(KeyValue {
                    key: key.to_owned(),
                    value: held.value.clone(),
                    mod_revision: held.mod_revision,
                    lease: held.lease,
                }));
            }
            state.put(key, value, lease, events).map(Created::Created)
        })
    }

    async fn delete(&self, key: &str) -> Result<Revision, StateError> {
        Ok(self.with_state(|state, events| {
            state.delete(key, events);
            state.revision
        }))
    }

    async fn delete_at(&self, key: &str, revision: Revision) -> Result<bool, StateError> {
        Ok(self.with_state(|state, events| match state.kvs.get(key) {
            Some(held) if held.mod_revision == revision => state.delete(key, events),
            _ => false,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StateError> {
        Ok(self.with_state(|state, _| Listing {
            items: state
                .kvs
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: v.value.clone(),
                    mod_revision: v.mod_revision,
                    lease: v.lease,
                })
                .collect(),
            revision: state.revision,
        }))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<EventStream, StateError> {
        let (backlog, receiver, after) = self.with_state(|state, events| {
            if from <= state.compacted {
                return Err(StateError::Compacted {
                    requested: from,
                    oldest: state.compacted + 1,
                });
            }
            let backlog: Vec<Event> = state
                .history
                .iter()
                .filter(|e| e.revision >= from && e.key.starts_with(prefix))
                .cloned()
                .collect();
            // Subscribed under the lock: no change falls between the
            // backlog and the live events.
            Ok((backlog, events.subscribe(), state.revision.max(from - 1)))
        })?;
        let prefix = prefix.to_owned();
        let live = futures::stream::unfold(Some((receiver, prefix)), move |open| async move {
            let (mut receiver, prefix) = open?;
            loop {
                match receiver.recv().await {
                    Ok(event) if event.revision > after && event.key.starts_with(&prefix) => {
                        return Some((Ok(vec![event]), Some((receiver, prefix))));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let error = StateError::Compacted {
                            requested: after + 1,
                            oldest: after + 1,
                        };
                        return Some((Err(error), None));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let first = (!backlog.is_empty()).then_some(Ok(backlog));
        Ok(Box::pin(futures::StreamExt::chain(
            futures::stream::iter(first),
            live,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn history_beyond_its_bound_is_compacted() {
        let store = MemoryStore::new();
        for i in 0..(HISTORY as i64 + 10) {
            store
                .put("k", i.to_le_bytes().to_vec(), None)
                .await
                .unwrap();
        }
        assert!(matches!(
            store.watch("k", 1).await,
            Err(StateError::Compacted { .. })
        ));
        assert!(store.watch("k", 20).await.is_ok());
    }
}
