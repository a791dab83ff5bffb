//! Hot pure paths of a request: parsing an OpenAI chat body into the worker's
//! `GenerateRequest`, encoding one streamed SSE chunk, and one scheduling
//! decision (queue, rank 40 replicas among 100 workers, grant, release) per
//! routing policy.
//!
//! `cargo bench -p herd-gateway --bench hot_paths`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use herd_gateway::context::RequestContext;
use herd_gateway::openai::request::{Endpoint, parse_chat};
use herd_gateway::openai::response::{ChunkKind, ResponseMeta, chunk};
use herd_gateway::openai::sse;
use herd_gateway::routing::PolicyKind;
use herd_gateway::scheduler::core::{Effect, Enqueue, Limits, Outcome, SchedulerCore, Settings};
use herd_gateway::scheduler::{KeepAlive, ModelKey};
use herd_proto::v1 as pb;

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

/// A scheduler over 100 healthy workers, each running 4 of 10 models with
/// 16 slots (some busy), under `policy`.
fn pool(policy: PolicyKind) -> SchedulerCore {
    let mut core = SchedulerCore::new(
        Settings {
            aging: Duration::from_secs(10),
            replica_after: Duration::from_secs(2),
            evict_hold: Duration::from_secs(1),
            keep_alive: KeepAlive::Forever,
        },
        policy.build(),
    );
    let now = Instant::now();
    for w in 0..100u32 {
        let models = (0..4)
            .map(|m| pb::ModelStatus {
                name: format!("model-{}", (w + m * 3) % 10),
                loaded: true,
                slots_total: 16,
                slots_busy: (w * 7) % 9,
                memory_bytes: 1 << 30,
                ..Default::default()
            })
            .collect();
        let status = pb::StatusResponse {
            revision: 1,
            memory_limit_bytes: 8 << 30,
            models,
            ..Default::default()
        };
        core.worker_status(&format!("worker-{w:03}").into(), &status, now);
    }
    core.take_effects();
    core
}

fn request(prefix_key: u64) -> Arc<RequestContext> {
    let mut ctx =
        RequestContext::from_headers("r".into(), "model-7".into(), &http::HeaderMap::new(), true)
            .unwrap();
    ctx.prefix_key = Some(prefix_key);
    Arc::new(ctx)
}

/// One scheduling decision: a request for a model with 40 replicas is
/// queued, granted a slot by the policy, and its slot given back.
fn decide(core: &mut SchedulerCore, ctx: &Arc<RequestContext>) {
    let key = ModelKey::of(&pb::ModelStatus {
        name: "model-7".into(),
        ..Default::default()
    });
    let now = Instant::now();
    core.enqueue(
        Enqueue {
            model: key,
            ctx: ctx.clone(),
            limits: Limits {
                max_queue: 1024,
                keep_alive: None,
            },
            ticket: None,
        },
        now,
    );
    let grant = match core.take_effects().pop() {
        Some(Effect::Granted { grant, .. }) => grant,
        other => panic!("not granted: {other:?}"),
    };
    core.release(&grant, Outcome::Done, Duration::from_millis(5), now);
    core.take_effects();
}

fn schedule(c: &mut Criterion) {
    for policy in [
        PolicyKind::PrefixAffinity,
        PolicyKind::LeastLoaded,
        PolicyKind::RoundRobin,
    ] {
        let mut core = pool(policy);
        let contexts: Vec<_> = (0..64).map(|k| request(k * 0x9e37_79b9)).collect();
        let mut i = 0;
        c.bench_function(&format!("schedule/{policy:?}_100_workers"), |b| {
            b.iter(|| {
                i = (i + 1) % contexts.len();
                decide(black_box(&mut core), &contexts[i]);
            })
        });
        // Criterion reports means; the target is on the tail: time each
        // decision and print p50 / p99 / max.
        let mut samples: Vec<Duration> = (0..20_000)
            .map(|n| {
                let started = Instant::now();
                decide(&mut core, &contexts[n % contexts.len()]);
                started.elapsed()
            })
            .collect();
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        println!(
            "schedule/{policy:?}_100_workers: p50 {:?}  p99 {:?}  max {:?} (20000 decisions)",
            at(0.5),
            at(0.99),
            samples[samples.len() - 1]
        );
    }
}

/// The API-key steps of a request with keys on: the route check (hash the
/// presented key, look it up among 1,000 keys), the model allow-list, and
/// the limits (admit, then drop the permit).
fn keys(c: &mut Criterion) {
    use herd_gateway::auth::{Auth, KeyRecord, KeysFile, Limits, Role, keys};
    use herd_gateway::http::routes::Route;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let mut file = KeysFile::default();
    let mut presented = String::new();
    for i in 0..1000 {
        let key = keys::generate();
        let limits = Limits {
            requests_per_minute: None,
            tokens_per_minute: Some(1_000_000_000),
            max_concurrent: Some(1000),
        };
        let models = vec!["ai/*".to_owned(), "team/model-?".to_owned()];
        file.keys.push(KeyRecord::new(
            &format!("team-{i}"),
            Role::User,
            &key,
            models,
            limits,
        ));
        presented = key;
    }
    file.save(&path).unwrap();
    let auth = Auth::from_file(&path, "docker.io").unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "authorization",
        http::HeaderValue::from_str(&format!("Bearer {presented}")).unwrap(),
    );
    let step = || {
        let key = auth
            .check(&Route::ChatCompletions, &headers)
            .unwrap()
            .unwrap();
        assert!(key.may_use("ai/smollm2", "docker.io"));
        drop(key.admit().unwrap());
    };
    c.bench_function("keys/check_allow_admit_1000_keys", |b| b.iter(step));
    let mut samples: Vec<Duration> = (0..20_000)
        .map(|_| {
            let started = Instant::now();
            step();
            started.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "keys/check_allow_admit_1000_keys: p50 {:?}  p99 {:?}  max {:?} (20000 requests)",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples[samples.len() - 1]
    );
}

/// What one streamed request of 16 tokens records in the gateway's
/// metrics (the account step, queue wait, TTFT, 15 inter-token gaps, token
/// counts), with the labels already known: the cost metrics add per request.
fn metrics(c: &mut Criterion) {
    use herd_gateway::metrics::GatewayMetrics;
    let metrics = GatewayMetrics::new();
    let step = || {
        metrics.queue_waited("ai/smollm2", Duration::from_micros(120));
        let generation = metrics.generation("ai/smollm2");
        generation.first_token(Duration::from_millis(40));
        for _ in 0..15 {
            generation.next_token(Duration::from_millis(8));
        }
        metrics.tokens("ai/smollm2", 31, 16, 0);
        metrics.request_done(
            "chat_completions",
            "ai/smollm2",
            Some(200),
            Duration::from_millis(170),
        );
    };
    c.bench_function("metrics/one_request_16_tokens", |b| b.iter(step));
    let mut samples: Vec<Duration> = (0..20_000)
        .map(|_| {
            let started = Instant::now();
            step();
            started.elapsed()
        })
        .collect();
    samples.sort();
    println!(
        "metrics/one_request_16_tokens: p50 {:?}  p99 {:?}  max {:?} (20000 requests)",
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
        samples[samples.len() - 1]
    );
}

criterion_group!(benches, parse, encode, schedule, keys, metrics);
criterion_main!(benches);
