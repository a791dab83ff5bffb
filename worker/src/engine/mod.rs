//! Engines run models. The gRPC service talks to an [`Engine`] only; the
//! llama.cpp engine ([`llama`]) is the real one; [`mock`] serves
//! deterministic text with configurable speed and failures, for load tests and
//! fault injection.
//!
//! A generation is admitted synchronously by [`Engine::generate`] (model
//! known, prompt fits, a slot is free) and then produces [`GenerationEvent`]s
//! on its channel until exactly one [`GenerationEvent::Finished`]. Cancelling
//! the token, or dropping the receiver, ends it at the next decode step.

pub mod changes;
pub mod counters;
pub mod llama;
pub mod mock;
pub mod schema;
pub mod slots;
pub mod text;
pub mod tools;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::error::EngineError;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Calls an assistant message made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `tool` messages: the call answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A plain message: no name, no tool calls.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments; `None`: any object.
    pub parameters: Option<serde_json::Value>,
}

/// Whether and which tool must be called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    Required,
    Function(String),
}

/// The tools of a request and how they may be used.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUse {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// Whether one reply may call several tools (OpenAI's
    /// `parallel_tool_calls`, true by default).
    pub parallel: bool,
}

/// A call of a tool; `arguments` is a JSON object as text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text, tokenized as is.
    Prompt(String),
}

/// Sampling settings, defaults already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub min_p: f32,
    pub seed: u32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

impl Sampling {
    /// The range of `presence_penalty` and `frequency_penalty` (OpenAI's).
    pub const PENALTY_RANGE: std::ops::RangeInclusive<f32> = -2.0..=2.0;
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            seed: u32::MAX,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// A constraint on the output's form (structured output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Any JSON object.
    JsonObject,
    /// JSON valid against this JSON Schema (JSON text).
    JsonSchema(String),
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub id: String,
    pub model: String,
    pub input: Input,
    pub sampling: Sampling,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    /// The response format. With `tools`, it shapes the answer the model
    /// gives when it calls no tool.
    pub constraint: Option<Constraint>,
    pub tools: Option<ToolUse>,
}

/// One input to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// Pooled, normalised vectors in input order, and the tokens they took.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    Cancelled,
    ToolCalls,
}

/// The summary sent last.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub cached_prompt_tokens: u32,
    pub time_to_first_token: Duration,
    pub total_time: Duration,
    pub tool_calls: Vec<ToolCall>,
}

/// What a running generation reports.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// New text (whole characters) and the number of tokens it took.
    Delta { text: String, tokens: u32 },
    /// The end; nothing follows.
    Finished(Finished),
    /// The engine failed mid-generation; nothing follows.
    Failed(EngineError),
}

/// A model as the engine knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub size_bytes: u64,
    pub context_size: u32,
    pub slots_total: u32,
    pub slots_busy: u32,
    /// KV cache cells its slots hold: running generations and the prompts
    /// kept for reuse (0 where the engine does not count them).
    pub kv_cells_used: u64,
    /// Bytes of saved prompt states in host memory (0 where the engine has
    /// no such cache).
    pub prompt_cache_bytes: u64,
    pub loaded: bool,
    pub architecture: String,
    pub parameters: u64,
    pub quantization: String,
    pub loaded_at_unix: i64,
    /// Estimated memory as loaded (see [`crate::footprint`]).
    pub memory_bytes: u64,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineCounters {
    pub started: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub failed: u64,
    pub tokens_generated: u64,
}

/// A point-in-time view of an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStatus {
    pub engine: String,
    pub models: Vec<ModelInfo>,
    pub counters: EngineCounters,
    /// Whether models are offloaded to GPUs.
    pub gpu_offload: bool,
}

/// Runs generations.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Admits `request` and starts it; events flow into `events` until
    /// `Finished` or `Failed`. Errors here mean nothing was started.
    async fn generate(
        &self,
        request: GenerationRequest,
        events: UnboundedSender<GenerationEvent>,
        cancel: CancellationToken,
    ) -> Result<(), EngineError>;

    /// The prompt tokens `request` would have (rendered and tokenized as
    /// `generate` would), without running it or taking a slot.
    async fn count_tokens(&self, request: GenerationRequest) -> Result<u32, EngineError>;

    /// Embeds `inputs` with `model`.
    async fn embed(&self, model: &str, inputs: Vec<EmbedInput>) -> Result<Embeddings, EngineError>;

    /// Loads the GGUF at `config.path` as `config.name` (nothing if a model
    /// of that name is loaded).
    async fn load(&self, config: crate::config::ModelConfig) -> Result<(), EngineError>;

    /// Whether a model named `name` is loaded.
    fn serves(&self, name: &str) -> bool {
        self.status().models.iter().any(|m| m.name == name)
    }

    /// Unloads `name`; generations in flight finish first, new ones are
    /// refused at once. Returns whether it was loaded.
    fn unload(&self, name: &str) -> bool;

    /// What a model would take loaded with `config`, estimated before
    /// loading it (see [`crate::footprint`]).
    fn estimate(&self, config: &crate::config::ModelConfig) -> u64;

    /// A snapshot of models, slots and counters.
    fn status(&self) -> EngineStatus;

    /// Bumped on every change `status` would show.
    fn changes(&self) -> &changes::Changes;
}
