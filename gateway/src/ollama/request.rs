//! Ollama request bodies (`/api/chat`, `/api/generate`, `/api/embed`,
//! `/api/pull`, `/api/delete`, `/api/show`) parsed, validated and mapped
//! onto the worker's requests. Every field is read or refused by name;
//! `stream` defaults to true, as in Ollama.

use herd_proto::v1 as pb;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::openai::fields::Fields;
use crate::openai::tools::{parse_tool, tool_list};
use crate::scheduler::KeepAlive;

/// A validated `/api/chat` or `/api/generate` request.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaGenerate {
    pub model: String,
    pub stream: bool,
    pub keep_alive: Option<KeepAlive>,
    /// `options.num_ctx`: checked against the model's context once it is
    /// known (it cannot grow it).
    pub num_ctx: Option<u32>,
    pub generate: pb::GenerateRequest,
}

/// A validated `/api/embed` request.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaEmbed {
    pub model: String,
    pub keep_alive: Option<KeepAlive>,
    pub embed: pb::EmbedRequest,
}

const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "tools",
    "format",
    "options",
    "stream",
    "keep_alive",
    "think",
];
const GENERATE_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "system",
    "raw",
    "format",
    "options",
    "stream",
    "keep_alive",
    "think",
    "suffix",
    "template",
    "context",
    "images",
];
const OPTIONS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "num_predict",
    "stop",
    "seed",
    "num_ctx",
    "presence_penalty",
    "frequency_penalty",
];
const MAX_STOPS: usize = 16;

/// Parses `/api/chat`.
pub fn parse_chat(body: &[u8]) -> Result<OllamaGenerate, ApiError> {
    let fields = Fields::parse(body)?;
    fields.refuse_unknown(CHAT_FIELDS, "Ollama chat")?;
    let messages = messages(&fields)?;
    let mut request = common(&fields)?;
    request.generate.input = Some(pb::generate_request::Input::Chat(pb::ChatInput {
        messages,
    }));
    let tools = tools(&fields)?;
    if !tools.is_empty() {
        request.generate.tool_choice = Some(pb::ToolChoice {
            mode: pb::tool_choice::Mode::Auto as i32,
            function: String::new(),
            single_call: false,
        });
    }
    request.generate.tools = tools;
    Ok(request)
}

/// Parses `/api/generate`: the prompt goes through the model's chat
/// template (with `system`), or as is with `raw`.
pub fn parse_generate(body: &[u8]) -> Result<OllamaGenerate, ApiError> {
    let fields = Fields::parse(body)?;
    fields.refuse_unknown(GENERATE_FIELDS, "Ollama generate")?;
    fields.reject_unless_neutral("suffix", "fill-in-the-middle is not available")?;
    fields.reject_unless_neutral("template", "the model's own chat template is used")?;
    fields.reject_unless_neutral("context", "pass the conversation as `/api/chat` messages")?;
    fields.reject_unless_neutral("images", "images are not supported")?;
    let prompt = match fields.get("prompt") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        Some(Value::String(_)) | None => {
            return Err(ApiError::field(
                "prompt",
                "`prompt` is required (loading a model without a prompt is not supported)",
            ));
        }
        Some(_) => return Err(ApiError::field("prompt", "`prompt` must be a string")),
    };
    let raw = fields.bool("raw")?.unwrap_or(false);
    let system = fields.optional_str("system")?.map(str::to_owned);
    let mut request = common(&fields)?;
    request.generate.input = Some(if raw {
        if system.is_some() {
            return Err(ApiError::field(
                "system",
                "`system` has no effect with `raw`",
            ));
        }
        pb::generate_request::Input::Prompt(pb::PromptInput { text: prompt })
    } else {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(message("system", system));
        }
        messages.push(message("user", prompt));
        pb::generate_request::Input::Chat(pb::ChatInput { messages })
    });
    Ok(request)
}

