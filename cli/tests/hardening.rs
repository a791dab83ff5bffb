//! Hostile input against the real `herd serve` on SmolLM2: schemas that
//! crashed or wedged the worker, schemas the grammar cannot enforce, huge
//! prompts, abandoned embeddings, odd `/models` paths. Each is refused (or
//! dropped) cleanly and the worker keeps answering ordinary requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Herd, MODEL, assert_error, chat};
use serde_json::{Value, json};

async fn still_serves(herd: &Herd) {
    let (status, body) = herd.post("/v1/chat/completions", &chat("Say hi.", 4)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn hostile_schemas_are_refused_naming_the_field_and_the_worker_keeps_serving() {
    let herd = Herd::start(2).await;
    let string = |extra: Value| {
        let mut s = json!({"type": "string"});
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    let hostile = [
        // Crashed (SIGABRT), ran away with memory, or wedged the worker.
        string(json!({"minLength": 5, "maxLength": 2})),
        json!({"type": "integer", "minimum": 10, "maximum": 2}),
        string(json!({"pattern": "^[z-a]$"})),
        string(json!({"pattern": "^((a{0,40}){0,40}){0,40}$"})),
        string(json!({"pattern": "^(a{0,1000}){0,1000}$"})),
        // Accepted before, with output that did not match.
        string(json!({"pattern": "^(a)\\1$"})),
        string(json!({"pattern": "^(?=a)[a-z]$"})),
        string(json!({"pattern": "^[^\\s\\S]$"})),
        string(json!({"pattern": "[a-z]+"})),
        json!({"allOf": [{"type": "string"}, {"type": "integer"}]}),
        json!({"type": "object", "properties": {"a\u{1}\"b": {"type": "string"}}, "required": ["a\u{1}\"b"]}),
        json!({"type": "number", "maximum": 3}),
    ];
    for schema in &hostile {
        let object = json!({"type": "object", "properties": {"v": schema}, "required": ["v"]});
        let mut body = chat("Fill it in.", 20);
        body["response_format"] =
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": object}});
        let (status, out) = herd.post("/v1/chat/completions", &body).await;
        let err = assert_error(status, &out, 400);
        assert_eq!(err["param"], "response_format", "{schema}: {out}");
        assert_eq!(err["code"], "invalid_schema", "{schema}: {out}");

        let mut body = chat("Fill it in.", 20);
        body["tools"] = json!([
            {"type": "function", "function": {"name": "fine", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "f", "parameters": object}},
        ]);
        let (status, out) = herd.post("/v1/chat/completions", &body).await;
        let err = assert_error(status, &out, 400);
        assert_eq!(
            err["param"], "tools[1].function.parameters",
            "{schema}: {out}"
        );
        assert_eq!(err["code"], "invalid_schema", "{schema}: {out}");
    }
    still_serves(&herd).await;

    // Too many tools is refused; many tools within the limit are served.
    let tool = |i: usize| {
        json!({"type": "function", "function": {"name": format!("t{i}"),
            "parameters": {"type": "object", "properties": {"x": {"type": "string", "maxLength": 8}}, "required": ["x"]}}})
    };
    let mut body = chat("Call one.", 40);
    body["tools"] = Value::Array((0..65).map(tool).collect());
    let (status, out) = herd.post("/v1/chat/completions", &body).await;
    assert_eq!(assert_error(status, &out, 400)["param"], "tools", "{out}");
    body["tools"] = Value::Array((0..60).map(tool).collect());
    body["tool_choice"] = json!("required");
    let (status, out) = herd.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{out}");
    still_serves(&herd).await;
}

#[tokio::test]
async fn huge_prompts_are_refused_before_they_are_tokenized() {
    let herd = Herd::start(2).await;
    let huge = "word ".repeat(1_800_000); // 9 MB
    let (status, out) = herd.post("/v1/chat/completions", &chat(&huge, 4)).await;
    let err = assert_error(status, &out, 400);
    assert_eq!(err["code"], "context_length_exceeded", "{out}");
    assert_eq!(err["param"], "messages", "{out}");
    let (status, out) = herd
        .post("/v1/embeddings", &json!({"model": MODEL, "input": huge}))
        .await;
    let err = assert_error(status, &out, 400);
    assert_eq!(err["param"], "input", "{out}");
    still_serves(&herd).await;
}

#[tokio::test]
async fn an_abandoned_embedding_stops_and_others_are_answered() {
    let herd = Herd::start(1).await;
    // Many minutes of work: 1024 inputs of ~1,500 tokens (7 MB).
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(150);
    let big = json!({"model": MODEL, "input": vec![long; 1024]});
    let abandoned = herd
        .http
        .post(format!("{}/v1/embeddings", herd.url))
        .timeout(Duration::from_secs(10))
        .json(&big)
        .send()
        .await;
    assert!(abandoned.is_err(), "the client gave up");
    // Without cancellation this waits behind the whole batch.
    let small = herd
        .http
        .post(format!("{}/v1/embeddings", herd.url))
        .timeout(Duration::from_secs(120))
        .json(&json!({"model": MODEL, "input": "hello"}))
        .send()
        .await
        .expect("answered once the abandoned batch stopped");
    assert_eq!(small.status(), 200);
}

#[tokio::test]
async fn odd_model_paths_and_references_are_400s() {
    let herd = Herd::start(1).await;
    for (method, path) in [
        ("GET", "/models/%C3%BCn%C3%AF"),
        ("DELETE", "/models/%C3%BCn%C3%AF"),
        ("POST", "/models/%C3%BCn%C3%AF/tag?repo=a&tag=b"),
        ("POST", "/models/%C3%BCn%C3%AF/push"),
        ("GET", "/models/a%00b"),
    ] {
        let resp = herd
            .http
            .request(method.parse().unwrap(), format!("{}{path}", herd.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        let err = assert_error(status, &body, 400);
        assert_eq!(err["param"], "name", "{method} {path}: {body}");
    }
    // Raw UTF-8 in the request line, as some clients send it.
    let raw = tokio::net::TcpStream::connect(herd.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let reply = raw_request(
        raw,
        "GET /models/\u{fc}n\u{ef} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    for from in ["../x", "./x", "a..b/c"] {
        let (status, body) = herd.post("/models/create", &json!({"from": from})).await;
        let err = assert_error(status, &body, 400);
        assert_eq!(err["param"], "from", "{from}: {body}");
    }
    still_serves(&herd).await;
}

async fn raw_request(mut stream: tokio::net::TcpStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
