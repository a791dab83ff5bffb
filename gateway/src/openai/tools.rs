//! The tool-calling parts of a chat request: `tools`, `tool_choice`, and the
//! `tool_calls` / `tool_call_id` of earlier messages.

use herd_proto::v1 as pb;
use serde_json::{Map, Value};

use super::fields::Fields;
use crate::error::ApiError;

/// The most tools a request may give, and the most bytes their descriptions
/// and parameter schemas may total (the worker's limits).
pub const MAX_TOOLS: usize = 64;
pub const MAX_TOOLS_BYTES: usize = 128 * 1024;

/// `tools`, `tool_choice` and `parallel_tool_calls`. `tool_choice: "none"`
/// (or no tools) sends no tools at all, so the model answers in prose.
pub fn parse_tools(fields: &Fields) -> Result<(Vec<pb::Tool>, Option<pb::ToolChoice>), ApiError> {
    // OpenAI's default: a reply may call several tools.
    let single_call = fields.bool("parallel_tool_calls")? == Some(false);
    let tools = tool_list(fields.get("tools"), "parameter schemas", parse_tool)?;
    use pb::tool_choice::Mode;
    let (mode, function) = match fields.get("tool_choice") {
        None => (Mode::Auto, String::new()),
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok((Vec::new(), None)),
            "auto" => (Mode::Auto, String::new()),
            "required" => (Mode::Required, String::new()),
            _ => {
                return Err(ApiError::field(
                    "tool_choice",
                    "`tool_choice` must be `none`, `auto`, `required` or a function",
                ));
            }
        },
        Some(Value::Object(choice)) => {
            let name = choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::field(
                        "tool_choice.function.name",
                        "`tool_choice.function.name` must name a tool",
                    )
                })?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::field(
                    "tool_choice.function.name",
                    format!("`{name}` is not among the `tools`"),
                ));
            }
            (Mode::Function, name.to_owned())
        }
        Some(_) => {
            return Err(ApiError::field(
                "tool_choice",
                "`tool_choice` must be a string or an object",
            ));
        }
    };
    with_choice(tools, mode, function, single_call)
}

/// A request's `tools` array (`None`: no tools), each tool parsed by `one`
/// (its index and value), within the worker's limits: at most
/// [`MAX_TOOLS`] tools, and [`MAX_TOOLS_BYTES`] of descriptions and
/// schemas (`schemas`: what the API calls them, for the error).
pub fn tool_list(
    tools: Option<&Value>,
    schemas: &str,
    one: impl Fn(usize, &Value) -> Result<pb::Tool, ApiError>,
) -> Result<Vec<pb::Tool>, ApiError> {
    let tools = match tools {
        None => Vec::new(),
        Some(Value::Array(items)) if items.len() > MAX_TOOLS => {
            return Err(ApiError::field(
                "tools",
                format!("at most {MAX_TOOLS} tools may be given"),
            ));
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| one(i, t))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(ApiError::field("tools", "`tools` must be an array")),
    };
    let bytes: usize = tools
        .iter()
        .map(|t| t.parameters_json.len() + t.description.len())
        .sum();
    if bytes > MAX_TOOLS_BYTES {
        return Err(ApiError::field(
            "tools",
            format!(
                "the tools' descriptions and {schemas} may total at most {} KiB",
                MAX_TOOLS_BYTES / 1024
            ),
        ));
    }
    Ok(tools)
}

/// The tools and the choice among them as the worker takes them: no tools
/// and no choice when there are none (a choice other than `auto` without
/// tools is refused).
pub fn with_choice(
    tools: Vec<pb::Tool>,
    mode: pb::tool_choice::Mode,
    function: String,
    single_call: bool,
) -> Result<(Vec<pb::Tool>, Option<pb::ToolChoice>), ApiError> {
    if tools.is_empty() {
        if mode != pb::tool_choice::Mode::Auto {
            return Err(ApiError::field(
                "tool_choice",
                "`tool_choice` needs `tools`",
            ));
        }
        return Ok((Vec::new(), None));
    }
    Ok((
        tools,
        Some(pb::ToolChoice {
            mode: mode as i32,
            function,
            single_call,
        }),
    ))
}

