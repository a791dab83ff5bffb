//! A mock engine for load tests and fault injection: no model, deterministic
//! text, configurable prefill time and token rate, and injected failures.
//! It keeps the real engine's contract — slots (refusing beyond them with
//! [`EngineError::Busy`]), the slot freed before `Finished`, cancellation by
//! token or by dropping the receiver, models loaded and unloaded on request —
//! and simulates what placement depends on: each model's memory, its load
//! time, and prompt-cache hits (a prompt sharing a prefix with one of the
//! model's recent prompts skips that part of its prefill). A gateway cannot
//! tell it from the real engine. Never use it to claim a real-model result.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::engine::changes::Changes;
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

/// Bytes of a mock token (the mock tokenizes text in 4-byte pieces).
const TOKEN_BYTES: usize = 4;

/// How the mock behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// Model names served (loadable; loaded at start if `load_at_start`).
    pub models: Vec<String>,
    /// Whether every model is loaded when the engine starts.
    pub load_at_start: bool,
    /// How long loading a model takes.
    pub load_time: Duration,
    /// Memory each model takes loaded (reported for placement).
    pub model_memory: u64,
    /// Concurrent generations per model.
    pub slots: u32,
    /// Context length per slot, in (mock) tokens.
    pub context_size: u32,
    /// Time before the first token.
    pub prefill: Duration,
    /// Extra time before the first token per prompt token not found in the
    /// model's prompt cache (its last `slots` prompts).
    pub prefill_per_token: Duration,
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
            load_at_start: true,
            load_time: Duration::ZERO,
            model_memory: 256 << 20,
            slots: 64,
            context_size: 8192,
            prefill: Duration::ZERO,
            prefill_per_token: Duration::ZERO,
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

/// One loaded mock model.
#[derive(Debug)]
struct MockModel {
    busy: Arc<AtomicU32>,
    /// Recent prompts (at most `slots`), newest last: the prompt cache.
    recent: Mutex<VecDeque<Arc<str>>>,
    loaded_at_unix: i64,
}

impl MockModel {
    fn new() -> Self {
        Self {
            busy: Arc::default(),
            recent: Mutex::default(),
            loaded_at_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        }
    }

    /// Tokens of `prompt` found in the cache (the longest shared prefix
    /// with a recent prompt), and remembers `prompt`.
    fn cache_lookup(&self, prompt: Arc<str>, capacity: usize) -> u32 {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shared = recent
            .iter()
            .map(|old| {
                old.bytes()
                    .zip(prompt.bytes())
                    .take_while(|(a, b)| a == b)
                    .count()
            })
            .max()
            .unwrap_or(0);
        recent.push_back(prompt);
        while recent.len() > capacity.max(1) {
            recent.pop_front();
        }
        u32::try_from(shared / TOKEN_BYTES).unwrap_or(u32::MAX)
    }
}

/// The mock engine.
#[derive(Debug)]
pub struct MockEngine {
    config: Arc<MockConfig>,
    loaded: RwLock<HashMap<String, Arc<MockModel>>>,
    counters: Arc<Counters>,
    changes: Changes,
}

impl MockEngine {
    pub fn new(config: MockConfig) -> Result<Self, EngineError> {
        config.validate()?;
        let loaded = if config.load_at_start {
            config
                .models
                .iter()
                .map(|m| (m.clone(), Arc::new(MockModel::new())))
                .collect()
        } else {
            HashMap::new()
        };
        Ok(Self {
            config: Arc::new(config),
            loaded: RwLock::new(loaded),
            counters: Arc::new(Counters::default()),
            changes: Changes::default(),
        })
    }

    /// Every model the mock can load, as the worker's configured models.
    pub fn model_configs(&self) -> Vec<crate::config::ModelConfig> {
        self.config
            .models
            .iter()
            .map(|name| {
                let mut config = crate::config::ModelConfig::from_path(
                    format!("mock://{name}").into(),
                    Some(name.clone()),
                );
                config.parallel = self.config.slots;
                config
            })
            .collect()
    }

    fn model(&self, name: &str) -> Result<Arc<MockModel>, EngineError> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| {
                if self.config.models.iter().any(|m| m == name) {
                    EngineError::NotLoaded(name.to_owned())
                } else {
                    EngineError::ModelNotFound(name.to_owned())
                }
            })
    }
}

