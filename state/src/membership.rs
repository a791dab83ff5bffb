//! Following the registered workers: list the prefix, then watch it from
//! the listing's revision + 1, so no change between the two is missed.
//! Each change publishes a new immutable [`Members`]. When the store is
//! unreachable the last view stays (marked disconnected) and the follower
//! lists again once it answers; the new listing replaces the view, so a
//! worker that left meanwhile is dropped then.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::keys::Keys;
use crate::records::{WorkerRecord, decode};
use crate::store::{EventKind, Revision, StateError, StateStore};

/// First wait before listing again after a failure, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The registered workers at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    /// By worker id.
    pub workers: BTreeMap<String, WorkerRecord>,
    /// The store revision this view reflects.
    pub revision: Revision,
    /// Whether the store answers (a watch is open). When false, `workers`
    /// is the last view.
    pub connected: bool,
    /// Whether the store has been listed at least once.
    pub synced: bool,
}

/// A handle on the followed membership.
#[derive(Debug, Clone)]
pub struct Membership {
    current: watch::Receiver<Arc<Members>>,
}

impl Membership {
    /// Starts following `keys.workers()` in `store` until `shutdown`.
    pub fn follow(
        store: Arc<dyn StateStore>,
        keys: Keys,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = watch::channel(Arc::new(Members::default()));
        let task = tokio::spawn(run(store, keys, tx, shutdown));
        (Self { current: rx }, task)
    }

    /// The view now.
    pub fn current(&self) -> Arc<Members> {
        self.current.borrow().clone()
    }

    /// A receiver that changes with every new view.
    pub fn changes(&self) -> watch::Receiver<Arc<Members>> {
        self.current.clone()
    }

    /// Waits (at most `timeout`) for the first listing.
    pub async fn synced(&self, timeout: Duration) -> bool {
        let mut changes = self.current.clone();
        tokio::time::timeout(timeout, changes.wait_for(|m| m.synced))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn run(
    store: Arc<dyn StateStore>,
    keys: Keys,
    tx: watch::Sender<Arc<Members>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = RETRY_FIRST;
    loop {
        let followed = tokio::select! {
            result = follow_once(&*store, &keys, &tx) => result,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if let Err(e) = followed {
            if tx.borrow().connected || !tx.borrow().synced {
                tracing::warn!(error = %e, "cannot follow workers in the state store; keeping the last view");
            }
            retry = if tx.borrow().connected {
                RETRY_FIRST
            } else {
                (retry * 2).min(RETRY_MAX)
            };
        }
        tx.send_if_modified(|m| {
            let was = m.connected;
            if was {
                Arc::make_mut(m).connected = false;
            }
            was
        });
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Lists, then applies the watch's changes until it ends.
async fn follow_once(
    store: &dyn StateStore,
    keys: &Keys,
    tx: &watch::Sender<Arc<Members>>,
) -> Result<(), StateError> {
    let prefix = keys.workers();
    let listing = store.list(&prefix).await?;
    let mut workers = BTreeMap::new();
    for item in &listing.items {
        if let Some(record) = record(keys, &item.key, &item.value) {
            workers.insert(record.id.clone(), record);
        }
    }
    let mut events = store.watch(&prefix, listing.revision + 1).await?;
    tracing::debug!(
        workers = workers.len(),
        revision = listing.revision,
        "workers listed"
    );
    tx.send_replace(Arc::new(Members {
        workers,
        revision: listing.revision,
        connected: true,
        synced: true,
    }));
    while let Some(batch) = events.next().await {
        let batch = batch?;
        tx.send_modify(|members| {
            let members = Arc::make_mut(members);
            for event in batch {
                let Some(id) = keys.worker_id(&event.key) else {
                    continue;
                };
                match event.kind {
                    EventKind::Put => match record(keys, &event.key, &event.value) {
                        Some(record) => {
                            members.workers.insert(id.to_owned(), record);
                        }
                        None => {
                            members.workers.remove(id);
                        }
                    },
                    EventKind::Delete => {
                        members.workers.remove(id);
                    }
                }
                members.revision = members.revision.max(event.revision);
            }
        });
    }
    Err(StateError::Unavailable("the watch ended".into()))
}

/// The record at `key`, if it is one (its id must match its key).
fn record(keys: &Keys, key: &str, value: &[u8]) -> Option<WorkerRecord> {
    let id = keys.worker_id(key)?;
    match decode::<WorkerRecord>(key, value) {
        Ok(record) if record.id == id && !record.endpoint.is_empty() => Some(record),
        Ok(_) => {
            tracing::warn!(
                key,
                "worker record without endpoint or with another id; ignored"
            );
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable worker record; ignored");
            None
        }
    }
}
