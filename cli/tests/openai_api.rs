//! End to end through the real binaries: HTTP client → gateway (pingora) →
//! gRPC → worker → llama.cpp on SmolLM2.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Herd, MODEL, assert_error, chat};
use serde_json::{Value, json};

/// Concatenated content deltas, the finish reason, and the usage chunk of a
/// streamed chat.
fn collect_stream(events: &[String]) -> (String, String, Option<Value>) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("chunk is JSON"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    let mut finish = String::new();
    let mut usage = None;
    let id = chunks[0]["id"].clone();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id, "every chunk shares the id");
        assert_eq!(c["model"], MODEL);
        if let Some(choice) = c["choices"].get(0) {
            if let Some(t) = choice["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = f.to_owned();
            }
        } else {
            usage = Some(c["usage"].clone());
        }
    }
    (text, finish, usage)
}

#[tokio::test]
async fn chat_streaming_matches_non_streaming_and_usage_adds_up() {
    let herd = Herd::start(2).await;
    let body = chat("Name three colors.", 24);
    let (status, full) = herd.post("/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["object"], "chat.completion");
    assert_eq!(full["model"], MODEL);
    assert!(full["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let message = &full["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    let text = message["content"].as_str().unwrap();
    assert!(!text.is_empty());
    let usage = &full["usage"];
    let (p, c, t) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
        usage["total_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c > 0);
    assert_eq!(p + c, t);

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let events = herd.stream("/v1/chat/completions", &stream_body).await;
    let (streamed, finish, stream_usage) = collect_stream(&events);
    assert_eq!(
        streamed, text,
        "streamed deltas must equal the non-streamed text"
    );
    assert_eq!(
        finish,
        full["choices"][0]["finish_reason"].as_str().unwrap()
    );
    let stream_usage = stream_usage.expect("usage chunk");
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(stream_usage[key], usage[key], "{key}");
    }
}

#[tokio::test]
async fn max_tokens_gives_length_with_exactly_that_many_tokens() {
    let herd = Herd::start(1).await;
    for max in [1u64, 7] {
        let (status, body) = herd
            .post(
                "/v1/chat/completions",
                &chat("Write a long story about a dragon.", max as u32),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], max);
    }
    // max_completion_tokens is the newer name for the same thing.
    let mut req = chat("Write a long story about a dragon.", 3);
    req.as_object_mut().unwrap().remove("max_tokens");
    req["max_completion_tokens"] = json!(3);
    let (_, body) = herd.post("/v1/chat/completions", &req).await;
    assert_eq!(body["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn stop_sequence_cuts_the_text_and_finishes_with_stop() {
    let herd = Herd::start(1).await;
    let prompt = "Write one sentence about the sea.";
    let (_, reference) = herd.post("/v1/chat/completions", &chat(prompt, 40)).await;
    let reference = reference["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    // Stop on three characters from the middle of the reference answer.
    let chars: Vec<char> = reference.chars().collect();
    assert!(chars.len() >= 8, "reference too short: {reference:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let cut = reference.find(&stop).unwrap();

    let mut req = chat(prompt, 40);
    req["stop"] = json!([stop]);
    let (status, body) = herd.post("/v1/chat/completions", &req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["choices"][0]["message"]["content"], reference[..cut]);

    req["stream"] = json!(true);
    let events = herd.stream("/v1/chat/completions", &req).await;
    let (streamed, finish, usage) = collect_stream(&events);
    assert_eq!(streamed, reference[..cut]);
    assert_eq!(finish, "stop");
    assert!(usage.is_none(), "no usage chunk unless asked for");
}

#[tokio::test]
async fn completions_endpoint_streaming_and_not() {
    let herd = Herd::start(1).await;
    let req = json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 6,
                     "temperature": 0});
    let (status, body) = herd.post("/v1/completions", &req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    let text = body["choices"][0]["text"].as_str().unwrap().to_owned();
    assert_eq!(body["usage"]["completion_tokens"], 6);

    let mut stream_req = req.clone();
    stream_req["stream"] = json!(true);
    let events = herd.stream("/v1/completions", &stream_req).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let mut streamed = String::new();
    for e in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(e).unwrap();
        assert_eq!(chunk["object"], "text_completion");
        streamed.push_str(chunk["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(streamed, text);
}

#[tokio::test]
async fn models_are_listed_under_every_prefix() {
    let herd = Herd::start(1).await;
    for prefix in ["", "/engines", "/engines/llama.cpp"] {
        let (status, body) = herd.get(&format!("{prefix}/v1/models")).await;
        assert_eq!(status, 200);
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"][0]["id"], MODEL);
        assert_eq!(body["data"][0]["object"], "model");
        let (status, body) = herd.get(&format!("{prefix}/v1/models/{MODEL}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], MODEL);
    }
    let (status, body) = herd.get("/v1/models/ai%2Fsmollm2").await;
    assert_eq!((status, body["id"].as_str()), (200, Some(MODEL)));
    let (status, body) = herd.get("/v1/models/ai/unknown:latest").await;
    assert_eq!(assert_error(status, &body, 404)["code"], "model_not_found");
    // Chat works through Docker Model Runner's paths too.
    let (status, _) = herd
        .post("/engines/llama.cpp/v1/chat/completions", &chat("Hi", 2))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let herd = Herd::start(1).await;
    let err = |status, body| assert_error(status, &body, 400);

    let (s, b) = herd
        .post_raw("/v1/chat/completions", b"{not json".to_vec())
        .await;
    assert_eq!(err(s, b)["code"], "invalid_json");

    let (s, b) = herd
        .post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(err(s, b)["param"], "model");

    let (s, b) = herd
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": "hi"}),
        )
        .await;
    assert_eq!(err(s, b)["param"], "messages");

    let mut req = chat("x", 1);
    req["temperature"] = json!("warm");
    let (s, b) = herd.post("/v1/chat/completions", &req).await;
    assert_eq!(err(s, b)["param"], "temperature");

    let mut req = chat("x", 1);
    req["n"] = json!(2);
    let (s, b) = herd.post("/v1/chat/completions", &req).await;
    assert_eq!(err(s, b)["param"], "n");

    let mut req = chat("x", 1);
    req["model"] = json!("ai/nope");
    let (s, b) = herd.post("/v1/chat/completions", &req).await;
    assert_eq!(assert_error(s, &b, 404)["code"], "model_not_found");

    let huge = vec![b' '; 11 * 1024 * 1024];
    let (s, b) = herd.post_raw("/v1/chat/completions", huge).await;
    assert_eq!(assert_error(s, &b, 413)["code"], "request_too_large");

    let (s, b) = herd
        .post("/engines/vllm/v1/chat/completions", &chat("x", 1))
        .await;
    let e = assert_error(s, &b, 404);
    assert!(e["message"].as_str().unwrap().contains("llama.cpp"), "{e}");

    let (s, b) = herd.get("/v1/chat/completions").await;
    assert_error(s, &b, 405);

    let (s, b) = herd.get("/v1/nothing-here").await;
    assert_error(s, &b, 404);

    let long = "word ".repeat(6000);
    let (s, b) = herd.post("/v1/chat/completions", &chat(&long, 1)).await;
    let e = assert_error(s, &b, 400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "messages");
    let body = json!({"model": MODEL, "prompt": long, "max_tokens": 1});
    let (s, b) = herd.post("/v1/completions", &body).await;
    let e = assert_error(s, &b, 400);
    assert_eq!(e["code"], "context_length_exceeded");
    assert_eq!(e["param"], "prompt");

    // Still healthy.
    let (s, b) = herd.post("/v1/chat/completions", &chat("Hi", 2)).await;
    assert_eq!(s, 200, "{b}");
}
