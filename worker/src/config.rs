//! Worker configuration: a TOML file (see `config/worker.toml`), validated at
//! load; command-line flags override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Context length per slot when neither the config nor the model says less.
pub const DEFAULT_CONTEXT_SIZE: u32 = 4096;

/// The context sizes (tokens per slot) a worker accepts.
pub const CONTEXT_SIZE_RANGE: std::ops::RangeInclusive<u32> = 16..=1 << 20;

/// The context per slot when none is configured: what the model (its
/// artifact or its GGUF) says, at most `DEFAULT_CONTEXT_SIZE`; a value
/// below the accepted range counts as unknown.
pub fn default_context_size(from_model: Option<u64>) -> u32 {
    from_model
        .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
        .filter(|c| *c >= *CONTEXT_SIZE_RANGE.start())
        .map_or(DEFAULT_CONTEXT_SIZE, |c| c.min(DEFAULT_CONTEXT_SIZE))
}
/// Slots per model when not configured: two per core (a CPU decode step is
/// memory-bound, so a second sequence per core is almost free), between 2
/// and 8 — 4 on a 2-core machine.
pub fn default_parallel() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    (cores * 2).clamp(2, 8)
}

/// Everything a worker needs to start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Where the gRPC service listens (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Stable id; defaults to `worker-<port>`.
    pub worker_id: Option<String>,
    /// Threads for llama.cpp; 0 means one per available core.
    pub threads: u32,
    /// Models to load at start.
    pub models: Vec<ModelConfig>,
    /// The model store (Docker model artifacts pulled from registries).
    pub store: StoreSettings,
    /// GPU use: offload, device selection, flash attention.
    pub gpu: crate::gpu::GpuSettings,
    /// Memory the models may take (`2GiB`, `512MiB`, or bytes); the gateway
    /// places models within it. Default: the GPUs' memory when offloading,
    /// else the host's.
    pub memory_limit: Option<MemorySize>,
    /// Registration in a cluster's etcd, and draining.
    pub cluster: crate::cluster::ClusterSettings,
}

/// A byte count written as a number of bytes or a size with a unit
/// (`2GiB`, `512MiB`, `1.5GB`); see [`crate::footprint::parse_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySize(pub u64);

impl std::str::FromStr for MemorySize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        crate::footprint::parse_size(text).map(Self)
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_size(deserializer, false).map(Self)
    }
}

/// A size as a config file writes it: a number of bytes, or text with a
/// unit; 0 only where `zero` allows it.
fn deserialize_size<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    zero: bool,
) -> Result<u64, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Bytes(0) if !zero => Err("must be at least 1 byte".to_owned()),
        Raw::Bytes(n) => Ok(n),
        Raw::Text(text) if zero => text.parse::<CacheSize>().map(|size| size.0),
        Raw::Text(text) => crate::footprint::parse_size(&text),
    }
    .map_err(D::Error::custom)
}

/// The host-memory prompt cache's bound: a [`MemorySize`], or `0` (off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSize(pub u64);

impl std::str::FromStr for CacheSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "0" {
            return Ok(Self(0));
        }
        crate::footprint::parse_size(text).map(Self)
    }
}

impl<'de> Deserialize<'de> for CacheSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_size(deserializer, true).map(Self)
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            worker_id: None,
            threads: 0,
            models: Vec::new(),
            store: StoreSettings::default(),
            gpu: crate::gpu::GpuSettings::default(),
            memory_limit: None,
            cluster: crate::cluster::ClusterSettings::default(),
        }
    }
}

/// Where models pulled from registries are kept, and how they run.
/// Registry credentials come from the environment, never the file:
/// `HERD_REGISTRY_USERNAME` and `HERD_REGISTRY_PASSWORD` (basic, exchanged
/// for a bearer token where the registry asks), or `HERD_REGISTRY_TOKEN`;
/// they are sent only to `HERD_REGISTRY_HOST` (default: the default
/// registry).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// The store's directory; default `$XDG_DATA_HOME/herd/models` or
    /// `~/.local/share/herd/models`.
    pub path: PathBuf,
    /// Where references without a registry point (`smollm2` →
    /// `docker.io/ai/smollm2:latest`).
    pub default_registry: String,
    /// Registries (`host[:port]`) reached over plain HTTP; loopback ones
    /// always are.
    pub insecure_registries: Vec<String>,
    /// Slots of a model loaded from the store; default [`default_parallel`].
    pub parallel: u32,
    /// Context per slot of a model loaded from the store; default
    /// min(the artifact's context size, 4096).
    pub context_size: Option<u32>,
    /// Bytes of saved prompt states each model loaded from the store keeps
    /// in host memory (`512MiB`, `0` for none); default as large as the
    /// model's KV cache, at most 1 GiB (see [`crate::footprint`]).
    pub prompt_cache: Option<CacheSize>,
    /// Models loaded at once on this worker; the gateway unloads an idle
    /// one before loading one more. Default 4.
    pub max_loaded_models: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            default_registry: herd_store::reference::DOCKER_HUB.into(),
            insecure_registries: Vec::new(),
            parallel: default_parallel(),
            context_size: None,
            prompt_cache: None,
            max_loaded_models: 4,
        }
    }
}

