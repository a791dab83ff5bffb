//! `herd ps|df|unload|logs|status|version`: the pool's running state,
//! through the gateway's `/engines/*` admin API.

use anyhow::bail;
use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::Client;
use crate::table;

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UnloadArgs {
    /// Unload every idle model.
    #[arg(long, conflicts_with = "models")]
    pub all: bool,
    /// Models to unload.
    pub models: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines as they come.
    #[arg(long, short)]
    pub follow: bool,
}

pub async fn ps(client: &Client, args: JsonArgs) -> anyhow::Result<()> {
    let running = client.get("/engines/ps").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&running)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = running
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
            let loading = r["loading"] == true;
            let until = if loading {
                "loading".to_owned()
            } else if r["keep_alive_secs"] == -1 {
                "forever".to_owned()
            } else if let Some(at) = r["expires_at"].as_i64() {
                table::from_now(at)
            } else {
                "while in use".to_owned()
            };
            vec![
                text(&r["model_name"]),
                text(&r["worker"]),
                format!(
                    "{}/{}",
                    r["slots_busy"].as_u64().unwrap_or(0),
                    r["slots_total"].as_u64().unwrap_or(0)
                ),
                r["queued"].as_u64().unwrap_or(0).to_string(),
                r["last_used"]
                    .as_i64()
                    .map_or_else(|| "-".to_owned(), table::ago),
                until,
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &[
                "MODEL NAME",
                "WORKER",
                "SLOTS BUSY",
                "QUEUED",
                "LAST USED",
                "UNLOADS"
            ],
            &rows
        )
    );
    Ok(())
}

pub async fn df(client: &Client, args: JsonArgs) -> anyhow::Result<()> {
    let usage = client.get("/engines/df").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = usage["workers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|w| {
            vec![
                w["worker"].as_str().unwrap_or("").to_owned(),
                w["models"]
                    .as_u64()
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                w["bytes"].as_u64().map_or_else(
                    || w["error"].as_str().unwrap_or("-").to_owned(),
                    table::size,
                ),
            ]
        })
        .collect();
    rows.push(vec![
        "total".into(),
        String::new(),
        table::size(usage["models_disk_usage"].as_u64().unwrap_or(0)),
    ]);
    print!(
        "{}",
        table::render(&["WORKER", "MODELS", "DISK USED"], &rows)
    );
    Ok(())
}

pub async fn unload(client: &Client, args: UnloadArgs) -> anyhow::Result<()> {
    if !args.all && args.models.is_empty() {
        bail!("name the models to unload, or pass --all");
    }
    let body = if args.all {
        json!({"all": true})
    } else {
        json!({"models": args.models})
    };
    let report = client.post("/engines/unload", &body).await?;
    for u in report["unloaded"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        println!(
            "Unloaded {} from {}",
            u["model"].as_str().unwrap_or(""),
            u["worker"].as_str().unwrap_or("")
        );
    }
    for s in report["skipped"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        println!(
            "Skipped {} on {}: {}",
            s["model"].as_str().unwrap_or(""),
            s["worker"].as_str().unwrap_or(""),
            s["reason"].as_str().unwrap_or("")
        );
    }
    if report["unloaded_runners"] == 0 && report["skipped"].as_array().is_none_or(Vec::is_empty) {
        println!("Nothing was loaded");
    }
    Ok(())
}

pub async fn logs(client: &Client, args: LogsArgs) -> anyhow::Result<()> {
    let path = if args.follow {
        "/logs?follow=true"
    } else {
        "/logs"
    };
    let response = match client.send(client.request(Method::GET, path)).await {
        Ok(response) => response,
        Err(e) if e.is_not_found() => bail!("this gateway does not serve logs (/logs)"),
        Err(e) => return Err(e.into()),
    };
    let mut lines = Box::pin(Client::lines(response));
    loop {
        tokio::select! {
            line = lines.next() => match line {
                Some(line) => println!("{}", line?),
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

pub async fn status(client: &Client, args: JsonArgs) -> anyhow::Result<()> {
    let engines = client.get("/engines/status").await?;
    if args.json {
        let pool = client.get("/herd/v1/status").await?;
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"engines": engines, "pool": pool}))?
        );
        return Ok(());
    }
    println!(
        "Herd at {}: {} ({} of {} workers healthy)",
        client.base(),
        engines["status"].as_str().unwrap_or("unknown"),
        engines["workers"]["healthy"],
        engines["workers"]["total"]
    );
    Ok(())
}

pub async fn version(client: &Client) -> anyhow::Result<()> {
    println!("herd {}", env!("CARGO_PKG_VERSION"));
    match client.get("/engines/status").await {
        Ok(status) => println!(
            "gateway {}: {}",
            client.base(),
            status["status"].as_str().unwrap_or("unknown")
        ),
        Err(e) => println!("gateway {}: {e}", client.base()),
    }
    Ok(())
}
