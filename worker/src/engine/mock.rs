//! A mock engine for load tests and fault injection: no model, deterministic
//! text, configurable prefill time and token rate, and injected failures.
//! It keeps the real engine's contract — slots (refusing beyond them with
//! [`EngineError::Busy`]), the slot freed before `Finished`, cancellation by
//! token or by dropping the receiver — so a gateway cannot tell the two apart.
//! Never use it to claim a real-model result.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::engine::counters::Counters;
use crate::engine::slots::SlotPermit;
use crate::engine::{
    EmbedInput, Embeddings, Engine, EngineStatus, FinishReason, Finished, GenerationEvent,
    GenerationRequest, Input, ModelInfo,
};
use crate::error::EngineError;

/// Dimensions of the mock's embedding vectors.
const EMBEDDING_DIMS: usize = 16;

/// Words the mock "generates".
const WORDS: &[&str] = &[
    "herd", "llama", "token", "stream", "gateway", "worker", "slot", "model", "prompt", "cache",
    "batch", "decode", "sample", "reply", "agent", "turn", "fast", "quiet", "green", "river",
    "stone", "cloud", "paper", "light", "north", "south", "apple", "orange", "little", "bright",
    "simple", "steady",
];

/// How the mock behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// Model names served.
    pub models: Vec<String>,
    /// Concurrent generations per model.
    pub slots: u32,
    /// Context length per slot, in (mock) tokens.
    pub context_size: u32,
    /// Time before the first token.
    pub prefill: Duration,
    /// Generation speed per stream; 0 means as fast as possible.
    pub tokens_per_second: f64,
    /// Tokens generated when the request sets no `max_tokens`.
    pub default_max_tokens: u32,
    /// Fraction of admitted generations that fail before their first token
    /// (exact: the n-th generation fails when ⌊n·rate⌋ grows).
    pub error_rate: f64,
    /// Streams fail with an engine error after this many tokens.
    pub crash_after_tokens: Option<u32>,
    /// Streams stop emitting after this many tokens (until cancelled).
    pub stall_after_tokens: Option<u32>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            models: vec!["mock".into()],
            slots: 64,
            context_size: 8192,
            prefill: Duration::ZERO,
            tokens_per_second: 0.0,
            default_max_tokens: 16,
            error_rate: 0.0,
            crash_after_tokens: None,
            stall_after_tokens: None,
        }
    }
}

impl MockConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid = |m: &str| Err(EngineError::InvalidRequest(format!("mock engine: {m}")));
        if self.models.is_empty() || self.models.iter().any(|m| m.trim().is_empty()) {
            return invalid("`models` must name at least one non-empty model");
        }
        if self.slots == 0 {
            return invalid("`slots` must be at least 1");
        }
        if !self.tokens_per_second.is_finite() || self.tokens_per_second < 0.0 {
            return invalid("`tokens_per_second` must be a finite number ≥ 0");
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return invalid("`error_rate` must be between 0 and 1");
        }
        if self.default_max_tokens == 0 {
            return invalid("`default_max_tokens` must be at least 1");
        }
        Ok(())
    }

    fn token_interval(&self) -> Option<Duration> {
        (self.tokens_per_second > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / self.tokens_per_second))
    }
}

/// The mock engine.
#[derive(Debug)]
pub struct MockEngine {
    config: Arc<MockConfig>,
    busy: HashMap<String, Arc<AtomicU32>>,
    counters: Arc<Counters>,
    loaded_at_unix: i64,
}

impl MockEngine {
    pub fn new(config: MockConfig) -> Result<Self, EngineError> {
        config.validate()?;
        let busy = config
            .models
            .iter()
            .map(|m| (m.clone(), Arc::new(AtomicU32::new(0))))
            .collect();
        Ok(Self {
            config: Arc::new(config),
            busy,
            counters: Arc::new(Counters::default()),
            loaded_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        })
    }
}

