//! A bounded property test against a running `herd serve` (SmolLM2, small
//! context so every generation is short): random mutations of valid
//! requests, on every endpoint, never get a 5xx or a closed connection,
//! and the server still answers a normal request afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Herd, MODEL, chat};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const SEEDS: [(&str, &str); 9] = [
    (
        "/v1/chat/completions",
        r##"{"model":"ai/smollm2","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"max_tokens":4,"temperature":0,"stop":["\n"],"seed":1}"##,
    ),
    (
        "/v1/chat/completions",
        r##"{"model":"ai/smollm2","messages":[{"role":"user","content":"Weather?"}],"max_tokens":24,"stream":true,"stream_options":{"include_usage":true},"tools":[{"type":"function","function":{"name":"w","parameters":{"type":"object","properties":{"city":{"$ref":"#/$defs/C"}},"required":["city"],"$defs":{"C":{"type":"string","maxLength":9}}}}}],"tool_choice":"required"}"##,
    ),
    (
        "/v1/chat/completions",
        r##"{"model":"ai/smollm2","messages":[{"role":"user","content":"JSON"}],"max_tokens":16,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object","properties":{"n":{"type":"integer","minimum":0,"maximum":9},"s":{"type":"string","pattern":"^[a-c]{1,3}$"}},"required":["n","s"]}}}}"##,
    ),
    (
        "/v1/completions",
        r##"{"model":"ai/smollm2","prompt":"Once upon","max_tokens":4,"temperature":0.7,"top_p":0.9}"##,
    ),
    (
        "/v1/embeddings",
        r##"{"model":"ai/smollm2","input":["a b",[1,2,3]],"encoding_format":"float"}"##,
    ),
    (
        "/v1/messages",
        r##"{"model":"ai/smollm2","max_tokens":8,"system":[{"type":"text","text":"Be brief."}],"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"w","input":{"city":"x"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"sun"}]}],"tools":[{"name":"w","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto"},"stream":true}"##,
    ),
    (
        "/api/chat",
        r##"{"model":"ai/smollm2","messages":[{"role":"user","content":"Hi"}],"options":{"num_predict":4,"temperature":0,"stop":["\n"]},"format":{"type":"object","properties":{"a":{"type":"integer"}}},"keep_alive":"5m"}"##,
    ),
    (
        "/api/generate",
        r##"{"model":"ai/smollm2","prompt":"Once upon","system":"Be brief.","stream":false,"options":{"num_predict":4,"seed":1}}"##,
    ),
    (
        "/v1/responses",
        r##"{"model":"ai/smollm2","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"Hi"}]},{"type":"function_call","call_id":"c1","name":"w","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"sun"}],"tools":[{"type":"function","name":"w","parameters":{"type":"object"}}],"max_output_tokens":8,"stream":true}"##,
    ),
];

const TOKENS: [&str; 26] = [
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "null",
    "true",
    "-1",
    "0",
    "1e999",
    "99999999999",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"role\"",
    "\"content\"",
    "\"type\"",
    "\"max_tokens\":",
    "\"stream\":true,",
    "\"$ref\":\"#/x\",",
    "\"pattern\":\"^[z-a]$\",",
    "\"minimum\":9,",
    "[[99999999]]",
    "\"ünï\"",
    "\"tool_choice\":\"required\",",
];

fn mutate(seed: &str, edits: &[(u16, u8, bool)]) -> Vec<u8> {
    let mut bytes = seed.as_bytes().to_vec();
    for (at, pick, delete) in edits {
        if bytes.is_empty() {
            break;
        }
        let at = usize::from(*at) % bytes.len();
        if *delete {
            let end = (at + usize::from(*pick % 8) + 1).min(bytes.len());
            bytes.drain(at..end);
        } else {
            let token = TOKENS[usize::from(*pick) % TOKENS.len()];
            bytes.splice(at..at, token.bytes());
        }
    }
    bytes
}

#[test]
fn mutated_requests_never_get_a_5xx_or_a_closed_connection() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let herd = rt.block_on(Herd::start_with(&[
        "--parallel",
        "2",
        "--context-size",
        "256",
    ]));
    let mut runner = TestRunner::new(Config {
        cases: 60,
        max_shrink_iters: 0,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..SEEDS.len(),
        proptest::collection::vec((any::<u16>(), any::<u8>(), any::<bool>()), 1..6),
    );
    runner
        .run(&strategy, |(seed, edits)| {
            let (path, body) = SEEDS[seed];
            let body = mutate(body, &edits);
            rt.block_on(async {
                let resp = herd
                    .http
                    .post(format!("{}{path}", herd.url))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        TestCaseError::fail(format!(
                            "no answer ({e}) to {}",
                            String::from_utf8_lossy(&body)
                        ))
                    })?;
                let status = resp.status().as_u16();
                let text = resp.text().await.map_err(|e| {
                    TestCaseError::fail(format!(
                        "connection closed mid-answer ({e}): {}",
                        String::from_utf8_lossy(&body)
                    ))
                })?;
                prop_assert!(
                    status < 500,
                    "{status} {text} for {}",
                    String::from_utf8_lossy(&body)
                );
                if status >= 400 {
                    let err: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {text}")))?;
                    // OpenAI's and Anthropic's shapes carry `error.message`;
                    // Ollama's is `{"error": "…"}`.
                    prop_assert!(
                        err["error"]["message"].is_string() || err["error"].is_string(),
                        "{text}"
                    );
                }
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(async {
        let (status, body) = herd.post("/v1/chat/completions", &chat("Say hi.", 4)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["model"], MODEL);
    });
}