/// Parses `/api/embed`: `input` is a string or an array of strings.
pub fn parse_embed(body: &[u8]) -> Result<OllamaEmbed, ApiError> {
    let fields = Fields::parse(body)?;
    fields.refuse_unknown(
        &[
            "model",
            "input",
            "truncate",
            "options",
            "keep_alive",
            "dimensions",
        ],
        "Ollama embed",
    )?;
    let model = fields.required_str("model")?.to_owned();
    fields.reject_unless_neutral("dimensions", "vectors have the model's own size")?;
    if fields.bool("truncate")? == Some(true) {
        return Err(ApiError::unsupported(
            "truncate",
            "`truncate` is not supported: an input longer than the context is an error",
        ));
    }
    fields.reject_unless_neutral("options", "embeddings take no options")?;
    let text = |s: &Value, param: &str| match s {
        Value::String(s) if !s.is_empty() => Ok(pb::EmbedInput {
            input: Some(pb::embed_input::Input::Text(s.clone())),
        }),
        _ => Err(ApiError::field(
            param,
            "each input must be a non-empty string",
        )),
    };
    let inputs = match fields.get("input") {
        Some(s @ Value::String(_)) => vec![text(s, "input")?],
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= 2048 => items
            .iter()
            .enumerate()
            .map(|(i, s)| text(s, &format!("input[{i}]")))
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::field(
                "input",
                "`input` must be a string or an array of 1-2048 strings",
            ));
        }
    };
    Ok(OllamaEmbed {
        keep_alive: crate::openai::keep_alive::parse(&fields)?,
        model: model.clone(),
        embed: pb::EmbedRequest { model, inputs },
    })
}

/// `{"model": …}` of `/api/show`, `/api/delete` and `/api/pull` (which
/// also take `stream`, `insecure` and `verbose`); the model and `stream`.
pub fn parse_model(body: &[u8], known: &[&str]) -> Result<(String, bool), ApiError> {
    let fields = Fields::parse(body)?;
    fields.refuse_unknown(known, "Ollama")?;
    if fields.bool("insecure")? == Some(true) {
        return Err(ApiError::unsupported(
            "insecure",
            "`insecure` is not supported: registries are reached as configured",
        ));
    }
    fields.bool("verbose")?;
    // `name` is the older spelling.
    let model = match fields.get("model") {
        Some(_) => fields.required_str("model")?,
        None => fields
            .required_str("name")
            .map_err(|_| ApiError::field("model", "`model` is required"))?,
    };
    Ok((model.to_owned(), fields.bool("stream")?.unwrap_or(true)))
}

fn message(role: &str, content: String) -> pb::ChatMessage {
    pb::ChatMessage {
        role: role.to_owned(),
        content,
        ..Default::default()
    }
}

/// Fields shared by chat and generate: model, stream, keep_alive, format,
/// think, options.
fn common(fields: &Fields) -> Result<OllamaGenerate, ApiError> {
    let model = fields.required_str("model")?.to_owned();
    let stream = fields.bool("stream")?.unwrap_or(true);
    match fields.get("think") {
        None | Some(Value::Bool(false)) => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "think",
                "`think` is not supported: thinking output is not separated",
            ));
        }
    }
    let response_format = match fields.get("format") {
        None => None,
        Some(Value::String(s)) if s == "json" => {
            Some(pb::response_format::Format::JsonObject(true))
        }
        Some(Value::String(s)) if s.is_empty() => None,
        Some(schema @ Value::Object(_)) => {
            Some(pb::response_format::Format::JsonSchema(schema.to_string()))
        }
        Some(_) => {
            return Err(ApiError::field(
                "format",
                "`format` must be `json` or a JSON Schema object",
            ));
        }
    };
    let empty = Map::new();
    let options = match fields.get("options") {
        None => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => return Err(ApiError::field("options", "`options` must be an object")),
    };
    if let Some(k) = options.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(ApiError::unsupported(
            &format!("options.{k}"),
            format!(
                "`options.{k}` is not supported; Herd reads {}",
                OPTIONS.join(", ")
            ),
        ));
    }
    let opts = Fields::parse(&serde_json::to_vec(options).unwrap_or_default())
        .map_err(|_| ApiError::field("options", "`options` must be an object"))?;
    let named = |e: ApiError| match e {
        ApiError::InvalidField { param, message } => ApiError::InvalidField {
            param: format!("options.{param}"),
            message,
        },
        other => other,
    };
    let max_tokens = match opts.get("num_predict") {
        None => None,
        // -1: no limit; -2: until the context is full.
        Some(Value::Number(n)) if n.as_i64().is_some_and(|v| v == -1 || v == -2) => None,
        Some(_) => opts
            .u64_in("num_predict", 1, 1 << 20)
            .map_err(named)?
            .map(|v| v as u32),
    };
    let stop = match opts.get("stop") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.len() <= MAX_STOPS => items
            .iter()
            .map(|s| match s {
                Value::String(s) if !s.is_empty() && s.len() <= 1024 => Ok(s.clone()),
                _ => Err(ApiError::field(
                    "options.stop",
                    "each stop sequence must be a string of 1-1024 bytes",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::field(
                "options.stop",
                format!("`options.stop` must be an array of at most {MAX_STOPS} strings"),
            ));
        }
    };
    let sampling = pb::SamplingParams {
        temperature: opts.f32_in("temperature", 0.0, 2.0).map_err(named)?,
        top_p: opts.f32_in("top_p", 0.0, 1.0).map_err(named)?,
        top_k: opts
            .u64_in("top_k", 0, u64::from(u32::MAX))
            .map_err(named)?
            .map(|k| k as u32),
        seed: opts.seed("seed").map_err(named)?,
        presence_penalty: opts
            .f32_in("presence_penalty", -2.0, 2.0)
            .map_err(named)?
            .unwrap_or(0.0),
        frequency_penalty: opts
            .f32_in("frequency_penalty", -2.0, 2.0)
            .map_err(named)?
            .unwrap_or(0.0),
        min_p: opts.f32_in("min_p", 0.0, 1.0).map_err(named)?,
    };
    let num_ctx = opts
        .u64_in("num_ctx", 1, u64::from(u32::MAX))
        .map_err(named)?
        .map(|n| n as u32);
    Ok(OllamaGenerate {
        keep_alive: crate::openai::keep_alive::parse(fields)?,
        model: model.clone(),
        stream,
        num_ctx,
        generate: pb::GenerateRequest {
            request_id: String::new(),
            model,
            input: None,
            sampling: Some(sampling),
            max_tokens,
            stop,
            response_format: response_format.map(|f| pb::ResponseFormat { format: Some(f) }),
            tools: Vec::new(),
            tool_choice: None,
        },
    })
}

