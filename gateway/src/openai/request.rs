//! OpenAI request bodies (`/v1/chat/completions`, `/v1/completions`) parsed,
//! validated and mapped onto the worker's `GenerateRequest`.

use herd_proto::v1 as pb;
use serde_json::Value;

use super::fields::Fields;
use crate::error::ApiError;

/// Which OpenAI endpoint a request came through; decides the response shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
}

impl Endpoint {
    /// The request field that holds the input.
    pub fn input_param(self) -> &'static str {
        match self {
            Self::ChatCompletions => "messages",
            Self::Completions => "prompt",
        }
    }
}

/// A validated generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub endpoint: Endpoint,
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: a final chunk with usage.
    pub include_usage: bool,
    /// What the worker is asked; `request_id` is filled in at dispatch.
    pub generate: pb::GenerateRequest,
    /// How long the model stays loaded after this request.
    pub keep_alive: Option<crate::scheduler::KeepAlive>,
}

/// Largest `max_tokens` accepted (the worker also stops when the context is full).
const MAX_TOKENS_LIMIT: u64 = 1 << 20;

/// Parses a `/v1/chat/completions` body.
pub fn parse_chat(body: &[u8]) -> Result<GenerationRequest, ApiError> {
    let fields = Fields::parse(body)?;
    let messages = parse_messages(&fields)?;
    let mut request = parse_common(&fields, Endpoint::ChatCompletions)?;
    request.generate.input = Some(pb::generate_request::Input::Chat(pb::ChatInput {
        messages,
    }));
    let (tools, tool_choice) = super::tools::parse_tools(&fields)?;
    request.generate.tools = tools;
    request.generate.tool_choice = tool_choice;
    fields.reject_unless_neutral("functions", "use `tools`; `functions` is deprecated")?;
    // With tools too, it shapes the answer of a reply that calls none.
    request.generate.response_format = parse_response_format(&fields)?;
    fields.reject_unless_neutral("top_logprobs", "log probabilities are not available yet")?;
    Ok(request)
}

/// Parses a `/v1/completions` body.
pub fn parse_completion(body: &[u8]) -> Result<GenerationRequest, ApiError> {
    let fields = Fields::parse(body)?;
    let prompt = match fields.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => s.clone(),
            [] => return Err(ApiError::field("prompt", "`prompt` must not be empty")),
            [Value::String(_), ..] => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "only one prompt per request is supported",
                ));
            }
            _ => {
                return Err(ApiError::unsupported(
                    "prompt",
                    "`prompt` must be a string; token arrays are not supported",
                ));
            }
        },
        Some(_) => return Err(ApiError::field("prompt", "`prompt` must be a string")),
        None => return Err(ApiError::field("prompt", "`prompt` is required")),
    };
    let mut request = parse_common(&fields, Endpoint::Completions)?;
    request.generate.input = Some(pb::generate_request::Input::Prompt(pb::PromptInput {
        text: prompt,
    }));
    fields.reject_unless_neutral("echo", "the prompt is not echoed")?;
    fields.reject_unless_neutral("suffix", "insertion is not supported")?;
    fields.u64_in("best_of", 1, 1)?;
    if fields
        .get("logprobs")
        .is_some_and(|v| v != &Value::Number(0.into()))
    {
        return Err(ApiError::unsupported(
            "logprobs",
            "`logprobs` is not supported: log probabilities are not available yet",
        ));
    }
    Ok(request)
}

/// Fields shared by both endpoints.
fn parse_common(fields: &Fields, endpoint: Endpoint) -> Result<GenerationRequest, ApiError> {
    let model = fields.required_str("model")?.to_owned();
    let stream = fields.bool("stream")?.unwrap_or(false);
    let include_usage = match fields.get("stream_options") {
        None => false,
        Some(Value::Object(opts)) => match opts.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ApiError::field(
                    "stream_options.include_usage",
                    "`stream_options.include_usage` must be a boolean",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::field(
                "stream_options",
                "`stream_options` must be an object",
            ));
        }
    };
    if fields.get("stream_options").is_some() && !stream {
        return Err(ApiError::field(
            "stream_options",
            "`stream_options` is only allowed when `stream` is true",
        ));
    }
    // `max_completion_tokens` is the newer name; either is accepted (the
    // newer wins), and both are checked.
    let max_completion_tokens = fields.u64_in("max_completion_tokens", 1, MAX_TOKENS_LIMIT)?;
    let max_tokens = max_completion_tokens.or(fields.u64_in("max_tokens", 1, MAX_TOKENS_LIMIT)?);
    // An end-user id, for abuse monitoring; not used, but it must be one.
    fields.optional_str("user")?;
    if fields.u64_in("n", 1, u64::MAX)?.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported("n", "only `n` = 1 is supported"));
    }
    if endpoint == Endpoint::ChatCompletions {
        fields.reject_unless_neutral("logprobs", "log probabilities are not available yet")?;
    }
    fields.reject_unless_neutral("logit_bias", "logit bias is not available yet")?;
    let sampling = pb::SamplingParams {
        temperature: fields.f32_in("temperature", 0.0, 2.0)?,
        top_p: fields.f32_in("top_p", 0.0, 1.0)?,
        top_k: fields
            .u64_in("top_k", 0, u64::from(u32::MAX))?
            .map(|k| k as u32),
        seed: fields.seed("seed")?,
        presence_penalty: fields.f32_in("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: fields
            .f32_in("frequency_penalty", -2.0, 2.0)?
            .unwrap_or(0.0),
        min_p: fields.f32_in("min_p", 0.0, 1.0)?,
    };
    Ok(GenerationRequest {
        keep_alive: super::keep_alive::parse(fields)?,
        endpoint,
        model: model.clone(),
        stream,
        include_usage,
        generate: pb::GenerateRequest {
            request_id: String::new(),
            model,
            input: None,
            sampling: Some(sampling),
            max_tokens: max_tokens.map(|m| m as u32),
            stop: fields.stop()?,
            response_format: None,
            tools: Vec::new(),
            tool_choice: None,
        },
    })
}

