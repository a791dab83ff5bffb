//! Builds and swaps worker snapshots.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use herd_proto::v1 as pb;
use herd_proto::v1::worker_client::WorkerClient;
use tokio::sync::{Semaphore, watch};
use tonic::transport::{Channel, Endpoint};

use super::snapshot::{ModelRoute, Snapshot, WorkerView};
use crate::state::{StateStore, WorkerRecord};

/// Largest gRPC message either way (the worker uses the same limit).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long one `Status` call may take before the worker counts as unhealthy.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Owns the current [`Snapshot`].
#[derive(Debug)]
pub struct Registry {
    store: Arc<dyn StateStore>,
    current: ArcSwap<Snapshot>,
    /// One refresh at a time: each builds on the snapshot the one before
    /// stored, so a slow refresh cannot overwrite a newer one, and a
    /// model's slot gate is never built twice.
    refreshing: tokio::sync::Mutex<()>,
}

impl Registry {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        Self {
            store,
            current: ArcSwap::from_pointee(Snapshot::default()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The current view; cheap, lock-free.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Re-reads membership and every worker's status, then swaps the new
    /// snapshot in. Slot gates of unchanged models carry over, so requests
    /// in flight keep their accounting.
    pub async fn refresh(&self) {
        let _one_at_a_time = self.refreshing.lock().await;
        let records = match self.store.workers().await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read workers from the state store");
                return;
            }
        };
        let previous = self.snapshot();
        let views =
            futures::future::join_all(records.into_iter().map(|r| refresh_worker(r, &previous)))
                .await;
        self.current.store(Arc::new(Snapshot {
            workers: views.into_iter().map(Arc::new).collect(),
        }));
    }

    /// Refreshes every `interval` and whenever membership changes, until
    /// `shutdown` turns true.
    pub async fn run_refresher(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut changes = self.store.membership_changes();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The store is gone; keep polling on the interval.
                        changes = self.store.membership_changes();
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
            if *shutdown.borrow() {
                return;
            }
            self.refresh().await;
        }
    }
}

async fn refresh_worker(record: WorkerRecord, previous: &Snapshot) -> WorkerView {
    let old = previous
        .workers
        .iter()
        .find(|w| w.id == record.id && w.endpoint == record.endpoint);
    let client = old
        .and_then(|o| o.client.clone())
        .or_else(|| connect(&record.endpoint));
    let status = match &client {
        None => Err("the endpoint is not a valid URI".to_owned()),
        Some(client) => {
            match tokio::time::timeout(STATUS_TIMEOUT, client.clone().status(pb::StatusRequest {}))
                .await
            {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        }
    };
    match status {
        Ok(status) => {
            let models = status
                .models
                .iter()
                .filter(|m| m.loaded || m.on_demand)
                .map(|m| carry_route(m, old.map(AsRef::as_ref)))
                .collect();
            WorkerView {
                id: record.id,
                endpoint: record.endpoint,
                client,
                healthy: true,
                status: Some(status),
                models,
            }
        }
        Err(error) => {
            tracing::warn!(worker = %record.id, endpoint = %record.endpoint, %error, "worker status failed");
            // Keep the last known models so requests for them get 503, not 404.
            WorkerView {
                id: record.id,
                endpoint: record.endpoint,
                client,
                healthy: false,
                status: old.and_then(|o| o.status.clone()),
                models: old.map(|o| o.models.clone()).unwrap_or_default(),
            }
        }
    }
}

/// Keeps the slot gate of a model whose slot count did not change.
fn carry_route(model: &pb::ModelStatus, old: Option<&WorkerView>) -> Arc<ModelRoute> {
    if let Some(route) = old.and_then(|o| o.model(&model.name))
        && route.status.slots_total == model.slots_total
    {
        return Arc::new(ModelRoute {
            status: model.clone(),
            slots: route.slots.clone(),
            waiting: route.waiting.clone(),
        });
    }
    Arc::new(ModelRoute {
        status: model.clone(),
        slots: Arc::new(Semaphore::new(model.slots_total.max(1) as usize)),
        waiting: Arc::default(),
    })
}

/// A lazily connecting client; `None` if the endpoint is not a valid URI.
fn connect(endpoint: &str) -> Option<WorkerClient<Channel>> {
    let endpoint = Endpoint::from_shared(endpoint.to_owned())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    Some(
        WorkerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}
