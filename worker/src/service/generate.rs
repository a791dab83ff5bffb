//! `Generate`: validate the wire request, admit it into the engine, and turn
//! engine events into the response stream. Dropping the response stream (the
//! client went away) cancels the generation.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use herd_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;

use crate::engine::{
    ChatMessage, Constraint, Engine, FinishReason, GenerationEvent, GenerationRequest, Input,
    Sampling, Tool, ToolCall, ToolChoice, ToolUse,
};
use crate::error::EngineError;
use crate::metrics::WorkerMetrics;

/// Admits `request` and returns its event stream.
pub async fn start(
    engine: &dyn Engine,
    request: pb::GenerateRequest,
    metrics: &Arc<WorkerMetrics>,
    span: tracing::Span,
) -> Result<GenerationStream, Status> {
    let prefill = tracing::info_span!(parent: &span, "prefill");
    let request = to_engine_request(request)?;
    let id = request.id.clone();
    let model = request.model.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    engine.generate(request, tx, cancel.clone()).await?;
    tracing::debug!(request_id = %id, model = %model, "generation admitted");
    Ok(GenerationStream {
        events: rx,
        _cancel_on_drop: cancel.drop_guard(),
        done: false,
        metrics: metrics.clone(),
        model,
        phase: Some(prefill),
        span,
        decoding: false,
    })
}

/// Engine events as gRPC stream items; cancels the generation when dropped.
pub struct GenerationStream {
    events: mpsc::UnboundedReceiver<GenerationEvent>,
    _cancel_on_drop: DropGuard,
    done: bool,
    metrics: Arc<WorkerMetrics>,
    /// The model it runs on (loaded: a bounded metric label).
    model: String,
    /// The generation's span, and its current phase's (`prefill`, then
    /// `decode`); each ends when dropped.
    span: tracing::Span,
    phase: Option<tracing::Span>,
    decoding: bool,
}

impl Stream for GenerationStream {
    type Item = Result<pb::GenerateEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let Poll::Ready(event) = self.events.poll_recv(cx) else {
            return Poll::Pending;
        };
        let item = match event {
            Some(GenerationEvent::Delta { text, tokens }) => {
                if !self.decoding {
                    self.decoding = true;
                    self.phase = Some(tracing::info_span!(parent: &self.span, "decode"));
                }
                Ok(pb::GenerateEvent {
                    event: Some(pb::generate_event::Event::Delta(pb::TextDelta {
                        text,
                        tokens,
                    })),
                })
            }
            Some(GenerationEvent::Finished(f)) => {
                self.done = true;
                self.phase = None;
                self.metrics.generated(
                    &self.model,
                    f.prompt_tokens,
                    f.cached_prompt_tokens,
                    f.completion_tokens,
                );
                Ok(pb::GenerateEvent {
                    event: Some(pb::generate_event::Event::Finished(pb::GenerateFinished {
                        reason: finish_reason(f.reason) as i32,
                        prompt_tokens: f.prompt_tokens,
                        completion_tokens: f.completion_tokens,
                        cached_prompt_tokens: f.cached_prompt_tokens,
                        time_to_first_token_us: f.time_to_first_token.as_micros() as u64,
                        total_time_us: f.total_time.as_micros() as u64,
                        tool_calls: f
                            .tool_calls
                            .into_iter()
                            .map(|c| pb::ToolCall {
                                id: c.id,
                                name: c.name,
                                arguments_json: c.arguments,
                            })
                            .collect(),
                    })),
                })
            }
            Some(GenerationEvent::Failed(err)) => {
                self.done = true;
                Err(Status::from(err))
            }
            None => {
                self.done = true;
                Err(Status::from(EngineError::Internal(
                    "the generation ended without a final event".into(),
                )))
            }
        };
        Poll::Ready(Some(item))
    }
}

fn finish_reason(reason: FinishReason) -> pb::FinishReason {
    match reason {
        FinishReason::Stop => pb::FinishReason::Stop,
        FinishReason::Length => pb::FinishReason::Length,
        FinishReason::Cancelled => pb::FinishReason::Cancelled,
        FinishReason::ToolCalls => pb::FinishReason::ToolCalls,
    }
}

/// The most stop strings a request may give, and their longest length.
const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 1024;

