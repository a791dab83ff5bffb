//! `herd-worker`: one worker daemon serving the models of its config file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use herd_worker::{
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
    mock_memory: herd_worker::config::MemorySize,
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
struct Args {
    /// TOML config file (see config/worker.toml).
    #[arg(long, short, env = "HERD_WORKER_CONFIG")]
    config: Option<PathBuf>,
    /// gRPC listen address; overrides the file.
    #[arg(long, env = "HERD_WORKER_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Stable worker id reported to gateways (default `worker-<port>`);
    /// overrides the file.
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
    gpu: Option<herd_worker::gpu::GpuMode>,
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
    /// llama.cpp threads (default: one per core); overrides the file.
    #[arg(long, env = "HERD_THREADS")]
    threads: Option<u32>,
    /// Memory the models may take (`2GiB`, `512MiB`, or bytes; default: the
    /// GPUs' memory when offloading, else the host's); gateways place
    /// models within it. Overrides the file's `memory_limit`.
    #[arg(long, env = "HERD_MEMORY_LIMIT")]
    memory_limit: Option<herd_worker::config::MemorySize>,
    /// Models loaded at once (default 4); overrides the file's
    /// `store.max_loaded_models`.
    #[arg(long, env = "HERD_MAX_LOADED_MODELS", value_parser = clap::value_parser!(u64).range(1..))]
    max_loaded_models: Option<u64>,
    /// Engine: `llama` (the file's models) or `mock` (see the --mock-* flags).
    #[arg(long, value_enum, default_value = "llama", env = "HERD_WORKER_ENGINE")]
    engine: EngineKind,
    #[command(flatten)]
    mock: MockArgs,
}

fn main() {
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run()));
    let status = match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("Error: {error:?}");
            1
        }
    };
    // Not `std::process::exit`: llama.cpp's static destructors must not run
    // while a decode thread may still be finishing a generation.
    herd_signals::exit_now(status)
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,llama-cpp-2=warn".into()),
        )
        .init();
    let args = Args::parse();
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
    if let Some(threads) = args.threads {
        config.threads = threads;
    }
    if let Some(limit) = args.memory_limit {
        config.memory_limit = Some(limit);
    }
    if let Some(max) = args.max_loaded_models {
        config.store.max_loaded_models = usize::try_from(max).unwrap_or(usize::MAX);
    }
    if let Some(path) = args.model {
        let mut model = ModelConfig::from_path(path, args.name);
        model.parallel = config.store.parallel;
        model.context_size = config.store.context_size;
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
    let server = GrpcServer::bind(config.listen, config.worker_id.clone(), engine)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?
        .with_catalog(Arc::new(catalog))
        .with_models(models)
        .with_capacity(capacity);
    // The readiness line scripts and tests wait for.
    println!(
        "herd-worker {} listening on {}",
        server.worker_id(),
        server.local_addr()
    );
    std::io::Write::flush(&mut std::io::stdout()).ok();
    server.serve(herd_signals::shutdown()).await?;
    Ok(())
}
