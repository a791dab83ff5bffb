//! A session: one lease kept alive in the background, and the keys bound to
//! it. A worker's registration and a gateway's record (and its placement
//! claims) live in sessions, so they vanish when the process dies — within
//! the lease TTL — and are written again when the store comes back after
//! an outage that outlived the lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;

use crate::store::{LeaseId, StateError, StateStore};

/// How soon a failed grant or renewal is tried again.
const RETRY: Duration = Duration::from_millis(500);

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// No lease yet.
    Starting,
    /// The lease is alive and every key is written.
    Live(LeaseId),
    /// The store does not answer (or refused a key); the session keeps
    /// trying, and what it last wrote stays until the lease expires.
    Unreachable,
    /// Closed: its lease was revoked.
    Closed,
}

/// A lease kept alive, and keys bound to it.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn StateStore>,
    ttl: Duration,
    /// Held across store calls: a renewal, a new grant and a put never
    /// interleave, so no key is written under a lease being replaced.
    bound: Mutex<Bound>,
    status: watch::Sender<SessionStatus>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Bound {
    lease: Option<LeaseId>,
    /// Key → (value, written under the current lease).
    keys: BTreeMap<String, (Vec<u8>, bool)>,
}

impl Session {
    /// Starts keeping a lease of `ttl` alive (renewed every third of it).
    /// Must be called inside a Tokio runtime.
    pub fn start(store: Arc<dyn StateStore>, ttl: Duration) -> Self {
        let shared = Arc::new(Shared {
            store,
            ttl,
            bound: Mutex::new(Bound::default()),
            status: watch::channel(SessionStatus::Starting).0,
            wake: Notify::new(),
        });
        let task = tokio::spawn(run(shared.clone()));
        Self { shared, task }
    }

    /// Keeps `key` = `value` under the session's lease: now if the lease is
    /// alive, and again after every new lease. An error says it is not
    /// written yet; the session keeps trying.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), StateError> {
        let mut bound = self.shared.bound.lock().await;
        bound.keys.insert(key.to_owned(), (value, false));
        let Some(lease) = bound.lease else {
            self.shared.wake.notify_one();
            return Err(StateError::Unavailable("no lease yet".into()));
        };
        let written = write(&self.shared, &mut bound, lease).await;
        if written.is_err() {
            self.shared.wake.notify_one();
        }
        written
    }

    /// Stops keeping `key` and deletes it.
    pub async fn remove(&self, key: &str) -> Result<(), StateError> {
        let mut bound = self.shared.bound.lock().await;
        bound.keys.remove(key);
        self.shared.store.delete(key).await.map(|_| ())
    }

    /// The current lease, if alive as far as the session knows.
    pub async fn lease(&self) -> Option<LeaseId> {
        self.shared.bound.lock().await.lease
    }

    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.shared.status.subscribe()
    }

    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// Stops renewing and revokes the lease: its keys are deleted now
    /// rather than when it expires.
    pub async fn close(&self) -> Result<(), StateError> {
        self.task.abort();
        let mut bound = self.shared.bound.lock().await;
        let lease = bound.lease.take();
        self.shared.status.send_replace(SessionStatus::Closed);
        match lease {
            Some(lease) => match self.shared.store.revoke(lease).await {
                Ok(()) | Err(StateError::LeaseNotFound(_)) => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes every key not yet written under `lease`.
async fn write(shared: &Shared, bound: &mut Bound, lease: LeaseId) -> Result<(), StateError> {
    for (key, (value, written)) in &mut bound.keys {
        if !*written {
            shared.store.put(key, value.clone(), Some(lease)).await?;
            *written = true;
        }
    }
    shared.status.send_replace(SessionStatus::Live(lease));
    Ok(())
}

async fn run(shared: Arc<Shared>) {
    let renew_every = (shared.ttl / 3).max(Duration::from_millis(100));
    loop {
        let wait = step(&shared).await.map_or(RETRY, |()| renew_every);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.wake.notified() => {}
        }
    }
}

/// One round: get a lease if there is none, else renew it; write what is
/// not written.
async fn step(shared: &Shared) -> Result<(), StateError> {
    let mut bound = shared.bound.lock().await;
    let result = match bound.lease {
        None => match shared.store.grant(shared.ttl).await {
            Ok(lease) => {
                tracing::info!(lease = %lease, ttl = ?shared.ttl, "state store lease granted");
                bound.lease = Some(lease);
                for (_, written) in bound.keys.values_mut() {
                    *written = false;
                }
                write(shared, &mut bound, lease).await
            }
            Err(e) => Err(e),
        },
        Some(lease) => match shared.store.keep_alive(lease).await {
            Ok(true) => write(shared, &mut bound, lease).await,
            Ok(false) => Err(StateError::LeaseNotFound(lease)),
            Err(e) => Err(e),
        },
    };
    match &result {
        Ok(()) => {}
        Err(StateError::LeaseNotFound(lease)) => {
            tracing::warn!(lease = %lease, "state store lease expired; registering again");
            bound.lease = None;
            shared.status.send_replace(SessionStatus::Unreachable);
            // A new lease at once, not after the retry pause.
            shared.wake.notify_one();
        }
        Err(e) => {
            if *shared.status.borrow() != SessionStatus::Unreachable {
                tracing::warn!(error = %e, "state store unreachable; retrying");
            }
            shared.status.send_replace(SessionStatus::Unreachable);
        }
    }
    result
}
