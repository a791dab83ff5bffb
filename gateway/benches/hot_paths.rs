//! Hot pure paths of a request: parsing an OpenAI chat body into the worker's
//! `GenerateRequest`, encoding one streamed SSE chunk, and picking a worker
//! among 100 with the routing policy.
//!
//! `cargo bench -p herd-gateway --bench hot_paths`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_gateway::openai::request::{Endpoint, parse_chat};
use herd_gateway::openai::response::{ChunkKind, ResponseMeta, chunk};
use herd_gateway::openai::sse;
use herd_gateway::routing::{LeastBusy, RoutingPolicy};
use herd_gateway::workers::{ModelRoute, Snapshot, WorkerView};

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

/// 100 healthy workers, each serving 4 of 10 models with 4..12 free slots.
fn pool() -> Snapshot {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let workers = (0..100)
        .map(|w| {
            let client = herd_proto::v1::worker_client::WorkerClient::new(
                tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
            );
            let models = (0..4)
                .map(|m| {
                    std::sync::Arc::new(ModelRoute {
                        status: herd_proto::v1::ModelStatus {
                            name: format!("model-{}", (w + m * 3) % 10),
                            slots_total: 16,
                            loaded: true,
                            ..Default::default()
                        },
                        slots: std::sync::Arc::new(tokio::sync::Semaphore::new(4 + (w * 7) % 9)),
                        waiting: Default::default(),
                    })
                })
                .collect();
            std::sync::Arc::new(WorkerView {
                id: format!("worker-{w:03}"),
                endpoint: String::new(),
                client: Some(client),
                healthy: true,
                status: None,
                models,
            })
        })
        .collect();
    Snapshot { workers }
}

fn pick(c: &mut Criterion) {
    let snapshot = pool();
    c.bench_function("routing_pick/least_busy_100_workers", |b| {
        b.iter(|| {
            LeastBusy
                .pick(black_box(&snapshot), black_box("model-7"))
                .unwrap()
        })
    });
}

criterion_group!(benches, parse, encode, pick);
criterion_main!(benches);
