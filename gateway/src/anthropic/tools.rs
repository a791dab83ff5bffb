//! Anthropic's `tools` (custom tools) and `tool_choice`, mapped onto the
//! same tool-calling machinery as OpenAI's.

use herd_proto::v1 as pb;
use serde_json::Value;

use super::request::refuse_other_keys;
use crate::error::ApiError;
use crate::openai::fields::Fields;
use crate::openai::tools::tool_list;

/// `tools` (custom tools: name, description, input_schema) and
/// `tool_choice` (auto, any, tool, none; `disable_parallel_tool_use`).
pub fn parse(fields: &Fields) -> Result<(Vec<pb::Tool>, Option<pb::ToolChoice>), ApiError> {
    use pb::tool_choice::Mode;
    let tools = tool_list(fields.get("tools"), "input schemas", |i, t| {
        tool(t, &format!("tools[{i}]"))
    })?;
    let (mode, function, single_call) = match fields.get("tool_choice") {
        None => (Mode::Auto, String::new(), false),
        Some(Value::Object(choice)) => {
            refuse_other_keys(
                choice,
                &["type", "name", "disable_parallel_tool_use"],
                "tool_choice",
            )?;
            let single = match choice.get("disable_parallel_tool_use") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(ApiError::field(
                        "tool_choice.disable_parallel_tool_use",
                        "`disable_parallel_tool_use` must be a boolean",
                    ));
                }
            };
            match choice.get("type").and_then(Value::as_str) {
                Some("none") => return Ok((Vec::new(), None)),
                Some("auto") => (Mode::Auto, String::new(), single),
                Some("any") => (Mode::Required, String::new(), single),
                Some("tool") => {
                    let name = choice.get("name").and_then(Value::as_str).unwrap_or("");
                    if !tools.iter().any(|t| t.name == name) {
                        return Err(ApiError::field(
                            "tool_choice.name",
                            format!("`{name}` is not among the `tools`"),
                        ));
                    }
                    (Mode::Function, name.to_owned(), single)
                }
                _ => {
                    return Err(ApiError::field(
                        "tool_choice.type",
                        "`tool_choice.type` must be `auto`, `any`, `tool` or `none`",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(ApiError::field(
                "tool_choice",
                "`tool_choice` must be an object",
            ));
        }
    };
    crate::openai::tools::with_choice(tools, mode, function, single_call)
}

fn tool(tool: &Value, param: &str) -> Result<pb::Tool, ApiError> {
    let Some(obj) = tool.as_object() else {
        return Err(ApiError::field(
            param,
            format!("`{param}` must be an object"),
        ));
    };
    match obj.get("type").and_then(Value::as_str) {
        None | Some("custom") => {}
        Some(other) => {
            return Err(ApiError::unsupported(
                &format!("{param}.type"),
                format!("`{other}` tools are not supported; only custom tools"),
            ));
        }
    }
    refuse_other_keys(
        obj,
        &[
            "type",
            "name",
            "description",
            "input_schema",
            "cache_control",
        ],
        param,
    )?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| {
            (1..=64).contains(&n.len())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .ok_or_else(|| {
            ApiError::field(
                &format!("{param}.name"),
                "a tool name is 1-64 letters, digits, `_` or `-`",
            )
        })?;
    let description = match obj.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => {
            return Err(ApiError::field(
                &format!("{param}.description"),
                "`description` must be a string",
            ));
        }
    };
    let parameters_json = match obj.get("input_schema") {
        Some(s @ Value::Object(_)) => s.to_string(),
        _ => {
            return Err(ApiError::field(
                &format!("{param}.input_schema"),
                "`input_schema` must be a JSON Schema object",
            ));
        }
    };
    Ok(pb::Tool {
        name: name.to_owned(),
        description,
        parameters_json,
    })
}
