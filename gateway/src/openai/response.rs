//! OpenAI response objects: `chat.completion`, `chat.completion.chunk`,
//! `text_completion`, `list`/`model`, written with borrowed strings so the
//! streaming path allocates little.

use herd_proto::v1 as pb;
use serde::Serialize;

use super::request::Endpoint;

/// Token counts of a finished generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
}

/// How much of the prompt came from the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32, cached_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
        }
    }
}

/// The identity every object of one response shares.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub endpoint: Endpoint,
}

impl ResponseMeta {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::ChatCompletions, false) => "chat.completion",
            (Endpoint::ChatCompletions, true) => "chat.completion.chunk",
            (Endpoint::Completions, _) => "text_completion",
        }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    /// `null` when the model called tools.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut<'a>>>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallOut<'a>>>,
}

/// A tool call as OpenAI writes it (`index` only in streamed deltas).
#[derive(Serialize)]
struct ToolCallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    id: &'a str,
    r#type: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

fn tool_calls_out(calls: &[pb::ToolCall], streamed: bool) -> Vec<ToolCallOut<'_>> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| ToolCallOut {
            index: streamed.then_some(i),
            id: &c.id,
            r#type: "function",
            function: FunctionOut {
                name: &c.name,
                arguments: &c.arguments_json,
            },
        })
        .collect()
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<Delta<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Object<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: Option<()>,
    choices: Vec<Choice<'a>>,
    /// Absent on chunks unless usage was asked for (then `null` until the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

fn to_json(object: &Object<'_>) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(object).unwrap_or_default()
}

/// The whole, non-streamed response. With `tool_calls`, the message's
/// content is `null`.
pub fn completion(
    meta: &ResponseMeta,
    text: &str,
    tool_calls: &[pb::ToolCall],
    finish_reason: &str,
    usage: Usage,
) -> Vec<u8> {
    let choice = match meta.endpoint {
        Endpoint::ChatCompletions => Choice {
            index: 0,
            message: Some(Message {
                role: "assistant",
                content: (tool_calls.is_empty()).then_some(text),
                tool_calls: (!tool_calls.is_empty()).then(|| tool_calls_out(tool_calls, false)),
            }),
            delta: None,
            text: None,
            logprobs: None,
            finish_reason: Some(finish_reason),
        },
        Endpoint::Completions => Choice {
            index: 0,
            message: None,
            delta: None,
            text: Some(text),
            logprobs: None,
            finish_reason: Some(finish_reason),
        },
    };
    to_json(&Object {
        id: &meta.id,
        object: meta.object(false),
        created: meta.created,
        model: &meta.model,
        system_fingerprint: None,
        choices: vec![choice],
        usage: Some(Some(usage)),
    })
}

