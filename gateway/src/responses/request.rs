//! OpenAI Responses request bodies (`POST /v1/responses`) parsed,
//! validated and mapped onto the worker's `GenerateRequest`. Every field
//! is read or refused by name.

use herd_proto::v1 as pb;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::openai::fields::Fields;
use crate::openai::request::output_format;

/// A validated Responses request, before the previous response's
/// conversation is put in front of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    pub model: String,
    pub stream: bool,
    pub store: bool,
    pub previous_response_id: Option<String>,
    pub instructions: Option<String>,
    /// This request's input as conversation messages (no instructions).
    pub input: Vec<pb::ChatMessage>,
    /// This request's input items as `input_items` lists them (with ids).
    pub input_items: Vec<Value>,
    pub keep_alive: Option<crate::scheduler::KeepAlive>,
    /// Fields echoed in the response object.
    pub echo: Value,
    /// What the worker is asked; its input is set once the conversation
    /// is complete.
    pub generate: pb::GenerateRequest,
}

const KNOWN: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "temperature",
    "top_p",
    "max_output_tokens",
    "stream",
    "store",
    "previous_response_id",
    "metadata",
    "user",
    "truncation",
    "reasoning",
    "include",
    "background",
    "service_tier",
    "top_logprobs",
    "keep_alive",
    "seed",
];

/// Parses a `/v1/responses` body.
pub fn parse(body: &[u8]) -> Result<ResponsesRequest, ApiError> {
    let fields = Fields::parse(body)?;
    fields.refuse_unknown(KNOWN, "Responses")?;
    let model = fields.required_str("model")?.to_owned();
    fields.optional_str("user")?;
    fields.reject_unless_neutral("background", "responses are answered in the request")?;
    fields.reject_unless_neutral("include", "no extra output is available")?;
    fields.reject_unless_neutral("top_logprobs", "log probabilities are not available yet")?;
    if fields.get("reasoning").is_some_and(|r| {
        r.as_object()
            .is_none_or(|o| o.values().any(|v| !v.is_null()))
    }) {
        return Err(ApiError::unsupported(
            "reasoning",
            "`reasoning` is not supported: the model has no reasoning settings",
        ));
    }
    match fields.get("truncation") {
        None => {}
        Some(Value::String(t)) if t == "disabled" => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "truncation",
                "only `truncation: disabled` is supported: a conversation longer than the context is an error",
            ));
        }
    }
    let metadata = match fields.get("metadata") {
        None => json!({}),
        Some(Value::Object(m))
            if m.len() <= 16
                && m.values()
                    .all(|v| v.as_str().is_some_and(|s| s.len() <= 512)) =>
        {
            Value::Object(m.clone())
        }
        Some(_) => {
            return Err(ApiError::field(
                "metadata",
                "`metadata` holds at most 16 string values of at most 512 characters",
            ));
        }
    };
    let instructions = fields.optional_str("instructions")?.map(str::to_owned);
    let previous_response_id = fields
        .optional_str("previous_response_id")?
        .map(str::to_owned);
    let (input, input_items) = input(&fields)?;
    let (tools, tool_choice) = tools(&fields)?;
    let response_format = text_format(&fields)?;
    let temperature = fields.f32_in("temperature", 0.0, 2.0)?;
    let top_p = fields.f32_in("top_p", 0.0, 1.0)?;
    let max_output_tokens = fields.u64_in("max_output_tokens", 1, 1 << 20)?;
    let parallel = fields.bool("parallel_tool_calls")?.unwrap_or(true);
    let echo = json!({
        "instructions": instructions,
        "metadata": metadata,
        "parallel_tool_calls": parallel,
        "temperature": temperature.unwrap_or(1.0),
        "top_p": top_p.unwrap_or(1.0),
        "max_output_tokens": max_output_tokens,
        "previous_response_id": previous_response_id,
        "tools": fields.get("tools").cloned().unwrap_or(json!([])),
        "tool_choice": fields.get("tool_choice").cloned().unwrap_or(json!("auto")),
        "text": fields.get("text").cloned().unwrap_or(json!({"format": {"type": "text"}})),
        "truncation": "disabled",
        "user": fields.get("user"),
    });
    Ok(ResponsesRequest {
        stream: fields.bool("stream")?.unwrap_or(false),
        store: fields.bool("store")?.unwrap_or(true),
        keep_alive: crate::openai::keep_alive::parse(&fields)?,
        previous_response_id,
        instructions,
        input,
        input_items,
        echo,
        generate: pb::GenerateRequest {
            request_id: String::new(),
            model: model.clone(),
            input: None,
            sampling: Some(pb::SamplingParams {
                temperature,
                top_p,
                seed: fields.seed("seed")?,
                ..Default::default()
            }),
            max_tokens: max_output_tokens.map(|m| m as u32),
            stop: Vec::new(),
            response_format,
            tool_choice: tool_choice.map(|mut c| {
                c.single_call = !parallel;
                c
            }),
            tools,
        },
        model,
    })
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

