//! The worker's model catalog: its store of Docker model artifacts, the
//! registries it pulls from, and which stored models the engine has loaded.
//! Loading and unloading are asked for by the gateway (`LoadModel`,
//! `UnloadModel`); the catalog never decides on its own to load or evict.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use herd_store::{Registry, RegistryOptions, RemovalPlan, Store, StoreError, StoredModel};

use crate::config::{ModelConfig, StoreSettings, default_context_size};
use crate::engine::Engine;
use crate::error::CatalogError;

/// How stored models are run when loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadDefaults {
    /// Slots per model.
    pub parallel: u32,
    /// Context per slot; unset: min(the artifact's context size, 4096).
    pub context_size: Option<u32>,
    /// The prompt cache's bound; unset: as large as the model's KV cache, at most 1 GiB.
    pub prompt_cache: Option<crate::config::CacheSize>,
    /// Models loaded at once on this worker (reported to gateways, which
    /// respect it when placing models).
    pub max_loaded: usize,
}

/// A cached listing of the store, valid while its index is unchanged.
type Listing = (
    Option<(u64, std::time::SystemTime, u64)>,
    Arc<Vec<StoredModel>>,
);

/// A store plus a registry client.
#[derive(Debug)]
pub struct Catalog {
    store: Store,
    registry: Registry,
    defaults: LoadDefaults,
    /// Stored models the engine has loaded: served name → model ID (held
    /// only briefly, never across an await).
    loaded: Mutex<HashMap<String, String>>,
    /// Serialises loads, unloads and deletions against each other.
    load_lock: tokio::sync::Mutex<()>,
    /// The last listing, re-read only when the store's index changes.
    listing: Mutex<Option<Listing>>,
    /// Memory estimates by model ID (a model's content never changes).
    estimates: Mutex<HashMap<String, u64>>,
}

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The name the engine serves it under.
    pub name: String,
    pub pulled: bool,
    /// Bytes downloaded by the pull, if it pulled.
    pub pulled_bytes: u64,
}

impl Catalog {
    pub fn new(store: Store, registry: Registry, defaults: LoadDefaults) -> Self {
        Self {
            store,
            registry,
            defaults,
            loaded: Mutex::default(),
            load_lock: tokio::sync::Mutex::default(),
            listing: Mutex::default(),
            estimates: Mutex::default(),
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
                prompt_cache: settings.prompt_cache,
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
        config.prompt_cache = self.defaults.prompt_cache;
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

    /// The memory `model` takes loaded with the store's defaults.
    pub fn estimate(&self, model: &StoredModel) -> u64 {
        if let Some(bytes) = lock(&self.estimates).get(&model.id) {
            return *bytes;
        }
        let weights: u64 = model.manifest.gguf_layers().map(|l| l.size).sum();
        let config = &model.config.config;
        let shape = crate::footprint::ModelShape::from_metadata(&config.gguf, &config.architecture)
            .or_else(|| {
                // The artifact's config carries no GGUF metadata: read
                // the header itself.
                let path = self.store.gguf_path(model)?;
                let summary = herd_store::gguf::GgufSummary::read(&path).ok()?;
                crate::footprint::ModelShape::from_metadata(
                    &summary.metadata,
                    &summary.architecture,
                )
            });
        let bytes = crate::footprint::estimate(&crate::footprint::Footprint {
            weights,
            shape,
            slots: self.defaults.parallel,
            context: self.context_size(model),
            prompt_cache: self.defaults.prompt_cache.map(|size| size.0),
        });
        lock(&self.estimates).insert(model.id.clone(), bytes);
        bytes
    }

    /// Every stored model, newest first; re-read from disk only when the
    /// store's index has changed since the last call.
    pub fn stored_models(&self) -> Result<Arc<Vec<StoredModel>>, StoreError> {
        let revision = self.store.revision();
        if let Some((seen, models)) = lock(&self.listing).as_ref()
            && revision.is_some()
            && *seen == revision
        {
            return Ok(models.clone());
        }
        let models = Arc::new(self.store.list()?);
        *lock(&self.listing) = Some((revision, models.clone()));
        Ok(models)
    }

    /// The names under which the engine has `model`'s weights loaded: as a
    /// stored model (by ID), or from the worker's config (by its weights).
    pub fn loaded_names(&self, engine: &dyn Engine, model: &StoredModel) -> Vec<String> {
        let loaded = lock(&self.loaded).clone();
        let by_id: Vec<String> = loaded
            .iter()
            .filter(|(name, id)| **id == model.id && engine.serves(name))
            .map(|(name, _)| name.clone())
            .collect();
        if !by_id.is_empty() {
            return by_id;
        }
        let Some(path) = self.store.gguf_path(model) else {
            return Vec::new();
        };
        // A model of the worker's config loaded from this very file; not
        // another stored model that shares the weights (its template or
        // settings may differ).
        let path = path.display().to_string();
        engine
            .status()
            .models
            .into_iter()
            .filter(|m| m.path == path && !loaded.contains_key(&m.name))
            .map(|m| m.name)
            .collect()
    }

    /// Loads the stored model `requested` names (a tag or an ID), pulling it
    /// from its registry first when it is not stored and `pull` is set.
    /// A model already loaded is not loaded twice: its name is returned.
    pub async fn load(
        &self,
        engine: &dyn Engine,
        requested: &str,
        pull: bool,
    ) -> Result<Loaded, CatalogError> {
        let _one_at_a_time = self.load_lock.lock().await;
        let mut pulled = false;
        let mut pulled_bytes = 0;
        let model = match self.resolve_blocking(requested).await {
            Ok(model) => model,
            Err(StoreError::NotFound(_)) if pull => {
                let reference = self.store.parse_ref(requested)?;
                tracing::info!(reference = %reference, "pulling a model to load it");
                let noop: herd_store::ProgressFn = Arc::new(|_| {});
                pulled = true;
                let done = self.registry.pull(&self.store, &reference, noop).await?;
                pulled_bytes = done.transferred;
                done.model
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(name) = self.loaded_names(engine, &model).into_iter().next() {
            return Ok(Loaded {
                name,
                pulled,
                pulled_bytes,
            });
        }
        let name = self.served_name(requested, &model);
        if lock(&self.loaded).remove(&name).is_some() {
            // The tag moved on to another model: retire the old weights.
            engine.unload(&name);
        }
        let config = self.model_config(name.clone(), &model)?;
        tracing::info!(model = %name, id = %model.id, "loading a stored model");
        engine.load(config).await?;
        lock(&self.loaded).insert(name.clone(), model.id.clone());
        Ok(Loaded {
            name,
            pulled,
            pulled_bytes,
        })
    }

    /// Records that the engine serves the stored model `id` as `name`
    /// (loaded at start, e.g. `herd serve --model ai/smollm2`).
    pub fn note_loaded(&self, name: String, id: String) {
        lock(&self.loaded).insert(name, id);
    }

    /// Unloads `name` from the engine. Returns whether it was loaded.
    pub async fn unload(&self, engine: &dyn Engine, name: &str) -> bool {
        let _one_at_a_time = self.load_lock.lock().await;
        lock(&self.loaded).remove(name);
        engine.unload(name)
    }

    /// The stored models the engine serves: served name → model ID.
    pub fn loaded_ids(&self) -> HashMap<String, String> {
        lock(&self.loaded).clone()
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
            lock(&self.loaded).remove(name);
        }
        Ok(self.store.remove(text, force)?)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
