//! Ollama's API and OpenAI's Responses API end to end through the real
//! binaries on SmolLM2, checked on the wire: Ollama's NDJSON stream (the
//! default) and `{"error": …}` shape, the Responses event sequence, the
//! stored responses and their errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Herd, MODEL};
use serde_json::{Value, json};

async fn raw_post(herd: &Herd, path: &str, body: &Value) -> (u16, String, String) {
    let resp = herd
        .http
        .post(format!("{}{path}", herd.url))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, resp.text().await.unwrap())
}

#[tokio::test]
async fn ollama_ndjson_by_default_and_its_error_shape() {
    let herd = Herd::start(2).await;
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count from 1 to 100, separated by commas."}],
        "options": {"temperature": 0, "num_predict": 12},
    });
    let (status, content_type, text) = raw_post(&herd, "/api/chat", &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, rest) = lines.split_last().unwrap();
    assert!(!rest.is_empty() && rest.iter().all(|l| l["done"] == false));
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 12);
    let streamed: String = rest
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();

    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let (status, whole) = herd.post("/api/chat", &plain).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["message"]["content"], streamed.as_str());
    assert_eq!(whole["message"]["role"], "assistant");
    assert_eq!(whole["done"], true);

    // keep_alive: the last request's decides when the idle model goes;
    // /api/ps shows it (a model kept forever expires at the end of time).
    let mut kept = plain.clone();
    kept["keep_alive"] = json!(-1);
    kept["options"]["num_predict"] = json!(1);
    assert_eq!(herd.post("/api/chat", &kept).await.0, 200);
    let (status, ps) = herd.get("/api/ps").await;
    assert_eq!(status, 200, "{ps}");
    assert_eq!(ps["models"][0]["model"], MODEL, "{ps}");
    assert_eq!(
        ps["models"][0]["expires_at"], "9999-12-31T23:59:59Z",
        "{ps}"
    );
    kept["keep_alive"] = json!("10m");
    assert_eq!(herd.post("/api/chat", &kept).await.0, 200);
    let (_, ps) = herd.get("/api/ps").await;
    let expires = ps["models"][0]["expires_at"].as_str().unwrap();
    assert!(expires.starts_with("20"), "{ps}");

    let (status, version) = herd.get("/api/version").await;
    assert_eq!(status, 200);
    assert!(version["version"].is_string());

    let cases = [
        (
            "/api/chat",
            json!({"model": "ai/nothing", "messages": [{"role": "user", "content": "x"}]}),
            404,
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "options": {"mirostat": 2}}),
            400,
        ),
        (
            "/api/chat",
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "options": {"num_ctx": 1_000_000}}),
            400,
        ),
        (
            "/api/generate",
            json!({"model": MODEL, "prompt": "x", "template": "{{ .Prompt }}"}),
            400,
        ),
        ("/api/show", json!({"model": "ai/nothing"}), 404),
    ];
    for (path, body, want) in cases {
        let (status, err) = herd.post(path, &body).await;
        assert_eq!(status, want, "{path} {body}: {err}");
        assert!(err["error"].is_string(), "Ollama's shape: {err}");
    }
    // Unknown paths and wrong methods under /api/ too.
    let (status, err) = herd.get("/api/nothing").await;
    assert_eq!(status, 404);
    assert!(err["error"].is_string(), "{err}");
    let (status, err) = herd.post("/api/tags", &json!({})).await;
    assert_eq!(status, 405);
    assert!(err["error"].is_string(), "{err}");
}

/// `(event name, data)` of an SSE stream with named events.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            (
                name.strip_prefix("event: ").unwrap().to_owned(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn responses_event_sequence_store_and_errors() {
    let herd = Herd::start(2).await;
    let body = json!({
        "model": MODEL,
        "instructions": "Be brief.",
        "input": "Name three colors.",
        "temperature": 0,
        "max_output_tokens": 12,
        "stream": true,
    });
    let (status, content_type, text) = raw_post(&herd, "/v1/responses", &body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "text/event-stream");
    let ev = events(&text);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(
        names[names.len() - 4..],
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.incomplete"
        ]
    );
    assert!(
        names[4..names.len() - 4]
            .iter()
            .all(|n| *n == "response.output_text.delta")
    );
    for (i, (name, data)) in ev.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    let done = &ev.last().unwrap().1["response"];
    assert_eq!(done["status"], "incomplete");
    assert_eq!(done["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(done["usage"]["output_tokens"], 12);
    let id = done["id"].as_str().unwrap();

    // Stored as answered.
    let (status, stored) = herd.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(&stored, done);
    let (status, items) = herd.get(&format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(status, 200);
    assert_eq!(items["data"][0]["content"][0]["text"], "Name three colors.");
    assert_eq!(items["has_more"], false);
    let deleted = herd
        .http
        .delete(format!("{}/v1/responses/{id}", herd.url))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    let (status, err) = herd.get(&format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["code"], "response_not_found");

    // store: false keeps nothing; previous_response_id must exist.
    let (status, unstored) = herd
        .post(
            "/v1/responses",
            &json!({"model": MODEL, "input": "Hi", "max_output_tokens": 2, "store": false}),
        )
        .await;
    assert_eq!(status, 200, "{unstored}");
    assert_eq!(unstored["store"], false);
    let (status, _) = herd
        .get(&format!(
            "/v1/responses/{}",
            unstored["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 404);
    let (status, err) = herd
        .post(
            "/v1/responses",
            &json!({"model": MODEL, "input": "Hi", "previous_response_id": "resp_nope"}),
        )
        .await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["param"], "previous_response_id");
    let (status, err) = herd
        .post(
            "/v1/responses",
            &json!({"model": MODEL, "input": "Hi", "tools": [{"type": "web_search"}]}),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["param"], "tools[0].type");
}
