//! Serving behaviour: many concurrent clients, and clients that leave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Herd, chat};
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn more_clients_than_slots_all_get_answers() {
    let herd = Herd::start(2).await;
    let clients = 12;
    let requests = (0..clients).map(|i| {
        let herd = &herd;
        async move {
            let mut body = chat(&format!("Say the number {i}."), 6);
            if i % 2 == 0 {
                body["stream"] = json!(true);
                let events = herd.stream("/v1/chat/completions", &body).await;
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
            } else {
                let (status, body) = herd.post("/v1/chat/completions", &body).await;
                assert_eq!(status, 200, "{body}");
                assert!(body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
            }
        }
    });
    futures::future::join_all(requests).await;
    let status = herd.worker_status().await;
    assert_eq!(status["generations"]["completed"], clients);
    assert_eq!(status["generations"]["failed"], 0);
    assert_eq!(status["slots_busy"], 0);
}

#[tokio::test]
async fn client_leaving_mid_stream_stops_the_generation() {
    let herd = Herd::start(1).await;
    // A raw counting prompt: the model continues it for as long as allowed
    // (a chat answer may end after a few tokens).
    let body = json!({
        "model": common::MODEL,
        "prompt": "1, 2, 3, 4, 5, 6, 7,",
        "temperature": 0,
        "max_tokens": 4000,
        "stream": true,
    });
    let resp = herd
        .http
        .post(format!("{}/v1/completions", herd.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut chunks = resp.bytes_stream();
    for _ in 0..3 {
        chunks.next().await.unwrap().unwrap();
    }
    let busy = herd.worker_status().await;
    assert_eq!(busy["slots_busy"], 1, "the generation is running: {busy}");
    drop(chunks);

    // The worker notices within a decode step or two.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = herd.worker_status().await;
        if status["generations"]["cancelled"] == 1 && status["slots_busy"] == 0 {
            assert!(status["tokens_generated"].as_u64().unwrap() < 4000);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "generation not cancelled: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The slot is free for the next request.
    let (status, body) = herd.post("/v1/chat/completions", &chat("Hi", 3)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits_cleanly() {
    let herd = Herd::start(1).await;
    let url = herd.url.clone();
    let http = herd.http.clone();
    let in_flight = tokio::spawn(async move {
        http.post(format!("{url}/v1/chat/completions"))
            .json(&chat("Tell me about the sea.", 48))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    });
    // Wait until the generation is running, then ask the server to stop.
    herd.wait_until_generating(1).await;
    let status = herd.terminate().await;
    assert!(status.success(), "exit status {status}");
    let body = in_flight.await.unwrap();
    assert!(body["choices"][0]["finish_reason"].is_string(), "{body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );
}

#[tokio::test]
async fn a_second_signal_exits_without_draining() {
    let herd = Herd::start(1).await;
    let url = herd.url.clone();
    let http = herd.http.clone();
    // 2000 tokens at temperature 0 (the model does not stop earlier on
    // this prompt): far longer than the 10 s the drain would wait.
    let _in_flight = tokio::spawn(async move {
        let _ = http
            .post(format!("{url}/v1/chat/completions"))
            .json(&chat("Tell me about the sea.", 2000))
            .send()
            .await;
    });
    herd.wait_until_generating(1).await;
    herd.send_signal("TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    herd.send_signal("INT");
    let status = herd.wait().await;
    assert_eq!(
        status.code(),
        Some(herd_signals::FORCED_EXIT_STATUS),
        "{status}"
    );
}

/// This machine has no GPU and the test build no GPU backend: a worker told
/// to require one must refuse to start, not fall back to the CPU.
#[tokio::test]
async fn gpu_required_without_a_gpu_refuses_to_start() {
    let store = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--gpu", "required"])
            .arg("--model")
            .arg(common::model_path())
            .arg("--store")
            .arg(store.path())
            .output(),
    )
    .await
    .expect("herd serve did not exit")
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("it found no GPU"), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Herd is serving"),
        "it must not serve"
    );
}

#[tokio::test]
async fn status_reports_cpu_only() {
    let herd = Herd::start(2).await;
    let status = herd.worker_status().await;
    assert_eq!(status["gpu_offload"], false, "{status}");
    assert_eq!(status["gpus"], serde_json::json!([]), "{status}");
}

/// Runs `herd serve` that is expected to fail; returns its stderr.
async fn serve_fails(args: &[&str]) -> String {
    let store = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herd"))
            .arg("serve")
            .args(args)
            .arg("--store")
            .arg(store.path())
            .output(),
    )
    .await
    .expect("herd serve did not exit")
    .unwrap();
    assert!(!out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("Herd is serving"),
        "it must not serve"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn bad_settings_and_a_taken_port_fail_before_any_pull() {
    // A registry that would refuse the connection: reaching it at all would
    // show as a pull error instead of the expected one.
    let nowhere = ["--model", "ai/smollm2", "--default-registry", "127.0.0.1:9"];
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let stderr = serve_fails(&[&nowhere[..], &["--listen", &port]].concat()).await;
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(!stderr.contains("Pulling"), "{stderr}");

    let stderr = serve_fails(&[&nowhere[..], &["--parallel", "0"]].concat()).await;
    assert!(stderr.contains("parallel"), "{stderr}");
    assert!(!stderr.contains("Pulling"), "{stderr}");

    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "default_registry = \"localhost:5000\"\n").unwrap();
    let path = config.path().to_str().unwrap();
    let stderr = serve_fails(&[&nowhere[..], &["--gateway-config", path]].concat()).await;
    assert!(stderr.contains("must agree"), "{stderr}");
}

#[tokio::test]
async fn the_gateway_config_files_listen_address_is_used() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    // It leaves default_registry unset: the store's (here not docker.io)
    // applies, no conflict.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), format!("listen = \"{addr}\"\n")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let model = common::model_path();
    let herd = Herd::launch(&[
        "--model",
        model.to_str().unwrap(),
        "--store",
        store.path().to_str().unwrap(),
        "--gateway-config",
        config.path().to_str().unwrap(),
        "--default-registry",
        "localhost:5000",
    ])
    .await;
    assert_eq!(herd.url, format!("http://{addr}"));
    let (status, _) = herd.get("/v1/models").await;
    assert_eq!(status, 200);
}
