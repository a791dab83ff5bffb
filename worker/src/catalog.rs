//! The worker's model catalog: its store of Docker model artifacts, the
//! registries it pulls from, and loading a stored model into the engine the
//! first time a request names it.

use std::sync::Arc;

use herd_store::{Registry, RegistryOptions, Store, StoreError, StoredModel};

use crate::config::{DEFAULT_CONTEXT_SIZE, ModelConfig, StoreSettings};
use crate::engine::Engine;
use crate::error::{CatalogError, EngineError};

/// How stored models are run when loaded on demand.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadDefaults {
    /// Slots per model.
    pub parallel: u32,
    /// Context per slot; unset: min(the artifact's context size, 4096).
    pub context_size: Option<u32>,
}

/// A store plus a registry client.
#[derive(Debug)]
pub struct Catalog {
    store: Store,
    registry: Registry,
    defaults: LoadDefaults,
}

impl Catalog {
    pub fn new(store: Store, registry: Registry, defaults: LoadDefaults) -> Self {
        Self {
            store,
            registry,
            defaults,
        }
    }

    /// Opens the store `settings` describe.
    pub fn open(settings: &StoreSettings) -> Result<Self, StoreError> {
        let store = Store::open(&settings.path, &settings.default_registry)?;
        let registry = Registry::new(RegistryOptions {
            credentials: StoreSettings::credentials(),
            insecure: settings.insecure_registries.clone(),
        });
        Ok(Self::new(
            store,
            registry,
            LoadDefaults {
                parallel: settings.parallel,
                context_size: settings.context_size,
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
        self.defaults.context_size.unwrap_or_else(|| {
            model
                .config
                .config
                .context_size
                .map_or(DEFAULT_CONTEXT_SIZE, |c| {
                    u32::try_from(c)
                        .unwrap_or(u32::MAX)
                        .min(DEFAULT_CONTEXT_SIZE)
                })
        })
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
    /// store first if it is stored but not loaded. Names the engine serves,
    /// and names the store does not know, pass through unchanged.
    pub async fn ensure_loaded(
        &self,
        engine: &dyn Engine,
        requested: &str,
    ) -> Result<String, EngineError> {
        if engine.serves(requested) {
            return Ok(requested.to_owned());
        }
        let model = match self.resolve_blocking(requested).await {
            Ok(model) => model,
            Err(_) => return Ok(requested.to_owned()),
        };
        // Already loaded under another of its tags: share the weights.
        if let Some(name) = self.loaded_names(engine, &model).into_iter().next() {
            return Ok(name);
        }
        let name = self.served_name(requested, &model);
        let config = self.model_config(name.clone(), &model).map_err(|e| {
            EngineError::Internal(format!("cannot prepare stored model {}: {e}", model.id))
        })?;
        tracing::info!(model = %name, id = %model.id, "loading a stored model on demand");
        engine.load(config).await?;
        Ok(name)
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
    /// unloads it first.
    pub fn remove(
        &self,
        engine: &dyn Engine,
        text: &str,
        force: bool,
    ) -> Result<herd_store::Removal, CatalogError> {
        let model = self.store.resolve(text)?;
        let loaded = self.loaded_names(engine, &model);
        let names_a_tag = self
            .store
            .parse_ref(text)
            .is_ok_and(|r| r.tag().is_some() && model.tags.contains(&r.full()));
        if !force && !names_a_tag && model.tags.len() > 1 {
            // An ID of a model with several tags is ambiguous whether or not
            // it is loaded.
            return Err(StoreError::MultiplyTagged {
                reference: text.to_owned(),
                tags: model.tags.len(),
            }
            .into());
        }
        // Untagging one of several tags leaves the model (and its weights).
        let only_untags = !force && model.tags.len() > 1 && names_a_tag;
        if !loaded.is_empty() && !only_untags {
            if !force {
                return Err(CatalogError::Loaded(loaded.join(", ")));
            }
            for name in &loaded {
                engine.unload(name);
            }
        }
        Ok(self.store.remove(text, force)?)
    }
}

/// A catalog shared by the service's handlers.
pub type SharedCatalog = Arc<Catalog>;
