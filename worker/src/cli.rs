//! The worker's command line, shared by `herd-worker` and `herd worker`:
//! flags and environment variables over the config file, the engine, the
//! gRPC server, registration in a cluster's etcd (`--etcd`), and the drain
//! on SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use herd_state::{Keys, WorkerRecord};

use crate::cluster::Registration;
use crate::service::Drain;
use crate::{
    Catalog, Engine, GrpcServer, LlamaEngine, MockConfig, MockEngine, ModelConfig, WorkerConfig,
};

/// Which engine runs generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EngineKind {
    /// llama.cpp on the configured GGUF models.
    Llama,
    /// No model: deterministic text at a configured speed, for load tests and
    /// fault injection (never for real-model results).
    Mock,
}

/// Settings of `--engine mock`.
#[derive(Debug, clap::Args)]
struct MockArgs {
    /// Model names the mock serves (repeatable).
    #[arg(long = "mock-model", default_value = "mock")]
    models: Vec<String>,
    /// Concurrent generations per mock model.
    #[arg(long, default_value_t = 64)]
    mock_slots: u32,
    /// Time before the first token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    mock_prefill_ms: u64,
    /// Tokens per second per stream; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    mock_tokens_per_second: f64,
    /// Tokens generated when a request sets no max_tokens.
    #[arg(long, default_value_t = 16)]
    mock_default_max_tokens: u32,
    /// Load the mock models only when a gateway asks (default: at start).
    #[arg(long)]
    mock_lazy: bool,
    /// Time a mock model takes to load, in milliseconds.
    #[arg(long, default_value_t = 0)]
    mock_load_ms: u64,
    /// Memory each mock model reports (`256MiB`, …).
    #[arg(long, default_value = "256MiB")]
    mock_memory: crate::config::MemorySize,
    /// Prefill time per prompt token not in the mock's prompt cache, in
    /// microseconds.
    #[arg(long, default_value_t = 0)]
    mock_prefill_us_per_token: u64,
    /// Fraction of generations that fail before their first token.
    #[arg(long, default_value_t = 0.0)]
    mock_error_rate: f64,
    /// Every stream fails with an engine error after this many tokens.
    #[arg(long)]
    mock_crash_after_tokens: Option<u32>,
    /// Every stream stops emitting after this many tokens, until cancelled.
    #[arg(long)]
    mock_stall_after_tokens: Option<u32>,
}

impl MockArgs {
    fn config(&self) -> MockConfig {
        MockConfig {
            models: self.models.clone(),
            load_at_start: !self.mock_lazy,
            load_time: std::time::Duration::from_millis(self.mock_load_ms),
            model_memory: self.mock_memory.0,
            slots: self.mock_slots,
            prefill: std::time::Duration::from_millis(self.mock_prefill_ms),
            prefill_per_token: std::time::Duration::from_micros(self.mock_prefill_us_per_token),
            tokens_per_second: self.mock_tokens_per_second,
            default_max_tokens: self.mock_default_max_tokens,
            error_rate: self.mock_error_rate,
            crash_after_tokens: self.mock_crash_after_tokens,
            stall_after_tokens: self.mock_stall_after_tokens,
            ..MockConfig::default()
        }
    }
}

