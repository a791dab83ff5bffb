//! Observability end to end, on the real model: after a known sequence of
//! requests `/metrics` moved by exactly the right amounts (gateway and
//! worker, `herd serve` serving both), every exposition passes `promtool
//! check metrics` (herd serve, a standalone gateway, a standalone worker's
//! `--metrics-listen`), and `herd logs [-f]` shows the access lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::pool::{self, binary};
use common::scrape::{Scrape, promtool_check, scrape_text};
use common::{Herd, MODEL, chat, model_path};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

#[tokio::test]
async fn metrics_move_by_what_a_known_sequence_of_requests_did() {
    let herd = Herd::start(2).await;
    let metrics_url = format!("{}/metrics", herd.url);
    let before = Scrape::parse(&scrape_text(&herd.http, &metrics_url).await);
    let series = |name: &str, labels: &str| format!("{name}{{{labels}}}");
    let ok = format!("route=\"chat_completions\",model=\"{MODEL}\",status=\"200\"");
    assert_eq!(before.get(&series("herd_gateway_requests_total", &ok)), 0.0);

    // Two answers in one piece, one streamed with usage, one unknown model.
    let (mut prompt, mut completion, mut cached) = (0.0, 0.0, 0.0);
    for question in ["Name a color.", "Name a fruit."] {
        let (status, body) = herd.post("/v1/chat/completions", &chat(question, 6)).await;
        assert_eq!(status, 200, "{body}");
        let usage = &body["usage"];
        prompt += usage["prompt_tokens"].as_f64().unwrap();
        completion += usage["completion_tokens"].as_f64().unwrap();
        cached += usage["prompt_tokens_details"]["cached_tokens"]
            .as_f64()
            .unwrap_or(0.0);
    }
    let mut streamed = chat("Count to five.", 8);
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = herd.stream("/v1/chat/completions", &streamed).await;
    let mut content_chunks = 0.0;
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        if chunk["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        {
            content_chunks += 1.0;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            prompt += usage["prompt_tokens"].as_f64().unwrap();
            completion += usage["completion_tokens"].as_f64().unwrap();
            cached += usage["prompt_tokens_details"]["cached_tokens"]
                .as_f64()
                .unwrap_or(0.0);
        }
    }
    assert!(content_chunks >= 2.0, "{events:?}");
    let mut unknown = chat("Hi", 2);
    unknown["model"] = json!("no-such-model-at-all");
    let (status, _) = herd.post("/v1/chat/completions", &unknown).await;
    assert_eq!(status, 404);

    let text = scrape_text(&herd.http, &metrics_url).await;
    promtool_check(&text, "herd serve");
    let after = Scrape::parse(&text);
    let model = format!("model=\"{MODEL}\"");
    let moved = |name: &str, labels: &str| {
        after.get(&series(name, labels)) - before.get(&series(name, labels))
    };

    // Gateway: requests, latency, first tokens, queue wait, tokens.
    assert_eq!(moved("herd_gateway_requests_total", &ok), 3.0, "{text}");
    assert_eq!(
        moved(
            "herd_gateway_requests_total",
            "route=\"chat_completions\",model=\"unknown\",status=\"404\""
        ),
        1.0,
        "the unknown model's name must not become a label: {text}"
    );
    assert!(!text.contains("no-such-model-at-all"), "{text}");
    let route_model = format!("route=\"chat_completions\",{model}");
    assert_eq!(
        moved("herd_gateway_request_duration_seconds_count", &route_model),
        3.0
    );
    assert_eq!(
        moved("herd_gateway_time_to_first_token_seconds_count", &model),
        3.0
    );
    assert_eq!(moved("herd_gateway_queue_wait_seconds_count", &model), 3.0);
    let itl = moved("herd_gateway_inter_token_latency_seconds_count", &model);
    assert!(
        itl >= content_chunks - 1.0 && itl <= completion - 3.0,
        "inter-token gaps {itl}: at least the streamed ones ({content_chunks} chunks), \
         at most one per token after each first ({completion} tokens)"
    );
    assert_eq!(moved("herd_gateway_prompt_tokens_total", &model), prompt);
    assert_eq!(
        moved("herd_gateway_completion_tokens_total", &model),
        completion
    );
    assert_eq!(
        moved("herd_gateway_cached_prompt_tokens_total", &model),
        cached
    );
    assert_eq!(after.get("herd_gateway_workers{state=\"healthy\"}"), 1.0);
    assert_eq!(
        after.get(&series(
            "herd_gateway_queue_depth",
            &format!("{model},priority=\"normal\"")
        )),
        0.0
    );
    assert!(after.has_family("herd_gateway_queue_depth"));

    // The in-process worker, on the same exposition.
    assert_eq!(
        moved("herd_worker_decode_tokens_total", &model),
        completion,
        "{text}"
    );
    assert_eq!(
        moved("herd_worker_prefill_tokens_total", &model)
            + moved("herd_worker_cached_prompt_tokens_total", &model),
        prompt
    );
    assert_eq!(
        moved("herd_worker_generations_total", "outcome=\"completed\""),
        3.0
    );
    assert_eq!(after.get(&series("herd_worker_slots", &model)), 2.0);
    assert_eq!(after.get(&series("herd_worker_slots_busy", &model)), 0.0);
    // The finished requests' prompts stay cached in their slots.
    assert!(after.get(&series("herd_worker_kv_cells_used", &model)) >= prompt / 3.0);
    assert_eq!(after.get("herd_worker_models_loaded"), 1.0);
    assert!(after.get(&series("herd_worker_model_memory_bytes", &model)) > 0.0);
}

