//! The vendors' own clients against the real `herd serve` on SmolLM2: the
//! `anthropic` SDK on `/v1/messages`, the `ollama` client on `/api/`, the
//! `openai` SDK's `responses` on `/v1/responses`. Each runs a Python script
//! from `tests/vendor/` whose assertions fail the test. The clients live in
//! a virtual environment `scripts/setup` makes (`~/.cache/herd/vendor-clients`,
//! or `HERD_VENDOR_PYTHON` names the interpreter).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Herd, MODEL};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HERD_VENDOR_PYTHON") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    let python = cache.join("herd/vendor-clients/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it installs the vendors' Python clients)",
        python.display()
    );
    python
}

/// Runs `tests/vendor/{script}` with `args`; its failure fails the test.
async fn run_script(script: &str, args: &[&str]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vendor")
        .join(script);
    let run = tokio::process::Command::new(python())
        .arg(&path)
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("the script ran past 10 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(": ok"), "{script}: {stdout}");
}

#[tokio::test]
async fn anthropic_sdk_plain_stream_tools_count_tokens() {
    let herd = Herd::start(2).await;
    run_script("anthropic_client.py", &[&herd.url, MODEL]).await;
}

#[tokio::test]
async fn ollama_client_chat_generate_embed_pull_list_ps_delete() {
    let registry = herd_store::testing::TestRegistry::start();
    common::package_and_push(&registry, &common::model_path(), "test/pulled", &[]);
    let herd = Herd::start(2).await;
    let reference = format!("{}/test/pulled:latest", registry.host());
    run_script("ollama_client.py", &[&herd.url, MODEL, &reference]).await;
}

#[tokio::test]
async fn openai_sdk_responses_plain_stream_store_tools_json_schema() {
    let herd = Herd::start(2).await;
    run_script("openai_responses_client.py", &[&herd.url, MODEL]).await;
}
