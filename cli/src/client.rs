//! The gateway as the CLI's verbs see it: its public HTTP APIs (Docker
//! Model Runner's `/models` and `/engines/*`, the OpenAI API), with errors
//! turned into one clear line.

use futures::{Stream, StreamExt};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

/// Where the gateway is, from every verb's `--host` and `--api-key`.
#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The gateway's URL.
    #[arg(
        long,
        env = "HERD_HOST",
        default_value = "http://127.0.0.1:12434",
        global = true
    )]
    pub host: String,
    /// API key, sent as a bearer token.
    #[arg(long, env = "HERD_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
}

/// Why a verb failed, in one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the gateway at {host}: {reason}")]
    Unreachable { host: String, reason: String },
    /// The gateway answered with an error (its OpenAI-shaped message).
    #[error("{message}")]
    Api {
        status: StatusCode,
        code: Option<String>,
        message: String,
    },
    #[error("unexpected answer from the gateway: {0}")]
    Protocol(String),
}

impl CliError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Api { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// A client of one gateway.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    api_key: Option<String>,
}

impl Client {
    pub fn new(remote: &Remote) -> Result<Self, CliError> {
        let base = remote.host.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(CliError::Unreachable {
                host: base,
                reason: "the host must be an http:// URL".into(),
            });
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| CliError::Protocol(e.to_string()))?;
        Ok(Self {
            base,
            http,
            api_key: remote.api_key.clone().filter(|k| !k.is_empty()),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends `request`; an error status becomes [`CliError::Api`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request.send().await.map_err(|e| CliError::Unreachable {
            host: self.base.clone(),
            reason: reason(&e),
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let error = &body["error"];
        Err(CliError::Api {
            status,
            code: error["code"].as_str().map(str::to_owned),
            message: error["message"]
                .as_str()
                .map_or_else(|| format!("the gateway answered {status}"), str::to_owned),
        })
    }

    /// A JSON answer.
    pub async fn json(&self, request: RequestBuilder) -> Result<Value, CliError> {
        self.send(request)
            .await?
            .json()
            .await
            .map_err(|e| CliError::Protocol(e.to_string()))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.json(self.request(Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.json(self.request(Method::POST, path).json(body)).await
    }

    /// The lines of a streamed answer, as they arrive.
    pub fn lines(response: Response) -> impl Stream<Item = Result<String, CliError>> {
        let mut bytes = response.bytes_stream();
        let mut pending = Vec::new();
        async_stream(move |tx| async move {
            while let Some(chunk) = bytes.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        let _ = tx.send(Err(CliError::Protocol(e.to_string()))).await;
                        return;
                    }
                };
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
            }
            if !pending.is_empty() {
                let _ = tx
                    .send(Ok(String::from_utf8_lossy(&pending).trim_end().to_owned()))
                    .await;
            }
        })
    }
}

/// A stream fed by a task through a channel.
fn async_stream<T, F, Fut>(produce: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(produce(tx));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// A connection error's cause, without reqwest's wrapping.
fn reason(error: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// A path segment with the characters a model reference may hold kept as
/// they are (`/`, `:`, `@`), others percent-encoded.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'/'
            | b':'
            | b'@' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A query value, percent-encoded.
pub fn query_value(text: &str) -> String {
    path_segment(text).replace('/', "%2F").replace(':', "%3A")
}