/// Mock tokens of an input: one per four bytes, at least one.
fn prompt_tokens(input: &Input) -> u32 {
    let bytes: usize = match input {
        Input::Prompt(text) => text.len(),
        Input::Chat(messages) => messages.iter().map(|m| m.content.len() + 4).sum(),
    };
    u32::try_from(bytes / 4).unwrap_or(u32::MAX).max(1)
}

/// A seed from the request: the same seed, model and input give the same text.
fn text_seed(request: &GenerationRequest) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    request.model.hash(&mut h);
    request.sampling.seed.hash(&mut h);
    match &request.input {
        Input::Prompt(text) => text.hash(&mut h),
        Input::Chat(messages) => {
            for m in messages {
                m.role.hash(&mut h);
                m.content.hash(&mut h);
            }
        }
    }
    h.finish()
}

/// splitmix64: a tiny deterministic generator.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether the `n`-th (0-based) generation is one of the injected failures.
fn injected_failure(n: u64, rate: f64) -> bool {
    rate > 0.0 && ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
}

/// What one running generation needs.
struct Run {
    config: Arc<MockConfig>,
    counters: Arc<Counters>,
    events: UnboundedSender<GenerationEvent>,
    cancel: CancellationToken,
    slot: SlotPermit,
    seed: u64,
    max_tokens: u32,
    prompt_tokens: u32,
    fail_at_start: bool,
    accepted_at: Instant,
}

/// How a wait ended.
enum Wait {
    Elapsed,
    Cancelled,
}

impl Run {
    /// Sleeps `d` unless the generation is cancelled or its receiver is gone.
    async fn wait(&self, d: Option<Duration>) -> Wait {
        let sleep = async {
            match d {
                Some(d) if !d.is_zero() => tokio::time::sleep(d).await,
                _ => tokio::task::yield_now().await,
            }
        };
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Wait::Cancelled,
            () = self.events.closed() => Wait::Cancelled,
            () = sleep => Wait::Elapsed,
        }
    }

    /// Waits until the generation is cancelled or its receiver is gone.
    async fn stopped(&self) {
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = self.events.closed() => {}
        }
    }

    async fn run(self) {
        if let Wait::Cancelled = self.wait(Some(self.config.prefill)).await {
            return self.finish(FinishReason::Cancelled, 0, None);
        }
        if self.fail_at_start {
            return self.fail(EngineError::Internal("injected failure (mock)".into()));
        }
        let interval = self.config.token_interval();
        let started = Instant::now();
        let mut state = self.seed;
        let mut first_token_at = None;
        let mut generated = 0u32;
        while generated < self.max_tokens {
            if self.config.crash_after_tokens == Some(generated) {
                return self.fail(EngineError::Internal(format!(
                    "injected crash after {generated} tokens (mock)"
                )));
            }
            if self.config.stall_after_tokens == Some(generated) {
                self.stopped().await;
                return self.finish(FinishReason::Cancelled, generated, first_token_at);
            }
            // Tokens are due on a fixed schedule, so timer lateness does not
            // accumulate.
            let due = interval
                .map(|i| (started + i * (generated + 1)).saturating_duration_since(Instant::now()));
            if let Wait::Cancelled = self.wait(due).await {
                return self.finish(FinishReason::Cancelled, generated, first_token_at);
            }
            let word = WORDS[(next_random(&mut state) % WORDS.len() as u64) as usize];
            let text = if generated == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            generated += 1;
            first_token_at.get_or_insert_with(Instant::now);
            self.counters
                .tokens_generated
                .fetch_add(1, Ordering::Relaxed);
            if self
                .events
                .send(GenerationEvent::Delta { text, tokens: 1 })
                .is_err()
            {
                return self.finish(FinishReason::Cancelled, generated, first_token_at);
            }
        }
        self.finish(FinishReason::Length, generated, first_token_at);
    }

    fn fail(self, err: EngineError) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        drop(self.slot);
        let _ = self.events.send(GenerationEvent::Failed(err));
    }

    fn finish(self, reason: FinishReason, completion_tokens: u32, first: Option<Instant>) {
        self.counters.finished(reason);
        // Free the slot before the final event, as the real engine does.
        drop(self.slot);
        let now = Instant::now();
        let _ = self.events.send(GenerationEvent::Finished(Finished {
            reason,
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            cached_prompt_tokens: 0,
            time_to_first_token: first.unwrap_or(now) - self.accepted_at,
            total_time: now - self.accepted_at,
            tool_calls: Vec::new(),
        }));
    }
}

