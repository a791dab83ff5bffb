//! Tool calling for any model: the tools are described in a system message,
//! the output is constrained by a JSON-schema grammar to either
//! `{"tool_call": {"name", "arguments"}}` or (when the model may choose)
//! `{"response": "…"}`, and the finished text is read back into tool calls
//! or plain content. This works whether or not the model's own chat template
//! knows about tools, and the grammar guarantees a parsable call.

use serde_json::{Value, json};

use super::{ChatMessage, ToolCall, ToolChoice, ToolUse};

/// What a tool-calling generation produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Calls(Vec<ToolCall>),
    /// The model answered in prose.
    Content(String),
    /// Not the expected JSON (e.g. cut by `max_tokens`): passed on as is.
    Raw(String),
}

/// The conversation as the model sees it: tool instructions in the system
/// message, earlier calls and results written out as text.
pub fn prepare(messages: &[ChatMessage], tools: &ToolUse) -> Vec<ChatMessage> {
    let instructions = instructions(tools);
    let mut out = Vec::with_capacity(messages.len() + 1);
    match messages.first() {
        Some(first) if first.role == "system" => out.push(ChatMessage {
            content: format!("{}\n\n{instructions}", first.content),
            ..first.clone()
        }),
        _ => out.push(ChatMessage::new("system", instructions)),
    }
    let rest = match messages.first() {
        Some(first) if first.role == "system" => &messages[1..],
        _ => messages,
    };
    for m in rest {
        out.push(match m.role.as_str() {
            "assistant" if !m.tool_calls.is_empty() => ChatMessage {
                content: m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let arguments: Value = serde_json::from_str(&c.arguments)
                            .unwrap_or(Value::Object(Default::default()));
                        json!({"tool_call": {"name": c.name, "arguments": arguments}}).to_string()
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                tool_calls: Vec::new(),
                ..m.clone()
            },
            "tool" => ChatMessage::new(
                "user",
                format!(
                    "Result of tool call {}: {}",
                    m.tool_call_id.as_deref().unwrap_or("(unknown)"),
                    m.content
                ),
            ),
            _ => m.clone(),
        });
    }
    out
}

fn instructions(tools: &ToolUse) -> String {
    let list: Vec<Value> = tools
        .tools
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
            })
        })
        .collect();
    let list = serde_json::to_string_pretty(&list).unwrap_or_default();
    let how = match &tools.choice {
        ToolChoice::Auto => "Reply with a JSON object: either {\"tool_call\": {\"name\": <tool name>, \"arguments\": <arguments object>}} to call one of the tools, or {\"response\": <your answer>} to answer directly.".to_owned(),
        ToolChoice::Required => "Reply with a JSON object {\"tool_call\": {\"name\": <tool name>, \"arguments\": <arguments object>}} calling one of the tools.".to_owned(),
        ToolChoice::Function(name) => format!(
            "Reply with a JSON object {{\"tool_call\": {{\"name\": \"{name}\", \"arguments\": <arguments object>}}}} calling the tool `{name}`."
        ),
    };
    format!("You can call these tools:\n{list}\n{how}")
}

/// The JSON Schema (as text) the output is constrained to.
pub fn schema(tools: &ToolUse) -> String {
    let call = |t: &super::Tool| {
        json!({
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": t.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    let calls: Vec<Value> = match &tools.choice {
        ToolChoice::Function(name) => tools
            .tools
            .iter()
            .filter(|t| &t.name == name)
            .map(call)
            .collect(),
        _ => tools.tools.iter().map(call).collect(),
    };
    let tool_call = json!({
        "type": "object",
        "properties": {"tool_call": {"anyOf": calls}},
        "required": ["tool_call"],
        "additionalProperties": false,
    });
    let schema = match tools.choice {
        ToolChoice::Auto => json!({"anyOf": [
            tool_call,
            {
                "type": "object",
                "properties": {"response": {"type": "string"}},
                "required": ["response"],
                "additionalProperties": false,
            },
        ]}),
        ToolChoice::Required | ToolChoice::Function(_) => tool_call,
    };
    schema.to_string()
}

/// Reads the finished text back. `new_id` names each call.
pub fn interpret(text: &str, mut new_id: impl FnMut() -> String) -> Outcome {
    let Ok(value) = serde_json::from_str::<Value>(text.trim()) else {
        return Outcome::Raw(text.to_owned());
    };
    if let Some(call) = value.get("tool_call") {
        let name = call.get("name").and_then(Value::as_str);
        let arguments = call.get("arguments").filter(|a| a.is_object());
        if let (Some(name), Some(arguments)) = (name, arguments) {
            return Outcome::Calls(vec![ToolCall {
                id: new_id(),
                name: name.to_owned(),
                arguments: arguments.to_string(),
            }]);
        }
    }
    match value.get("response").and_then(Value::as_str) {
        Some(response) => Outcome::Content(response.to_owned()),
        None => Outcome::Raw(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Tool;

    fn weather() -> ToolUse {
        ToolUse {
            tools: vec![Tool {
                name: "get_weather".into(),
                description: "Weather for a city".into(),
                parameters: Some(json!({
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                })),
            }],
            choice: ToolChoice::Required,
        }
    }

    #[test]
    fn instructions_join_an_existing_system_message() {
        let out = prepare(
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Weather in Paris?"),
            ],
            &weather(),
        );
        assert_eq!(out.len(), 2);
        assert!(out[0].content.starts_with("Be brief.") && out[0].content.contains("get_weather"));
        let out = prepare(&[ChatMessage::new("user", "Hi")], &weather());
        assert_eq!((out[0].role.as_str(), out.len()), ("system", 2));
    }

    #[test]
    fn earlier_calls_and_results_become_text() {
        let mut call = ChatMessage::new("assistant", "");
        call.tool_calls.push(ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris"}"#.into(),
        });
        let mut result = ChatMessage::new("tool", "18C, sunny");
        result.tool_call_id = Some("call_1".into());
        let out = prepare(
            &[ChatMessage::new("user", "Weather?"), call, result],
            &weather(),
        );
        assert!(out[2].content.contains(r#""tool_call""#) && out[2].content.contains("Paris"));
        assert_eq!(out[3].role, "user");
        assert!(out[3].content.contains("call_1") && out[3].content.contains("sunny"));
    }

    #[test]
    fn outputs_are_read_back() {
        let id = || "call_x".to_owned();
        assert_eq!(
            interpret(
                r#"{"tool_call":{"name":"get_weather","arguments":{"city":"Lima"}}}"#,
                id
            ),
            Outcome::Calls(vec![ToolCall {
                id: "call_x".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Lima"}"#.into(),
            }])
        );
        assert_eq!(
            interpret(r#"{"response":"Hello"}"#, id),
            Outcome::Content("Hello".into())
        );
        assert_eq!(
            interpret(r#"{"tool_call":{"na"#, id),
            Outcome::Raw(r#"{"tool_call":{"na"#.into())
        );
    }

    #[test]
    fn schemas_compile_to_grammars() {
        for choice in [
            ToolChoice::Auto,
            ToolChoice::Required,
            ToolChoice::Function("get_weather".into()),
        ] {
            let tools = ToolUse {
                choice,
                ..weather()
            };
            let grammar = llama_cpp_2::json_schema_to_grammar(&schema(&tools)).unwrap();
            assert!(grammar.contains("get_weather"), "{grammar}");
        }
    }
}
