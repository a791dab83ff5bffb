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
    /// The model listed under `name`, else the one with `name` among its
    /// aliases, else the stored model whose ID (or short ID) `name` is.
    pub fn model(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        self.models
            .iter()
            .find(|m| m.status.name == name)
            .or_else(|| {
                self.models
                    .iter()
                    .find(|m| m.status.aliases.iter().any(|a| a == name))
            })
            .or_else(|| {
                let hex = herd_store::reference::as_model_id(name)?;
                self.models.iter().find(|m| {
                    m.status
                        .id
                        .strip_prefix("sha256:")
                        .is_some_and(|id| id.starts_with(hex))
                })
            })
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

    /// Distinct model names (aliases included) served by healthy workers,
    /// with their earliest load time, sorted by name.
    pub fn models(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = Vec::new();
        let routes = self
            .workers
            .iter()
            .filter(|w| w.healthy)
            .flat_map(|w| w.models.iter());
        for route in routes {
            let names = std::iter::once(&route.status.name).chain(&route.status.aliases);
            for name in names {
                match out.iter_mut().find(|(n, _)| n == name) {
                    Some((_, t)) => *t = (*t).min(route.status.loaded_at),
                    None => out.push((name.clone(), route.status.loaded_at)),
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, aliases: &[&str], loaded_at: i64) -> Arc<ModelRoute> {
        Arc::new(ModelRoute {
            status: pb::ModelStatus {
                name: name.into(),
                aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
                loaded_at,
                ..Default::default()
            },
            slots: Arc::new(Semaphore::new(2)),
            waiting: Arc::default(),
        })
    }

    fn snapshot(models: Vec<Arc<ModelRoute>>) -> Snapshot {
        Snapshot {
            workers: vec![Arc::new(WorkerView {
                id: "w".into(),
                endpoint: String::new(),
                client: None,
                healthy: true,
                status: None,
                models,
            })],
        }
    }

    #[test]
    fn a_models_aliases_lead_to_it_and_its_slots() {
        let mut stored = route("ai/smollm2:latest", &["me/smol:v2", "other:v1"], 5);
        Arc::get_mut(&mut stored).unwrap().status.id = format!("sha256:{}", "ab".repeat(32));
        let s = snapshot(vec![stored, route("other:v1", &[], 7)]);
        let worker = &s.workers[0];
        let by_name = worker.model("ai/smollm2:latest").unwrap();
        let by_alias = worker.model("me/smol:v2").unwrap();
        assert!(Arc::ptr_eq(by_name, by_alias), "one model, one slot gate");
        // A model's own name wins over another model's alias.
        assert_eq!(worker.model("other:v1").unwrap().status.loaded_at, 7);
        assert!(worker.model("nope").is_none());
        // By ID, full or short.
        let full = format!("sha256:{}", "ab".repeat(32));
        assert!(Arc::ptr_eq(worker.model(&full).unwrap(), by_name));
        assert!(Arc::ptr_eq(worker.model("abababababab").unwrap(), by_name));
        assert!(worker.model("cdcdcdcdcdcd").is_none());
        assert_eq!(
            s.resolve_name("me/smol:v2", "docker.io").as_deref(),
            Some("me/smol:v2")
        );
        let names: Vec<String> = s.models().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["ai/smollm2:latest", "me/smol:v2", "other:v1"]);
        assert_eq!(s.models()[2].1, 5, "the earliest load time");
    }
}
