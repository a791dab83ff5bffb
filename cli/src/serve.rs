//! `herd serve`: a gateway and one worker in one process, the worker reached
//! over a loopback gRPC listener, membership in the in-memory state store:
//! the worker registers there under a lease as it would in etcd.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use herd_gateway::drain::DrainReport;
use herd_gateway::state::{Keys, MemoryStore, StateStore, WorkerRecord};
use herd_gateway::{Gateway, GatewayConfig};
use herd_worker::cluster::Registration;
use herd_worker::config::StoreSettings;
use herd_worker::gpu::{GpuMode, GpuSettings};
use herd_worker::{Catalog, GrpcServer, LlamaEngine, ModelConfig, WorkerConfig};
use tokio::sync::watch;

use crate::signals::stop_on_signal;

/// How long the worker may take to stop after the gateway has.
const WORKER_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The model to serve: a GGUF file, or a reference (`ai/smollm2`,
    /// `host:port/ns/name:tag`, `name@sha256:…`) pulled into the store if
    /// needed. Without it, models are loaded from the store on first use.
    #[arg(long, env = "HERD_MODEL")]
    model: Option<String>,
    /// Model name clients use for a GGUF file (default: from the file name).
    #[arg(long)]
    name: Option<String>,
    /// HTTP address of the OpenAI API (default: the gateway config's, else
    /// 127.0.0.1:12434, Docker Model Runner's port).
    #[arg(long, env = "HERD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Concurrent generations per model (default: 2 per core, 2 to 8).
    #[arg(long)]
    parallel: Option<u32>,
    /// Context length per slot (default: min(model's, 4096)).
    #[arg(long)]
    context_size: Option<u32>,
    /// Saved prompt states kept in host memory per model (`512MiB`, `0` for
    /// none; default: as large as the model's KV cache, at most 1 GiB).
    #[arg(long, env = "HERD_PROMPT_CACHE")]
    prompt_cache: Option<herd_worker::config::CacheSize>,
    /// Models loaded at once; to load one more, the least recently used
    /// idle one is unloaded (default 4).
    #[arg(long, env = "HERD_MAX_LOADED_MODELS", value_parser = clap::value_parser!(u64).range(1..))]
    max_loaded_models: Option<u64>,
    /// llama.cpp threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Memory the models may take (`2GiB`, `512MiB`; default: the GPUs'
    /// memory when offloading, else the host's): models are loaded and
    /// unloaded to stay within it.
    #[arg(long, env = "HERD_MEMORY_LIMIT")]
    memory_limit: Option<herd_worker::config::MemorySize>,
    /// API keys file (`herd keys create --file …`): with it, every route
    /// but /healthz and /readyz needs a key. Overrides `keys_file`.
    #[arg(long, env = "HERD_KEYS_FILE")]
    keys_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key the API is served over
    /// TLS only (h2 and http/1.1 by ALPN). Overrides `[tls] cert`.
    #[arg(long, env = "HERD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Overrides `[tls] key`.
    #[arg(long, env = "HERD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Gateway config file (see config/gateway.toml); flags override it.
    #[arg(long)]
    gateway_config: Option<PathBuf>,
    /// GPU use: `auto` (offload when a GPU backend is present), `required`
    /// (refuse to start without one) or `off`.
    #[arg(long, value_enum, default_value = "auto", env = "HERD_GPU")]
    gpu: GpuMode,
    #[command(flatten)]
    store: StoreArgs,
}

/// Where the model store is and which registries it uses.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Model store directory (default: ~/.local/share/herd/models).
    #[arg(long = "store", env = "HERD_STORE")]
    pub path: Option<PathBuf>,
    /// Registry of references that name none.
    #[arg(long, env = "HERD_DEFAULT_REGISTRY", default_value = "docker.io")]
    pub default_registry: String,
    /// A registry (`host[:port]`) to reach over plain HTTP; repeatable.
    /// Loopback registries always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