impl StoreSettings {
    /// Registry credentials from the environment.
    pub fn credentials() -> herd_store::Credentials {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        match (
            var("HERD_REGISTRY_TOKEN"),
            var("HERD_REGISTRY_USERNAME"),
            var("HERD_REGISTRY_PASSWORD"),
        ) {
            (Some(token), _, _) => herd_store::Credentials::Bearer(token),
            (None, Some(username), Some(password)) => {
                herd_store::Credentials::Basic { username, password }
            }
            _ => herd_store::Credentials::Anonymous,
        }
    }
}

/// `$XDG_DATA_HOME/herd/models`, else `~/.local/share/herd/models`, else
/// `./herd-models`.
pub fn default_store_path() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    data.map_or_else(|| PathBuf::from("herd-models"), |d| d.join("herd/models"))
}

/// One model to serve.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients use, e.g. `ai/smollm2`.
    pub name: String,
    /// Path of the GGUF file.
    pub path: PathBuf,
    /// Concurrent generations (slots); default [`default_parallel`].
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// Context length per slot; default min(model's training context, 4096).
    #[serde(default)]
    pub context_size: Option<u32>,
    /// Bytes of saved prompt states kept in host memory (`512MiB`, `0` for
    /// none); default as large as the model's KV cache, at most 1 GiB.
    #[serde(default)]
    pub prompt_cache: Option<CacheSize>,
    /// Layers offloaded to the GPU (all by default; ignored by CPU builds).
    #[serde(default = "default_gpu_layers")]
    pub gpu_layers: u32,
    /// A Jinja chat template file to use instead of the GGUF's own (a model
    /// artifact's `chat.template.jinja` layer).
    #[serde(default)]
    pub chat_template: Option<PathBuf>,
}

fn default_gpu_layers() -> u32 {
    u32::MAX
}

impl ModelConfig {
    /// A model from a path, named after the file (`SmolLM2.Q4.gguf` → `smollm2.q4`)
    /// unless a name is given.
    pub fn from_path(path: PathBuf, name: Option<String>) -> Self {
        let name = name.unwrap_or_else(|| name_from_path(&path));
        Self {
            name,
            path,
            parallel: default_parallel(),
            context_size: None,
            prompt_cache: None,
            gpu_layers: default_gpu_layers(),
            chat_template: None,
        }
    }
}

/// The default model name for a file: its stem, lower-cased.
pub fn name_from_path(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "model".into())
}

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