/// `messages`: `{role, content, tool_calls?, tool_name?}`; images refused.
fn messages(fields: &Fields) -> Result<Vec<pb::ChatMessage>, ApiError> {
    let items = match fields.get("messages") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | None => {
            return Err(ApiError::field(
                "messages",
                "`messages` is required and must not be empty (loading a model without messages is not supported)",
            ));
        }
        Some(_) => return Err(ApiError::field("messages", "`messages` must be an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let param = format!("messages[{i}]");
            let Some(msg) = item.as_object() else {
                return Err(ApiError::field(&param, format!("`{param}` must be an object")));
            };
            if let Some(k) = msg.keys().find(|k| {
                !["role", "content", "tool_calls", "tool_name", "images", "thinking"]
                    .contains(&k.as_str())
            }) {
                return Err(ApiError::unsupported(
                    &format!("{param}.{k}"),
                    format!("`{param}.{k}` is not supported"),
                ));
            }
            for (k, why) in [("images", "images are not supported"), ("thinking", "thinking is not supported")] {
                if msg.get(k).is_some_and(|v| !v.is_null() && v != &Value::Array(vec![]) && v != "") {
                    return Err(ApiError::unsupported(&format!("{param}.{k}"), why));
                }
            }
            let role = match msg.get("role").and_then(Value::as_str) {
                Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
                _ => {
                    return Err(ApiError::field(
                        &format!("{param}.role"),
                        "`role` must be system, user, assistant or tool",
                    ));
                }
            };
            let content = match msg.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => {
                    return Err(ApiError::field(
                        &format!("{param}.content"),
                        "`content` must be a string",
                    ));
                }
            };
            let tool_calls = match msg.get("tool_calls") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(calls)) if role == "assistant" => calls
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        let f = c.get("function");
                        let name = f.and_then(|f| f.get("name")).and_then(Value::as_str);
                        let args = f.and_then(|f| f.get("arguments")).filter(|a| a.is_object());
                        match (name, args) {
                            (Some(name), Some(args)) => Ok(pb::ToolCall {
                                id: format!("call_{i}_{j}"),
                                name: name.to_owned(),
                                arguments_json: args.to_string(),
                            }),
                            _ => Err(ApiError::field(
                                &format!("{param}.tool_calls[{j}]"),
                                "a tool call needs `function.name` and `function.arguments` (an object)",
                            )),
                        }
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => {
                    return Err(ApiError::field(
                        &format!("{param}.tool_calls"),
                        "`tool_calls` is an array, on assistant messages",
                    ));
                }
            };
            let name = match msg.get("tool_name") {
                None | Some(Value::Null) => None,
                Some(Value::String(n)) => Some(n.clone()),
                Some(_) => {
                    return Err(ApiError::field(
                        &format!("{param}.tool_name"),
                        "`tool_name` must be a string",
                    ));
                }
            };
            Ok(pb::ChatMessage {
                name,
                tool_calls,
                ..message(role, content)
            })
        })
        .collect()
}

