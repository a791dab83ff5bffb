//! Anthropic Messages request bodies (`/v1/messages`, and
//! `/v1/messages/count_tokens`) parsed, validated and mapped onto the
//! worker's `GenerateRequest`. Every field is read or refused by name.

use herd_proto::v1 as pb;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openai::fields::Fields;

/// A validated Messages request.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagesRequest {
    pub model: String,
    pub stream: bool,
    /// What the worker is asked; `request_id` is filled in at dispatch.
    pub generate: pb::GenerateRequest,
}

/// The fields of a Messages body Herd reads.
const KNOWN: &[&str] = &[
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "service_tier",
    "output_config",
];

/// Most stop sequences (the worker's limit) and their length in bytes.
const MAX_STOPS: usize = 16;
const MAX_STOP_BYTES: usize = 1024;

/// Largest `max_tokens` accepted (the worker also stops when the context is full).
const MAX_TOKENS_LIMIT: u64 = 1 << 20;

/// Parses a `/v1/messages` body (`max_tokens` required, as Anthropic does).
pub fn parse_messages(body: &[u8]) -> Result<MessagesRequest, ApiError> {
    parse(body, true)
}

/// Parses a `/v1/messages/count_tokens` body: a Messages body without
/// `max_tokens` or `stream`.
pub fn parse_count_tokens(body: &[u8]) -> Result<MessagesRequest, ApiError> {
    parse(body, false)
}

fn parse(body: &[u8], generate: bool) -> Result<MessagesRequest, ApiError> {
    let fields = Fields::parse(body)?;
    fields.refuse_unknown(KNOWN, "Anthropic Messages")?;
    let model = fields.required_str("model")?.to_owned();
    let max_tokens = fields.u64_in("max_tokens", 1, MAX_TOKENS_LIMIT)?;
    let stream = fields.bool("stream")?.unwrap_or(false);
    if generate && max_tokens.is_none() {
        return Err(ApiError::field("max_tokens", "`max_tokens` is required"));
    }
    if !generate {
        for name in ["max_tokens", "stream", "stop_sequences"] {
            if fields.get(name).is_some() {
                return Err(ApiError::unsupported(
                    name,
                    format!("`{name}` is not a field of count_tokens"),
                ));
            }
        }
    }
    if let Some(metadata) = fields.get("metadata") {
        let ok = metadata.as_object().is_some_and(|m| {
            m.iter()
                .all(|(k, v)| k == "user_id" && (v.is_string() || v.is_null()))
        });
        if !ok {
            return Err(ApiError::field(
                "metadata",
                "`metadata` may hold only `user_id` (a string)",
            ));
        }
    }
    match fields.get("thinking") {
        None => {}
        Some(t) if t.get("type").and_then(Value::as_str) == Some("disabled") => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "thinking",
                "`thinking` is not supported: extended thinking is not available",
            ));
        }
    }
    match fields.get("service_tier") {
        None => {}
        Some(Value::String(s)) if s == "auto" || s == "standard_only" => {}
        Some(_) => {
            return Err(ApiError::field(
                "service_tier",
                "`service_tier` must be `auto` or `standard_only`",
            ));
        }
    }
    let mut messages = system(&fields)?;
    messages.extend(conversation(&fields)?);
    let (tools, tool_choice) = super::tools::parse(&fields)?;
    let sampling = pb::SamplingParams {
        temperature: fields.f32_in("temperature", 0.0, 1.0)?,
        top_p: fields.f32_in("top_p", 0.0, 1.0)?,
        top_k: fields
            .u64_in("top_k", 0, u64::from(u32::MAX))?
            .map(|k| k as u32),
        ..Default::default()
    };
    Ok(MessagesRequest {
        model: model.clone(),
        stream,
        generate: pb::GenerateRequest {
            request_id: String::new(),
            model,
            input: Some(pb::generate_request::Input::Chat(pb::ChatInput {
                messages,
            })),
            sampling: Some(sampling),
            // count_tokens runs the prompt and one token: the worker counts
            // the prompt as it renders it.
            max_tokens: Some(max_tokens.unwrap_or(1) as u32),
            stop: stop_sequences(&fields)?,
            response_format: output_config(&fields)?,
            tools,
            tool_choice,
        },
    })
}

