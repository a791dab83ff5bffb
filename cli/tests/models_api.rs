//! Model distribution end to end: `herd package` and `herd serve` against a
//! real OCI registry (Debian's `docker-registry` on a free loopback port),
//! Docker Model Runner's `/models` API, and chats with pulled models on the
//! real llama.cpp.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Herd, assert_error, chat, model_path, send_json};
use herd_store::artifact::{
    CHAT_TEMPLATE_MEDIA_TYPE, CONFIG_MEDIA_TYPE, GGUF_MEDIA_TYPE, LICENSE_MEDIA_TYPE,
};
use herd_store::testing::{CuttingProxy, TestRegistry, push_by_hand, split_gguf};
use serde_json::{Value, json};

/// `herd package --push` the test model as `<registry>/<name>`.
fn package_and_push(registry: &TestRegistry, name: &str) {
    common::package_and_push(registry, &model_path(), name, &[]);
}

/// `herd serve` on an empty temp store whose default registry is the test
/// registry, so `ai/smollm2` means `<registry>/ai/smollm2:latest`.
async fn serve_from(registry: &TestRegistry, model: Option<&str>) -> (Herd, tempfile::TempDir) {
    let store = tempfile::tempdir().unwrap();
    let herd = serve_store(store.path(), &registry.host(), model).await;
    (herd, store)
}

/// `herd serve` on the store at `store`, with `host` as default registry.
async fn serve_store(store: &std::path::Path, host: &str, model: Option<&str>) -> Herd {
    serve_store_with(store, host, model, &[]).await
}

async fn serve_store_with(
    store: &std::path::Path,
    host: &str,
    model: Option<&str>,
    extra: &[&str],
) -> Herd {
    let mut args = vec![
        "--store",
        store.to_str().unwrap(),
        "--default-registry",
        host,
        "--parallel",
        "2",
    ];
    if let Some(model) = model {
        args.extend(["--model", model]);
    }
    args.extend_from_slice(extra);
    Herd::launch(&args).await
}