/// One OpenAI function tool, `tools[i]`.
pub fn parse_tool(i: usize, tool: &Value) -> Result<pb::Tool, ApiError> {
    let param = |f: &str| format!("tools[{i}].{f}");
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err(ApiError::field(
            &param("type"),
            "only `function` tools are supported",
        ));
    }
    let Some(function) = tool.get("function").and_then(Value::as_object) else {
        return Err(ApiError::field(
            &param("function"),
            "`function` must be an object",
        ));
    };
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| valid_name(n))
        .ok_or_else(|| {
            ApiError::field(
                &param("function.name"),
                "a function name is 1-64 letters, digits, `_` or `-`",
            )
        })?;
    let description = match function.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => {
            return Err(ApiError::field(
                &param("function.description"),
                "`description` must be a string",
            ));
        }
    };
    let parameters_json = match function.get("parameters") {
        None | Some(Value::Null) => String::new(),
        Some(p @ Value::Object(_)) => p.to_string(),
        Some(_) => {
            return Err(ApiError::field(
                &param("function.parameters"),
                "`parameters` must be a JSON Schema object",
            ));
        }
    };
    Ok(pb::Tool {
        name: name.to_owned(),
        description,
        parameters_json,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `messages[i].tool_calls` of an assistant message.
pub fn parse_tool_calls(i: usize, msg: &Map<String, Value>) -> Result<Vec<pb::ToolCall>, ApiError> {
    let calls = match msg.get("tool_calls") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(calls)) => calls,
        Some(_) => {
            return Err(ApiError::field(
                &format!("messages[{i}].tool_calls"),
                "`tool_calls` must be an array",
            ));
        }
    };
    calls
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let param = format!("messages[{i}].tool_calls[{j}]");
            let function = call.get("function");
            let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
            let arguments = function
                .and_then(|f| f.get("arguments"))
                .and_then(Value::as_str);
            match (name, arguments) {
                (Some(name), Some(arguments)) => Ok(pb::ToolCall {
                    id: call
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    name: name.to_owned(),
                    arguments_json: arguments.to_owned(),
                }),
                _ => Err(ApiError::field(
                    &param,
                    "a tool call needs `function.name` and `function.arguments` (a string)",
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<(Vec<pb::Tool>, Option<pb::ToolChoice>), ApiError> {
        parse_tools(&Fields::parse(json.as_bytes()).unwrap())
    }

    const TOOLS: &str = r#""tools":[{"type":"function","function":{"name":"get_weather","description":"d","parameters":{"type":"object"}}}]"#;

    #[test]
    fn tools_and_choices() {
        let (tools, choice) = parse(&format!("{{{TOOLS}}}")).unwrap();
        assert_eq!(tools[0].name, "get_weather");
        assert_eq!(choice.unwrap().mode, pb::tool_choice::Mode::Auto as i32);
        let (_, choice) = parse(&format!(r#"{{{TOOLS},"tool_choice":"required"}}"#)).unwrap();
        let choice = choice.unwrap();
        assert_eq!(choice.mode, pb::tool_choice::Mode::Required as i32);
        assert!(!choice.single_call, "parallel calls are the default");
        let (_, choice) = parse(&format!(r#"{{{TOOLS},"parallel_tool_calls":false}}"#)).unwrap();
        assert!(choice.unwrap().single_call);
        let (_, choice) = parse(&format!(
            r#"{{{TOOLS},"tool_choice":{{"type":"function","function":{{"name":"get_weather"}}}}}}"#
        ))
        .unwrap();
        assert_eq!(choice.unwrap().function, "get_weather");
        let (tools, choice) = parse(&format!(r#"{{{TOOLS},"tool_choice":"none"}}"#)).unwrap();
        assert!(tools.is_empty() && choice.is_none());
    }

    #[test]
    fn bad_tools_name_the_field() {
        let param = |json: &str| match parse(json).unwrap_err() {
            ApiError::InvalidField { param, .. } => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(r#"{"tools":[{"type":"retrieval"}]}"#),
            "tools[0].type"
        );
        assert_eq!(
            param(r#"{"tools":[{"type":"function","function":{"name":"a b"}}]}"#),
            "tools[0].function.name"
        );
        assert_eq!(
            param(&format!(
                r#"{{{TOOLS},"tool_choice":{{"type":"function","function":{{"name":"other"}}}}}}"#
            )),
            "tool_choice.function.name"
        );
        assert_eq!(param(r#"{"tool_choice":"required"}"#), "tool_choice");
        let many = vec![r#"{"type":"function","function":{"name":"f"}}"#; MAX_TOOLS + 1];
        assert_eq!(
            param(&format!(r#"{{"tools":[{}]}}"#, many.join(","))),
            "tools"
        );
        assert_eq!(
            param(r#"{"parallel_tool_calls":"no"}"#),
            "parallel_tool_calls"
        );
    }
}