/// `response_format`: `text`, `json_object`, or `json_schema` with a schema.
fn parse_response_format(fields: &Fields) -> Result<Option<pb::ResponseFormat>, ApiError> {
    let Some(format) = fields.get("response_format") else {
        return Ok(None);
    };
    let schema = format.get("json_schema").and_then(|s| s.get("schema"));
    output_format(
        format,
        schema,
        "response_format",
        "response_format.json_schema.schema",
    )
}

/// A structured-output format object `at` (`{type, …}`) whose JSON Schema,
/// if any, is `schema` (found at `schema_at`): `text` (no constraint),
/// `json_object`, or `json_schema`. Shared by the APIs that take OpenAI's
/// formats under their own names.
pub fn output_format(
    format: &Value,
    schema: Option<&Value>,
    at: &str,
    schema_at: &str,
) -> Result<Option<pb::ResponseFormat>, ApiError> {
    use pb::response_format::Format;
    let format = match format.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(None),
        Some("json_object") => Format::JsonObject(true),
        Some("json_schema") => match schema.filter(|s| s.is_object()) {
            Some(schema) => Format::JsonSchema(schema.to_string()),
            None => {
                return Err(ApiError::field(
                    schema_at,
                    format!("`{schema_at}` must be a JSON Schema object"),
                ));
            }
        },
        _ => {
            return Err(ApiError::field(
                &format!("{at}.type"),
                format!("`{at}.type` must be `text`, `json_object` or `json_schema`"),
            ));
        }
    };
    Ok(Some(pb::ResponseFormat {
        format: Some(format),
    }))
}

/// `messages`: a non-empty array of `{role, content}`; content may be a
/// string, `null`, or an array of text parts.
fn parse_messages(fields: &Fields) -> Result<Vec<pb::ChatMessage>, ApiError> {
    let items = match fields.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(ApiError::field("messages", "`messages` must not be empty"));
        }
        Some(_) => return Err(ApiError::field("messages", "`messages` must be an array")),
        None => return Err(ApiError::field("messages", "`messages` is required")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_message(i, item))
        .collect()
}