/// A `herd-worker` with `--metrics-listen`; returns it, its gRPC endpoint
/// and its metrics URL.
async fn worker_with_metrics(store: &std::path::Path) -> (Child, String, String) {
    let mut command = Command::new(binary("herd-worker"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--worker-id",
            "w1",
            "--threads",
            "1",
        ])
        .args(["--metrics-listen", "127.0.0.1:0", "--parallel", "2"])
        .arg("--store")
        .arg(store)
        .arg("--model")
        .arg(model_path())
        .args(["--name", MODEL])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut metrics, mut endpoint) = (None, None);
    tokio::time::timeout(Duration::from_secs(120), async {
        while endpoint.is_none() {
            let line = lines.next_line().await.unwrap().expect("the worker exited");
            if let Some(url) = line.strip_prefix("herd-worker metrics on ") {
                metrics = Some(url.trim().to_owned());
            }
            if let Some(addr) = line.strip_prefix("herd-worker w1 listening on ") {
                endpoint = Some(format!("http://{}", addr.trim()));
            }
        }
    })
    .await
    .expect("the worker did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, endpoint.unwrap(), metrics.expect("no metrics line"))
}

#[tokio::test]
async fn a_standalone_gateway_and_worker_export_valid_metrics() {
    let store = tempfile::tempdir().unwrap();
    let (_worker, endpoint, worker_metrics) = worker_with_metrics(store.path()).await;
    let worker = StaticWorker { id: "w1", endpoint };
    let dir = tempfile::tempdir().unwrap();
    let gateway = worker.gateway(dir.path()).await;
    let (status, body) = gateway
        .post("/v1/chat/completions", &chat("Name a color.", 4))
        .await;
    assert_eq!(status, 200, "{body}");
    let completion = body["usage"]["completion_tokens"].as_f64().unwrap();

    let gateway_text = scrape_text(&gateway.http, &format!("{}/metrics", gateway.url)).await;
    promtool_check(&gateway_text, "herd-gateway");
    assert!(!gateway_text.contains("herd_worker_"), "{gateway_text}");
    let worker_text = scrape_text(&gateway.http, &worker_metrics).await;
    promtool_check(
        &herd_gateway::metrics::to_text_format(&worker_text),
        "herd-worker",
    );
    let scrape = Scrape::parse(&worker_text);
    assert_eq!(
        scrape.get(&format!(
            "herd_worker_decode_tokens_total{{model=\"{MODEL}\"}}"
        )),
        completion
    );
    assert_eq!(
        scrape.get("herd_worker_generations_total{outcome=\"completed\"}"),
        1.0
    );
    // Anything else on that port is a 404, not a hang.
    let other = gateway
        .http
        .get(worker_metrics.replace("/metrics", "/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

/// A worker named in a standalone gateway's config.
struct StaticWorker {
    id: &'static str,
    endpoint: String,
}

impl StaticWorker {
    async fn gateway(&self, dir: &std::path::Path) -> Herd {
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "listen = \"127.0.0.1:0\"\n[[workers]]\nid = \"{}\"\nendpoint = \"{}\"\n",
                self.id, self.endpoint
            ),
        )
        .unwrap();
        let mut command = Command::new(binary("herd-gateway"));
        command.arg("--config").arg(&path);
        let (child, rest) = common::spawn_until_ready(command, "herd-gateway listening on ").await;
        let herd = Herd::attach(child, rest.trim().to_owned());
        assert!(
            pool::eventually(Duration::from_secs(30), || async {
                herd.get("/v1/models").await.1["data"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
            })
            .await,
            "the gateway never saw the worker's model"
        );
        herd
    }
}

/// `herd serve` logging access lines as JSON (other lines at warn).
async fn serve_logging_json() -> (Herd, tempfile::TempDir) {
    let store = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command
        .args(["--log-format", "json", "serve", "--threads", "1"])
        .args(["--listen", "127.0.0.1:0", "--parallel", "2"])
        .arg("--model")
        .arg(model_path())
        .args(["--name", MODEL])
        .arg("--store")
        .arg(store.path())
        .env("RUST_LOG", "warn,herd::access=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("herd serve exited");
            if let Some(rest) = line.strip_prefix("Herd is serving ") {
                let url = rest
                    .split_whitespace()
                    .find(|w| w.starts_with("http://"))
                    .unwrap();
                return url.trim_end_matches("/v1").to_owned();
            }
        }
    })
    .await
    .expect("herd serve did not start");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (Herd::attach(child, url), store)
}