/// The text the mock "tokenizes": the prompt, or the chat's messages.
fn prompt_text(input: &Input) -> String {
    match input {
        Input::Prompt(text) => text.clone(),
        Input::Chat(messages) => messages
            .iter()
            .map(|m| format!("<{}>{}", m.role, m.content))
            .collect(),
    }
}

/// Mock tokens of a prompt: one per four bytes, at least one.
fn prompt_tokens(text: &str) -> u32 {
    u32::try_from(text.len() / TOKEN_BYTES)
        .unwrap_or(u32::MAX)
        .max(1)
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
    cached_prompt_tokens: u32,
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
        let uncached = self.prompt_tokens.saturating_sub(self.cached_prompt_tokens);
        let prefill = self.config.prefill + self.config.prefill_per_token * uncached;
        if let Wait::Cancelled = self.wait(Some(prefill)).await {
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
            cached_prompt_tokens: self.cached_prompt_tokens,
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
        let model = self.model(&request.model)?;
        let text = prompt_text(&request.input);
        let prompt_tokens = prompt_tokens(&text);
        if prompt_tokens >= self.config.context_size {
            return Err(EngineError::ContextLengthExceeded {
                prompt_tokens,
                context_size: self.config.context_size,
            });
        }
        let slot = SlotPermit::try_claim(&model.busy, self.config.slots, &self.changes)
            .ok_or_else(|| EngineError::Busy {
                model: request.model.clone(),
                slots: self.config.slots,
            })?;
        let cached = model
            .cache_lookup(text.into(), self.config.slots as usize)
            .min(prompt_tokens);
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
            cached_prompt_tokens: cached,
            fail_at_start: injected_failure(n, self.config.error_rate),
            accepted_at,
        };
        tokio::spawn(run.run());
        Ok(())
    }

    async fn count_tokens(&self, request: GenerationRequest) -> Result<u32, EngineError> {
        self.model(&request.model)?;
        Ok(prompt_tokens(&prompt_text(&request.input)))
    }

    async fn embed(&self, model: &str, inputs: Vec<EmbedInput>) -> Result<Embeddings, EngineError> {
        self.model(model)?;
        let mut prompt_tokens = 0u32;
        let vectors = inputs
            .iter()
            .map(|input| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                let tokens = match input {
                    EmbedInput::Text(t) => {
                        t.hash(&mut h);
                        u32::try_from(t.len() / TOKEN_BYTES)
                            .unwrap_or(u32::MAX)
                            .max(1)
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

    async fn load(&self, config: crate::config::ModelConfig) -> Result<(), EngineError> {
        if !self.config.models.contains(&config.name) {
            return Err(EngineError::ModelNotFound(config.name));
        }
        if self.serves(&config.name) {
            return Ok(());
        }
        tokio::time::sleep(self.config.load_time).await;
        self.loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(config.name)
            .or_insert_with(|| Arc::new(MockModel::new()));
        self.changes.bump();
        Ok(())
    }

    fn serves(&self, name: &str) -> bool {
        self.model(name).is_ok()
    }

    fn unload(&self, name: &str) -> bool {
        // Running generations keep their `Arc` and finish.
        let removed = self
            .loaded
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .is_some();
        if removed {
            self.changes.bump();
        }
        removed
    }

    fn estimate(&self, _config: &crate::config::ModelConfig) -> u64 {
        self.config.model_memory
    }

    fn status(&self) -> EngineStatus {
        let mut models: Vec<ModelInfo> = self
            .loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, model)| ModelInfo {
                name: name.clone(),
                path: format!("mock://{name}"),
                size_bytes: 0,
                context_size: self.config.context_size,
                slots_total: self.config.slots,
                slots_busy: model.busy.load(Ordering::Acquire),
                kv_cells_used: 0,
                prompt_cache_bytes: 0,
                loaded: true,
                architecture: "mock".into(),
                parameters: 0,
                quantization: "none".into(),
                loaded_at_unix: model.loaded_at_unix,
                memory_bytes: self.config.model_memory,
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

    fn changes(&self) -> &Changes {
        &self.changes
    }
}

#[cfg(test)]
#[path = "mock_tests.rs"]
mod tests;