impl WorkerConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: String, reason: &str| ConfigError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if self.worker_id.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("worker_id".into(), "must not be empty"));
        }
        let mut names = std::collections::HashSet::new();
        for (i, model) in self.models.iter().enumerate() {
            let field = |f: &str| format!("models[{i}].{f}");
            if model.name.trim().is_empty() {
                return Err(invalid(field("name"), "must not be empty"));
            }
            if !names.insert(model.name.as_str()) {
                return Err(invalid(field("name"), "names a model twice"));
            }
            if model.path.as_os_str().is_empty() {
                return Err(invalid(field("path"), "must not be empty"));
            }
            if model.parallel == 0 || model.parallel > 256 {
                return Err(invalid(field("parallel"), "must be between 1 and 256"));
            }
            if model
                .context_size
                .is_some_and(|c| !CONTEXT_SIZE_RANGE.contains(&c))
            {
                return Err(invalid(
                    field("context_size"),
                    "must be between 16 and 1048576",
                ));
            }
        }
        let store = &self.store;
        if store.path.as_os_str().is_empty() {
            return Err(invalid("store.path".into(), "must not be empty"));
        }
        if let Err(e) = herd_store::reference::check_registry(&store.default_registry) {
            return Err(invalid("store.default_registry".into(), &e.to_string()));
        }
        if store.max_loaded_models == 0 {
            return Err(invalid(
                "store.max_loaded_models".into(),
                "must be at least 1",
            ));
        }
        if store.parallel == 0 || store.parallel > 256 {
            return Err(invalid(
                "store.parallel".into(),
                "must be between 1 and 256",
            ));
        }
        if store
            .context_size
            .is_some_and(|c| !CONTEXT_SIZE_RANGE.contains(&c))
        {
            return Err(invalid(
                "store.context_size".into(),
                "must be between 16 and 1048576",
            ));
        }
        self.cluster.validate()
    }

    /// What the worker reports it may hold: `memory_limit`, else the GPUs'
    /// total memory when models are offloaded to them, else the host's.
    pub fn capacity(&self, gpu_offload: bool) -> crate::service::Capacity {
        let gpu_total: u64 = crate::gpu::devices()
            .iter()
            .map(|g| g.memory_total_bytes)
            .sum();
        let memory_limit_bytes = match self.memory_limit {
            Some(MemorySize(bytes)) => bytes,
            None if gpu_offload && gpu_total > 0 => gpu_total,
            None => crate::memory::host().total_bytes,
        };
        crate::service::Capacity {
            memory_limit_bytes,
            max_loaded_models: u32::try_from(self.store.max_loaded_models).unwrap_or(u32::MAX),
        }
    }

    /// llama.cpp threads: the configured number, or one per core.
    pub fn threads(&self) -> u32 {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_context_is_capped_and_nonsense_ignored() {
        assert_eq!(default_context_size(None), DEFAULT_CONTEXT_SIZE);
        assert_eq!(default_context_size(Some(2048)), 2048);
        assert_eq!(default_context_size(Some(131_072)), DEFAULT_CONTEXT_SIZE);
        assert_eq!(default_context_size(Some(1 << 40)), DEFAULT_CONTEXT_SIZE);
        // An artifact saying 0 (or too little to hold a prompt) is ignored.
        assert_eq!(default_context_size(Some(0)), DEFAULT_CONTEXT_SIZE);
        assert_eq!(default_context_size(Some(15)), DEFAULT_CONTEXT_SIZE);
        assert_eq!(default_context_size(Some(16)), 16);
    }

    #[test]
    fn example_file_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/worker.toml");
        let config = WorkerConfig::from_file(&path).unwrap();
        assert_eq!(config.models.len(), 1);
        assert_eq!(config.models[0].name, "ai/smollm2");
        assert_eq!(config.models[0].prompt_cache, Some(CacheSize(256 << 20)));
        assert_eq!(config.store.default_registry, "docker.io");
        assert_eq!(config.store.path, Path::new("/var/lib/herd/models"));
        assert_eq!(config.gpu, crate::gpu::GpuSettings::default());
        assert_eq!(config.cluster, crate::cluster::ClusterSettings::default());
    }

    #[test]
    fn a_bad_default_registry_is_refused() {
        let mut config = WorkerConfig::default();
        config.store.default_registry = "not a host".into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("store.default_registry"), "{err}");
    }

    #[test]
    fn memory_limit_takes_sizes_and_bytes() {
        let config: WorkerConfig = toml::from_str("memory_limit = '2GiB'").unwrap();
        assert_eq!(config.memory_limit, Some(MemorySize(2 << 30)));
        let config: WorkerConfig = toml::from_str("memory_limit = 1048576").unwrap();
        assert_eq!(config.memory_limit, Some(MemorySize(1 << 20)));
        assert_eq!(config.capacity(false).memory_limit_bytes, 1 << 20);
        for bad in [
            "memory_limit = 'lots'",
            "memory_limit = 0",
            "memory_limit = '-1GiB'",
        ] {
            assert!(toml::from_str::<WorkerConfig>(bad).is_err(), "{bad}");
        }
        // Unset: the host's memory.
        assert!(WorkerConfig::default().capacity(false).memory_limit_bytes > 0);
    }

    #[test]
    fn the_prompt_cache_takes_sizes_and_zero() {
        let config: WorkerConfig = toml::from_str("[store]\nprompt_cache = '1GiB'").unwrap();
        assert_eq!(config.store.prompt_cache, Some(CacheSize(1 << 30)));
        for off in ["prompt_cache = 0", "prompt_cache = '0'"] {
            let config: WorkerConfig = toml::from_str(&format!("[store]\n{off}")).unwrap();
            assert_eq!(config.store.prompt_cache, Some(CacheSize(0)), "{off}");
        }
        assert!(toml::from_str::<WorkerConfig>("[store]\nprompt_cache = 'lots'").is_err());
        assert_eq!(WorkerConfig::default().store.prompt_cache, None, "auto");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<WorkerConfig>("listn = '127.0.0.1:1'").unwrap_err();
        assert!(err.to_string().contains("listn"));
    }

    #[test]
    fn validation_names_the_field() {
        let mut config = WorkerConfig::default();
        config
            .models
            .push(ModelConfig::from_path("m.gguf".into(), None));
        config.models[0].parallel = 0;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("models[0].parallel"), "{err}");
    }

    #[test]
    fn name_defaults_from_the_file() {
        let m = ModelConfig::from_path("/x/SmolLM2-135M.Q4_1.gguf".into(), None);
        assert_eq!(m.name, "smollm2-135m.q4_1");
    }
}