/// `output_config`: `format` `{"type":"json_schema","schema":{…}}`
/// (structured outputs, enforced like OpenAI's `response_format`); `effort`
/// is refused.
fn output_config(fields: &Fields) -> Result<Option<pb::ResponseFormat>, ApiError> {
    let Some(config) = fields.get("output_config") else {
        return Ok(None);
    };
    let Some(config) = config.as_object() else {
        return Err(ApiError::field(
            "output_config",
            "`output_config` must be an object",
        ));
    };
    refuse_other_keys(config, &["format", "effort"], "output_config")?;
    if config.get("effort").is_some_and(|e| !e.is_null()) {
        return Err(ApiError::unsupported(
            "output_config.effort",
            "`output_config.effort` is not supported: the model has no effort setting",
        ));
    }
    let Some(format) = config.get("format").filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let schema = format.get("schema").filter(|s| {
        s.is_object() && format.get("type").and_then(Value::as_str) == Some("json_schema")
    });
    match schema {
        Some(schema) => Ok(Some(pb::ResponseFormat {
            format: Some(pb::response_format::Format::JsonSchema(schema.to_string())),
        })),
        None => Err(ApiError::field(
            "output_config.format",
            "`output_config.format` must be `{\"type\":\"json_schema\",\"schema\":{…}}`",
        )),
    }
}

fn stop_sequences(fields: &Fields) -> Result<Vec<String>, ApiError> {
    let param = "stop_sequences";
    match fields.get(param) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() <= MAX_STOPS => items
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() && s.len() <= MAX_STOP_BYTES => Ok(s.clone()),
                _ => Err(ApiError::field(
                    param,
                    format!("each stop sequence must be a string of 1-{MAX_STOP_BYTES} bytes"),
                )),
            })
            .collect(),
        Some(Value::Array(_)) => Err(ApiError::field(
            param,
            format!("`{param}` takes at most {MAX_STOPS} sequences"),
        )),
        Some(_) => Err(ApiError::field(
            param,
            format!("`{param}` must be an array of strings"),
        )),
    }
}

/// `system`: a string or an array of text blocks.
fn system(fields: &Fields) -> Result<Vec<pb::ChatMessage>, ApiError> {
    let text = match fields.get("system") {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for (i, block) in blocks.iter().enumerate() {
                text.push_str(&text_block(block, &format!("system[{i}]"))?);
            }
            text
        }
        Some(_) => {
            return Err(ApiError::field(
                "system",
                "`system` must be a string or an array of text blocks",
            ));
        }
    };
    Ok(vec![message("system", text)])
}

fn message(role: &str, content: String) -> pb::ChatMessage {
    pb::ChatMessage {
        role: role.to_owned(),
        content,
        ..Default::default()
    }
}

/// A `{"type":"text","text":…}` block's text. `cache_control` and
/// `citations` are accepted and have no effect (Herd caches prompts by
/// itself).
fn text_block(block: &Value, param: &str) -> Result<String, ApiError> {
    let Some(obj) = block.as_object() else {
        return Err(ApiError::field(param, format!("`{param}` must be a block")));
    };
    match (obj.get("type").and_then(Value::as_str), obj.get("text")) {
        (Some("text"), Some(Value::String(t))) => {
            refuse_other_keys(obj, &["type", "text", "cache_control", "citations"], param)?;
            Ok(t.clone())
        }
        (Some("text"), _) => Err(ApiError::field(
            &format!("{param}.text"),
            "text blocks need a string `text`",
        )),
        (Some(other), _) => Err(ApiError::unsupported(
            &format!("{param}.type"),
            format!("`{other}` blocks are not supported here; only text"),
        )),
        (None, _) => Err(ApiError::field(
            &format!("{param}.type"),
            "a block needs a `type`",
        )),
    }
}

pub(super) fn refuse_other_keys(
    obj: &Map<String, Value>,
    known: &[&str],
    param: &str,
) -> Result<(), ApiError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(ApiError::unsupported(
            &format!("{param}.{k}"),
            format!("`{param}.{k}` is not supported"),
        )),
    }
}

