//! Owns the current [`Snapshot`]: follows membership in the state store
//! (a [`Membership`]: etcd in a cluster, memory in `herd serve`), keeps one
//! `WatchStatus` stream open per worker, swaps a new snapshot in when a
//! worker's models, health or draining change, and hands every status to
//! the scheduler ([`WorkerEvents`]). A worker leaves the view when its
//! record goes (its lease expired, or it deregistered after draining); it
//! is marked down at once when its status stream breaks.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use herd_proto::v1 as pb;
use herd_state::{Members, Membership, WorkerRecord};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::snapshot::{NameIndex, Snapshot, WorkerView};
use super::{WorkerConn, WorkerRpc};

/// Largest gRPC message either way (the worker uses the same limit).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long a unary `Status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the gateway waits for the state store's first listing before
/// serving (with no workers until it comes).
const FIRST_LISTING: Duration = Duration::from_secs(5);
/// Reconnecting a broken status stream: first wait, and the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// What the scheduler hears about workers.
pub trait WorkerEvents: Send + Sync + 'static {
    fn status(&self, worker: &Arc<str>, status: &pb::StatusResponse);
    /// Its status stream broke (it may come back).
    fn down(&self, worker: &Arc<str>);
    /// It left the pool.
    fn removed(&self, worker: &Arc<str>);
}

/// A worker's record and the task watching its status.
type Watcher = (WorkerRecord, JoinHandle<()>);

/// The pool's membership and worker views.
pub struct Roster {
    membership: OnceLock<Membership>,
    current: ArcSwap<Snapshot>,
    events: OnceLock<Arc<dyn WorkerEvents>>,
    watchers: parking_lot::Mutex<HashMap<Arc<str>, Watcher>>,
    /// How `https://` workers are reached.
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// The state store answers (the membership watch is open).
    pub store_connected: bool,
    /// Workers whose status stream is up and that are not draining.
    pub healthy: usize,
    pub total: usize,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roster")
            .field("workers", &self.snapshot().workers.len())
            .finish_non_exhaustive()
    }
}

impl Default for Roster {
    fn default() -> Self {
        Self::new()
    }
}

