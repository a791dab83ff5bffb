//! API keys end to end: keys made with `herd keys`, the real `herd serve`
//! on SmolLM2 with `--keys-file`, real HTTP. 401 without or with a wrong
//! key (both header forms), roles, model allow-lists (404, hidden from
//! `/v1/models`), requests/tokens per minute and concurrency (429 +
//! `Retry-After`), one key at its limit not blocking another, revoking a
//! key in a running gateway, probes open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Herd, MODEL, assert_error, chat, send_json};
use serde_json::{Value, json};

/// `herd keys …` with the keys file; returns stdout.
fn keys(file: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("keys")
        .args(args)
        .arg("--file")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "herd keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Creates a key and returns it.
fn create(file: &Path, name: &str, extra: &[&str]) -> String {
    let key = keys(file, &[&["create", name], extra].concat());
    let key = key.trim().to_owned();
    assert!(key.starts_with("sk-herd-"), "{key}");
    key
}

struct Keyed {
    herd: Herd,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
}

impl Keyed {
    async fn start(parallel: u32, make: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.toml");
        make(&file);
        let herd = Herd::start_with(&[
            "--parallel",
            &parallel.to_string(),
            "--keys-file",
            file.to_str().unwrap(),
        ])
        .await;
        Self {
            herd,
            _dir: dir,
            file,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.herd.url)
    }

    async fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        send_json(
            self.herd
                .http
                .post(self.url(path))
                .bearer_auth(key)
                .json(body),
        )
        .await
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        send_json(self.herd.http.get(self.url(path)).bearer_auth(key)).await
    }

    /// Waits (bounded) until `n` slots are generating.
    async fn wait_until_generating(&self, admin: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get("/herd/v1/status", admin).await;
            assert_eq!(status, 200, "{body}");
            if body["workers"][0]["status"]["slots_busy"] == n {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{n} never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn keys_roles_and_allow_lists_are_enforced() {
    let mut made = Vec::new();
    let k = Keyed::start(2, |file| {
        made.push(create(file, "ops", &["--role", "admin"]));
        made.push(create(
            file,
            "team-a",
            &["--model", "ai/smollm2", "--rpm", "3"],
        ));
        made.push(create(file, "team-c", &["--model", "other/*"]));
    })
    .await;
    let [admin, team_a, team_c] = <[String; 3]>::try_from(made).unwrap();

    // Probes need no key.
    for probe in ["/healthz", "/readyz"] {
        let resp = k.herd.http.get(k.url(probe)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{probe}");
    }

    // No key, a wrong key (both header forms): 401 in OpenAI's shape.
    let resp = k
        .herd
        .http
        .post(k.url("/v1/chat/completions"))
        .json(&chat("Hi", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let (status, body) = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    let err = assert_error(status, &body, 401);
    assert_eq!(err["code"], "invalid_api_key");
    // The same key with its last hex digit changed (never to itself).
    let last = if team_a.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &team_a[..team_a.len() - 1]);
    let (status, body) = k.post("/v1/chat/completions", &wrong, &chat("Hi", 1)).await;
    assert_eq!(assert_error(status, &body, 401)["code"], "invalid_api_key");
    assert!(
        !body.to_string().contains(&wrong[8..]),
        "the key is echoed: {body}"
    );
    let (status, body) = send_json(
        k.herd
            .http
            .get(k.url("/v1/models"))
            .header("x-api-key", &wrong),
    )
    .await;
    assert_error(status, &body, 401);
    for path in ["/v1/models", "/herd/v1/status", "/models", "/"] {
        let resp = k.herd.http.get(k.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
    }

    // The right key, both header forms.
    let (status, body) = k
        .post("/v1/chat/completions", &team_a, &chat("Hi", 1))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = send_json(
        k.herd
            .http
            .post(k.url("/v1/chat/completions"))
            .header("x-api-key", &admin)
            .json(&chat("Hi", 1)),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The allow-list: other models do not exist for team-c.
    let (status, body) = k.get("/v1/models", &team_c).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]), "{body}");
    let (status, body) = k.get("/v1/models", &team_a).await;
    assert_eq!(status, 200);
    assert!(body["data"].to_string().contains(MODEL), "{body}");
    let (status, body) = k
        .post("/v1/chat/completions", &team_c, &chat("Hi", 1))
        .await;
    assert_eq!(assert_error(status, &body, 404)["code"], "model_not_found");
    let (status, body) = k
        .post(
            "/v1/embeddings",
            &team_c,
            &json!({"model": MODEL, "input": "hi"}),
        )
        .await;
    assert_error(status, &body, 404);
    let (status, body) = k.get(&format!("/v1/models/{MODEL}"), &team_c).await;
    assert_error(status, &body, 404);
    let (status, _) = k.get(&format!("/v1/models/{MODEL}"), &team_a).await;
    assert_eq!(status, 200);
    // Nor in Ollama's and Docker's listings.
    for (path, list) in [("/api/tags", "models"), ("/api/ps", "models")] {
        let (status, body) = k.get(path, &team_c).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body[list], json!([]), "{path} hides it from team-c: {body}");
        let (_, body) = k.get(path, &team_a).await;
        assert!(
            body.to_string().contains("smollm2"),
            "{path} shows it to team-a: {body}"
        );
    }
    let (status, body) = k.get("/engines/ps", &team_c).await;
    assert_eq!((status, body), (200, json!([])));
    let (_, body) = k.get("/engines/ps", &team_a).await;
    assert!(body.to_string().contains("smollm2"), "{body}");
    let (status, _) = k.post("/api/show", &team_c, &json!({"model": MODEL})).await;
    assert_eq!(status, 404);
    let (status, _) = k.post("/api/show", &team_a, &json!({"model": MODEL})).await;
    assert_eq!(status, 200);

    // Roles: admin routes refuse users, before anything happens.
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/engines/unload",
            json!({"all": true}),
        ),
        (reqwest::Method::DELETE, "/models/ai/smollm2", json!({})),
        (
            reqwest::Method::POST,
            "/models/create",
            json!({"from": "ai/x"}),
        ),
    ] {
        let (status, err) = send_json(
            k.herd
                .http
                .request(method.clone(), k.url(path))
                .bearer_auth(&team_a)
                .json(&body),
        )
        .await;
        assert_eq!(
            assert_error(status, &err, 403)["code"],
            "permission_denied",
            "{method} {path}"
        );
    }
    let (status, body) = send_json(
        k.herd
            .http
            .delete(k.url("/models/ai/not-here"))
            .bearer_auth(&admin),
    )
    .await;
    assert_eq!(
        status, 404,
        "the admin passes, the model is missing: {body}"
    );

    // team-a's 3 requests per minute: one was used above.
    for _ in 0..2 {
        let (status, body) = k
            .post("/v1/chat/completions", &team_a, &chat("Hi", 1))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let resp = k
        .herd
        .http
        .post(k.url("/v1/chat/completions"))
        .bearer_auth(&team_a)
        .json(&chat("Hi", 1))
        .send()
        .await
        .unwrap();
    let after = retry_after(&resp);
    assert!((1..=60).contains(&after), "{after}");
    let (status, body) = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    let err = assert_error(status, &body, 429);
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("requests per minute")
    );
    // Another key is not affected.
    let (status, _) = k.post("/v1/chat/completions", &admin, &chat("Hi", 1)).await;
    assert_eq!(status, 200);

    // The list shows names, never keys.
    let list = keys(&k.file, &["list"]);
    assert!(list.contains("team-a") && list.contains("admin"), "{list}");
    for key in [&admin, &team_a, &team_c] {
        assert!(!list.contains(&key[12..]), "{list}");
    }
    let text = std::fs::read_to_string(&k.file).unwrap();
    assert!(!text.contains(&admin[12..]), "{text}");

    // Revoked in the running gateway within seconds.
    keys(&k.file, &["revoke", "team-c"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = k.get("/v1/models", &team_c).await;
        if status == 401 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never revoked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = k.get("/v1/models", &admin).await;
    assert_eq!(status, 200);
}

/// A counting completion that runs for a while.
fn long_completion(max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "prompt": "Count from 1 to 500, separated by commas: 1, 2, 3, 4,",
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

#[tokio::test]
async fn concurrency_and_token_limits_hold_one_key_not_the_others() {
    let mut made = Vec::new();
    let k = Keyed::start(2, |file| {
        made.push(create(file, "ops", &["--role", "admin"]));
        made.push(create(file, "team-b", &["--concurrency", "1"]));
        made.push(create(file, "team-t", &["--tpm", "20"]));
    })
    .await;
    let [admin, team_b, team_t] = <[String; 3]>::try_from(made).unwrap();

    // team-b's one request at a time: a long one holds it.
    let busy = {
        let http = k.herd.http.clone();
        let url = k.url("/v1/completions");
        let key = team_b.clone();
        tokio::spawn(async move {
            send_json(http.post(url).bearer_auth(key).json(&long_completion(300))).await
        })
    };
    k.wait_until_generating(&admin, 1).await;
    let resp = k
        .herd
        .http
        .post(k.url("/v1/completions"))
        .bearer_auth(&team_b)
        .json(&long_completion(1))
        .send()
        .await
        .unwrap();
    assert_eq!(retry_after(&resp), 1);
    let (status, body) = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    let err = assert_error(status, &body, 429);
    assert_eq!(err["code"], "rate_limit_exceeded");
    assert!(
        err["message"].as_str().unwrap().contains("concurrent"),
        "{err}"
    );
    // Another key is served meanwhile, on the free slot.
    let (status, body) = k.post("/v1/completions", &admin, &long_completion(2)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = busy.await.unwrap();
    assert_eq!(status, 200, "{body}");
    // The slot is freed with the answer.
    let (status, body) = k
        .post("/v1/completions", &team_b, &long_completion(1))
        .await;
    assert_eq!(status, 200, "{body}");

    // team-t's 20 tokens per minute: the first request goes over, the next
    // is refused until the window moves on.
    let (status, body) = k
        .post("/v1/completions", &team_t, &long_completion(16))
        .await;
    assert_eq!(status, 200, "{body}");
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used >= 20, "{body}");
    let resp = k
        .herd
        .http
        .post(k.url("/v1/completions"))
        .bearer_auth(&team_t)
        .json(&long_completion(1))
        .send()
        .await
        .unwrap();
    let after = retry_after(&resp);
    assert!((50..=60).contains(&after), "{after}");
    let (status, body) = (resp.status().as_u16(), resp.json::<Value>().await.unwrap());
    let err = assert_error(status, &body, 429);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("tokens per minute"),
        "{err}"
    );
    let (status, _) = k
        .post("/v1/completions", &team_b, &long_completion(1))
        .await;
    assert_eq!(status, 200);
}
