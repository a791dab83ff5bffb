//! A pool of separate processes: real `herd-worker`s (llama.cpp on the test
//! model, each with its own store) behind a real `herd-gateway`, on free
//! loopback ports. The binaries are the workspace's own, built next to
//! `herd` by `cargo test --workspace`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::{Herd, spawn_until_ready};

/// A workspace binary next to `herd`.
pub fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_herd")).with_file_name(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo test --workspace` (or `cargo build -p {name}`)",
        path.display()
    );
    path
}

/// A running `herd-worker`; killed when dropped.
#[derive(Debug)]
pub struct Worker {
    _child: Child,
    pub id: String,
    /// Its gRPC endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    _store: tempfile::TempDir,
}

impl Worker {
    /// `herd-worker --worker-id id` with one llama.cpp thread, an empty
    /// store of its own, and `args`.
    pub async fn start(id: &str, args: &[&str]) -> Self {
        let store = tempfile::tempdir().unwrap();
        let mut command = Command::new(binary("herd-worker"));
        command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--worker-id",
                id,
                "--threads",
                "1",
            ])
            .arg("--store")
            .arg(store.path())
            .args(args);
        let (child, rest) =
            spawn_until_ready(command, &format!("herd-worker {id} listening on ")).await;
        Self {
            _child: child,
            id: id.to_owned(),
            endpoint: format!("http://{}", rest.trim()),
            _store: store,
        }
    }
}

/// `herd-gateway` routing to `workers`, with `extra` TOML appended to its
/// config (e.g. a `[scheduler]` section).
pub async fn gateway(workers: &[&Worker], extra: &str) -> (Herd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("listen = \"127.0.0.1:0\"\n");
    config.push_str(extra);
    config.push('\n');
    for worker in workers {
        config.push_str(&format!(
            "[[workers]]\nid = \"{}\"\nendpoint = \"{}\"\n",
            worker.id, worker.endpoint
        ));
    }
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(binary("herd-gateway"));
    command.arg("--config").arg(&path);
    let (child, rest) = spawn_until_ready(command, "herd-gateway listening on ").await;
    (Herd::attach(child, rest.trim().to_owned()), dir)
}

/// The scheduler's view of `model` in `/herd/v1/status`.
pub async fn model_report(herd: &Herd, model: &str) -> Value {
    let (status, body) = herd.get("/herd/v1/status").await;
    assert_eq!(status, 200, "{body}");
    body["scheduler"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .cloned()
        .unwrap_or_else(|| panic!("no {model} in {body}"))
}

/// Polls `check` every 50 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