impl StoreArgs {
    pub fn settings(&self) -> StoreSettings {
        let mut settings = StoreSettings::default();
        if let Some(path) = &self.path {
            settings.path = path.clone();
        }
        settings.default_registry = self.default_registry.clone();
        settings.insecure_registries = self.insecure_registries.clone();
        settings
    }
}

/// Serves until a signal, then drains; reports whether requests had to be
/// cut.
pub async fn run(args: ServeArgs) -> anyhow::Result<DrainReport> {
    // Every setting is checked, and the port tried, before anything is
    // pulled or loaded.
    let mut worker_config = worker_config(&args);
    worker_config.validate()?;
    let gateway_config = gateway_config(&args, &worker_config.store.default_registry)?;
    std::net::TcpListener::bind(gateway_config.listen)
        .with_context(|| format!("cannot listen on {}", gateway_config.listen))?;

    let store_settings = &worker_config.store;
    let catalog = Arc::new(Catalog::open(store_settings).with_context(|| {
        format!(
            "cannot open the model store at {}",
            store_settings.path.display()
        )
    })?);
    let model = match args.model.as_deref() {
        Some(model) => Some(model_to_serve(&catalog, model, &args).await?),
        None => None,
    };
    worker_config.models = model.iter().cloned().collect();
    worker_config.validate()?;

    let engine = tokio::task::spawn_blocking({
        let config = worker_config.clone();
        move || LlamaEngine::load(&config)
    })
    .await??;
    let capacity = worker_config.capacity(herd_worker::Engine::status(&engine).gpu_offload);
    let worker = GrpcServer::bind(
        worker_config.listen,
        worker_config.worker_id.clone(),
        Arc::new(engine),
    )
    .await
    .context("cannot bind the worker's loopback gRPC listener")?
    .with_catalog(catalog)
    .with_models(worker_config.models.clone())
    .with_capacity(capacity);
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let registration = Registration::start(
        store.clone(),
        &Keys::new(&gateway_config.cluster.prefix),
        WorkerRecord {
            id: worker.worker_id().to_owned(),
            endpoint: format!("http://{}", worker.local_addr()),
            memory_limit_bytes: capacity.memory_limit_bytes,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..WorkerRecord::default()
        },
        worker_config.cluster.lease_ttl(),
    )
    .await;
    let listen = gateway_config.listen;
    let gateway = Gateway::bind(gateway_config, store)
        .with_context(|| format!("cannot listen on {listen}"))?;
    let url = format!("{}://{}", gateway.scheme(), gateway.local_addr());
    // One `/metrics`: the gateway's, then the in-process worker's.
    let worker_metrics = worker.metrics();
    gateway
        .metrics()
        .add_extra(Arc::new(move |out: &mut String| worker_metrics.encode(out)));

    let (stop_worker, mut worker_stopped) = watch::channel(false);
    let worker_task = tokio::spawn(worker.serve(async move {
        let _ = worker_stopped.wait_for(|stop| *stop).await;
    }));
    let (stop, shutdown) = watch::channel(false);
    stop_on_signal(stop);

    let shown = model
        .as_ref()
        .map_or_else(|| "the model store".to_owned(), |m| m.name.clone());
    println!("Herd is serving {shown} at {url}/v1 (Ctrl-C to stop)");
    if let Some(model) = &model {
        println!("  try: curl {url}/v1/chat/completions -H 'content-type: application/json' \\");
        println!(
            "         -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}],\"stream\":true}}'",
            model.name
        );
    } else {
        println!("  pull: curl {url}/models/create -d '{{\"from\":\"ai/smollm2\"}}'");
    }
    std::io::stdout().flush().ok();

    // The gateway drains its requests first; then the worker stops.
    let report = gateway.run(shutdown).await;
    let _ = registration.deregister().await;
    let _ = stop_worker.send(true);
    // Generations the gateway gave up on are cancelled as their streams
    // close; do not wait on stragglers for long.
    match tokio::time::timeout(WORKER_STOP_TIMEOUT, worker_task).await {
        Ok(joined) => joined?.context("worker gRPC server failed")?,
        Err(_) => tracing::warn!("worker did not stop in time; exiting anyway"),
    }
    Ok(report)
}