/// `messages`: alternating user and assistant turns, each a string or an
/// array of text, tool_use (assistant) and tool_result (user) blocks. A
/// user turn's tool results become `tool` messages before its text.
fn conversation(fields: &Fields) -> Result<Vec<pb::ChatMessage>, ApiError> {
    let items = match fields.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(ApiError::field("messages", "`messages` must not be empty"));
        }
        Some(_) => return Err(ApiError::field("messages", "`messages` must be an array")),
        None => return Err(ApiError::field("messages", "`messages` is required")),
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let param = format!("messages[{i}]");
        let Some(msg) = item.as_object() else {
            return Err(ApiError::field(
                &param,
                format!("`{param}` must be an object"),
            ));
        };
        refuse_other_keys(msg, &["role", "content"], &param)?;
        let role = match msg.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r,
            _ => {
                return Err(ApiError::field(
                    &format!("{param}.role"),
                    format!("`{param}.role` must be `user` or `assistant`"),
                ));
            }
        };
        let blocks = match msg.get("content") {
            Some(Value::String(s)) => {
                out.push(message(role, s.clone()));
                continue;
            }
            Some(Value::Array(blocks)) => blocks,
            _ => {
                return Err(ApiError::field(
                    &format!("{param}.content"),
                    format!("`{param}.content` must be a string or an array of blocks"),
                ));
            }
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let bparam = format!("{param}.content[{j}]");
            match (role, block.get("type").and_then(Value::as_str)) {
                ("assistant", Some("tool_use")) => calls.push(tool_use(block, &bparam)?),
                ("user", Some("tool_result")) => out.push(tool_result(block, &bparam)?),
                _ => text.push_str(&text_block(block, &bparam)?),
            }
        }
        if role == "assistant" {
            out.push(pb::ChatMessage {
                tool_calls: calls,
                ..message(role, text)
            });
        } else if !text.is_empty() || out.last().is_none_or(|m| m.role != "tool") {
            out.push(message(role, text));
        }
    }
    Ok(out)
}

fn tool_use(block: &Value, param: &str) -> Result<pb::ToolCall, ApiError> {
    let obj = block
        .as_object()
        .ok_or_else(|| ApiError::field(param, "not a block"))?;
    refuse_other_keys(
        obj,
        &["type", "id", "name", "input", "cache_control"],
        param,
    )?;
    let id = obj.get("id").and_then(Value::as_str);
    let name = obj.get("name").and_then(Value::as_str);
    let input = obj.get("input").filter(|i| i.is_object());
    match (id, name, input) {
        (Some(id), Some(name), Some(input)) => Ok(pb::ToolCall {
            id: id.to_owned(),
            name: name.to_owned(),
            arguments_json: input.to_string(),
        }),
        _ => Err(ApiError::field(
            param,
            "a tool_use block needs `id`, `name` and an `input` object",
        )),
    }
}