/// Checks a wire request and applies sampling defaults.
pub fn to_engine_request(request: pb::GenerateRequest) -> Result<GenerationRequest, EngineError> {
    if request.model.is_empty() {
        return Err(EngineError::param("model", "`model` is required"));
    }
    let input = match request.input {
        Some(pb::generate_request::Input::Chat(chat)) => {
            if chat.messages.is_empty() {
                return Err(EngineError::param(
                    "messages",
                    "`messages` must not be empty",
                ));
            }
            Input::Chat(
                chat.messages
                    .into_iter()
                    .map(|m| ChatMessage {
                        role: m.role,
                        content: m.content,
                        name: m.name,
                        tool_calls: m
                            .tool_calls
                            .into_iter()
                            .map(|c| ToolCall {
                                id: c.id,
                                name: c.name,
                                arguments: c.arguments_json,
                            })
                            .collect(),
                        tool_call_id: m.tool_call_id,
                    })
                    .collect(),
            )
        }
        Some(pb::generate_request::Input::Prompt(p)) => Input::Prompt(p.text),
        None => {
            return Err(EngineError::param(
                "messages",
                "one of `chat` or `prompt` is required",
            ));
        }
    };
    let defaults = Sampling::default();
    let s = request.sampling.unwrap_or_default();
    let sampling = Sampling {
        temperature: s.temperature.unwrap_or(defaults.temperature),
        top_p: s.top_p.unwrap_or(defaults.top_p),
        top_k: s.top_k.unwrap_or(defaults.top_k),
        min_p: s.min_p.unwrap_or(defaults.min_p),
        seed: s.seed.map_or_else(random_seed, fold_seed),
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
    };
    let finite = [
        sampling.temperature,
        sampling.top_p,
        sampling.min_p,
        sampling.presence_penalty,
        sampling.frequency_penalty,
    ]
    .iter()
    .all(|v| v.is_finite());
    if !finite || sampling.temperature < 0.0 {
        let param = [
            ("temperature", sampling.temperature),
            ("top_p", sampling.top_p),
            ("min_p", sampling.min_p),
            ("presence_penalty", sampling.presence_penalty),
        ]
        .iter()
        .find(|(name, v)| !v.is_finite() || (*name == "temperature" && *v < 0.0))
        .map_or("frequency_penalty", |(name, _)| *name);
        return Err(EngineError::param(
            param,
            "sampling parameters must be finite, temperature at least 0",
        ));
    }
    if !(0.0..=1.0).contains(&sampling.top_p) {
        return Err(EngineError::param(
            "top_p",
            "`top_p` must be between 0 and 1",
        ));
    }
    if !(0.0..=1.0).contains(&sampling.min_p) {
        return Err(EngineError::param(
            "min_p",
            "`min_p` must be between 0 and 1",
        ));
    }
    // OpenAI's range. Larger penalties push tokens the grammar allows down
    // to -inf like the ones it forbids, and llama.cpp aborts the process
    // when it then samples a forbidden token.
    let penalties = Sampling::PENALTY_RANGE;
    for (param, value) in [
        ("presence_penalty", sampling.presence_penalty),
        ("frequency_penalty", sampling.frequency_penalty),
    ] {
        if !penalties.contains(&value) {
            return Err(EngineError::param(
                param,
                format!("`{param}` must be between -2 and 2"),
            ));
        }
    }
    if request.max_tokens == Some(0) {
        return Err(EngineError::param(
            "max_tokens",
            "`max_tokens` must be at least 1",
        ));
    }
    // Every stop string is looked for after every token, on the thread
    // that decodes all of the model's slots.
    if request.stop.len() > MAX_STOPS || request.stop.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(EngineError::param(
            "stop",
            format!("`stop` takes at most {MAX_STOPS} strings of at most {MAX_STOP_BYTES} bytes"),
        ));
    }
    let constraint = match request.response_format.and_then(|f| f.format) {
        None | Some(pb::response_format::Format::JsonObject(false)) => None,
        Some(pb::response_format::Format::JsonObject(true)) => Some(Constraint::JsonObject),
        Some(pb::response_format::Format::JsonSchema(schema)) => {
            Some(Constraint::JsonSchema(schema))
        }
    };
    let tools = to_tool_use(request.tools, request.tool_choice)?;
    if tools.is_some() && !matches!(input, Input::Chat(_)) {
        return Err(EngineError::param("tools", "`tools` need a chat input"));
    }
    Ok(GenerationRequest {
        id: request.request_id,
        model: request.model,
        input,
        sampling,
        max_tokens: request.max_tokens,
        stop: request.stop,
        constraint,
        tools,
    })
}

/// The most tools a request may give, and the most bytes of descriptions and
/// parameter schemas together: every tool is in the prompt and in the
/// grammar each sampled token is checked against.
pub const MAX_TOOLS: usize = 64;
pub const MAX_TOOLS_BYTES: usize = 128 * 1024;