#[derive(Debug, Parser)]
#[command(version, about = "Herd worker: serves GGUF models over gRPC")]
pub struct WorkerArgs {
    /// TOML config file (see config/worker.toml).
    #[arg(long, short, env = "HERD_WORKER_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address; overrides the file.
    #[arg(long, env = "HERD_WORKER_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// This worker's id, unique in the pool (default: the advertised
    /// address in a cluster, else `worker-<port>`); overrides `worker_id`.
    #[arg(long, env = "HERD_WORKER_ID")]
    worker_id: Option<String>,
    /// A GGUF model to serve in addition to the file's.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Name of --model (default: from the file name).
    #[arg(long, requires = "model")]
    name: Option<String>,
    /// GPU use (`auto`, `required`, `off`); overrides the file's `gpu.mode`.
    #[arg(long, value_enum, env = "HERD_GPU")]
    gpu: Option<crate::gpu::GpuMode>,
    /// Model store directory; overrides the file's `store.path`.
    #[arg(long = "store", env = "HERD_STORE")]
    store: Option<PathBuf>,
    /// Concurrent generations per model (default: 2 per core, 2 to 8);
    /// overrides the file's `store.parallel` and applies to --model.
    #[arg(long, env = "HERD_PARALLEL")]
    parallel: Option<u32>,
    /// Context length per slot (default: min(model's, 4096)); overrides the
    /// file's `store.context_size` and applies to --model.
    #[arg(long, env = "HERD_CONTEXT_SIZE")]
    context_size: Option<u32>,
    /// Saved prompt states kept in host memory per model (`512MiB`, `0` for
    /// none; default: as large as the model's KV cache, at most 1 GiB); overrides the
    /// file's `store.prompt_cache` and applies to --model.
    #[arg(long, env = "HERD_PROMPT_CACHE")]
    prompt_cache: Option<crate::config::CacheSize>,
    /// llama.cpp threads (default: one per core); overrides the file.
    #[arg(long, env = "HERD_THREADS")]
    threads: Option<u32>,
    /// Memory the models may take (`2GiB`, `512MiB`, or bytes; default: the
    /// GPUs' memory when offloading, else the host's); gateways place
    /// models within it. Overrides the file's `memory_limit`.
    #[arg(long, env = "HERD_MEMORY_LIMIT")]
    memory_limit: Option<crate::config::MemorySize>,
    /// Models loaded at once (default 4); overrides the file's
    /// `store.max_loaded_models`.
    #[arg(long, env = "HERD_MAX_LOADED_MODELS", value_parser = clap::value_parser!(u64).range(1..))]
    max_loaded_models: Option<u64>,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (off by default).
    #[arg(long, env = "HERD_WORKER_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Engine: `llama` (the file's models) or `mock` (see the --mock-* flags).
    #[arg(long, value_enum, default_value = "llama", env = "HERD_WORKER_ENGINE")]
    engine: EngineKind,
    /// TLS certificate (PEM) of the gRPC listener; with --tls-key,
    /// gateways reach this worker at `https://`.
    #[arg(long, env = "HERD_WORKER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "HERD_WORKER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates are required: only gateways
    /// holding one may call this worker (mTLS).
    #[arg(long, env = "HERD_WORKER_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    #[command(flatten)]
    mock: MockArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Registration in a cluster (docs/cluster.md).
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// etcd endpoints (`http://host:port`, comma-separated) to register
    /// in, under a lease; overrides the file's `cluster.etcd`.
    #[arg(
        long,
        env = "HERD_ETCD",
        value_name = "URL[,URL…]",
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    /// `HOST:PORT` gateways reach this worker at (default: the listen
    /// address); overrides `cluster.advertise`.
    #[arg(long, env = "HERD_ADVERTISE", value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Key prefix in etcd (default `/herd/`); overrides `cluster.prefix`.
    #[arg(long, env = "HERD_ETCD_PREFIX")]
    etcd_prefix: Option<String>,
    /// Seconds the registration lives without renewal (default 10);
    /// overrides `cluster.lease_ttl_secs`.
    #[arg(long, env = "HERD_LEASE_TTL_SECS")]
    lease_ttl: Option<u64>,
    /// On SIGTERM, seconds generations in flight may take to finish
    /// (default 30); overrides `cluster.drain_timeout_secs`.
    #[arg(long, env = "HERD_DRAIN_TIMEOUT_SECS")]
    drain_timeout: Option<u64>,
}

impl ClusterArgs {
    fn apply(&self, settings: &mut crate::cluster::ClusterSettings) {
        let etcd = herd_state::settings::split_endpoints(&self.etcd);
        if !etcd.is_empty() {
            settings.etcd = etcd;
        }
        if let Some(advertise) = &self.advertise {
            settings.advertise = Some(advertise.clone());
        }
        if let Some(prefix) = &self.etcd_prefix {
            settings.prefix.clone_from(prefix);
        }
        if let Some(ttl) = self.lease_ttl {
            settings.lease_ttl_secs = ttl;
        }
        if let Some(timeout) = self.drain_timeout {
            settings.drain_timeout_secs = timeout;
        }
    }
}