async fn answer(herd: &Herd, model: &str) -> String {
    let mut body = chat("Name a colour.", 12);
    body["model"] = json!(model);
    let (status, reply) = herd.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `POST /models/{source}/tag?repo=…&tag=…`; returns the status and answer.
async fn tag(herd: &Herd, source: &str, repo: &str, tag: &str) -> (u16, Value) {
    let url = format!("{}/models/{source}/tag?repo={repo}&tag={tag}", herd.url);
    send_json(herd.http.post(url)).await
}

/// A `/models/create` pull; returns the status, content type and lines.
async fn create(herd: &Herd, from: &Value, json_lines: bool) -> (u16, String, Vec<String>) {
    let mut request = herd
        .http
        .post(format!("{}/models/create", herd.url))
        .json(from);
    if json_lines {
        request = request.header("accept", "application/json");
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    let text = resp.text().await.unwrap();
    (
        status,
        content_type,
        text.lines().map(str::to_owned).collect(),
    )
}

async fn delete(herd: &Herd, path: &str) -> (u16, Value) {
    let resp = herd
        .http
        .delete(format!("{}{path}", herd.url))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_pulled_model_answers_like_the_local_file() {
    let registry = TestRegistry::start();
    package_and_push(&registry, "ai/smollm2:latest");
    // `--model ai/smollm2` is a reference: pulled, then served.
    let (pulled, _store) = serve_from(&registry, Some("ai/smollm2")).await;
    let from_registry = answer(&pulled, "ai/smollm2").await;
    let local = Herd::start(2).await;
    let from_file = answer(&local, common::MODEL).await;
    assert!(!from_file.is_empty());
    assert_eq!(from_registry, from_file, "temperature 0, same weights");
}

#[tokio::test]
async fn the_models_api_pulls_lists_tags_pushes_and_deletes() {
    let registry = TestRegistry::start();
    package_and_push(&registry, "ai/smollm2:latest");
    let (herd, _store) = serve_from(&registry, None).await;

    // Pull with JSON-lines progress, ending in success.
    let (status, content_type, lines) = create(&herd, &json!({"from": "ai/smollm2"}), true).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, progress) = events.split_last().unwrap();
    assert_eq!(last["type"], "success", "{last}");
    assert!(progress.len() > 1, "progress was reported");
    assert!(progress.iter().all(|e| e["type"] == "progress"));
    let final_bytes = progress.last().unwrap()["pulled"].as_u64().unwrap();
    assert_eq!(final_bytes, progress[0]["total"].as_u64().unwrap());
    let id = last["model"]["id"].as_str().unwrap().to_owned();

    // Again, plain text: already stored, so only the success line.
    let (status, content_type, lines) = create(&herd, &json!({"from": "ai/smollm2"}), false).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("Model pulled successfully"));

    // List and inspect, by name, by full name and by short ID.
    let (status, list) = herd.get("/models").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["tags"], json!(["ai/smollm2:latest"]));
    assert_eq!(list[0]["config"]["format"], "gguf");
    assert_eq!(list[0]["config"]["architecture"], "llama");
    let short = &id["sha256:".len().."sha256:".len() + 12];
    for name in ["ai/smollm2", "ai/smollm2:latest", short] {
        let (status, model) = herd.get(&format!("/models/{name}")).await;
        assert_eq!(status, 200, "{name}: {model}");
        assert_eq!(model["id"], id.as_str());
    }
    let (status, body) = herd.get("/models/ai/nosuch").await;
    assert_error(status, &body, 404);

    // A chat naming the stored model loads it; its ID, full or short,
    // names it too.
    let by_name = answer(&herd, "ai/smollm2").await;
    assert!(!by_name.is_empty());
    assert_eq!(answer(&herd, &id).await, by_name);
    assert_eq!(answer(&herd, short).await, by_name);
    let (_, models) = herd.get("/v1/models").await;
    assert_eq!(models["data"][0]["id"], "ai/smollm2:latest");

    // Tag; removing by ID now needs force, removing one tag does not.
    let (status, tagged) = tag(&herd, "ai/smollm2", "me/smol", "v2").await;
    assert_eq!(status, 201);
    assert_eq!(tagged["target"], "me/smol:v2");
    let (_, model) = herd.get("/models/me/smol:v2").await;
    assert_eq!(model["tags"], json!(["ai/smollm2:latest", "me/smol:v2"]));
    // The new tag names the loaded model: same weights, one model in memory.
    assert_eq!(
        answer(&herd, "me/smol:v2").await,
        answer(&herd, "ai/smollm2").await
    );
    let (_, models) = herd.get("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ai/smollm2:latest", "me/smol:v2"]);
    let worker = herd.worker_status().await;
    assert_eq!(loaded_names(&worker), ["ai/smollm2:latest"], "{worker}");
    assert_eq!(
        worker["models"][0]["aliases"],
        json!(["me/smol:v2"]),
        "{worker}"
    );
    let (status, body) = delete(&herd, &format!("/models/{short}")).await;
    assert_eq!(
        assert_error(status, &body, 409)["code"],
        "model_multiply_tagged"
    );
    let (status, body) = delete(&herd, "/models/me/smol:v2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!([{"Untagged": "me/smol:v2"}]));

    // Push under a new name to the registry, then read it back there.
    let pushed = format!("{}/pushed/smol:v1", registry.host());
    let repo = format!("{}/pushed/smol", registry.host());
    let (status, _) = tag(&herd, "ai/smollm2", &repo, "v1").await;
    assert_eq!(status, 201);
    let resp = herd
        .http
        .post(format!("{}/models/{pushed}/push", herd.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "success", "{text}");
    assert_eq!(last["mode"], "push");
    let manifest = herd
        .http
        .get(format!(
            "http://{}/v2/pushed/smol/manifests/v1",
            registry.host()
        ))
        .header("accept", herd_store::artifact::MANIFEST_MEDIA_TYPE)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status().as_u16(), 200);
    assert_eq!(
        herd_store::sha256_digest(&manifest.bytes().await.unwrap()),
        id,
        "the registry holds the same manifest bytes"
    );
    delete(&herd, &format!("/models/{pushed}")).await;

    // Loaded: refused without force, then forced (unloads and deletes).
    let (status, body) = delete(&herd, "/models/ai/smollm2").await;
    assert_eq!(assert_error(status, &body, 409)["code"], "model_loaded");
    let (status, body) = delete(&herd, "/models/ai/smollm2?force=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{"Untagged": "ai/smollm2:latest"}, {"Deleted": id}])
    );
    let (_, list) = herd.get("/models").await;
    assert_eq!(list, json!([]));
    let (status, body) = herd.post("/v1/chat/completions", &chat("Hi", 4)).await;
    assert_error(status, &body, 404);
}

#[tokio::test]
async fn bad_pulls_get_the_right_status() {
    let registry = TestRegistry::start();
    // A container image, not a model.
    push_by_hand(
        &registry.host(),
        "test/image",
        "v1",
        ("application/vnd.oci.image.config.v1+json", b"{}"),
        &[("application/vnd.oci.image.layer.v1.tar", b"layer")],
    )
    .await;
    let (herd, _store) = serve_from(&registry, None).await;
    let cases = [
        (
            json!({"from": "test/image:v1"}),
            422,
            "unsupported_media_type",
        ),
        (json!({"from": "ai/nosuch"}), 404, "model_not_found"),
        (json!({"from": "Not A/Reference"}), 400, "invalid_reference"),
        (json!({"from": ""}), 400, "invalid_value"),
        (json!({}), 400, "invalid_value"),
    ];
    for (body, want, code) in cases {
        let (status, reply) = herd.post("/models/create", &body).await;
        let err = assert_error(status, &reply, want);
        assert_eq!(err["code"], code, "{body}: {reply}");
    }
    let (status, body) = herd.post_raw("/models/create", b"{oops".to_vec()).await;
    assert_error(status, &body, 400);
    let (_, list) = herd.get("/models").await;
    assert_eq!(list, json!([]), "nothing was stored");
}

