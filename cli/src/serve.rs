//! `herd serve`: a gateway and one worker in one process, the worker reached
//! over a loopback gRPC listener, membership in the in-memory state store.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use herd_gateway::state::{MemoryStateStore, StateStore, WorkerRecord};
use herd_gateway::{Gateway, GatewayConfig};
use herd_worker::{GrpcServer, LlamaEngine, ModelConfig, WorkerConfig};
use tokio::sync::watch;

use crate::signals::stop_on_signal;

/// How long the worker may take to stop after the gateway has.
const WORKER_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// GGUF file to serve.
    #[arg(long, env = "HERD_MODEL")]
    model: PathBuf,
    /// Model name clients use (default: from the file name).
    #[arg(long)]
    name: Option<String>,
    /// HTTP address of the OpenAI API.
    #[arg(long, default_value = "127.0.0.1:12434", env = "HERD_LISTEN")]
    listen: SocketAddr,
    /// Concurrent generations for the model (default: 2 per core, 2 to 8).
    #[arg(long)]
    parallel: Option<u32>,
    /// Context length per slot (default: min(model's, 4096)).
    #[arg(long)]
    context_size: Option<u32>,
    /// llama.cpp threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: u32,
    /// Gateway config file (see config/gateway.toml); flags override it.
    #[arg(long)]
    gateway_config: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    if !args.model.is_file() {
        bail!(
            "model file {} not found (scripts/fetch-test-model prints the test model's path)",
            args.model.display()
        );
    }
    let mut model = ModelConfig::from_path(args.model.clone(), args.name.clone());
    if let Some(parallel) = args.parallel {
        model.parallel = parallel;
    }
    model.context_size = args.context_size;
    let worker_config = WorkerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        worker_id: Some("local".into()),
        threads: args.threads,
        models: vec![model.clone()],
    };
    worker_config.validate()?;
    let mut gateway_config = match &args.gateway_config {
        Some(path) => GatewayConfig::from_file(path)?,
        None => GatewayConfig::default(),
    };
    gateway_config.listen = args.listen;
    gateway_config.validate()?;

    let engine = tokio::task::spawn_blocking({
        let config = worker_config.clone();
        move || LlamaEngine::load(&config)
    })
    .await??;
    let worker = GrpcServer::bind(
        worker_config.listen,
        worker_config.worker_id.clone(),
        Arc::new(engine),
    )
    .await
    .context("cannot bind the worker's loopback gRPC listener")?;
    let store = Arc::new(MemoryStateStore::default());
    store
        .register_worker(WorkerRecord {
            id: worker.worker_id().to_owned(),
            endpoint: format!("http://{}", worker.local_addr()),
        })
        .await?;
    let gateway = Gateway::bind(gateway_config, store)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let url = format!("http://{}", gateway.local_addr());

    let (stop_worker, mut worker_stopped) = watch::channel(false);
    let worker_task = tokio::spawn(worker.serve(async move {
        let _ = worker_stopped.wait_for(|stop| *stop).await;
    }));
    let (stop, shutdown) = watch::channel(false);
    stop_on_signal(stop);

    println!(
        "Herd is serving {} at {url}/v1 (Ctrl-C to stop)",
        model.name
    );
    println!("  try: curl {url}/v1/chat/completions -H 'content-type: application/json' \\");
    println!(
        "         -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}],\"stream\":true}}'",
        model.name
    );
    std::io::stdout().flush().ok();

    // The gateway drains its requests first; then the worker stops.
    gateway.run(shutdown).await;
    let _ = stop_worker.send(true);
    // Generations the gateway gave up on are cancelled as their streams
    // close; do not wait on stragglers for long.
    match tokio::time::timeout(WORKER_STOP_TIMEOUT, worker_task).await {
        Ok(joined) => joined?.context("worker gRPC server failed")?,
        Err(_) => tracing::warn!("worker did not stop in time; exiting anyway"),
    }
    Ok(())
}
