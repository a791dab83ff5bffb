//! `herd-loadtest`: parse options, run, print the report (and chart).

use anyhow::Context;
use clap::Parser;
use herd_loadtest::{Args, chart, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = run(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.chart {
        chart::write(&report, path).with_context(|| "writing the chart")?;
        eprintln!("chart written to {}", path.display());
    }
    let silent = report.silent_targets();
    if !silent.is_empty() {
        anyhow::bail!("every request to {} failed", silent.join(", "));
    }
    Ok(())
}
