//! The pool scheduler end to end, on the real llama.cpp and SmolLM2: a pool
//! of two `herd-worker` processes whose memory budgets hold one model each,
//! serving three models from a real registry; queue bounds (429, 503, the
//! client's deadline); a client that leaves while queued; keep-alive;
//! `/engines/unload`; prefix affinity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::pool::{Worker, eventually, gateway, model_report};
use common::{Herd, MODEL, chat, model_path, package_and_push};
use herd_store::artifact::{CONFIG_MEDIA_TYPE, GGUF_MEDIA_TYPE};
use herd_store::testing::{TestRegistry, push_by_hand};
use serde_json::{Value, json};

/// A completion that keeps the model busy for a few seconds (it counts).
fn long_completion(max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "prompt": "Count from 1 to 500, separated by commas: 1, 2, 3, 4,",
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// Starts a long completion in the background and waits until it holds
/// the one slot; its answer comes from the returned task.
async fn occupy_the_slot(herd: &Herd, max_tokens: u32) -> tokio::task::JoinHandle<Value> {
    let url = format!("{}/v1/completions", herd.url);
    let http = herd.http.clone();
    let busy = tokio::spawn(async move {
        let resp = http
            .post(url)
            .json(&long_completion(max_tokens))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json::<Value>().await.unwrap()
    });
    herd.wait_until_generating(1).await;
    busy
}

/// `herd serve` on the test model with one slot and this gateway config.
async fn serve_with_config(config: &str) -> (Herd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, format!("listen = \"127.0.0.1:0\"\n{config}")).unwrap();
    let herd = Herd::start_with(&[
        "--parallel",
        "1",
        "--gateway-config",
        path.to_str().unwrap(),
    ])
    .await;
    (herd, dir)
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn two_workers_with_room_for_one_model_each_serve_three_models() {
    let registry = TestRegistry::start();
    let models: Vec<String> = ["pool/a:v1", "pool/b:v1", "pool/c:v1"]
        .iter()
        .map(|m| format!("{}/{m}", registry.host()))
        .collect();
    // The same weights with three configs: three model IDs.
    for (i, name) in ["pool/a:v1", "pool/b:v1", "pool/c:v1"].iter().enumerate() {
        package_and_push(
            &registry,
            &model_path(),
            name,
            &["--context-size", &(1024 + i * 512).to_string()],
        );
    }
    let budget = [
        "--parallel",
        "2",
        "--context-size",
        "512",
        "--memory-limit",
        "250MiB",
    ];
    let w1 = Worker::start("w1", &budget).await;
    let w2 = Worker::start("w2", &budget).await;
    let (herd, _config) = gateway(&[&w1, &w2], "").await;
    for model in &models {
        let resp = herd
            .http
            .post(format!("{}/models/create", herd.url))
            .json(&json!({ "from": model }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let progress = resp.text().await.unwrap();
        assert_eq!(status, 200, "{progress}");
    }
    // The premise: each model needs more than half a worker's budget.
    let (_, status) = herd.get("/herd/v1/status").await;
    let need = status["workers"][0]["status"]["models"][0]["memory_bytes"]
        .as_u64()
        .unwrap();
    assert!(need > 125 << 20 && need < 250 << 20, "{need}");

    let started = Instant::now();
    let requests = (0..48).map(|i| {
        let herd = &herd;
        let model = models[i % 3].clone();
        async move {
            let mut body = chat(&format!("Say the number {i}."), 4);
            body["model"] = json!(model);
            let resp = herd
                .http
                .post(format!("{}/v1/chat/completions", herd.url))
                .json(&body)
                .send()
                .await
                .unwrap();
            let worker = header(&resp, "x-herd-worker").unwrap_or("").to_owned();
            let queue_ms = header(&resp, "x-herd-queue-ms").map(str::to_owned);
            let status = resp.status().as_u16();
            let reply: Value = resp.json().await.unwrap();
            (status, reply, worker, queue_ms)
        }
    });
    let answers = futures::future::join_all(requests).await;
    let mut workers = HashSet::new();
    for (status, reply, worker, queue_ms) in &answers {
        assert_eq!(*status, 200, "{reply}");
        assert!(queue_ms.is_some(), "x-herd-queue-ms is missing");
        workers.insert(worker.clone());
    }
    assert_eq!(workers, HashSet::from(["w1".to_owned(), "w2".to_owned()]));
    let mut loads = 0;
    let mut evictions = 0;
    for model in &models {
        let report = model_report(&herd, model).await;
        assert!(report["loads"].as_u64().unwrap() >= 1, "{report}");
        assert_eq!(report["served"], 16, "{report}");
        loads += report["loads"].as_u64().unwrap();
        evictions += report["evictions"].as_u64().unwrap();
    }
    // Three models on two workers with room for one each: one was evicted
    // to make room for the third, and no worker ever holds two.
    assert!(evictions >= 1, "no eviction");
    let (_, status) = herd.get("/herd/v1/status").await;
    for worker in status["workers"].as_array().unwrap() {
        let loaded = worker["status"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["loaded"] == true)
            .count();
        assert!(loaded <= 1, "{worker}");
    }
    eprintln!(
        "48 requests over 3 models on 2 workers: {loads} loads, {evictions} evictions, {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn queue_bounds_answer_429_and_503_with_retry_after() {
    let (herd, _config) =
        serve_with_config("[models.\"ai/smollm2\"]\nmax_queue = 1\nmax_queue_wait_secs = 2\n")
            .await;
    let busy = occupy_the_slot(&herd, 600).await;
    // One waits in the queue (max_queue 1) …
    let queued = {
        let url = format!("{}/v1/chat/completions", herd.url);
        let http = herd.http.clone();
        tokio::spawn(async move { http.post(url).json(&chat("Hi", 3)).send().await.unwrap() })
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            model_report(&herd, MODEL).await["queued"] == 1
        })
        .await,
        "the second request never queued"
    );
    // … and the next is turned away at once.
    let resp = herd
        .http
        .post(format!("{}/v1/chat/completions", herd.url))
        .json(&chat("Hello", 3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    // The queued one gives up after max_queue_wait_secs.
    let resp = queued.await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(header(&resp, "retry-after").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_timeout", "{body}");
    // A client's own deadline is shorter still.
    let asked = Instant::now();
    let resp = herd
        .http
        .post(format!("{}/v1/chat/completions", herd.url))
        .header("x-herd-timeout-ms", "300")
        .json(&chat("Hi", 3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert!(asked.elapsed() < Duration::from_secs(2));
    // The request that held the slot was never disturbed.
    let done = busy.await.unwrap();
    assert!(
        done["choices"][0]["text"].as_str().unwrap().len() > 10,
        "{done}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_while_queued_never_reaches_a_worker() {
    let herd = Herd::start(1).await;
    let busy = occupy_the_slot(&herd, 200).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(format!("{}/v1/chat/completions", herd.url))
        .json(&chat("Hi", 3))
        .send()
        .await;
    assert!(gave_up.is_err(), "it was queued behind the busy slot");
    busy.await.unwrap();
    let (status, body) = herd.post("/v1/chat/completions", &chat("Hi", 3)).await;
    assert_eq!(status, 200, "{body}");
    let worker = herd.worker_status().await;
    assert_eq!(
        worker["generations"]["started"], 2,
        "only the busy request and the last one ran: {worker}"
    );
}

/// Whether the first worker has `model` loaded.
async fn loaded(herd: &Herd, model: &str) -> bool {
    herd.worker_status().await["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == model && m["loaded"] == true)
}

#[tokio::test]
async fn keep_alive_unloads_on_time_and_the_next_request_loads_again() {
    let herd = Herd::start(1).await;
    // keep_alive 0: unloaded as soon as it is idle.
    let mut body = chat("Hi", 3);
    body["keep_alive"] = json!(0);
    let (status, reply) = herd.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            !loaded(&herd, MODEL).await
        })
        .await,
        "keep_alive 0 did not unload"
    );
    // A short keep-alive: loaded again by the request, unloaded after it.
    body["keep_alive"] = json!("2s");
    let (status, reply) = herd.post("/v1/chat/completions", &body).await;
    let answered = Instant::now();
    assert_eq!(status, 200, "{reply}");
    assert!(loaded(&herd, MODEL).await);
    assert!(
        eventually(Duration::from_secs(10), || async {
            !loaded(&herd, MODEL).await
        })
        .await,
        "keep_alive 2s did not unload"
    );
    assert!(
        answered.elapsed() >= Duration::from_secs(2),
        "unloaded before its keep-alive"
    );
    let report = model_report(&herd, MODEL).await;
    assert_eq!(report["unloads"], 2, "{report}");
    assert_eq!(report["loads"], 1, "reloaded once: {report}");
}

#[tokio::test]
async fn engines_unload_skips_a_busy_model_and_unloads_an_idle_one() {
    let herd = Herd::start(1).await;
    let busy = occupy_the_slot(&herd, 150).await;
    let (status, report) = herd.post("/engines/unload", &json!({"all": true})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["unloaded_runners"], 0, "{report}");
    assert_eq!(report["skipped"][0]["model"], MODEL, "{report}");
    assert_eq!(report["skipped"][0]["reason"], "busy", "{report}");
    assert!(loaded(&herd, MODEL).await);
    busy.await.unwrap();
    let (status, report) = herd
        .post(
            "/engines/unload",
            &json!({"models": ["ai/smollm2"], "backend": ""}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["unloaded_runners"], 1, "{report}");
    assert!(
        eventually(Duration::from_secs(5), || async {
            !loaded(&herd, MODEL).await
        })
        .await
    );
    // Bad bodies are named.
    let (status, body) = herd.post("/engines/unload", &json!({"models": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "models");
    let (status, body) = herd
        .post("/engines/unload", &json!({"models": ["nope"]}))
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn requests_sharing_a_system_prompt_go_to_the_same_worker() {
    let model = model_path();
    let serve = [
        "--model",
        model.to_str().unwrap(),
        "--name",
        MODEL,
        "--parallel",
        "2",
    ];
    let w1 = Worker::start("w1", &serve).await;
    let w2 = Worker::start("w2", &serve).await;
    let (herd, _config) = gateway(&[&w1, &w2], "[scheduler]\npolicy = \"prefix_affinity\"\n").await;
    let system = |topic: &str| {
        format!("You are an agent that answers questions about {topic}. ")
            + &"Keep every answer short and cite your sources. ".repeat(60)
    };
    let mut chosen: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for topic in ["llamas", "rust", "etcd", "gpus"] {
        for question in ["What is it?", "Why does it matter?", "Give an example."] {
            let body = json!({
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": system(topic)},
                    {"role": "user", "content": question},
                ],
                "max_tokens": 2,
                "temperature": 0,
            });
            let resp = herd
                .http
                .post(format!("{}/v1/chat/completions", herd.url))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let worker = header(&resp, "x-herd-worker").unwrap().to_owned();
            chosen.entry(topic.to_owned()).or_default().insert(worker);
        }
    }
    for (topic, workers) in &chosen {
        assert_eq!(workers.len(), 1, "{topic} went to {workers:?}");
    }
    // And the pool is used: rendezvous hashing spread the four prompts.
    let all: HashSet<&String> = chosen.values().flatten().collect();
    assert_eq!(all.len(), 2, "{chosen:?}");
}

#[tokio::test]
async fn a_model_that_cannot_load_is_answered_with_why_and_not_retried_at_once() {
    let registry = TestRegistry::start();
    push_by_hand(
        &registry.host(),
        "broken/model",
        "v1",
        (
            CONFIG_MEDIA_TYPE,
            br#"{"config":{"format":"gguf"},"descriptor":{},"rootfs":{"type":"rootfs","diff_ids":[]}}"#,
        ),
        &[(GGUF_MEDIA_TYPE, b"GGUF, but not really".as_slice())],
    )
    .await;
    let broken = format!("{}/broken/model:v1", registry.host());
    let herd = Herd::start(1).await;
    let resp = herd
        .http
        .post(format!("{}/models/create", herd.url))
        .json(&json!({ "from": broken }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap();
    let mut body = chat("Hi", 3);
    body["model"] = json!(broken);
    for _ in 0..2 {
        let (status, reply) = herd.post("/v1/chat/completions", &body).await;
        assert_eq!(status, 502, "{reply}");
        assert_eq!(reply["error"]["code"], "load_failed", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains("not a valid GGUF file"), "{message}");
        assert!(!message.contains("/blobs/"), "no paths: {message}");
    }
    let report = model_report(&herd, &broken).await;
    assert_eq!(
        report["load_failures"], 1,
        "not tried again at once: {report}"
    );
    // The pool is unharmed.
    let (status, reply) = herd.post("/v1/chat/completions", &chat("Hi", 3)).await;
    assert_eq!(status, 200, "{reply}");
}