#[tokio::test]
async fn a_model_pushed_by_another_client_is_served() {
    let registry = TestRegistry::start();
    let gguf = std::fs::read(model_path()).unwrap();
    let config = br#"{"config":{"format":"gguf","architecture":"llama","context_size":2048},"descriptor":{},"rootfs":{"type":"rootfs","diff_ids":[]}}"#;
    push_by_hand(
        &registry.host(),
        "other/smol",
        "hand",
        (CONFIG_MEDIA_TYPE, config),
        &[
            (GGUF_MEDIA_TYPE, &gguf),
            (LICENSE_MEDIA_TYPE, b"MIT"),
            // Bare contents, no roles or system prompt: far fewer prompt
            // tokens than SmolLM2's own template (about 30 for this chat).
            (
                CHAT_TEMPLATE_MEDIA_TYPE,
                b"{% for m in messages %}{{ m.content }}{% endfor %}",
            ),
        ],
    )
    .await;
    let (herd, _store) = serve_from(&registry, Some("other/smol:hand")).await;
    let mut body = chat("Name a colour.", 4);
    body["model"] = json!("other/smol:hand");
    let (status, reply) = herd.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{reply}");
    let prompt_tokens = reply["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        prompt_tokens < 10,
        "the artifact's chat template was used: {prompt_tokens} prompt tokens"
    );
    // The artifact's context size (2048) is the slot context.
    let status = herd.worker_status().await;
    assert_eq!(status["models"][0]["context_size"], 2048, "{status}");
}