/// What one streamed chunk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind<'a> {
    /// The first chat chunk: the assistant role and empty content.
    Role,
    /// New text.
    Text(&'a str),
    /// The tool calls, all at once.
    ToolCalls(&'a [pb::ToolCall]),
    /// The finish reason (empty delta).
    Finish(&'a str),
    /// The usage-only chunk (no choices).
    Usage(Usage),
}

/// One streamed chunk's JSON. `include_usage` adds `"usage": null` to the
/// ordinary chunks, as OpenAI does.
pub fn chunk(meta: &ResponseMeta, kind: ChunkKind<'_>, include_usage: bool) -> Vec<u8> {
    let chat = meta.endpoint == Endpoint::ChatCompletions;
    let (choices, usage) = match kind {
        ChunkKind::Usage(u) => (Vec::new(), Some(Some(u))),
        other => {
            let (content, finish, role, calls) = match other {
                ChunkKind::Role => (Some(""), None, Some("assistant"), None),
                ChunkKind::Text(t) => (Some(t), None, None, None),
                ChunkKind::ToolCalls(calls) => {
                    (None, None, None, Some(tool_calls_out(calls, true)))
                }
                ChunkKind::Finish(reason) => (None, Some(reason), None, None),
                ChunkKind::Usage(_) => (None, None, None, None),
            };
            let choice = if chat {
                Choice {
                    index: 0,
                    message: None,
                    delta: Some(Delta {
                        role,
                        content,
                        tool_calls: calls,
                    }),
                    text: None,
                    logprobs: None,
                    finish_reason: finish,
                }
            } else {
                Choice {
                    index: 0,
                    message: None,
                    delta: None,
                    text: Some(content.unwrap_or("")),
                    logprobs: None,
                    finish_reason: finish,
                }
            };
            (vec![choice], include_usage.then_some(None))
        }
    };
    to_json(&Object {
        id: &meta.id,
        object: meta.object(true),
        created: meta.created,
        model: &meta.model,
        system_fingerprint: None,
        choices,
        usage,
    })
}

/// One entry of `/v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelObject {
    pub id: String,
    pub object: &'static str,
    pub created: i64,
    pub owned_by: &'static str,
}

impl ModelObject {
    pub fn new(id: String, created: i64) -> Self {
        Self {
            id,
            object: "model",
            created,
            owned_by: "herd",
        }
    }
}

/// The `/v1/models` list.
pub fn model_list(models: Vec<ModelObject>) -> Vec<u8> {
    #[derive(Serialize)]
    struct List {
        object: &'static str,
        data: Vec<ModelObject>,
    }
    serde_json::to_vec(&List {
        object: "list",
        data: models,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn meta(endpoint: Endpoint) -> ResponseMeta {
        ResponseMeta {
            id: "chatcmpl-1".into(),
            created: 7,
            model: "m".into(),
            endpoint,
        }
    }

    fn parse(bytes: Vec<u8>) -> Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn chat_completion_shape() {
        let v = parse(completion(
            &meta(Endpoint::ChatCompletions),
            "hi",
            &[],
            "stop",
            Usage::new(3, 1, 0),
        ));
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["total_tokens"], 4);
    }

    #[test]
    fn chat_chunks_shape() {
        let m = meta(Endpoint::ChatCompletions);
        let first = parse(chunk(&m, ChunkKind::Role, false));
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert!(first.get("usage").is_none());
        let text = parse(chunk(&m, ChunkKind::Text("a\"b"), true));
        assert_eq!(text["choices"][0]["delta"]["content"], "a\"b");
        assert!(text["choices"][0]["finish_reason"].is_null());
        assert!(text["usage"].is_null() && text.get("usage").is_some());
        let fin = parse(chunk(&m, ChunkKind::Finish("length"), false));
        assert_eq!(fin["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(fin["choices"][0]["finish_reason"], "length");
        let usage = parse(chunk(&m, ChunkKind::Usage(Usage::new(2, 5, 0)), true));
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 5);
    }

    #[test]
    fn tool_calls_shape() {
        let m = meta(Endpoint::ChatCompletions);
        let calls = [pb::ToolCall {
            id: "call_1".into(),
            name: "f".into(),
            arguments_json: r#"{"a":1}"#.into(),
        }];
        let v = parse(completion(
            &m,
            "",
            &calls,
            "tool_calls",
            Usage::new(1, 1, 0),
        ));
        let msg = &v["choices"][0]["message"];
        assert!(msg["content"].is_null());
        assert_eq!(msg["tool_calls"][0]["type"], "function");
        assert_eq!(msg["tool_calls"][0]["function"]["arguments"], r#"{"a":1}"#);
        assert!(msg["tool_calls"][0].get("index").is_none());
        let c = parse(chunk(&m, ChunkKind::ToolCalls(&calls), false));
        assert_eq!(c["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(c["choices"][0]["delta"]["tool_calls"][0]["id"], "call_1");
    }

    #[test]
    fn text_completion_shapes() {
        let m = meta(Endpoint::Completions);
        let v = parse(completion(&m, "x", &[], "length", Usage::new(1, 1, 0)));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "x");
        let c = parse(chunk(&m, ChunkKind::Text("y"), false));
        assert_eq!(c["choices"][0]["text"], "y");
    }
}