impl Roster {
    pub fn new() -> Self {
        Self {
            membership: OnceLock::new(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            events: OnceLock::new(),
            watchers: parking_lot::Mutex::default(),
            tls: None,
        }
    }

    /// Reaches `https://` workers with this TLS setup (the CA that signs
    /// workers' certificates, and this gateway's client certificate for
    /// workers that require one).
    #[must_use]
    pub fn with_tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The current view; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A worker's client, if it is known and its endpoint valid.
    pub fn client(&self, id: &str) -> Option<WorkerRpc> {
        self.snapshot().worker(id).and_then(|w| w.client.clone())
    }

    /// A worker to run model-store operations on: the first healthy one
    /// (spreading them over a cluster's workers is a later step).
    pub fn store_worker(&self) -> Option<WorkerRpc> {
        self.snapshot()
            .workers
            .iter()
            .filter(|w| w.healthy)
            .find_map(|w| w.client.clone())
    }

    /// Whether the gateway can serve, and whether it is degraded.
    pub fn readiness(&self) -> Readiness {
        let snapshot = self.snapshot();
        Readiness {
            store_connected: self.membership.get().is_some_and(|m| m.current().connected),
            healthy: snapshot.workers.iter().filter(|w| w.healthy).count(),
            total: snapshot.workers.len(),
        }
    }

    /// Waits (briefly) for the state store's first listing, reads every
    /// member's status once (so the first requests see the pool), then
    /// follows `membership` until `shutdown` in the background, watching
    /// every member; every status and health change goes to `events`.
    pub async fn start(
        self: &Arc<Self>,
        events: Arc<dyn WorkerEvents>,
        membership: Membership,
        shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let _ = self.events.set(events);
        if !membership.synced(FIRST_LISTING).await {
            tracing::warn!(
                "the state store has not answered yet; serving without workers until it does"
            );
        }
        let changes = membership.changes();
        let _ = self.membership.set(membership);
        self.sync_membership(&changes.borrow().clone());
        self.refresh().await;
        tokio::spawn(self.clone().follow(changes, shutdown))
    }

    async fn follow(
        self: Arc<Self>,
        mut changes: watch::Receiver<Arc<Members>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                stopped = shutdown.changed() => {
                    if stopped.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
            let members = changes.borrow_and_update().clone();
            self.sync_membership(&members);
        }
        for (_, (_, task)) in self.watchers.lock().drain() {
            task.abort();
        }
    }

    /// Reads every worker's status now (not waiting for its stream) and
    /// applies it: after a `/models` change, the next request sees it.
    pub async fn refresh(&self) {
        let snapshot = self.snapshot();
        let calls = snapshot.workers.iter().filter_map(|w| {
            let mut client = w.client.clone()?;
            let id = w.id.clone();
            Some(async move {
                let status =
                    tokio::time::timeout(STATUS_TIMEOUT, client.status(pb::StatusRequest {})).await;
                (id, status)
            })
        });
        for (id, status) in futures::future::join_all(calls).await {
            if let Ok(Ok(status)) = status {
                self.apply_status(&id, Arc::new(status.into_inner()));
            }
        }
    }

    /// Reads one worker's status now and applies it.
    pub async fn refresh_worker(&self, id: &Arc<str>) {
        let Some(mut client) = self.client(id) else {
            return;
        };
        if let Ok(Ok(status)) =
            tokio::time::timeout(STATUS_TIMEOUT, client.status(pb::StatusRequest {})).await
        {
            self.apply_status(id, Arc::new(status.into_inner()));
        }
    }

    fn sync_membership(self: &Arc<Self>, members: &Members) {
        let records = &members.workers;
        let mut watchers = self.watchers.lock();
        // Gone, or moved to another endpoint: stop watching.
        let stale: Vec<Arc<str>> = watchers
            .iter()
            .filter(|(id, (record, _))| {
                records
                    .get(&***id)
                    .is_none_or(|r| r.endpoint != record.endpoint)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some((_, task)) = watchers.remove(&id) {
                task.abort();
            }
            self.current.rcu(|s| without(s, &id));
            if let Some(events) = self.events.get() {
                events.removed(&id);
            }
            tracing::info!(worker = %id, "worker left the pool");
        }
        for record in records.values() {
            let id: Arc<str> = record.id.as_str().into();
            if let Some((known, _)) = watchers.get_mut(&id) {
                if known.draining != record.draining {
                    tracing::info!(worker = %id, draining = record.draining, "worker draining");
                    self.set_draining(&id, record.draining);
                }
                *known = record.clone();
                continue;
            }
            let view = Arc::new(WorkerView {
                id: id.clone(),
                endpoint: record.endpoint.clone(),
                client: connect(&record.endpoint, self.tls.as_ref()),
                healthy: false,
                draining: record.draining,
                status: None,
            });
            self.current.rcu(|s| with(s, view.clone()));
            let task = tokio::spawn(self.clone().watch(record.clone(), id.clone()));
            tracing::info!(worker = %record.id, endpoint = %record.endpoint, "worker joined the pool");
            watchers.insert(id, (record.clone(), task));
        }
    }

    /// The worker's record says it drains (or no longer does).
    fn set_draining(&self, id: &Arc<str>, draining: bool) {
        let Some(old) = self.snapshot().worker(id).cloned() else {
            return;
        };
        let status_draining = old.status.as_deref().is_some_and(|s| s.draining);
        let view = Arc::new(WorkerView {
            id: old.id.clone(),
            endpoint: old.endpoint.clone(),
            client: old.client.clone(),
            healthy: old.healthy && !draining,
            draining: draining || status_draining,
            status: old.status.clone(),
        });
        self.current.rcu(|s| with(s, view.clone()));
        if draining && let Some(events) = self.events.get() {
            // Nothing new goes there; its next status says draining too.
            events.down(id);
        }
    }

    /// Whether the worker's record says it drains.
    fn record_draining(&self, id: &str) -> bool {
        self.watchers
            .lock()
            .get(id)
            .is_some_and(|(record, _)| record.draining)
    }

    /// Keeps `record`'s status stream open, reconnecting when it breaks.
    async fn watch(self: Arc<Self>, record: WorkerRecord, id: Arc<str>) {
        let Some(client) = self.client(&id) else {
            tracing::warn!(worker = %id, endpoint = %record.endpoint, "invalid worker endpoint");
            return;
        };
        let mut backoff = RECONNECT_FIRST;
        loop {
            match client.clone().watch_status(pb::StatusRequest {}).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(status)) => {
                                backoff = RECONNECT_FIRST;
                                self.apply_status(&id, Arc::new(status));
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(worker = %id, error = %e, "status stream broke");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!(worker = %id, error = %e, "cannot watch worker status"),
            }
            self.mark_down(&id);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }

    fn apply_status(&self, id: &Arc<str>, status: Arc<pb::StatusResponse>) {
        let Some(old) = self.snapshot().worker(id).cloned() else {
            return;
        };
        let draining = status.draining || self.record_draining(id);
        let changed = old.healthy == draining
            || old.draining != draining
            || old
                .status
                .as_deref()
                .is_none_or(|o| catalog_changed(o, &status));
        if changed {
            let view = Arc::new(WorkerView {
                id: old.id.clone(),
                endpoint: old.endpoint.clone(),
                client: old.client.clone(),
                healthy: !draining,
                draining,
                status: Some(status.clone()),
            });
            self.current.rcu(|s| with(s, view.clone()));
        }
        if let Some(events) = self.events.get() {
            if draining && !status.draining {
                // Its record says so: the scheduler hears it as the status.
                let mut marked = (*status).clone();
                marked.draining = true;
                events.status(id, &marked);
            } else {
                events.status(id, &status);
            }
        }
    }

    fn mark_down(&self, id: &Arc<str>) {
        let Some(old) = self.snapshot().worker(id).cloned() else {
            return;
        };
        if old.healthy {
            tracing::warn!(worker = %id, endpoint = %old.endpoint, "worker unreachable");
            let view = Arc::new(WorkerView {
                id: old.id.clone(),
                endpoint: old.endpoint.clone(),
                client: old.client.clone(),
                healthy: false,
                draining: old.draining,
                status: old.status.clone(),
            });
            self.current.rcu(|s| with(s, view.clone()));
        }
        if let Some(events) = self.events.get() {
            events.down(id);
        }
    }
}

/// Whether `new` changes what the snapshot shows (models, names, budget),
/// beyond slot counts and counters.
fn catalog_changed(old: &pb::StatusResponse, new: &pb::StatusResponse) -> bool {
    old.memory_limit_bytes != new.memory_limit_bytes
        || old.models.len() != new.models.len()
        || old.models.iter().zip(&new.models).any(|(a, b)| {
            a.name != b.name
                || a.loaded != b.loaded
                || a.id != b.id
                || a.loaded_at != b.loaded_at
                || a.aliases != b.aliases
        })
}

/// `snapshot` with `view` replacing the worker of its id (or added).
fn with(snapshot: &Arc<Snapshot>, view: Arc<WorkerView>) -> Snapshot {
    let mut workers: Vec<Arc<WorkerView>> = snapshot
        .workers
        .iter()
        .filter(|w| w.id != view.id)
        .cloned()
        .collect();
    workers.push(view);
    workers.sort_by(|a, b| a.id.cmp(&b.id));
    let names = Arc::new(NameIndex::build(&workers));
    Snapshot { workers, names }
}

fn without(snapshot: &Arc<Snapshot>, id: &str) -> Snapshot {
    let workers: Vec<Arc<WorkerView>> = snapshot
        .workers
        .iter()
        .filter(|w| &*w.id != id)
        .cloned()
        .collect();
    let names = Arc::new(NameIndex::build(&workers));
    Snapshot { workers, names }
}

/// A lazily connecting client; `None` if the endpoint is not a valid URI
/// (or is `https://` and no TLS is configured).
fn connect(endpoint: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Option<WorkerRpc> {
    let Some(conn) = WorkerConn::new(endpoint, tls) else {
        tracing::warn!(
            endpoint,
            tls = tls.is_some(),
            "cannot reach this worker: its endpoint is not http://host:port, or https:// without [worker_tls]"
        );
        return None;
    };
    let origin = conn.origin();
    Some(
        WorkerRpc::with_origin(conn, origin)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}
