//! `herd-gateway`: a standalone gateway (also `herd gateway`); see
//! [`herd_gateway::cli`].

use clap::Parser;
use herd_gateway::cli::{GatewayArgs, run};
use herd_gateway::logs::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "herd-gateway",
    version,
    about = "Herd gateway: the OpenAI API in front of Herd workers"
)]
struct Main {
    #[command(flatten)]
    args: GatewayArgs,
    /// Log lines as `text` (for people) or `json` (one object per line).
    #[arg(long, value_enum, default_value = "text", env = "HERD_LOG_FORMAT")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let main = Main::parse();
    logs::init(main.log_format, "info,pingora_core=warn");
    let status = run(main.args).await;
    // Spans still buffered go out before the process ends.
    tokio::task::spawn_blocking(herd_gateway::traces::shutdown)
        .await
        .ok();
    let status = status?;
    if status != 0 {
        herd_signals::exit_now(status);
    }
    Ok(())
}
