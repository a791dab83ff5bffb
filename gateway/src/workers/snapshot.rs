//! The immutable view of the worker pool that request paths read.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use herd_proto::v1 as pb;
use herd_proto::v1::worker_client::WorkerClient;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

/// One model on one worker, with the gate that limits requests in flight to
/// the worker's slot count.
#[derive(Debug)]
pub struct ModelRoute {
    pub status: pb::ModelStatus,
    /// One permit per slot; see `admission`.
    pub slots: Arc<Semaphore>,
    /// Requests waiting for one of `slots`.
    pub waiting: Arc<AtomicUsize>,
}

impl ModelRoute {
    /// Free slots minus requests already waiting for them (negative when
    /// a queue has formed).
    pub fn headroom(&self) -> i64 {
        self.slots.available_permits() as i64 - self.waiting.load(Ordering::Acquire) as i64
    }
}

/// One worker as last seen.
#[derive(Debug)]
pub struct WorkerView {
    pub id: String,
    pub endpoint: String,
    /// `None` when the registered endpoint is not a valid URI.
    pub client: Option<WorkerClient<Channel>>,
    /// Whether the last `Status` call succeeded.
    pub healthy: bool,
    /// The last successful `Status`, if any.
    pub status: Option<pb::StatusResponse>,
    pub models: Vec<Arc<ModelRoute>>,
}

impl WorkerView {
    pub fn model(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        self.models.iter().find(|m| m.status.name == name)
    }
}

/// Every known worker at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub workers: Vec<Arc<WorkerView>>,
}

impl Snapshot {
    /// Whether any worker, healthy or not, lists `model`.
    pub fn knows_model(&self, model: &str) -> bool {
        self.workers.iter().any(|w| w.model(model).is_some())
    }

    /// The name some worker lists for `model`: `model` itself, or its
    /// normalised reference in the familiar form (`smollm2` →
    /// `ai/smollm2:latest`).
    pub fn resolve_name(&self, model: &str, default_registry: &str) -> Option<String> {
        if self.knows_model(model) {
            return Some(model.to_owned());
        }
        let familiar = herd_store::ModelRef::parse(model, default_registry)
            .ok()?
            .familiar(default_registry);
        self.knows_model(&familiar).then_some(familiar)
    }

    /// Distinct models served by healthy workers, with their earliest load
    /// time, sorted by name.
    pub fn models(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::new();
        for route in self
            .workers
            .iter()
            .filter(|w| w.healthy)
            .flat_map(|w| w.models.iter())
        {
            match out.iter_mut().find(|(n, _)| *n == route.status.name) {
                Some((_, t)) => *t = (*t).min(route.status.loaded_at),
                None => out.push((route.status.name.clone(), route.status.loaded_at)),
            }
        }
        out.sort();
        out
    }
}
