//! `herd-gateway`: a standalone gateway (also `herd gateway`); see
//! [`herd_gateway::cli`].

use clap::Parser;
use herd_gateway::cli::{GatewayArgs, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let status = run(GatewayArgs::parse()).await?;
    if status != 0 {
        herd_signals::exit_now(status);
    }
    Ok(())
}
