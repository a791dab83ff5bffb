//! Test harness: starts the real `herd serve` binary on the real SmolLM2 GGUF,
//! on a free loopback port, and waits for its readiness line.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

pub mod pool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub mod schema;
pub mod scrape;

pub const MODEL: &str = "ai/smollm2";

/// The test model's path (fetched once by `scripts/fetch-test-model`).
pub fn model_path() -> PathBuf {
    herd_store::testing::test_model_path()
}

/// A running `herd serve`; killed when dropped.
#[derive(Debug)]
pub struct Herd {
    child: Child,
    pub url: String,
    pub http: reqwest::Client,
    /// The model store, a temp dir unless the test gave one.
    _store: Option<tempfile::TempDir>,
}

impl Herd {
    /// Starts with `parallel` slots and one llama.cpp thread.
    pub async fn start(parallel: u32) -> Self {
        Self::start_with(&["--parallel", &parallel.to_string()]).await
    }

    /// Serves the test model's GGUF file as `ai/smollm2`, with an empty
    /// store in a temp dir.
    pub async fn start_with(extra: &[&str]) -> Self {
        let store = tempfile::tempdir().unwrap();
        let model = model_path();
        let mut args = vec![
            "--model",
            model.to_str().unwrap(),
            "--name",
            MODEL,
            "--store",
            store.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut herd = Self::launch(&args).await;
        herd._store = Some(store);
        herd
    }

    /// Runs `herd serve` with exactly these flags (plus one thread, and a
    /// loopback listener on a free port unless they name one); the test
    /// names the store.
    pub async fn launch(args: &[&str]) -> Self {
        let listens = args.contains(&"--listen") || args.contains(&"--gateway-config");
        let args: Vec<&str> = if listens {
            args.to_vec()
        } else {
            [&["--listen", "127.0.0.1:0"], args].concat()
        };
        let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
        command.arg("serve").args(["--threads", "1"]).args(args);
        let (child, rest) = spawn_until_ready(command, "Herd is serving ").await;
        let url = rest
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .trim_end_matches("/v1")
            .to_owned();
        Self::attach(child, url)
    }

    /// A client of the process `child` serving at `url`.
    pub fn attach(child: Child, url: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap();
        Self {
            child,
            url,
            http,
            _store: None,
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        send_json(self.http.post(format!("{}{path}", self.url)).json(body)).await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        send_json(
            self.http
                .post(format!("{}{path}", self.url))
                .header("content-type", "application/json")
                .body(body),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        send_json(self.http.get(format!("{}{path}", self.url))).await
    }

    /// Posts with `stream: true` and returns every SSE `data:` payload.
    pub async fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let text = resp.text().await.unwrap();
        parse_sse(&text)
    }

    /// Kills the process with SIGKILL (no chance to clean up) and waits.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("herd serve did not die")
            .unwrap();
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub async fn terminate(self) -> std::process::ExitStatus {
        self.send_signal("TERM");
        self.wait().await
    }

    /// Sends a signal (`TERM`, `INT`, …) without waiting.
    pub fn send_signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running");
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait(mut self) -> std::process::ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("herd serve did not exit")
            .unwrap()
    }

    /// Waits (bounded) until `n` slots of the first worker are generating.
    pub async fn wait_until_generating(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.worker_status().await["slots_busy"] != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} generations never started"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The worker's live status as the gateway reports it.
    pub async fn worker_status(&self) -> Value {
        let (status, body) = self.get("/herd/v1/status").await;
        assert_eq!(status, 200);
        body["workers"][0]["status"].clone()
    }
}

/// Spawns `command` (stdout piped, killed on drop, `RUST_LOG=warn` unless
/// set) and waits for the stdout line starting with `ready`; returns the
/// child and the rest of that line. Stdout keeps being drained.
pub async fn spawn_until_ready(mut command: Command, ready: &str) -> (Child, String) {
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "warn");
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {command:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let rest = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix(ready) {
                return rest.to_owned();
            }
        }
        panic!("{command:?} exited before it was ready");
    })
    .await
    .unwrap_or_else(|_| panic!("{command:?} did not become ready in time"));
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, rest)
}

/// `herd package --push` a GGUF (or a first shard) as `<registry>/<name>`,
/// with extra `herd package` flags.
pub fn package_and_push(
    registry: &herd_store::testing::TestRegistry,
    gguf: &std::path::Path,
    name: &str,
    extra: &[&str],
) {
    let store = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["package", "--gguf"])
        .arg(gguf)
        .arg("--store")
        .arg(store.path())
        .args(extra)
        .args(["--push", &format!("{}/{name}", registry.host())])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "herd package failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Pushed"));
}

/// Sends the request and returns the status and the JSON body.
pub async fn send_json(request: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Splits an SSE body into its `data:` payloads, checking the framing.
pub fn parse_sse(text: &str) -> Vec<String> {
    assert!(
        text.ends_with("\n\n"),
        "SSE body must end with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

/// A chat request at temperature 0 with a fixed seed.
pub fn chat(content: &str, max_tokens: u32) -> Value {
    serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "seed": 42,
        "max_tokens": max_tokens,
    })
}

/// Asserts OpenAI's error shape and returns the error object.
pub fn assert_error(status: u16, body: &Value, want_status: u16) -> Value {
    assert_eq!(status, want_status, "{body}");
    let err = &body["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(err["type"].is_string(), "{body}");
    assert!(
        err.get("param").is_some() && err.get("code").is_some(),
        "{body}"
    );
    err.clone()
}
