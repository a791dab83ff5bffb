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
            slots: self.mock_slots,
            prefill: std::time::Duration::from_millis(self.mock_prefill_ms),
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
    if let Some(mode) = args.gpu {
        config.gpu.mode = mode;
    }
    if let Some(store) = args.store {
        config.store.path = store;
    }
    if let Some(path) = args.model {
        config.models.push(ModelConfig::from_path(path, args.name));
    }
    config.validate()?;
    let engine: Arc<dyn Engine> = match args.engine {
        EngineKind::Llama => Arc::new(
            tokio::task::spawn_blocking({
                let config = config.clone();
                move || LlamaEngine::load(&config)
            })
            .await??,
        ),
        EngineKind::Mock => Arc::new(MockEngine::new(args.mock.config())?),
    };
    let catalog = Catalog::open(&config.store).with_context(|| {
        format!(
            "cannot open the model store at {}",
            config.store.path.display()
        )
    })?;
    let server = GrpcServer::bind(config.listen, config.worker_id.clone(), engine)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?
        .with_catalog(Arc::new(catalog));
    server.serve(herd_signals::shutdown()).await?;
    Ok(())
}