fn parse_message(i: usize, item: &Value) -> Result<pb::ChatMessage, ApiError> {
    let param = |f: &str| format!("messages[{i}].{f}");
    let Value::Object(msg) = item else {
        return Err(ApiError::field(
            &format!("messages[{i}]"),
            format!("`messages[{i}]` must be an object"),
        ));
    };
    let role = match msg.get("role") {
        Some(Value::String(r)) => match r.as_str() {
            "system" | "user" | "assistant" | "developer" => {
                if r == "developer" {
                    "system".to_owned()
                } else {
                    r.clone()
                }
            }
            "tool" => r.clone(),
            "function" => {
                return Err(ApiError::unsupported(
                    &param("role"),
                    "`function` messages are deprecated; use `tool`",
                ));
            }
            other => {
                return Err(ApiError::field(
                    &param("role"),
                    format!(
                        "`{}` must be one of system, user, assistant, tool, developer; got `{other}`",
                        param("role")
                    ),
                ));
            }
        },
        _ => {
            return Err(ApiError::field(
                &param("role"),
                format!("`{}` is required and must be a string", param("role")),
            ));
        }
    };
    let content = match msg.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) if role == "assistant" => String::new(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => text.push_str(t),
                    (Some("text"), _) => {
                        return Err(ApiError::field(
                            &param(&format!("content[{j}].text")),
                            "text parts need a string `text`",
                        ));
                    }
                    _ => {
                        return Err(ApiError::unsupported(
                            &param(&format!("content[{j}].type")),
                            "only text content parts are supported",
                        ));
                    }
                }
            }
            text
        }
        _ => {
            return Err(ApiError::field(
                &param("content"),
                format!(
                    "`{}` must be a string or an array of text parts",
                    param("content")
                ),
            ));
        }
    };
    let name = match msg.get("name") {
        Some(Value::String(n)) => Some(n.clone()),
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(ApiError::field(&param("name"), "`name` must be a string"));
        }
    };
    let tool_calls = if role == "assistant" {
        super::tools::parse_tool_calls(i, msg)?
    } else {
        Vec::new()
    };
    let tool_call_id = match msg.get("tool_call_id") {
        Some(Value::String(id)) => Some(id.clone()),
        None | Some(Value::Null) if role == "tool" => {
            return Err(ApiError::field(
                &param("tool_call_id"),
                "tool messages need a `tool_call_id`",
            ));
        }
        None | Some(Value::Null) => None,
        Some(_) => {
            return Err(ApiError::field(
                &param("tool_call_id"),
                "`tool_call_id` must be a string",
            ));
        }
    };
    Ok(pb::ChatMessage {
        role,
        content,
        name,
        tool_calls,
        tool_call_id,
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

    #[test]
    fn full_chat_request_maps_to_generate() {
        let r = parse_chat(
            br#"{"model":"ai/smollm2","messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"!"}]}],
            "stream":true,"stream_options":{"include_usage":true},"max_tokens":7,
            "temperature":0,"top_p":0.5,"seed":3,"stop":["\n"],"n":1,"user":"u"}"#,
        )
        .unwrap();
        assert!(r.stream && r.include_usage);
        assert_eq!(r.model, "ai/smollm2");
        assert_eq!(r.generate.max_tokens, Some(7));
        assert_eq!(r.generate.stop, vec!["\n"]);
        let s = r.generate.sampling.unwrap();
        assert_eq!(
            (s.temperature, s.top_p, s.seed),
            (Some(0.0), Some(0.5), Some(3))
        );
        let Some(pb::generate_request::Input::Chat(chat)) = r.generate.input else {
            panic!("not a chat")
        };
        assert_eq!(chat.messages[1].content, "Hi!");
    }

    #[test]
    fn response_formats_map_to_constraints() {
        use pb::response_format::Format;
        let base = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":"#;
        let parse = |rf: &str| parse_chat(format!("{base}{rf}}}").as_bytes()).unwrap();
        assert_eq!(parse(r#"{"type":"text"}"#).generate.response_format, None);
        let json = parse(r#"{"type":"json_object"}"#)
            .generate
            .response_format
            .unwrap();
        assert_eq!(json.format, Some(Format::JsonObject(true)));
        let schema = parse(
            r#"{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object"}}}"#,
        );
        assert_eq!(
            schema.generate.response_format.unwrap().format,
            Some(Format::JsonSchema(r#"{"type":"object"}"#.into()))
        );
    }

    #[test]
    fn max_completion_tokens_wins() {
        let r = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"max_tokens":9}"#,
        )
        .unwrap();
        assert_eq!(r.generate.max_tokens, Some(5));
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"messages":[{"role":"user","content":"x"}]}"#, "model"),
            (br#"{"model":"m"}"#, "messages"),
            (br#"{"model":"m","messages":[]}"#, "messages"),
            (br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#, "messages[0].role"),
            (br#"{"model":"m","messages":[{"role":"user","content":5}]}"#, "messages[0].content"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"x"}"#, "temperature"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#, "max_tokens"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#, "n"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#, "stream"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}"#, "logprobs"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#, "tools[0].function"),
            (br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#, "messages[0].tool_call_id"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}"#, "response_format.type"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"x"}}}"#, "response_format.json_schema.schema"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#, "stream_options"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"max_tokens":"abc"}"#, "max_tokens"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"max_tokens":-5}"#, "max_tokens"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":5,"max_tokens":0}"#, "max_tokens"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5,"max_completion_tokens":0}"#, "max_completion_tokens"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"user":5}"#, "user"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"user":{"id":"u"}}"#, "user"),
        ];
        for (body, param) in cases {
            let err = parse_chat(body).unwrap_err();
            assert_eq!(param_of(err), *param, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn completion_prompt_forms() {
        assert!(parse_completion(br#"{"model":"m","prompt":"x"}"#).is_ok());
        assert!(parse_completion(br#"{"model":"m","prompt":["x"]}"#).is_ok());
        assert_eq!(
            param_of(parse_completion(br#"{"model":"m","prompt":["x","y"]}"#).unwrap_err()),
            "prompt"
        );
        assert_eq!(
            param_of(parse_completion(br#"{"model":"m","prompt":[1,2]}"#).unwrap_err()),
            "prompt"
        );
        assert_eq!(
            param_of(parse_completion(br#"{"model":"m"}"#).unwrap_err()),
            "prompt"
        );
        assert_eq!(
            param_of(parse_completion(br#"{"model":"m","prompt":"x","echo":true}"#).unwrap_err()),
            "echo"
        );
        assert_eq!(
            param_of(parse_completion(br#"{"model":"m","prompt":"x","user":[]}"#).unwrap_err()),
            "user"
        );
        assert!(parse_completion(br#"{"model":"m","prompt":"x","user":null}"#).is_ok());
    }
}