fn message(role: &str, content: String) -> pb::ChatMessage {
    pb::ChatMessage {
        role: role.to_owned(),
        content,
        ..Default::default()
    }
}

/// `input`: a string (one user message) or an array of items: messages
/// (`{role, content}` with text parts), `function_call` and
/// `function_call_output`.
fn input(fields: &Fields) -> Result<(Vec<pb::ChatMessage>, Vec<Value>), ApiError> {
    let items = match fields.get("input") {
        Some(Value::String(s)) => {
            let item = json!({"type": "message", "id": new_id("msg"), "role": "user", "status": "completed",
                              "content": [{"type": "input_text", "text": s}]});
            return Ok((vec![message("user", s.clone())], vec![item]));
        }
        Some(Value::Array(items)) if !items.is_empty() => items,
        _ => {
            return Err(ApiError::field(
                "input",
                "`input` is required: a string or a non-empty array of items",
            ));
        }
    };
    let mut messages: Vec<pb::ChatMessage> = Vec::new();
    let mut listed = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let param = format!("input[{i}]");
        let Some(obj) = item.as_object() else {
            return Err(ApiError::field(
                &param,
                format!("`{param}` must be an object"),
            ));
        };
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("message");
        let str_of = |k: &str| obj.get(k).and_then(Value::as_str);
        match kind {
            "message" => {
                let role = match str_of("role") {
                    Some("developer") => "system",
                    Some(r @ ("user" | "system" | "assistant")) => r,
                    _ => {
                        return Err(ApiError::field(
                            &format!("{param}.role"),
                            "`role` must be user, system, developer or assistant",
                        ));
                    }
                };
                let text = match obj.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => {
                        let mut text = String::new();
                        for (j, part) in parts.iter().enumerate() {
                            match (part.get("type").and_then(Value::as_str), part.get("text")) {
                                (
                                    Some("input_text" | "output_text" | "text"),
                                    Some(Value::String(t)),
                                ) => {
                                    text.push_str(t);
                                }
                                _ => {
                                    return Err(ApiError::unsupported(
                                        &format!("{param}.content[{j}]"),
                                        "only text content parts (`input_text`, `output_text`) are supported",
                                    ));
                                }
                            }
                        }
                        text
                    }
                    _ => {
                        return Err(ApiError::field(
                            &format!("{param}.content"),
                            "`content` must be a string or an array of text parts",
                        ));
                    }
                };
                let part = if role == "assistant" {
                    "output_text"
                } else {
                    "input_text"
                };
                listed.push(json!({"type": "message", "id": str_of("id").map_or_else(|| new_id("msg"), str::to_owned),
                                   "role": str_of("role"), "status": "completed",
                                   "content": [{"type": part, "text": text}]}));
                messages.push(message(role, text));
            }
            "function_call" => {
                let (Some(call_id), Some(name), Some(arguments)) =
                    (str_of("call_id"), str_of("name"), str_of("arguments"))
                else {
                    return Err(ApiError::field(
                        &param,
                        "a `function_call` item needs `call_id`, `name` and `arguments` (a string)",
                    ));
                };
                let call = pb::ToolCall {
                    id: call_id.to_owned(),
                    name: name.to_owned(),
                    arguments_json: arguments.to_owned(),
                };
                // Consecutive calls are one assistant turn.
                match messages.last_mut() {
                    Some(last) if last.role == "assistant" && !last.tool_calls.is_empty() => {
                        last.tool_calls.push(call);
                    }
                    _ => messages.push(pb::ChatMessage {
                        tool_calls: vec![call],
                        ..message("assistant", String::new())
                    }),
                }
                listed.push(json!({"type": "function_call", "id": str_of("id").map_or_else(|| new_id("fc"), str::to_owned),
                                   "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"}));
            }
            "function_call_output" => {
                let (Some(call_id), Some(output)) = (str_of("call_id"), str_of("output")) else {
                    return Err(ApiError::field(
                        &param,
                        "a `function_call_output` item needs `call_id` and `output` (a string)",
                    ));
                };
                messages.push(pb::ChatMessage {
                    tool_call_id: Some(call_id.to_owned()),
                    ..message("tool", output.to_owned())
                });
                listed.push(json!({"type": "function_call_output", "id": str_of("id").map_or_else(|| new_id("fco"), str::to_owned),
                                   "call_id": call_id, "output": output, "status": "completed"}));
            }
            other => {
                return Err(ApiError::unsupported(
                    &format!("{param}.type"),
                    format!(
                        "`{other}` items are not supported; only messages, function_call and function_call_output"
                    ),
                ));
            }
        }
    }
    Ok((messages, listed))
}

