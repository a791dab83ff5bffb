//! Hot pure paths of a request: parsing an OpenAI chat body into the worker's
//! `GenerateRequest`, and encoding one streamed SSE chunk.
//!
//! `cargo bench -p herd-gateway --bench hot_paths`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_gateway::openai::request::{Endpoint, parse_chat};
use herd_gateway::openai::response::{ChunkKind, ResponseMeta, chunk};
use herd_gateway::openai::sse;

const SHORT: &[u8] = br#"{"model":"ai/smollm2","messages":[{"role":"user","content":"Write a haiku about a herd of llamas."}],"max_tokens":32,"stream":true,"stream_options":{"include_usage":true},"temperature":0.7,"seed":42}"#;

fn agent_body() -> Vec<u8> {
    let system = "You are a careful software engineering agent. ".repeat(100);
    let mut messages = vec![serde_json::json!({"role": "system", "content": system})];
    for i in 0..8 {
        messages.push(serde_json::json!({"role": "user", "content": format!("Turn {i}: look at the failing test and propose a fix.")}));
        messages.push(serde_json::json!({"role": "assistant", "content": "The test fails because the slot is freed after the final event; free it first."}));
    }
    serde_json::to_vec(&serde_json::json!({
        "model": "ai/smollm2", "messages": messages, "max_tokens": 256, "stream": true
    }))
    .unwrap()
}

fn parse(c: &mut Criterion) {
    c.bench_function("parse_chat/short", |b| {
        b.iter(|| parse_chat(black_box(SHORT)).unwrap())
    });
    let agent = agent_body();
    c.bench_function("parse_chat/agent_5kB_17_messages", |b| {
        b.iter(|| parse_chat(black_box(&agent)).unwrap())
    });
}

fn encode(c: &mut Criterion) {
    let meta = ResponseMeta {
        id: "chatcmpl-0123456789abcdef".into(),
        created: 1_795_000_000,
        model: "ai/smollm2".into(),
        endpoint: Endpoint::ChatCompletions,
    };
    c.bench_function("sse_chunk/text_token", |b| {
        b.iter(|| sse::event(&chunk(&meta, ChunkKind::Text(black_box(" llama")), true)))
    });
}

criterion_group!(benches, parse, encode);
criterion_main!(benches);