/// The worker's settings from the flags (no models yet).
fn worker_config(args: &ServeArgs) -> WorkerConfig {
    let mut store = args.store.settings();
    if let Some(parallel) = args.parallel {
        store.parallel = parallel;
    }
    store.context_size = args.context_size;
    store.prompt_cache = args.prompt_cache;
    if let Some(max) = args.max_loaded_models {
        store.max_loaded_models = usize::try_from(max).unwrap_or(usize::MAX);
    }
    WorkerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        worker_id: Some("local".into()),
        threads: args.threads,
        models: Vec::new(),
        store,
        gpu: GpuSettings {
            mode: args.gpu,
            ..GpuSettings::default()
        },
        memory_limit: args.memory_limit,
        cluster: Default::default(),
    }
}

/// The gateway's settings: the file (if any), then the flags.
fn gateway_config(args: &ServeArgs, default_registry: &str) -> anyhow::Result<GatewayConfig> {
    let mut config = match &args.gateway_config {
        Some(path) => {
            let config = GatewayConfig::from_file(path)?;
            // The gateway names models the way the worker's store does: a
            // file that sets another default registry is a mistake (one that
            // does not set it gets the store's).
            if GatewayConfig::sets(path, "default_registry")
                && config.default_registry != default_registry
            {
                bail!(
                    "{} sets default_registry = {:?}, but the store's is {default_registry:?} \
                     (--default-registry); they must agree",
                    path.display(),
                    config.default_registry
                );
            }
            config
        }
        None => GatewayConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.default_registry = default_registry.to_owned();
    if let Some(path) = &args.keys_file {
        config.keys_file = Some(path.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(herd_gateway::tls::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    config.validate()?;
    // A keys file that cannot be used stops the start, before any load.
    herd_gateway::auth::Auth::from_config(&config)?;
    if !config.cluster.etcd.is_empty() {
        bail!(
            "`cluster.etcd` is for `herd gateway`: `herd serve` runs its one worker with an in-memory state store"
        );
    }
    Ok(config)
}

/// A GGUF file as is, or a reference pulled into the store if needed.
async fn model_to_serve(
    catalog: &Catalog,
    model: &str,
    args: &ServeArgs,
) -> anyhow::Result<ModelConfig> {
    let path = std::path::Path::new(model);
    if path.is_file() {
        let mut config = ModelConfig::from_path(path.to_owned(), args.name.clone());
        config.parallel = catalog.defaults().parallel;
        config.context_size = args.context_size;
        config.prompt_cache = args.prompt_cache;
        return Ok(config);
    }
    if model.ends_with(".gguf") || model.starts_with('/') || model.starts_with('.') {
        bail!(
            "model file {model} not found (scripts/fetch-test-model prints the test model's path)"
        );
    }
    let reference = catalog.store().parse_ref(model)?;
    let stored = match catalog.store().resolve(model) {
        Ok(stored) => stored,
        Err(herd_store::StoreError::NotFound(_)) => {
            eprintln!(
                "Pulling {} …",
                reference.familiar(catalog.store().default_registry())
            );
            let progress: herd_store::ProgressFn = Arc::new(crate::progress::printer());
            catalog
                .registry()
                .pull(catalog.store(), &reference, progress)
                .await
                .with_context(|| format!("cannot pull {model}"))?
                .model
        }
        Err(e) => return Err(e.into()),
    };
    let name = catalog.served_name(model, &stored);
    catalog.note_loaded(name.clone(), stored.id.clone());
    catalog
        .model_config(name, &stored)
        .with_context(|| format!("cannot prepare {model} to load"))
}