/// `tools`: function tools only (`{type:"function", name, description,
/// parameters, strict}`); `tool_choice`: `auto`, `none`, `required` or
/// `{type:"function", name}`.
fn tools(fields: &Fields) -> Result<(Vec<pb::Tool>, Option<pb::ToolChoice>), ApiError> {
    // Responses tools are flat; the Chat Completions checks take them
    // nested under `function`.
    let nested = match fields.get("tools") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let param = format!("tools[{i}]");
                match t.get("type").and_then(Value::as_str) {
                    Some("function") => {}
                    Some(other) => {
                        return Err(ApiError::unsupported(
                            &format!("{param}.type"),
                            format!("`{other}` tools are not supported; only function tools"),
                        ));
                    }
                    None => {
                        return Err(ApiError::field(
                            &format!("{param}.type"),
                            "a tool needs a `type`",
                        ));
                    }
                }
                Ok(json!({"type": "function", "function": {
                    "name": t.get("name"),
                    "description": t.get("description"),
                    "parameters": t.get("parameters"),
                }}))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::field("tools", "`tools` must be an array")),
    };
    let choice = match fields.get("tool_choice") {
        None => None,
        Some(Value::String(s)) => Some(json!(s)),
        Some(Value::Object(c)) if c.get("type").and_then(Value::as_str) == Some("function") => {
            Some(json!({"type": "function", "function": {"name": c.get("name")}}))
        }
        Some(_) => {
            return Err(ApiError::field(
                "tool_choice",
                "`tool_choice` must be `auto`, `none`, `required` or a function",
            ));
        }
    };
    let mut as_chat = json!({ "tools": nested });
    if let Some(choice) = choice {
        as_chat["tool_choice"] = choice;
    }
    let parsed = Fields::parse(&serde_json::to_vec(&as_chat).unwrap_or_default())?;
    crate::openai::tools::parse_tools(&parsed).map_err(|e| match e {
        ApiError::InvalidField { param, message } => ApiError::InvalidField {
            param: param.replace(".function.", ".").replace(".function", ""),
            message,
        },
        other => other,
    })
}

/// `text.format`: `text`, `json_object` or `json_schema` (flat: `{type,
/// name, schema, strict}`).
fn text_format(fields: &Fields) -> Result<Option<pb::ResponseFormat>, ApiError> {
    let Some(text) = fields.get("text") else {
        return Ok(None);
    };
    let Some(obj) = text.as_object() else {
        return Err(ApiError::field("text", "`text` must be an object"));
    };
    if let Some(k) = obj.keys().find(|k| *k != "format" && *k != "verbosity") {
        return Err(ApiError::unsupported(
            &format!("text.{k}"),
            format!("`text.{k}` is not supported"),
        ));
    }
    let Some(format) = obj.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    output_format(
        format,
        format.get("schema"),
        "text.format",
        "text.format.schema",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidField { param, .. } | ApiError::Unsupported { param, .. } => param,
            other => panic!("no param in {other:?}"),
        }
    }

    #[test]
    fn items_tools_and_format() {
        let r = parse(
            br#"{"model":"m","instructions":"Be brief.","input":[
              {"role":"user","content":"Weather?"},
              {"type":"function_call","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}"},
              {"type":"function_call_output","call_id":"call_1","output":"sunny"}],
            "tools":[{"type":"function","name":"get_weather","parameters":{"type":"object"}}],
            "text":{"format":{"type":"json_schema","name":"x","schema":{"type":"object"}}},
            "max_output_tokens":9,"store":false}"#,
        )
        .unwrap();
        assert!(!r.store && !r.stream);
        assert_eq!(r.instructions.as_deref(), Some("Be brief."));
        let roles: Vec<_> = r.input.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["user", "assistant", "tool"]);
        assert_eq!(r.input[1].tool_calls[0].id, "call_1");
        assert_eq!(r.input_items.len(), 3);
        assert_eq!(r.generate.tools[0].name, "get_weather");
        assert_eq!(r.generate.max_tokens, Some(9));
        assert!(r.generate.response_format.is_some());
    }

    #[test]
    fn refused_fields_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model":"m"}"#, "input"),
            (
                br#"{"model":"m","input":"x","reasoning":{"effort":"high"}}"#,
                "reasoning",
            ),
            (
                br#"{"model":"m","input":"x","background":true}"#,
                "background",
            ),
            (
                br#"{"model":"m","input":"x","tools":[{"type":"web_search"}]}"#,
                "tools[0].type",
            ),
            (
                br#"{"model":"m","input":"x","tools":[{"type":"function","name":"a b"}]}"#,
                "tools[0].name",
            ),
            (
                br#"{"model":"m","input":[{"type":"reasoning"}]}"#,
                "input[0].type",
            ),
            (
                br#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image"}]}]}"#,
                "input[0].content[0]",
            ),
            (
                br#"{"model":"m","input":"x","text":{"format":{"type":"json_schema"}}}"#,
                "text.format.schema",
            ),
            (
                br#"{"model":"m","input":"x","conversation":"c"}"#,
                "conversation",
            ),
        ];
        for (body, param) in cases {
            assert_eq!(
                param_of(parse(body).unwrap_err()),
                *param,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