#[tokio::test]
async fn a_pull_killed_halfway_resumes_after_a_restart() {
    let registry = TestRegistry::start();
    package_and_push(&registry, "ai/smollm2:latest");
    // Clients reach the registry through a proxy that stops sending after
    // 40 MB and holds the connection: the pull hangs halfway.
    const BUDGET: u64 = 40_000_000;
    let proxy = CuttingProxy::start_stalling(registry.addr(), BUDGET).await;
    let store = tempfile::tempdir().unwrap();
    let herd = serve_store(store.path(), &proxy.host(), None).await;
    let pull = herd
        .http
        .post(format!("{}/models/create", herd.url))
        .json(&json!({"from": "ai/smollm2"}))
        .send();
    let pull = tokio::spawn(pull);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy.forwarded() < BUDGET {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull never got going"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Give the worker a moment to write what it received, then kill -9.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    herd.kill().await;
    let _ = pull.await;
    let partial: u64 = std::fs::read_dir(store.path().join("blobs/sha256"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        partial > BUDGET / 2,
        "a partial download was kept: {partial} bytes"
    );

    // Restart on the same store: no half model is visible; the pull resumes.
    proxy.unlimit();
    let before = proxy.forwarded();
    let herd = serve_store(store.path(), &proxy.host(), None).await;
    let (_, list) = herd.get("/models").await;
    assert_eq!(list, json!([]));
    let (status, _, lines) = create(&herd, &json!({"from": "ai/smollm2"}), true).await;
    assert_eq!(status, 200);
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["type"], "success", "{lines:?}");
    let total: u64 = std::fs::metadata(model_path()).unwrap().len();
    let fetched = proxy.forwarded() - before;
    assert!(
        fetched < total - partial / 2,
        "resumed: {fetched} bytes fetched for a {total}-byte GGUF ({partial} kept)"
    );
    assert!(!answer(&herd, "ai/smollm2").await.is_empty());
}

#[tokio::test]
async fn a_sharded_model_is_packaged_pulled_and_served() {
    let registry = TestRegistry::start();
    let shards_dir = tempfile::tempdir().unwrap();
    let shards = split_gguf(&model_path(), shards_dir.path(), "smollm2", 2);
    common::package_and_push(&registry, &shards[0], "ai/split:v1", &[]);
    let (pulled, _store) = serve_from(&registry, Some("ai/split:v1")).await;
    let (status, model) = pulled.get("/models/ai/split:v1").await;
    assert_eq!(status, 200, "{model}");
    // Parameters are counted over both shards.
    assert_eq!(model["config"]["parameters"], "134.52 M");
    let from_shards = answer(&pulled, "ai/split:v1").await;
    let local = Herd::start(2).await;
    assert_eq!(from_shards, answer(&local, common::MODEL).await);
}

#[tokio::test]
async fn a_tag_that_moves_to_another_model_serves_the_new_one() {
    let registry = TestRegistry::start();
    package_and_push(&registry, "ai/smollm2:latest");
    let (herd, _store) = serve_from(&registry, None).await;
    let (status, _, _) = create(&herd, &json!({"from": "ai/smollm2"}), false).await;
    assert_eq!(status, 200);
    let prompt_tokens = |reply: &Value| reply["usage"]["prompt_tokens"].as_u64().unwrap();
    let mut body = chat("Name a colour.", 2);
    body["model"] = json!("ai/smollm2");
    let (status, before) = herd.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{before}");
    assert!(
        prompt_tokens(&before) > 20,
        "SmolLM2's own template: {before}"
    );

    // Another client pushes a new model under the same tag: same weights,
    // but a bare chat template that adds nothing around the message.
    let gguf = std::fs::read(model_path()).unwrap();
    push_by_hand(
        &registry.host(),
        "ai/smollm2",
        "latest",
        (CONFIG_MEDIA_TYPE, br#"{"config":{"format":"gguf"},"descriptor":{},"rootfs":{"type":"rootfs","diff_ids":[]}}"#),
        &[
            (GGUF_MEDIA_TYPE, &gguf),
            (
                CHAT_TEMPLATE_MEDIA_TYPE,
                b"{% for m in messages %}{{ m.content }}{% endfor %}",
            ),
        ],
    )
    .await;
    let (status, _, lines) = create(&herd, &json!({"from": "ai/smollm2"}), false).await;
    assert_eq!(status, 200, "{lines:?}");
    let (status, after) = herd.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{after}");
    assert!(
        prompt_tokens(&after) < 10,
        "the new model (and its template) serves the tag now: {after}"
    );
}

/// The names of the worker's loaded models.
fn loaded_names(worker: &Value) -> Vec<String> {
    worker["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["loaded"] == true)
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn at_most_max_loaded_models_are_loaded_and_the_least_recently_used_goes() {
    let registry = TestRegistry::start();
    package_and_push(&registry, "ai/smollm2:latest");
    // The same weights with another config: another model ID.
    common::package_and_push(
        &registry,
        &model_path(),
        "ai/other:latest",
        &["--context-size", "2048"],
    );
    let store = tempfile::tempdir().unwrap();
    let herd = serve_store_with(
        store.path(),
        &registry.host(),
        None,
        &["--max-loaded-models", "1"],
    )
    .await;
    for from in ["ai/smollm2", "ai/other"] {
        let (status, _, lines) = create(&herd, &json!({ "from": from }), false).await;
        assert_eq!(status, 200, "{lines:?}");
    }
    let first = answer(&herd, "ai/smollm2").await;
    assert_eq!(
        loaded_names(&herd.worker_status().await),
        ["ai/smollm2:latest"]
    );

    // One more model: the idle one is unloaded and listed on demand again.
    assert!(!answer(&herd, "ai/other").await.is_empty());
    let worker = herd.worker_status().await;
    assert_eq!(loaded_names(&worker), ["ai/other:latest"], "{worker}");
    let smollm2 = worker["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ai/smollm2:latest")
        .unwrap_or_else(|| panic!("{worker}"));
    assert_eq!(smollm2["on_demand"], true, "{worker}");
    let other = worker["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ai/other:latest")
        .unwrap();
    assert_eq!(other["context_size"], 2048, "the artifact's context size");

    // And back: the same answer from reloaded weights.
    assert_eq!(answer(&herd, "ai/smollm2").await, first);
    assert_eq!(
        loaded_names(&herd.worker_status().await),
        ["ai/smollm2:latest"]
    );
}

#[tokio::test]
async fn a_model_served_from_start_answers_under_its_other_tags_from_the_same_weights() {
    let registry = TestRegistry::start();
    package_and_push(&registry, "ai/smollm2:latest");
    let (herd, _store) = serve_from(&registry, Some("ai/smollm2")).await;
    let (status, _) = tag(&herd, "ai/smollm2", "me/smol", "v2").await;
    assert_eq!(status, 201);
    assert_eq!(
        answer(&herd, "me/smol:v2").await,
        answer(&herd, "ai/smollm2").await
    );
    let worker = herd.worker_status().await;
    assert_eq!(
        loaded_names(&worker),
        ["ai/smollm2:latest"],
        "no second copy"
    );
    assert_eq!(
        worker["models"][0]["aliases"],
        json!(["me/smol:v2"]),
        "{worker}"
    );
    assert_eq!(worker["models"].as_array().unwrap().len(), 1, "{worker}");
}