/// Serves until SIGINT or SIGTERM, then drains (see [`drain`]). Returns
/// the exit status: 0, or [`herd_signals::DRAIN_CUT_EXIT_STATUS`] when
/// generations were still running at the drain deadline.
pub async fn run(args: WorkerArgs) -> anyhow::Result<i32> {
    let mut config = match &args.config {
        Some(path) => WorkerConfig::from_file(path)?,
        None => WorkerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(id) = args.worker_id {
        config.worker_id = Some(id);
    }
    if let Some(mode) = args.gpu {
        config.gpu.mode = mode;
    }
    if let Some(store) = args.store {
        config.store.path = store;
    }
    if let Some(parallel) = args.parallel {
        config.store.parallel = parallel;
    }
    if let Some(context_size) = args.context_size {
        config.store.context_size = Some(context_size);
    }
    if let Some(size) = args.prompt_cache {
        config.store.prompt_cache = Some(size);
    }
    if let Some(threads) = args.threads {
        config.threads = threads;
    }
    if let Some(limit) = args.memory_limit {
        config.memory_limit = Some(limit);
    }
    if let Some(max) = args.max_loaded_models {
        config.store.max_loaded_models = usize::try_from(max).unwrap_or(usize::MAX);
    }
    args.cluster.apply(&mut config.cluster);
    if let Some(path) = args.model {
        let mut model = ModelConfig::from_path(path, args.name);
        model.parallel = config.store.parallel;
        model.context_size = config.store.context_size;
        model.prompt_cache = config.store.prompt_cache;
        config.models.push(model);
    }
    config.validate()?;
    let (engine, models): (Arc<dyn Engine>, Vec<ModelConfig>) = match args.engine {
        EngineKind::Llama => (
            Arc::new(
                tokio::task::spawn_blocking({
                    let config = config.clone();
                    move || LlamaEngine::load(&config)
                })
                .await??,
            ),
            config.models.clone(),
        ),
        EngineKind::Mock => {
            let mock = MockEngine::new(args.mock.config())?;
            let models = mock.model_configs();
            (Arc::new(mock), models)
        }
    };
    let capacity = config.capacity(engine.status().gpu_offload);
    let catalog = Catalog::open(&config.store).with_context(|| {
        format!(
            "cannot open the model store at {}",
            config.store.path.display()
        )
    })?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let clustered = !config.cluster.etcd.is_empty();
    let tls = server_tls(&args.tls_cert, &args.tls_key, &args.client_ca)?;
    let mut endpoint = config.cluster.endpoint(listener.local_addr()?)?;
    if tls.is_some() {
        endpoint = endpoint.replacen("http://", "https://", 1);
    }
    // In a cluster the default id is the advertised address: unique.
    let worker_id = config.worker_id.clone().or_else(|| {
        clustered.then(|| {
            let host = endpoint
                .split_once("://")
                .map_or(endpoint.as_str(), |(_, h)| h);
            host.to_owned()
        })
    });
    let accelerator = accelerator(engine.as_ref());
    let server = GrpcServer::from_listener(listener, worker_id, engine)?
        .with_catalog(Arc::new(catalog))
        .with_models(models)
        .with_capacity(capacity);
    let server = match tls {
        Some(tls) => server.with_tls(tls),
        None => server,
    };
    let registration = if clustered {
        let store = herd_state::connect(&config.cluster.etcd).await?;
        let record = WorkerRecord {
            id: server.worker_id().to_owned(),
            endpoint,
            memory_limit_bytes: capacity.memory_limit_bytes,
            accelerator,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            draining: false,
            started_at: herd_state::unix_ms() / 1000,
        };
        let keys = Keys::new(&config.cluster.prefix);
        Some(Registration::start(store, &keys, record, config.cluster.lease_ttl()).await)
    } else {
        None
    };
    let _metrics_task = match args.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?;
            println!(
                "herd-worker metrics on http://{}/metrics",
                listener.local_addr()?
            );
            Some(AbortOnDrop(tokio::spawn(crate::exposition::serve(
                listener,
                server.metrics(),
            ))))
        }
        None => None,
    };
    // The readiness line scripts and tests wait for.
    println!(
        "herd-worker {} listening on {}",
        server.worker_id(),
        server.local_addr()
    );
    std::io::Write::flush(&mut std::io::stdout()).ok();
    let drain = server.drain();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    tokio::select! {
        () = herd_signals::shutdown() => {}
        served = &mut serving => {
            served??;
            return Ok(0);
        }
    }
    let finished = drain_worker(
        &drain,
        registration.as_ref(),
        config.cluster.drain_timeout(),
    )
    .await;
    let _ = stop.send(());
    // Calls still running past the deadline end with the process.
    match tokio::time::timeout(STOP_GRACE, serving).await {
        Ok(served) => served??,
        Err(_) => tracing::warn!("calls still open after the drain; exiting anyway"),
    }
    Ok(if finished {
        0
    } else {
        herd_signals::DRAIN_CUT_EXIT_STATUS
    })
}

/// How long the gRPC server may take to close after the drain.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The drain on SIGTERM: report draining (status, gRPC health, and the
/// cluster record, so gateways send nothing new), let generations in flight
/// finish within `deadline`, delete the registration. Returns whether
/// everything finished.
pub async fn drain_worker(
    drain: &Drain,
    registration: Option<&Registration>,
    deadline: std::time::Duration,
) -> bool {
    tracing::info!(
        ?deadline,
        "draining: finishing the generations in flight, taking no new ones"
    );
    drain.begin().await;
    if let Some(registration) = registration
        && let Err(e) = registration.set_draining().await
    {
        tracing::warn!(error = %e, "cannot mark the registration draining");
    }
    let finished = drain.wait_idle(deadline).await;
    if !finished {
        tracing::warn!("generations still running at the drain deadline; they are cut");
    }
    if let Some(registration) = registration
        && let Err(e) = registration.deregister().await
    {
        tracing::warn!(error = %e, "cannot delete the registration; it expires with its lease");
    }
    tracing::info!(finished, "drained");
    finished
}

/// `cpu`, or the GPUs models are offloaded to.
fn accelerator(engine: &dyn Engine) -> String {
    if !engine.status().gpu_offload {
        return "cpu".to_owned();
    }
    let gpus: Vec<String> = crate::gpu::devices()
        .into_iter()
        .map(|g| format!("{}: {}", g.backend, g.description))
        .collect();
    if gpus.is_empty() {
        "gpu".to_owned()
    } else {
        gpus.join(", ")
    }
}

/// The gRPC listener's TLS: its certificate and key, and (mTLS) the CA
/// whose client certificates it requires.
fn server_tls(
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    client_ca: &Option<PathBuf>,
) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    // ring, as the gateway's pingora uses (more than one provider is
    // compiled in, so rustls cannot pick one itself).
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Ends a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
