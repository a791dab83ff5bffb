//! Anthropic Messages end to end through the real binaries on SmolLM2:
//! the message object, the exact streamed event sequence, tool use and its
//! round trip, count_tokens, and Anthropic's error shape.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Herd, MODEL};
use serde_json::{Value, json};

/// `(event name, data)` of an Anthropic stream.
async fn stream(herd: &Herd, path: &str, body: &Value) -> Vec<(String, Value)> {
    let resp = herd
        .http
        .post(format!("{}{path}", herd.url))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').expect("event and data lines");
            let name = name.strip_prefix("event: ").expect("event line").to_owned();
            let data = serde_json::from_str(data.strip_prefix("data: ").expect("data line"))
                .expect("data is JSON");
            (name, data)
        })
        .collect()
}

fn ask(content: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "max_tokens": max_tokens,
        "temperature": 0,
        "system": [{"type": "text", "text": "You are a helpful assistant."}],
        "messages": [{"role": "user", "content": content}],
    })
}

#[tokio::test]
async fn messages_plain_stream_count_tokens_and_errors() {
    let herd = Herd::start(2).await;
    let body = ask("Name three colors.", 16);
    let (status, msg) = herd.post("/v1/messages", &body).await;
    assert_eq!(status, 200, "{msg}");
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["model"], MODEL);
    assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(msg["content"][0]["type"], "text");
    let text = msg["content"][0]["text"].as_str().unwrap();
    assert!(!text.is_empty());
    assert!(["end_turn", "max_tokens"].contains(&msg["stop_reason"].as_str().unwrap()));
    let input_tokens = msg["usage"]["input_tokens"].as_u64().unwrap();
    assert!(input_tokens > 0 && msg["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // The same under Anthropic's and Docker's prefixes.
    for path in [
        "/anthropic/v1/messages",
        "/engines/v1/messages",
        "/engines/llama.cpp/v1/messages",
    ] {
        let (status, again) = herd.post(path, &body).await;
        assert_eq!(status, 200, "{path}: {again}");
        assert_eq!(again["content"][0]["text"], text, "{path}");
    }

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let events = stream(&herd, "/v1/messages", &stream_body).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(
        names[3..names.len() - 3]
            .iter()
            .all(|n| *n == "content_block_delta")
    );
    let mut streamed = String::new();
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
        if name == "content_block_delta" {
            assert_eq!(data["index"], 0);
            assert_eq!(data["delta"]["type"], "text_delta");
            streamed.push_str(data["delta"]["text"].as_str().unwrap());
        }
    }
    assert_eq!(streamed, text, "streamed deltas equal the whole answer");
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], msg["stop_reason"]);
    assert_eq!(
        delta["usage"]["output_tokens"],
        msg["usage"]["output_tokens"]
    );
    assert_eq!(
        events[0].1["message"]["id"].as_str().unwrap().len(),
        msg["id"].as_str().unwrap().len()
    );

    // count_tokens counts the prompt exactly as the generation did.
    let mut count_body = body.clone();
    count_body.as_object_mut().unwrap().remove("max_tokens");
    count_body.as_object_mut().unwrap().remove("temperature");
    let started = herd.worker_status().await["generations"]["started"].clone();
    let (status, count) = herd.post("/v1/messages/count_tokens", &count_body).await;
    assert_eq!(status, 200, "{count}");
    assert_eq!(count, json!({"input_tokens": input_tokens}));
    // Counted without generating (no slot taken).
    assert_eq!(
        herd.worker_status().await["generations"]["started"],
        started
    );

    // Errors in Anthropic's shape, naming the field.
    let cases = [
        (
            json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": 1024}}),
            400,
            "invalid_request_error",
            "thinking",
        ),
        (
            json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "frobnicate": 1}),
            400,
            "invalid_request_error",
            "frobnicate",
        ),
        (
            json!({"model": "ai/nothing", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
            "ai/nothing",
        ),
    ];
    for (body, want_status, kind, names) in cases {
        let (status, err) = herd.post("/v1/messages", &body).await;
        assert_eq!(status, want_status, "{err}");
        assert_eq!(err["type"], "error", "{err}");
        assert_eq!(err["error"]["type"], kind, "{err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(names),
            "{err}"
        );
    }
    let (status, err) = herd.post_raw("/v1/messages", b"{not json".to_vec()).await;
    assert_eq!((status, &err["type"]), (400, &json!("error")), "{err}");

    // The server still serves after all that.
    let (status, _) = herd.post("/v1/messages", &ask("Hi", 2)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn messages_tool_use_round_trip_plain_and_streamed() {
    let herd = Herd::start(1).await;
    let tools = json!([{
        "name": "get_weather",
        "description": "The current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }]);
    let body = json!({
        "model": MODEL,
        "max_tokens": 64,
        "temperature": 0,
        "tools": tools,
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
    });
    let (status, msg) = herd.post("/v1/messages", &body).await;
    assert_eq!(status, 200, "{msg}");
    assert_eq!(msg["stop_reason"], "tool_use", "{msg}");
    let call = msg["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .expect("a tool_use block")
        .clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"]["city"].is_string(), "{call}");

    // Streamed: the tool_use block arrives as start, input_json_delta, stop.
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let events = stream(&herd, "/v1/messages", &stream_body).await;
    let start = events
        .iter()
        .find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .expect("tool_use block start");
    let index = start.1["index"].clone();
    let json_delta = events
        .iter()
        .find(|(n, d)| n == "content_block_delta" && d["index"] == index)
        .expect("its delta");
    assert_eq!(json_delta.1["delta"]["type"], "input_json_delta");
    let input: Value =
        serde_json::from_str(json_delta.1["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input, call["input"]);
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "tool_use"
    );

    // The round trip: the tool's result goes back, the model answers.
    let follow = json!({
        "model": MODEL,
        "max_tokens": 24,
        "temperature": 0,
        "tools": tools,
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "Sunny, 24 C"}]},
        ],
    });
    let (status, answer) = herd.post("/v1/messages", &follow).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["usage"]["input_tokens"].as_u64().unwrap()
            > msg["usage"]["input_tokens"].as_u64().unwrap()
    );
    assert!(
        !answer["content"].as_array().unwrap().is_empty(),
        "{answer}"
    );
}
