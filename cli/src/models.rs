//! `herd pull|push|tag|rm|ls|inspect`: Docker Model Runner's model verbs,
//! through the gateway's `/models` API.

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{CliError, Client, path_segment, query_value};
use crate::table;

#[derive(Debug, Args)]
pub struct RefArgs {
    /// A model reference (`ai/smollm2`, `host:port/ns/name:tag`) or ID.
    pub reference: String,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The model to tag.
    pub source: String,
    /// The new name, `repository[:tag]` (tag `latest` if none).
    pub target: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove a model even if it is loaded or has other tags.
    #[arg(long, short)]
    pub force: bool,
    /// Models to remove.
    #[arg(required = true)]
    pub references: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print only the model IDs.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the OpenAI API's model list (`/v1/models`).
    #[arg(long)]
    pub openai: bool,
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    Pull,
    Push,
}

/// `herd pull` / `herd push`: a progress bar fed by the gateway's stream;
/// Ctrl-C stops the transfer (the gateway drops it).
pub async fn transfer(client: &Client, direction: Transfer, reference: &str) -> anyhow::Result<()> {
    let request = match direction {
        Transfer::Pull => client
            .request(Method::POST, "/models/create")
            .json(&json!({ "from": reference })),
        Transfer::Push => client.request(
            Method::POST,
            &format!("/models/{}/push", path_segment(reference)),
        ),
    };
    let response = client
        .send(request.header("accept", "application/json"))
        .await?;
    let bar = progress_bar();
    let mut plain = PlainProgress::new(direction);
    let mut lines = Box::pin(Client::lines(response));
    let outcome = loop {
        let line = tokio::select! {
            line = lines.next() => line,
            _ = tokio::signal::ctrl_c() => {
                bar.abandon_with_message("stopped");
                bail!("stopped by Ctrl-C");
            }
        };
        let Some(line) = line else {
            break Err(CliError::Protocol("the transfer ended without a result".into()).into());
        };
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let event: Value = serde_json::from_str(&line)
            .map_err(|_| CliError::Protocol(format!("not a progress line: {line}")))?;
        match event["type"].as_str() {
            Some("progress") => {
                let (done, total) = (
                    event["pulled"].as_u64().unwrap_or(0),
                    event["total"].as_u64().unwrap_or(0),
                );
                bar.set_length(total);
                bar.set_position(done);
                plain.report(done, total);
            }
            Some("success") => {
                let total = bar.length().unwrap_or(0);
                bar.set_position(total);
                plain.report(total, total);
                bar.finish_and_clear();
                break Ok(event);
            }
            Some("error") => {
                bar.abandon();
                break Err(anyhow::anyhow!(
                    "{}",
                    event["message"].as_str().unwrap_or("the transfer failed")
                ));
            }
            _ => {}
        }
    };
    let event = outcome?;
    let id = event["model"]["id"].as_str().unwrap_or_default();
    match direction {
        Transfer::Pull => println!("Pulled {reference} ({id})"),
        Transfer::Push => println!("Pushed {reference} ({id})"),
    }
    Ok(())
}

/// Progress for a stderr that is not a terminal (the bar draws nothing
/// there): a line at every tenth.
struct PlainProgress {
    enabled: bool,
    verb: &'static str,
    printed: u64,
}

impl PlainProgress {
    fn new(direction: Transfer) -> Self {
        Self {
            enabled: !std::io::IsTerminal::is_terminal(&std::io::stderr()),
            verb: match direction {
                Transfer::Pull => "Downloaded",
                Transfer::Push => "Uploaded",
            },
            printed: 0,
        }
    }

    fn report(&mut self, done: u64, total: u64) {
        let Some(tenths) = (done * 10).checked_div(total) else {
            return;
        };
        if self.enabled && tenths > self.printed {
            self.printed = tenths;
            eprintln!(
                "{} {} of {} ({}%)",
                self.verb,
                table::size(done),
                table::size(total),
                tenths * 10
            );
        }
    }
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:40.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub async fn tag(client: &Client, args: TagArgs) -> anyhow::Result<()> {
    let (repo, tag) = split_tag(&args.target);
    let path = format!(
        "/models/{}/tag?repo={}&tag={}",
        path_segment(&args.source),
        query_value(repo),
        query_value(tag)
    );
    client
        .json(client.request(Method::POST, &path))
        .await
        .with_context(|| format!("cannot tag {}", args.source))?;
    println!("Tagged {} as {repo}:{tag}", args.source);
    Ok(())
}

/// `repository[:tag]` → (repository, tag); the colon of a registry's port
/// is not a tag's.
fn split_tag(target: &str) -> (&str, &str) {
    match target.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() => (repo, tag),
        _ => (target, "latest"),
    }
}

pub async fn rm(client: &Client, args: RmArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for reference in &args.references {
        let mut path = format!("/models/{}", path_segment(reference));
        if args.force {
            path.push_str("?force=true");
        }
        match client.json(client.request(Method::DELETE, &path)).await {
            Ok(Value::Array(lines)) => {
                for line in lines {
                    if let Some(t) = line["Untagged"].as_str() {
                        println!("Untagged: {t}");
                    }
                    if let Some(d) = line["Deleted"].as_str() {
                        println!("Deleted: {d}");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("Error: {reference}: {e}");
                failed.push(reference.clone());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("could not remove {}", failed.join(", "))
    }
}

pub async fn ls(client: &Client, args: LsArgs) -> anyhow::Result<()> {
    if args.openai {
        let list = client.get("/v1/models").await?;
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let models = client.get("/models").await?;
    let models = models.as_array().cloned().unwrap_or_default();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&models)?);
        return Ok(());
    }
    if args.quiet {
        for model in &models {
            println!("{}", short_id(model["id"].as_str().unwrap_or_default()));
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for model in &models {
        let config = &model["config"];
        let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
        let tags: Vec<String> = model["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let names = if tags.is_empty() {
            vec!["<none>".to_owned()]
        } else {
            tags
        };
        for name in names {
            rows.push(vec![
                name,
                text(&config["parameters"]),
                text(&config["quantization"]),
                text(&config["architecture"]),
                short_id(model["id"].as_str().unwrap_or_default()).to_owned(),
                table::ago(model["created"].as_i64().unwrap_or(0)),
                text(&config["size"]),
            ]);
        }
    }
    print!(
        "{}",
        table::render(
            &[
                "MODEL NAME",
                "PARAMETERS",
                "QUANTIZATION",
                "ARCHITECTURE",
                "MODEL ID",
                "CREATED",
                "SIZE"
            ],
            &rows
        )
    );
    Ok(())
}

pub async fn inspect(client: &Client, reference: &str) -> anyhow::Result<()> {
    let model = client
        .get(&format!("/models/{}", path_segment(reference)))
        .await?;
    println!("{}", serde_json::to_string_pretty(&model)?);
    Ok(())
}

/// `sha256:0123456789ab…` → `0123456789ab`.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(split_tag("me/model:v1"), ("me/model", "v1"));
        assert_eq!(split_tag("me/model"), ("me/model", "latest"));
        assert_eq!(
            split_tag("localhost:5000/me/model"),
            ("localhost:5000/me/model", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/me/model:v2"),
            ("localhost:5000/me/model", "v2")
        );
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
