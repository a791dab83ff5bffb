//! `herd bench MODEL`: a short streaming run at 1, 4 and 8 concurrent
//! requests through the gateway, with the load tool's own client and
//! report (TTFT, inter-token latency, tokens/s).

use anyhow::bail;
use clap::{Args, Parser};

use crate::client::Client;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model to measure.
    pub model: String,
    /// Concurrent requests per level.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub concurrency: Vec<u32>,
    /// Seconds per level.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// `max_tokens` of every request.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
}

pub async fn run(client: &Client, args: BenchArgs) -> anyhow::Result<()> {
    let concurrency: Vec<String> = args.concurrency.iter().map(u32::to_string).collect();
    let load = herd_loadtest::Args::try_parse_from([
        "herd bench",
        "--target",
        client.base(),
        "--model",
        &args.model,
        "--concurrency",
        &concurrency.join(","),
        "--duration",
        &args.duration.to_string(),
        "--max-tokens",
        &args.max_tokens.to_string(),
        "--stream",
    ])?;
    let report = herd_loadtest::run(&load).await?;
    print!("{}", report.table());
    let silent = report.silent_targets();
    if !silent.is_empty() {
        bail!("every request failed");
    }
    Ok(())
}
