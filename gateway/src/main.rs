//! `herd-gateway`: a standalone gateway routing to the workers in its config.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use herd_gateway::state::{MemoryStateStore, StateStore, WorkerRecord};
use herd_gateway::{Gateway, GatewayConfig};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Herd gateway: the OpenAI API in front of Herd workers"
)]
struct Args {
    /// TOML config file (see config/gateway.toml).
    #[arg(long, short, env = "HERD_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address; overrides the file.
    #[arg(long, env = "HERD_GATEWAY_LISTEN")]
    listen: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => GatewayConfig::from_file(path)?,
        None => GatewayConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.validate()?;
    let store = Arc::new(MemoryStateStore::default());
    for worker in &config.workers {
        store
            .register_worker(WorkerRecord {
                id: worker.id.clone(),
                endpoint: worker.endpoint.clone(),
            })
            .await?;
    }
    let gateway = Gateway::bind(config.clone(), store)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // The readiness line scripts and tests wait for.
    println!("herd-gateway listening on http://{}", gateway.local_addr());
    std::io::Write::flush(&mut std::io::stdout()).ok();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        herd_signals::shutdown().await;
        let _ = stop.send(true);
    });
    let report = gateway.run(shutdown).await;
    if !report.complete() {
        herd_signals::exit_now(herd_signals::DRAIN_CUT_EXIT_STATUS);
    }
    Ok(())
}
