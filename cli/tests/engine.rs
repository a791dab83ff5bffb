//! The worker engine through the gateway: continuous batching across slots,
//! prompt-cache reuse, embeddings and structured output, on the real model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use common::scrape::{Scrape, scrape_text};
use common::{Herd, MODEL, assert_error, chat};
use serde_json::{Value, json};

fn content(body: &Value) -> String {
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn eight_streams_on_four_slots_batch_and_match_solo_runs() {
    let herd = Herd::start(4).await;
    let prompts: Vec<String> = (0..8)
        .map(|i| format!("Write a short sentence about the number {i}."))
        .collect();
    // Each request alone first: the reference answers.
    let mut solo = Vec::new();
    for p in &prompts {
        let (status, body) = herd.post("/v1/chat/completions", &chat(p, 24)).await;
        assert_eq!(status, 200, "{body}");
        solo.push(content(&body));
    }

    // All eight at once, streaming, while watching the worker's slots.
    let done = Arc::new(AtomicBool::new(false));
    let max_busy = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (done, max_busy) = (done.clone(), max_busy.clone());
        let url = herd.url.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !done.load(Ordering::Acquire) {
                let status: Value = http
                    .get(format!("{url}/herd/v1/status"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let busy = status["workers"][0]["status"]["slots_busy"]
                    .as_u64()
                    .unwrap();
                max_busy.fetch_max(busy, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let streams = prompts.iter().map(|p| {
        let mut body = chat(p, 24);
        body["stream"] = json!(true);
        let herd = &herd;
        async move {
            let events = herd.stream("/v1/chat/completions", &body).await;
            assert_eq!(events.last().unwrap(), "[DONE]");
            events[..events.len() - 1]
                .iter()
                .map(|e| serde_json::from_str::<Value>(e).unwrap())
                .filter_map(|c| {
                    c["choices"][0]["delta"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect::<String>()
        }
    });
    let together = futures::future::join_all(streams).await;
    done.store(true, Ordering::Release);
    watcher.await.unwrap();

    assert_eq!(
        max_busy.load(Ordering::Acquire),
        4,
        "four slots ran at once"
    );
    for (i, (alone, batched)) in solo.iter().zip(&together).enumerate() {
        assert_eq!(
            alone, batched,
            "prompt {i}: batched text differs from the solo run"
        );
    }
    let status = herd.worker_status().await;
    assert_eq!(status["generations"]["completed"], 16);
    assert_eq!(status["slots_busy"], 0);
}

#[tokio::test]
async fn shared_system_prompt_is_served_from_the_cache() {
    let herd = Herd::start(2).await;
    let system = "You are a careful assistant for a shipping company. ".repeat(12);
    let ask = |question: &str| {
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ],
            "temperature": 0,
            "max_tokens": 4,
        })
    };
    let (_, first) = herd
        .post("/v1/chat/completions", &ask("Where is my parcel?"))
        .await;
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let (_, second) = herd
        .post("/v1/chat/completions", &ask("Can I change the address?"))
        .await;
    let prompt = second["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached > 100 && cached < prompt,
        "cached {cached} of {prompt}"
    );
    // Reuse does not change the answer.
    let (_, again) = herd
        .post("/v1/chat/completions", &ask("Where is my parcel?"))
        .await;
    assert_eq!(content(&again), content(&first));
}

/// The answer of a prompt whose KV cells (all but its last token) are
/// reused, restored or not, compared with one computed whole: llama.cpp's
/// numerics differ between a whole-prompt batch and a one-token step, so
/// a greedy answer may differ too; the references below are answers served
/// from the same cells in the slot itself.
fn chat_about(topic: &str, max_tokens: u32) -> Value {
    json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": format!("You answer questions about {topic}. ").repeat(10)},
            {"role": "user", "content": "What matters most?"},
        ],
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

fn cached_tokens(body: &Value) -> u64 {
    body["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

/// One slot, two conversations taking turns: A cuts B's cells from the slot
/// and B cuts A's. The third request (A again) is served from the host-memory
/// prompt cache with the prompt cache on, and computed whole with it off.
#[tokio::test]
async fn a_prompt_cut_from_its_slot_is_restored_from_host_memory() {
    let (a, b) = (
        chat_about("ship engines", 6),
        chat_about("garden plants", 6),
    );
    let mut restored = String::new();
    for cache in ["64MiB", "0"] {
        let herd = Herd::start_with(&["--parallel", "1", "--prompt-cache", cache]).await;
        let (status, first) = herd.post("/v1/chat/completions", &a).await;
        assert_eq!(status, 200, "{first}");
        let (_, other) = herd.post("/v1/chat/completions", &b).await;
        assert!(cached_tokens(&other) < 10, "{other}");
        let (_, again) = herd.post("/v1/chat/completions", &a).await;
        let prompt = again["usage"]["prompt_tokens"].as_u64().unwrap();
        let text = scrape_text(&herd.http, &format!("{}/metrics", herd.url)).await;
        let held = Scrape::parse(&text).get(&format!(
            "herd_worker_prompt_cache_bytes{{model=\"{MODEL}\"}}"
        ));
        if cache == "0" {
            // Only the chat template's opening is shared with the other
            // conversation's cells.
            assert!(cached_tokens(&again) < 10, "{again}");
            assert_eq!(held, 0.0, "{text}");
            // A once more: now from the slot's own cells, as many as were
            // restored above.
            let (_, in_slot) = herd.post("/v1/chat/completions", &a).await;
            assert_eq!(cached_tokens(&in_slot), prompt - 1, "{in_slot}");
            assert_eq!(restored, content(&in_slot), "restored cells, same answer");
        } else {
            // All but the last token, which is computed for its logits.
            assert_eq!(cached_tokens(&again), prompt - 1, "{again}");
            // Both conversations' states (~23 KB a token for SmolLM2).
            assert!(held > (prompt * 20_000) as f64, "{held}");
            assert!(held <= (64 << 20) as f64, "{held}");
            restored = content(&again);
        }
    }
}

/// Two conversations at once on 2 slots, then each again alone: with the
/// host cache each request takes the lowest free slot, and the cells of the
/// other slot are brought to it through the cache, so both are served from
/// cells as they are without the cache (from their own slots).
#[tokio::test]
async fn a_prompt_held_by_another_free_slot_is_brought_to_the_one_taken() {
    let (a, b) = (chat_about("rivers", 4), chat_about("violins", 4));
    let mut answers = Vec::new();
    for cache in ["64MiB", "0"] {
        let herd = Herd::start_with(&["--parallel", "2", "--prompt-cache", cache]).await;
        let (first_a, first_b) = tokio::join!(
            herd.post("/v1/chat/completions", &a),
            herd.post("/v1/chat/completions", &b)
        );
        assert_eq!((first_a.0, first_b.0), (200, 200));
        let mut run = Vec::new();
        for body in [&a, &b] {
            let (_, again) = herd.post("/v1/chat/completions", body).await;
            let prompt = again["usage"]["prompt_tokens"].as_u64().unwrap();
            assert_eq!(cached_tokens(&again), prompt - 1, "cache {cache}: {again}");
            run.push(content(&again));
        }
        answers.push(run);
    }
    assert_eq!(answers[0], answers[1], "with and without the host cache");
}

fn vectors(body: &Value) -> Vec<Vec<f64>> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, item)| {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn embeddings_are_stable_normalised_and_ordered() {
    let herd = Herd::start(1).await;
    let texts = [
        "The cat sat on the mat.",
        "Stock markets fell today.",
        "A kitten rests on a rug.",
    ];
    let (status, single) = herd
        .post(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": texts[0]}),
        )
        .await;
    assert_eq!(status, 200, "{single}");
    assert_eq!(single["object"], "list");
    assert_eq!(single["model"], MODEL);
    let a = vectors(&single).remove(0);
    assert_eq!(a.len(), 576, "SmolLM2-135M has 576 dimensions");
    assert!((dot(&a, &a) - 1.0).abs() < 1e-4, "cosine(a, a) = 1");
    assert!(single["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let (_, batch) = herd
        .post("/v1/embeddings", &json!({"model": MODEL, "input": texts}))
        .await;
    let batch = vectors(&batch);
    assert_eq!(batch.len(), 3);
    assert!(
        batch[0].iter().zip(&a).all(|(x, y)| (x - y).abs() < 1e-4),
        "same input, same vector"
    );
    // Order is kept: each vector is closest to its own single embedding.
    for (i, text) in texts.iter().enumerate() {
        let (_, one) = herd
            .post("/v1/embeddings", &json!({"model": MODEL, "input": [text]}))
            .await;
        let one = vectors(&one).remove(0);
        assert!(dot(&one, &batch[i]) > 0.9999, "input {i} out of order");
    }

    let (_, b64) = herd
        .post(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": texts[0], "encoding_format": "base64"}),
        )
        .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f64> = bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect();
    assert!(decoded.iter().zip(&a).all(|(x, y)| (x - y).abs() < 1e-6));

    let (s, b) = herd
        .post(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": "x", "dimensions": 8}),
        )
        .await;
    assert_eq!(assert_error(s, &b, 400)["param"], "dimensions");
    let (s, b) = herd
        .post(
            "/v1/embeddings",
            &json!({"model": MODEL, "input": [[999999999]]}),
        )
        .await;
    assert_error(s, &b, 400);
}

/// A small JSON Schema validator for the schema below.
fn valid_person(v: &Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    obj.len() == 3
        && obj
            .get("name")
            .is_some_and(|n| n.as_str().is_some_and(|s| s.len() <= 20))
        && obj.get("age").is_some_and(Value::is_u64)
        && obj
            .get("city")
            .and_then(Value::as_str)
            .is_some_and(|c| ["Paris", "Tokyo", "Lima"].contains(&c))
}

#[tokio::test]
async fn json_schema_output_always_validates() {
    let herd = Herd::start(2).await;
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"enum": ["Paris", "Tokyo", "Lima"]},
        },
        "required": ["name", "age", "city"],
        "additionalProperties": false,
    });
    let requests = (0..10u64).map(|seed| {
        let herd = &herd;
        let schema = schema.clone();
        async move {
            let body = json!({
                "model": MODEL,
                "messages": [{"role": "user", "content": "Invent a person."}],
                "temperature": 0.9,
                "seed": seed,
                "max_tokens": 120,
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "person", "schema": schema}},
            });
            let (status, resp) = herd.post("/v1/chat/completions", &body).await;
            assert_eq!(status, 200, "{resp}");
            let text = content(&resp);
            let parsed: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("seed {seed}: not JSON ({e}): {text}"));
            assert!(
                valid_person(&parsed),
                "seed {seed}: does not match the schema: {text}"
            );
        }
    });
    futures::future::join_all(requests).await;

    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Describe a dog as JSON."}],
        "temperature": 0,
        "max_tokens": 120,
        "response_format": {"type": "json_object"},
    });
    let (_, resp) = herd.post("/v1/chat/completions", &body).await;
    let text = content(&resp);
    assert!(text.trim_start().starts_with('{'), "{text}");
    // This small model tends to loop inside the object, so the text may be
    // cut by max_tokens; the grammar still guarantees it never breaks JSON.
    match (
        resp["choices"][0]["finish_reason"].as_str(),
        serde_json::from_str::<Value>(&text),
    ) {
        (Some("stop"), Ok(v)) => assert!(v.is_object()),
        (Some("length"), Err(e)) => assert!(e.is_eof(), "not a JSON prefix ({e}): {text}"),
        (Some("length"), Ok(v)) => assert!(v.is_object()),
        (reason, parsed) => panic!("{reason:?} {parsed:?}: {text}"),
    }
}

