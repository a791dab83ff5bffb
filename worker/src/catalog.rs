//! The worker's model catalog: its store of Docker model artifacts, the
//! registries it pulls from, and loading a stored model into the engine the
//! first time a request names it.

use std::collections::HashMap;
use std::time::Instant;

use herd_store::{Registry, RegistryOptions, RemovalPlan, Store, StoreError, StoredModel};

use crate::config::{ModelConfig, StoreSettings, default_context_size};
use crate::engine::Engine;
use crate::error::{CatalogError, EngineError};

/// How stored models are run when loaded on demand.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadDefaults {
    /// Slots per model.
    pub parallel: u32,
    /// Context per slot; unset: min(the artifact's context size, 4096).
    pub context_size: Option<u32>,
    /// Stored models loaded at once; loading one more unloads the least
    /// recently used idle one.
    pub max_loaded: usize,
}

/// A stored model the engine has loaded, under its served name.
#[derive(Debug, Clone)]
struct Loaded {
    /// The model ID it was loaded from (a tag may move on).
    id: String,
    last_used: Instant,
}

/// A store plus a registry client.
#[derive(Debug)]
pub struct Catalog {
    store: Store,
    registry: Registry,
    defaults: LoadDefaults,
    /// Stored models in the engine, by served name (held only briefly,
    /// never across an await).
    loaded: std::sync::Mutex<HashMap<String, Loaded>>,
    /// Stored models loaded at start (`herd serve --model ai/smollm2`):
    /// served name → model ID. They stay loaded; their other tags lead to
    /// them instead of loading a second copy.
    resident: std::sync::Mutex<HashMap<String, String>>,
    /// Serialises loads, unloads and deletions against each other.
    load_lock: tokio::sync::Mutex<()>,
}

impl Catalog {
    pub fn new(store: Store, registry: Registry, defaults: LoadDefaults) -> Self {
        Self {
            store,
            registry,
            defaults,
            loaded: std::sync::Mutex::default(),
            resident: std::sync::Mutex::default(),
            load_lock: tokio::sync::Mutex::default(),
        }
    }