fn tool_result(block: &Value, param: &str) -> Result<pb::ChatMessage, ApiError> {
    let obj = block
        .as_object()
        .ok_or_else(|| ApiError::field(param, "not a block"))?;
    refuse_other_keys(
        obj,
        &[
            "type",
            "tool_use_id",
            "content",
            "is_error",
            "cache_control",
        ],
        param,
    )?;
    let Some(id) = obj.get("tool_use_id").and_then(Value::as_str) else {
        return Err(ApiError::field(
            &format!("{param}.tool_use_id"),
            "a tool_result block needs a `tool_use_id`",
        ));
    };
    let mut content = match obj.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (k, part) in parts.iter().enumerate() {
                text.push_str(&text_block(part, &format!("{param}.content[{k}]"))?);
            }
            text
        }
        Some(_) => {
            return Err(ApiError::field(
                &format!("{param}.content"),
                "`content` must be a string or an array of text blocks",
            ));
        }
    };
    match obj.get("is_error") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        Some(Value::Bool(true)) => content.insert_str(0, "Error: "),
        Some(_) => {
            return Err(ApiError::field(
                &format!("{param}.is_error"),
                "`is_error` must be a boolean",
            ));
        }
    }
    Ok(pb::ChatMessage {
        tool_call_id: Some(id.to_owned()),
        ..message("tool", content)
    })
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

    fn chat(r: &MessagesRequest) -> &[pb::ChatMessage] {
        match &r.generate.input {
            Some(pb::generate_request::Input::Chat(c)) => &c.messages,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_request_maps_to_generate() {
        let r = parse_messages(
            br#"{"model":"m","max_tokens":9,"system":[{"type":"text","text":"Be brief."}],
            "messages":[{"role":"user","content":"Weather?"},
              {"role":"assistant","content":[{"type":"text","text":"Let me see."},
                {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"sunny"}]}],
            "tools":[{"name":"get_weather","description":"d","input_schema":{"type":"object"}}],
            "tool_choice":{"type":"any","disable_parallel_tool_use":true},
            "stop_sequences":["\n\n"],"temperature":0.5,"top_k":5,"stream":true,
            "metadata":{"user_id":"u"}}"#,
        )
        .unwrap();
        assert!(r.stream);
        assert_eq!(r.generate.max_tokens, Some(9));
        assert_eq!(r.generate.stop, vec!["\n\n"]);
        let m = chat(&r);
        let roles: Vec<_> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "tool"]);
        assert_eq!(m[2].tool_calls[0].arguments_json, r#"{"city":"Paris"}"#);
        assert_eq!(m[3].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(m[3].content, "sunny");
        let choice = r.generate.tool_choice.unwrap();
        assert_eq!(choice.mode, pb::tool_choice::Mode::Required as i32);
        assert!(choice.single_call);
        assert_eq!(r.generate.tools[0].parameters_json, r#"{"type":"object"}"#);
    }

    #[test]
    fn tool_choice_none_and_tool() {
        let base = r#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":"#;
        let r = parse_messages(format!(r#"{base}{{"type":"none"}}}}"#).as_bytes()).unwrap();
        assert!(r.generate.tools.is_empty() && r.generate.tool_choice.is_none());
        let r =
            parse_messages(format!(r#"{base}{{"type":"tool","name":"f"}}}}"#).as_bytes()).unwrap();
        assert_eq!(r.generate.tool_choice.unwrap().function, "f");
    }

    #[test]
    fn output_config_format_is_a_schema_constraint() {
        let r = parse_messages(
            br#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"x"}],
            "output_config":{"format":{"type":"json_schema","schema":{"type":"object"}}}}"#,
        )
        .unwrap();
        assert_eq!(
            r.generate.response_format.unwrap().format,
            Some(pb::response_format::Format::JsonSchema(
                r#"{"type":"object"}"#.into()
            ))
        );
        let err = parse_messages(
            br#"{"model":"m","max_tokens":9,"messages":[{"role":"user","content":"x"}],"output_config":{"effort":"high"}}"#,
        )
        .unwrap_err();
        assert_eq!(param_of(err), "output_config.effort");
    }

    #[test]
    fn count_tokens_needs_no_max_tokens() {
        let r = parse_count_tokens(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#)
            .unwrap();
        assert_eq!(r.generate.max_tokens, Some(1));
    }

    #[test]
    fn bad_and_unsupported_fields_are_named() {
        let ok = r#""model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]"#;
        let cases: &[(&str, &str)] = &[
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens",
            ),
            (&format!(r#"{{{ok},"n":2}}"#), "n"),
            (
                &format!(r#"{{{ok},"thinking":{{"type":"enabled","budget_tokens":1024}}}}"#),
                "thinking",
            ),
            (&format!(r#"{{{ok},"temperature":1.5}}"#), "temperature"),
            (
                &format!(r#"{{{ok},"stop_sequences":"x"}}"#),
                "stop_sequences",
            ),
            (
                &format!(r#"{{{ok},"tools":[{{"type":"bash_20250124","name":"bash"}}]}}"#),
                "tools[0].type",
            ),
            (
                &format!(r#"{{{ok},"tools":[{{"name":"f"}}]}}"#),
                "tools[0].input_schema",
            ),
            (
                &format!(r#"{{{ok},"tool_choice":{{"type":"any"}}}}"#),
                "tool_choice",
            ),
            (&format!(r#"{{{ok},"metadata":{{"x":1}}}}"#), "metadata"),
            (
                r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}"#,
                "messages[0].content[0].type",
            ),
            (
                r#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#,
                "messages[0].role",
            ),
            (
                r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}"#,
                "messages[0].content[0].tool_use_id",
            ),
            (
                r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x","name":"n"}]}"#,
                "messages[0].name",
            ),
        ];
        for (body, param) in cases {
            let err = parse_messages(body.as_bytes()).unwrap_err();
            assert_eq!(param_of(err), *param, "{body}");
        }
        let err = parse_count_tokens(format!(r#"{{{ok}}}"#).as_bytes()).unwrap_err();
        assert_eq!(param_of(err), "max_tokens");
    }
}