fn weather_tools() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"],
                "additionalProperties": false,
            },
        },
    }, {
        "type": "function",
        "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}},
    }])
}

fn assert_weather_call(call: &Value) -> String {
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{args}");
    call["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tool_choice_forces_a_parsable_tool_call_and_results_are_accepted() {
    let herd = Herd::start(2).await;
    let question = json!({"role": "user", "content": "What is the weather in Paris?"});
    let request = |choice: Value| {
        json!({
            "model": MODEL,
            "messages": [question],
            "tools": weather_tools(),
            "tool_choice": choice,
            "temperature": 0,
            "max_tokens": 60,
        })
    };
    let named = json!({"type": "function", "function": {"name": "get_weather"}});
    for choice in [json!("required"), named.clone()] {
        let (status, body) = herd
            .post("/v1/chat/completions", &request(choice.clone()))
            .await;
        assert_eq!(status, 200, "{body}");
        let choice0 = &body["choices"][0];
        assert_eq!(choice0["finish_reason"], "tool_calls", "{body}");
        assert!(choice0["message"]["content"].is_null());
        if choice == named {
            assert_weather_call(&choice0["message"]["tool_calls"][0]);
        } else {
            let name = choice0["message"]["tool_calls"][0]["function"]["name"]
                .as_str()
                .unwrap();
            assert!(["get_weather", "get_time"].contains(&name), "{name}");
        }
    }

    // Streaming: the call arrives as a delta.tool_calls chunk.
    let mut streamed = request(named.clone());
    streamed["stream"] = json!(true);
    let events = herd.stream("/v1/chat/completions", &streamed).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let call_chunk = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"].get("tool_calls").is_some())
        .expect("a tool_calls chunk");
    assert_eq!(
        call_chunk["choices"][0]["delta"]["tool_calls"][0]["index"],
        0
    );
    let id = assert_weather_call(&call_chunk["choices"][0]["delta"]["tool_calls"][0]);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // The tool's result goes back in a follow-up, and the model answers.
    let follow_up = json!({
        "model": MODEL,
        "messages": [
            question,
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": id, "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": id, "content": "18 degrees and sunny"},
        ],
        "tools": weather_tools(),
        "temperature": 0,
        "max_tokens": 60,
    });
    let (status, body) = herd.post("/v1/chat/completions", &follow_up).await;
    assert_eq!(status, 200, "{body}");
    let reason = body["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(["stop", "tool_calls", "length"].contains(&reason), "{body}");
}