/// Tools and the choice among them; `None` when there are no tools.
fn to_tool_use(
    tools: Vec<pb::Tool>,
    choice: Option<pb::ToolChoice>,
) -> Result<Option<ToolUse>, EngineError> {
    if tools.is_empty() {
        return Ok(None);
    }
    if tools.len() > MAX_TOOLS {
        return Err(EngineError::param(
            "tools",
            format!("at most {MAX_TOOLS} tools may be given"),
        ));
    }
    let schema_bytes: usize = tools
        .iter()
        .map(|t| t.parameters_json.len() + t.description.len())
        .sum();
    if schema_bytes > MAX_TOOLS_BYTES {
        return Err(EngineError::param(
            "tools",
            format!(
                "the tools' descriptions and parameter schemas may total at most {} KiB",
                MAX_TOOLS_BYTES / 1024
            ),
        ));
    }
    let tools = tools
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let parameters = if t.parameters_json.is_empty() {
                None
            } else {
                Some(serde_json::from_str(&t.parameters_json).map_err(|e| {
                    EngineError::schema(
                        format!("tools[{i}].function.parameters"),
                        format!("parameters of tool `{}` are not JSON: {e}", t.name),
                    )
                })?)
            };
            Ok(Tool {
                name: t.name,
                description: t.description,
                parameters,
            })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let choice = choice.unwrap_or_default();
    let mode = match pb::tool_choice::Mode::try_from(choice.mode) {
        Ok(pb::tool_choice::Mode::Required) => ToolChoice::Required,
        Ok(pb::tool_choice::Mode::Function) => {
            if !tools.iter().any(|t| t.name == choice.function) {
                return Err(EngineError::param(
                    "tool_choice",
                    format!(
                        "`tool_choice` names `{}`, which is not among the tools",
                        choice.function
                    ),
                ));
            }
            ToolChoice::Function(choice.function.clone())
        }
        _ => ToolChoice::Auto,
    };
    Ok(Some(ToolUse {
        tools,
        choice: mode,
        parallel: !choice.single_call,
    }))
}

/// llama.cpp seeds are 32-bit; fold the 64-bit wire seed into one.
fn fold_seed(seed: u64) -> u32 {
    (seed as u32) ^ ((seed >> 32) as u32)
}

fn random_seed() -> u32 {
    crate::random::random_u64() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat_request() -> pb::GenerateRequest {
        pb::GenerateRequest {
            request_id: "r1".into(),
            model: "m".into(),
            input: Some(pb::generate_request::Input::Chat(pb::ChatInput {
                messages: vec![pb::ChatMessage {
                    role: "user".into(),
                    content: "hi".into(),
                    name: None,
                    tool_calls: vec![],
                    tool_call_id: None,
                }],
            })),
            sampling: None,
            max_tokens: None,
            stop: vec![],
            response_format: None,
            tools: vec![],
            tool_choice: None,
        }
    }

    #[test]
    fn defaults_are_applied() {
        let r = to_engine_request(chat_request()).unwrap();
        assert_eq!(r.sampling.temperature, 0.8);
        assert_eq!(r.sampling.top_k, 40);
    }

    #[test]
    fn same_seed_gives_same_engine_seed() {
        let mut a = chat_request();
        a.sampling = Some(pb::SamplingParams {
            seed: Some(42),
            ..Default::default()
        });
        let b = a.clone();
        assert_eq!(
            to_engine_request(a).unwrap().sampling.seed,
            to_engine_request(b).unwrap().sampling.seed
        );
    }

    #[test]
    fn missing_input_and_bad_values_are_invalid() {
        let mut r = chat_request();
        r.input = None;
        assert!(matches!(
            to_engine_request(r),
            Err(EngineError::InvalidParam { .. })
        ));
        let mut r = chat_request();
        r.sampling = Some(pb::SamplingParams {
            temperature: Some(f32::NAN),
            ..Default::default()
        });
        assert!(matches!(
            to_engine_request(r),
            Err(EngineError::InvalidParam { .. })
        ));
        for sampling in [
            pb::SamplingParams {
                presence_penalty: 3e38,
                ..Default::default()
            },
            pb::SamplingParams {
                frequency_penalty: -2.5,
                ..Default::default()
            },
            pb::SamplingParams {
                min_p: Some(1.5),
                ..Default::default()
            },
        ] {
            let mut r = chat_request();
            r.sampling = Some(sampling);
            assert!(matches!(
                to_engine_request(r),
                Err(EngineError::InvalidParam { .. })
            ));
        }
        let mut r = chat_request();
        r.sampling = Some(pb::SamplingParams {
            presence_penalty: 2.0,
            frequency_penalty: -2.0,
            ..Default::default()
        });
        assert!(to_engine_request(r).is_ok(), "the range is inclusive");
        let mut r = chat_request();
        r.stop = vec!["x".into(); MAX_STOPS + 1];
        assert!(matches!(
            to_engine_request(r),
            Err(EngineError::InvalidParam { .. })
        ));
        let mut r = chat_request();
        r.stop = vec!["x".repeat(MAX_STOP_BYTES + 1)];
        assert!(matches!(
            to_engine_request(r),
            Err(EngineError::InvalidParam { .. })
        ));
        let mut r = chat_request();
        r.max_tokens = Some(0);
        assert!(matches!(
            to_engine_request(r),
            Err(EngineError::InvalidParam { .. })
        ));
    }
}