/// `tools`: OpenAI-style function tools (Ollama's shape), with OpenAI's
/// checks and limits.
fn tools(fields: &Fields) -> Result<Vec<pb::Tool>, ApiError> {
    tool_list(fields.get("tools"), "parameter schemas", parse_tool)
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
    fn chat_maps_options_format_and_tools() {
        let r = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"x"},
              {"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},
              {"role":"tool","content":"42","tool_name":"f"}],
            "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
            "format":"json","keep_alive":"10m",
            "options":{"temperature":0,"num_predict":5,"stop":["\n"],"seed":1,"num_ctx":2048}}"#,
        )
        .unwrap();
        assert!(r.stream, "stream defaults to true");
        assert_eq!(r.num_ctx, Some(2048));
        assert_eq!(r.generate.max_tokens, Some(5));
        assert_eq!(r.generate.stop, vec!["\n"]);
        assert_eq!(r.generate.tools[0].name, "f");
        assert_eq!(
            r.generate.response_format.unwrap().format,
            Some(pb::response_format::Format::JsonObject(true))
        );
        assert!(r.keep_alive.is_some());
        let Some(pb::generate_request::Input::Chat(chat)) = r.generate.input else {
            panic!()
        };
        assert_eq!(chat.messages[1].tool_calls[0].arguments_json, r#"{"a":1}"#);
        assert_eq!(chat.messages[2].name.as_deref(), Some("f"));
    }

    #[test]
    fn generate_raw_and_templated() {
        let r =
            parse_generate(br#"{"model":"m","prompt":"hi","system":"s","stream":false}"#).unwrap();
        assert!(!r.stream);
        assert!(
            matches!(r.generate.input, Some(pb::generate_request::Input::Chat(ref c)) if c.messages.len() == 2)
        );
        let r = parse_generate(
            br#"{"model":"m","prompt":"hi","raw":true,"options":{"num_predict":-1}}"#,
        )
        .unwrap();
        assert!(matches!(
            r.generate.input,
            Some(pb::generate_request::Input::Prompt(_))
        ));
        assert_eq!(r.generate.max_tokens, None);
    }

    #[test]
    fn refused_fields_are_named() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"options":{"mirostat":1}}"#, "options.mirostat"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"options":{"temperature":"hot"}}"#, "options.temperature"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x","images":["aGk="]}]}"#, "messages[0].images"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"think":true}"#, "think"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"format":5}"#, "format"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"bogus":1}"#, "bogus"),
            (br#"{"model":"m","messages":[]}"#, "messages"),
        ];
        for (body, param) in cases {
            assert_eq!(
                param_of(parse_chat(body).unwrap_err()),
                *param,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            param_of(parse_generate(br#"{"model":"m","prompt":"x","suffix":"y"}"#).unwrap_err()),
            "suffix"
        );
        assert_eq!(
            param_of(parse_generate(br#"{"model":"m"}"#).unwrap_err()),
            "prompt"
        );
        assert_eq!(
            param_of(parse_embed(br#"{"model":"m","input":[]}"#).unwrap_err()),
            "input"
        );
        assert_eq!(
            param_of(parse_embed(br#"{"model":"m","input":"x","truncate":true}"#).unwrap_err()),
            "truncate"
        );
    }

    #[test]
    fn model_bodies() {
        let known = &["model", "name", "stream", "insecure", "verbose"];
        assert_eq!(
            parse_model(br#"{"model":"a"}"#, known).unwrap(),
            ("a".into(), true)
        );
        assert_eq!(
            parse_model(br#"{"name":"a","stream":false}"#, known).unwrap(),
            ("a".into(), false)
        );
        assert!(parse_model(br#"{}"#, known).is_err());
        assert!(parse_model(br#"{"model":"a","insecure":true}"#, known).is_err());
    }
}