    /// Opens the store `settings` describe.
    pub fn open(settings: &StoreSettings) -> Result<Self, StoreError> {
        let store = Store::open(&settings.path, &settings.default_registry)?;
        let registry = Registry::new(RegistryOptions {
            credentials: StoreSettings::credentials(),
            credentials_registry: std::env::var("HERD_REGISTRY_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| settings.default_registry.clone()),
            insecure: settings.insecure_registries.clone(),
        });
        Ok(Self::new(
            store,
            registry,
            LoadDefaults {
                parallel: settings.parallel,
                context_size: settings.context_size,
                max_loaded: settings.max_loaded_models,
            },
        ))
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn defaults(&self) -> &LoadDefaults {
        &self.defaults
    }

    /// The name a stored model is served under: the familiar form of the
    /// tag `text` names (`ai/smollm2` → `ai/smollm2:latest`), or of the
    /// model's first tag when `text` is an ID or digest.
    pub fn served_name(&self, text: &str, model: &StoredModel) -> String {
        let tagged = self
            .store
            .parse_ref(text)
            .ok()
            .filter(|r| r.tag().is_some() && model.tags.contains(&r.full()));
        match (tagged, model.tags.first()) {
            (Some(reference), _) => reference.familiar(self.store.default_registry()),
            (None, Some(tag)) => self.store.familiar(tag),
            (None, None) => model.id.clone(),
        }
    }

    /// How to load `model` as `name` (preparing its files if it is sharded).
    pub fn model_config(
        &self,
        name: String,
        model: &StoredModel,
    ) -> Result<ModelConfig, StoreError> {
        let path = self.store.prepare_gguf(model)?;
        let mut config = ModelConfig::from_path(path, Some(name));
        config.parallel = self.defaults.parallel;
        config.chat_template = model
            .manifest
            .chat_template_layer()
            .map(|layer| self.store.blob_path(&layer.digest));
        config.context_size = Some(self.context_size(model));
        Ok(config)
    }

    /// Context per slot for `model`: configured, else min(the artifact's
    /// context size, 4096).
    pub fn context_size(&self, model: &StoredModel) -> u32 {
        self.defaults
            .context_size
            .unwrap_or_else(|| default_context_size(model.config.config.context_size))
    }

    /// The names under which the engine has `model`'s weights loaded.
    pub fn loaded_names(&self, engine: &dyn Engine, model: &StoredModel) -> Vec<String> {
        let Some(path) = self.store.gguf_path(model) else {
            return Vec::new();
        };
        let path = path.display().to_string();
        engine
            .status()
            .models
            .into_iter()
            .filter(|m| m.path == path)
            .map(|m| m.name)
            .collect()
    }

    /// The engine name to run `requested` under, loading the model from the
    /// store first if it is stored but not loaded — or if its tag now names
    /// another model than the one loaded under it. Names the engine serves
    /// from its config, and names the store does not know, pass through.
    pub async fn ensure_loaded(
        &self,
        engine: &dyn Engine,
        requested: &str,
    ) -> Result<String, EngineError> {
        if engine.serves(requested) && !self.loaded().contains_key(requested) {
            return Ok(requested.to_owned());
        }
        let Ok(id) = self.store.resolve_id(requested) else {
            return Ok(requested.to_owned());
        };
        if let Some(name) = self.touch(engine, &id) {
            return Ok(name);
        }
        let _one_at_a_time = self.load_lock.lock().await;
        // Someone else may have loaded it while we waited.
        if let Some(name) = self.touch(engine, &id) {
            return Ok(name);
        }
        let model = self
            .resolve_blocking(&id)
            .await
            .map_err(|e| EngineError::Internal(format!("cannot read stored model {id}: {e}")))?;
        let name = self.served_name(requested, &model);
        {
            let mut loaded = self.loaded();
            if loaded.remove(&name).is_some() {
                // The tag moved on to another model: retire the old weights.
                engine.unload(&name);
            }
            loaded.retain(|name, _| engine.serves(name));
            self.make_room(engine, &mut loaded, requested)?;
        }
        let config = self.model_config(name.clone(), &model).map_err(|e| {
            EngineError::Internal(format!("cannot prepare stored model {}: {e}", model.id))
        })?;
        tracing::info!(model = %name, id = %model.id, "loading a stored model on demand");
        engine.load(config).await?;
        self.loaded().insert(
            name.clone(),
            Loaded {
                id,
                last_used: Instant::now(),
            },
        );
        Ok(name)
    }

    /// Records that the engine serves the stored model `id` as `name` from
    /// start (not loaded on demand, never evicted).
    pub fn add_resident(&self, name: String, id: String) {
        self.resident().insert(name, id);
    }

    /// The stored models the engine serves, loaded on demand or at start:
    /// served name → model ID.
    pub fn loaded_ids(&self) -> HashMap<String, String> {
        let mut ids = self.resident().clone();
        ids.extend(
            self.loaded()
                .iter()
                .map(|(name, l)| (name.clone(), l.id.clone())),
        );
        ids
    }

    fn resident(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.resident
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Loaded>> {
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The served name of the loaded model `id` (marked as used now if it
    /// was loaded on demand).
    fn touch(&self, engine: &dyn Engine, id: &str) -> Option<String> {
        {
            let mut loaded = self.loaded();
            if let Some((name, entry)) = loaded
                .iter_mut()
                .find(|(name, l)| l.id == id && engine.serves(name))
            {
                entry.last_used = Instant::now();
                return Some(name.clone());
            }
        }
        self.resident()
            .iter()
            .find(|(name, resident)| *resident == id && engine.serves(name))
            .map(|(name, _)| name.clone())
    }

    /// Unloads least recently used idle models until one more fits under
    /// `max_loaded`; all busy → the request is refused as busy (retryable).
    fn make_room(
        &self,
        engine: &dyn Engine,
        loaded: &mut HashMap<String, Loaded>,
        requested: &str,
    ) -> Result<(), EngineError> {
        while loaded.len() >= self.defaults.max_loaded.max(1) {
            let status = engine.status();
            let idle = |name: &str| {
                status
                    .models
                    .iter()
                    .any(|m| m.name == name && m.slots_busy == 0)
            };
            let Some(victim) = loaded
                .iter()
                .filter(|(name, _)| idle(name))
                .min_by_key(|(_, l)| l.last_used)
                .map(|(name, _)| name.clone())
            else {
                return Err(EngineError::Busy {
                    model: requested.to_owned(),
                    slots: 0,
                });
            };
            tracing::info!(model = %victim, "unloading the least recently used model to load another");
            engine.unload(&victim);
            loaded.remove(&victim);
        }
        Ok(())
    }

    async fn resolve_blocking(&self, text: &str) -> Result<StoredModel, StoreError> {
        let (store, text) = (self.store.clone(), text.to_owned());
        tokio::task::spawn_blocking(move || store.resolve(&text))
            .await
            .map_err(|e| StoreError::Io {
                context: "store task failed".into(),
                source: std::io::Error::other(e),
            })?
    }

    /// Removes a tag or model; a loaded model only with `force`, which
    /// unloads it first. Call from a blocking thread.
    pub fn remove(
        &self,
        engine: &dyn Engine,
        text: &str,
        force: bool,
    ) -> Result<herd_store::Removal, CatalogError> {
        let _one_at_a_time = self.load_lock.blocking_lock();
        let model = self.store.resolve(text)?;
        let loaded = self.loaded_names(engine, &model);
        let unload: Vec<String> = match self.store.plan_removal(&model.tags, text, force)? {
            // The model stays; only a name served under that very tag goes.
            RemovalPlan::Untag(full) => {
                let familiar = self.store.familiar(&full);
                loaded.into_iter().filter(|n| *n == familiar).collect()
            }
            RemovalPlan::Delete if !loaded.is_empty() && !force => {
                return Err(CatalogError::Loaded(loaded.join(", ")));
            }
            RemovalPlan::Delete => loaded,
        };
        for name in &unload {
            engine.unload(name);
            self.loaded().remove(name);
        }
        Ok(self.store.remove(text, force)?)
    }
}
