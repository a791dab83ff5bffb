//! `herd run MODEL [PROMPT]`: one answer, streamed (the prompt from the
//! arguments, or from stdin when it is piped), or an interactive chat that
//! keeps its history. The model is pulled first if the pool does not have
//! it.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::client::{Client, path_segment};
use crate::models::{Transfer, transfer};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model to chat with.
    pub model: String,
    /// A prompt: answer it and exit. Without one, read it from stdin when
    /// piped, else start an interactive chat.
    pub prompt: Vec<String>,
    /// Chat interactively even when stdin is not a terminal.
    #[arg(long, short)]
    pub interactive: bool,
}

const HELP: &str = "Commands: /bye (leave), /clear (forget the conversation), \
/set system TEXT (the system prompt), /? (this help). Ctrl-C stops an answer; Ctrl-D leaves.";

pub async fn run(client: &Client, args: RunArgs) -> anyhow::Result<()> {
    ensure_model(client, &args.model).await?;
    let prompt = args.prompt.join(" ");
    if !prompt.is_empty() {
        return one_shot(client, &args.model, &prompt).await;
    }
    if !args.interactive && !std::io::stdin().is_terminal() {
        let mut text = String::new();
        tokio::io::stdin()
            .read_to_string(&mut text)
            .await
            .context("cannot read the prompt from stdin")?;
        return one_shot(client, &args.model, text.trim()).await;
    }
    chat(client, &args.model).await
}

/// Pulls `model` through the gateway unless the pool already has it.
async fn ensure_model(client: &Client, model: &str) -> anyhow::Result<()> {
    match client
        .get(&format!("/v1/models/{}", path_segment(model)))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => {
            eprintln!("Pulling {model} …");
            transfer(client, Transfer::Pull, model).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn one_shot(client: &Client, model: &str, prompt: &str) -> anyhow::Result<()> {
    let messages = vec![json!({"role": "user", "content": prompt})];
    answer(client, model, &messages).await?;
    Ok(())
}

/// Streams the answer to `messages` to stdout; returns its text. Ctrl-C
/// stops it (dropping the stream stops the generation).
async fn answer(client: &Client, model: &str, messages: &[Value]) -> anyhow::Result<String> {
    let body = json!({"model": model, "messages": messages, "stream": true});
    let response = client
        .send(
            client
                .request(Method::POST, "/v1/chat/completions")
                .json(&body),
        )
        .await?;
    let mut lines = Box::pin(Client::lines(response));
    let mut text = String::new();
    let mut stdout = std::io::stdout();
    loop {
        let line = tokio::select! {
            line = lines.next() => line,
            _ = tokio::signal::ctrl_c() => {
                println!();
                return Ok(text);
            }
        };
        let Some(line) = line else { break };
        let line = line?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let event: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        if let Some(message) = event["error"]["message"].as_str() {
            anyhow::bail!("{message}");
        }
        if let Some(delta) = event["choices"][0]["delta"]["content"].as_str() {
            text.push_str(delta);
            print!("{delta}");
            stdout.flush().ok();
        }
    }
    println!();
    Ok(text)
}

/// The interactive chat.
async fn chat(client: &Client, model: &str) -> anyhow::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("Chatting with {model}. {HELP}");
    }
    let mut system: Option<String> = None;
    let mut history: Vec<Value> = Vec::new();
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    loop {
        print!("> ");
        std::io::stdout().flush().ok();
        let line = tokio::select! {
            line = input.next_line() => line?,
            _ = tokio::signal::ctrl_c() => {
                println!();
                eprintln!("(Ctrl-D or /bye to leave)");
                continue;
            }
        };
        let Some(line) = line else {
            println!();
            return Ok(());
        };
        let line = line.trim();
        match line {
            "" => continue,
            "/bye" | "/exit" => return Ok(()),
            "/clear" => {
                history.clear();
                println!("Cleared the conversation.");
                continue;
            }
            "/?" | "/help" => {
                println!("{HELP}");
                continue;
            }
            _ => {}
        }
        if let Some(text) = line.strip_prefix("/set system") {
            system = Some(text.trim().to_owned()).filter(|s| !s.is_empty());
            println!("Set the system prompt.");
            continue;
        }
        if line.starts_with('/') {
            println!("Unknown command {line}. {HELP}");
            continue;
        }
        history.push(json!({"role": "user", "content": line}));
        let mut messages: Vec<Value> = system
            .iter()
            .map(|s| json!({"role": "system", "content": s}))
            .collect();
        messages.extend(history.iter().cloned());
        match answer(client, model, &messages).await {
            Ok(reply) => history.push(json!({"role": "assistant", "content": reply})),
            Err(e) => {
                history.pop();
                eprintln!("Error: {e:#}");
            }
        }
    }
}
