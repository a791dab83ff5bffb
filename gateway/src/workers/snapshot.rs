//! The immutable view of the pool that request paths read without locks:
//! each worker's identity, client, health and last status, and an index
//! from every name a model goes by to its pool-wide key. Slot counts are
//! not here (they change per token): the scheduler tracks those.

use std::collections::HashMap;
use std::sync::Arc;

use herd_proto::v1 as pb;

use super::WorkerRpc;
use crate::scheduler::ModelKey;

/// One worker as last seen.
#[derive(Debug)]
pub struct WorkerView {
    pub id: Arc<str>,
    pub endpoint: String,
    /// `None` when the registered endpoint is not a valid URI.
    pub client: Option<WorkerRpc>,
    /// Whether its status stream is up and it is not draining: requests
    /// and loads may go there.
    pub healthy: bool,
    /// It drains (its status or its record says so): what runs there
    /// finishes, nothing new goes there.
    pub draining: bool,
    /// The last status it pushed, if any.
    pub status: Option<Arc<pb::StatusResponse>>,
}

impl WorkerView {
    /// Its models (loaded or loadable), as last reported.
    pub fn models(&self) -> &[pb::ModelStatus] {
        self.status.as_deref().map_or(&[], |s| &s.models)
    }
}

/// Every name models go by, built when the set of models changes.
#[derive(Debug, Default)]
pub struct NameIndex {
    /// Names, aliases and full IDs → key.
    by_name: HashMap<String, ModelKey>,
    /// `(hex of the ID, key)`, for short IDs.
    ids: Vec<(String, ModelKey)>,
    /// `(name, earliest load time)` of models on healthy workers, sorted.
    listed: Vec<(String, i64)>,
}

impl NameIndex {
    pub fn build(workers: &[Arc<WorkerView>]) -> Self {
        let mut index = Self::default();
        let mut listed: HashMap<String, i64> = HashMap::new();
        // Own names win over other models' aliases: index them first; and
        // among own names, the store's (a stored model not loaded is listed
        // under its current tag) win over a loaded model's, which may be a
        // tag that has since moved on to another model.
        for (alias_pass, loaded_pass) in
            [(false, false), (false, true), (true, false), (true, true)]
        {
            for worker in workers {
                for model in worker.models().iter().filter(|m| m.loaded == loaded_pass) {
                    let key = ModelKey::of(model);
                    let names: Vec<&String> = if alias_pass {
                        model.aliases.iter().collect()
                    } else {
                        std::iter::once(&model.name).collect()
                    };
                    for name in names {
                        index
                            .by_name
                            .entry(name.clone())
                            .or_insert_with(|| key.clone());
                        if worker.healthy {
                            let t = listed.entry(name.clone()).or_insert(model.loaded_at);
                            *t = (*t).min(model.loaded_at);
                        }
                    }
                    if !alias_pass && !model.id.is_empty() {
                        index
                            .by_name
                            .entry(model.id.clone())
                            .or_insert_with(|| key.clone());
                        if let Some(hex) = model.id.strip_prefix("sha256:") {
                            index.ids.push((hex.to_owned(), key.clone()));
                        }
                    }
                }
            }
        }
        index.listed = listed.into_iter().collect();
        index.listed.sort();
        index
    }

    fn get(&self, name: &str) -> Option<&ModelKey> {
        self.by_name.get(name).or_else(|| {
            let hex = herd_store::reference::as_model_id(name)?;
            self.ids
                .iter()
                .find(|(id, _)| id.starts_with(hex))
                .map(|(_, key)| key)
        })
    }
}

/// Every known worker at one moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub workers: Vec<Arc<WorkerView>>,
    pub names: Arc<NameIndex>,
}

impl Snapshot {
    /// The model `name` means: as given (name, alias, ID or short ID), or
    /// in its normalised form (`smollm2` → `ai/smollm2:latest`).
    pub fn resolve(&self, name: &str, default_registry: &str) -> Option<(String, ModelKey)> {
        if let Some(key) = self.names.get(name) {
            return Some((name.to_owned(), key.clone()));
        }
        let familiar = herd_store::ModelRef::parse(name, default_registry)
            .ok()?
            .familiar(default_registry);
        let key = self.names.get(&familiar)?.clone();
        Some((familiar, key))
    }

    /// Distinct model names (aliases included) on healthy workers, with
    /// their earliest load time, sorted by name.
    pub fn models(&self) -> &[(String, i64)] {
        &self.names.listed
    }

    pub fn worker(&self, id: &str) -> Option<&Arc<WorkerView>> {
        self.workers.iter().find(|w| &*w.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, aliases: &[&str], loaded_at: i64) -> pb::ModelStatus {
        pb::ModelStatus {
            name: name.into(),
            aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
            loaded_at,
            loaded: true,
            ..Default::default()
        }
    }

    fn snapshot(models: Vec<pb::ModelStatus>) -> Snapshot {
        let workers = vec![Arc::new(WorkerView {
            id: "w".into(),
            endpoint: String::new(),
            client: None,
            healthy: true,
            draining: false,
            status: Some(Arc::new(pb::StatusResponse {
                models,
                ..Default::default()
            })),
        })];
        let names = Arc::new(NameIndex::build(&workers));
        Snapshot { workers, names }
    }

    #[test]
    fn a_models_names_aliases_and_ids_lead_to_one_key() {
        let mut stored = model("ai/smollm2:latest", &["me/smol:v2", "other:v1"], 5);
        stored.id = format!("sha256:{}", "ab".repeat(32));
        let s = snapshot(vec![stored, model("other:v1", &[], 7)]);
        let key = |n: &str| s.resolve(n, "docker.io").map(|(_, k)| k);
        let by_name = key("ai/smollm2:latest").unwrap();
        assert_eq!(key("me/smol:v2"), Some(by_name.clone()));
        // A model's own name wins over another model's alias.
        assert_ne!(key("other:v1"), Some(by_name.clone()));
        assert_eq!(
            key(&format!("sha256:{}", "ab".repeat(32))),
            Some(by_name.clone())
        );
        assert_eq!(key("abababababab"), Some(by_name.clone()));
        assert_eq!(key("cdcdcdcdcdcd"), None);
        assert_eq!(key("nope"), None);
        // Normalised: `ai/smollm2` is `ai/smollm2:latest`.
        assert_eq!(
            s.resolve("ai/smollm2", "docker.io"),
            Some(("ai/smollm2:latest".into(), by_name))
        );
        let names: Vec<&str> = s.models().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ai/smollm2:latest", "me/smol:v2", "other:v1"]);
        assert_eq!(s.models()[2].1, 5, "the earliest load time");
    }
}
