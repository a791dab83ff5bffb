//! The `herd` verbs against a real gateway (`herd serve` on the real model)
//! and a real registry: pull with progress, ls, run (one answer, piped and
//! interactive), ps, unload, rm; and one-line errors with exit status 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Herd, MODEL, model_path, package_and_push};
use herd_store::testing::TestRegistry;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// What a `herd` run printed.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `herd args…` against `host`, with `stdin` piped in.
async fn herd(host: &str, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .env("HERD_HOST", host)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("herd did not finish")
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(run: &Run) -> &str {
    assert_eq!(run.code, Some(0), "{run:?}");
    &run.stdout
}

/// One line on stderr starting `Error:`, exit status 1.
fn one_line_error(run: &Run) -> &str {
    assert_eq!(run.code, Some(1), "{run:?}");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(lines[0].starts_with("Error: "), "{run:?}");
    lines[0]
}

#[tokio::test]
async fn pull_ls_run_ps_unload_rm() {
    let registry = TestRegistry::start();
    package_and_push(&registry, &model_path(), "cli/smol:v1", &[]);
    let store = tempfile::tempdir().unwrap();
    let model = model_path();
    let herd_serve = Herd::launch(&[
        "--store",
        store.path().to_str().unwrap(),
        "--default-registry",
        &registry.host(),
        "--model",
        model.to_str().unwrap(),
        "--name",
        MODEL,
        "--parallel",
        "1",
    ])
    .await;
    let host = herd_serve.url.as_str();
    let name = "cli/smol:v1";

    let pulled = herd(host, &["pull", name], "").await;
    assert!(
        ok(&pulled).starts_with(&format!("Pulled {name} (sha256:")),
        "{pulled:?}"
    );
    assert!(
        pulled.stderr.contains("(100%)"),
        "progress reaches 100 %: {pulled:?}"
    );

    let listed = herd(host, &["ls"], "").await;
    let table = ok(&listed);
    assert!(table.starts_with("MODEL NAME"), "{table}");
    assert!(
        table.contains(name) && table.contains("MOSTLY_Q4_1"),
        "{table}"
    );
    let ids = herd(host, &["ls", "-q"], "").await;
    assert_eq!(ok(&ids).trim().len(), 12, "{ids:?}");

    let answered = herd(host, &["run", name, "Say", "hello."], "").await;
    assert!(!ok(&answered).trim().is_empty(), "{answered:?}");

    let ps = herd(host, &["ps"], "").await;
    let table = ok(&ps);
    assert!(table.contains(name) && table.contains("local"), "{table}");
    let ps: serde_json::Value =
        serde_json::from_str(ok(&herd(host, &["ps", "--json"], "").await)).unwrap();
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|m| m["model_name"] == name),
        "{ps}"
    );

    let unloaded = herd(host, &["unload", name], "").await;
    assert!(
        ok(&unloaded).contains(&format!("Unloaded {name}")),
        "{unloaded:?}"
    );

    let removed = herd(host, &["rm", name], "").await;
    assert!(ok(&removed).contains("Deleted: sha256:"), "{removed:?}");
    assert!(!ok(&herd(host, &["ls"], "").await).contains(name));

    let df = herd(host, &["df"], "").await;
    assert!(ok(&df).contains("total"), "{df:?}");
}

#[tokio::test]
async fn run_reads_a_piped_prompt_and_chats_interactively() {
    let herd_serve = Herd::start(1).await;
    let host = herd_serve.url.as_str();
    let piped = herd(host, &["run", MODEL], "Say hello.\n").await;
    assert!(!ok(&piped).trim().is_empty(), "{piped:?}");

    let session =
        "/set system You answer in one word.\nName a colour.\n/clear\n/nope\n/bye\nnever read\n";
    let chat = herd(host, &["run", MODEL, "--interactive"], session).await;
    let out = ok(&chat);
    assert!(out.contains("Set the system prompt."), "{out}");
    assert!(out.contains("Cleared the conversation."), "{out}");
    assert!(out.contains("Unknown command /nope"), "{out}");
    // One answer, then /bye ended the chat before the last line.
    let worker = herd_serve.worker_status().await;
    assert_eq!(worker["generations"]["started"], 2, "{worker}");
}

#[tokio::test]
async fn errors_are_one_line_and_exit_1() {
    let unreachable = herd("http://127.0.0.1:1", &["ls"], "").await;
    assert!(one_line_error(&unreachable).contains("cannot reach the gateway"));

    let herd_serve = Herd::start(1).await;
    let host = herd_serve.url.as_str();
    let bad = herd(host, &["pull", "NOT A/REFERENCE"], "").await;
    one_line_error(&bad);
    let unknown = herd(host, &["inspect", "no/such:model"], "").await;
    assert!(
        one_line_error(&unknown).contains("not found"),
        "{unknown:?}"
    );
    let nothing = herd(host, &["unload"], "").await;
    assert!(one_line_error(&nothing).contains("--all"));

    let completion = herd(host, &["completion", "bash"], "").await;
    assert!(ok(&completion).contains("herd"));
}