#[async_trait]
impl Engine for MockEngine {
    async fn generate(
        &self,
        request: GenerationRequest,
        events: UnboundedSender<GenerationEvent>,
        cancel: CancellationToken,
    ) -> Result<(), EngineError> {
        let accepted_at = Instant::now();
        let busy = self
            .busy
            .get(&request.model)
            .ok_or_else(|| EngineError::ModelNotFound(request.model.clone()))?;
        let prompt_tokens = prompt_tokens(&request.input);
        if prompt_tokens >= self.config.context_size {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens,
                context_size: self.config.context_size,
            });
        }
        let slot =
            SlotPermit::try_claim(busy, self.config.slots).ok_or_else(|| EngineError::Busy {
                model: request.model.clone(),
                slots: self.config.slots,
            })?;
        let n = self.counters.started.fetch_add(1, Ordering::Relaxed);
        let run = Run {
            config: self.config.clone(),
            counters: self.counters.clone(),
            events,
            cancel,
            slot,
            seed: text_seed(&request),
            max_tokens: request
                .max_tokens
                .unwrap_or(self.config.default_max_tokens)
                .min(self.config.context_size - prompt_tokens),
            prompt_tokens,
            fail_at_start: injected_failure(n, self.config.error_rate),
            accepted_at,
        };
        tokio::spawn(run.run());
        Ok(())
    }

    async fn embed(&self, model: &str, inputs: Vec<EmbedInput>) -> Result<Embeddings, EngineError> {
        if !self.busy.contains_key(model) {
            return Err(EngineError::ModelNotFound(model.to_owned()));
        }
        let mut prompt_tokens = 0u32;
        let vectors = inputs
            .iter()
            .map(|input| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                let tokens = match input {
                    EmbedInput::Text(t) => {
                        t.hash(&mut h);
                        u32::try_from(t.len() / 4).unwrap_or(u32::MAX).max(1)
                    }
                    EmbedInput::Tokens(t) => {
                        t.hash(&mut h);
                        u32::try_from(t.len()).unwrap_or(u32::MAX)
                    }
                };
                prompt_tokens = prompt_tokens.saturating_add(tokens);
                let mut state = h.finish();
                let v: Vec<f32> = (0..EMBEDDING_DIMS)
                    .map(|_| (next_random(&mut state) % 2001) as f32 / 1000.0 - 1.0)
                    .collect();
                let norm = v
                    .iter()
                    .map(|x| x * x)
                    .sum::<f32>()
                    .sqrt()
                    .max(f32::EPSILON);
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect();
        Ok(Embeddings {
            vectors,
            prompt_tokens,
        })
    }

    fn status(&self) -> EngineStatus {
        let mut models: Vec<ModelInfo> = self
            .busy
            .iter()
            .map(|(name, busy)| ModelInfo {
                name: name.clone(),
                path: format!("mock://{name}"),
                size_bytes: 0,
                context_size: self.config.context_size,
                slots_total: self.config.slots,
                slots_busy: busy.load(Ordering::Acquire),
                loaded: true,
                architecture: "mock".into(),
                parameters: 0,
                quantization: "none".into(),
                loaded_at_unix: self.loaded_at_unix,
            })
            .collect();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        EngineStatus {
            engine: "mock".into(),
            models,
            counters: self.counters.snapshot(),
            gpu_offload: false,
        }
    }
}

#[cfg(test)]
#[path = "mock_tests.rs"]
mod tests;