/// The access line (JSON) of the request of `tenant` among `lines`.
fn access_line(lines: &[String], tenant: &str) -> Option<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["target"] == "herd::access" && l["tenant"] == tenant)
}

#[tokio::test]
async fn herd_logs_shows_access_lines_and_follows_new_ones() {
    let (herd, _store) = serve_logging_json().await;
    let response = herd
        .http
        .post(format!("{}/v1/chat/completions", herd.url))
        .header("x-herd-tenant", "team-a")
        .json(&chat("Name a color.", 4))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();

    // `herd logs`: the recent lines, the access line among them.
    let out = Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("logs")
        .env("HERD_HOST", &herd.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let line = access_line(&lines, "team-a").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(line["route"], "chat_completions", "{line}");
    assert_eq!(line["model"], MODEL, "{line}");
    assert_eq!(line["worker"], "local", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(
        line["completion_tokens"], body["usage"]["completion_tokens"],
        "{line}"
    );
    assert_eq!(line["prompt_tokens"], body["usage"]["prompt_tokens"]);
    for field in ["queue_ms", "ttft_ms", "total_ms"] {
        assert!(
            line[field].as_f64().is_some_and(|v| v >= 0.0),
            "{field}: {line}"
        );
    }

    // `herd logs -f`: the recent lines, then the next request's line.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["logs", "-f"])
        .env("HERD_HOST", &herd.url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut followed = BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    wait_for(&mut followed, &mut seen, "team-a").await;
    let (status, _) = common::send_json(
        herd.http
            .post(format!("{}/v1/chat/completions", herd.url))
            .header("x-herd-tenant", "team-b")
            .json(&chat("Name a fruit.", 2)),
    )
    .await;
    assert_eq!(status, 200);
    wait_for(&mut followed, &mut seen, "team-b").await;

    // A follower does not hold up a shutdown: its stream ends at once and
    // the drain completes (exit status 0, nothing cut).
    let status = herd.terminate().await;
    assert!(status.success(), "{status:?}");
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(_)) = followed.next_line().await {}
    })
    .await
    .expect("herd logs -f did not end with the gateway");
    let _ = follower.stdin.take().unwrap().shutdown().await;
    let _ = follower.kill().await;
}

/// Reads followed lines into `seen` until `tenant`'s access line is there.
async fn wait_for(
    followed: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<String>,
    tenant: &str,
) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while access_line(seen, tenant).is_none() {
            let line = followed
                .next_line()
                .await
                .unwrap()
                .expect("herd logs -f ended");
            seen.push(line);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no access line of {tenant} followed"));
}
