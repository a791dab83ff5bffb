//! `herd-worker`: one worker daemon serving the models of its config file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use herd_worker::{GrpcServer, LlamaEngine, ModelConfig, WorkerConfig};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
    if let Some(path) = args.model {
        config.models.push(ModelConfig::from_path(path, args.name));
    }
    config.validate()?;
    let engine = tokio::task::spawn_blocking({
        let config = config.clone();
        move || LlamaEngine::load(&config)
    })
    .await??;
    let server = GrpcServer::bind(config.listen, config.worker_id.clone(), Arc::new(engine))
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    server
        .serve(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
    Ok(())
}
