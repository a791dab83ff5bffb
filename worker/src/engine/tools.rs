//! Tool calling for any model: the tools are described in a system message,
//! the output is constrained by a JSON-schema grammar to either
//! `{"tool_calls": [{"name", "arguments"}, …]}` or (when the model may
//! choose) `{"response": …}` — a string, or a value of the request's
//! `response_format` schema — and the finished text is read back into tool
//! calls or plain content. This works whether or not the model's own chat
//! template knows about tools, and the grammar guarantees parsable calls.
//!
//! Each tool's parameter schema (and the response schema) is placed under
//! the combined schema's `$defs` and its local `$ref`s are rewritten to point
//! there, so `$defs`, `definitions` and recursive references resolve as they
//! did in the tool's own schema.

use serde_json::{Map, Value, json};

use super::{ChatMessage, Constraint, ToolCall, ToolChoice, ToolUse};

/// The most calls one reply may make when parallel calls are allowed.
pub const MAX_PARALLEL_CALLS: usize = 8;

/// What a tool-calling generation produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Calls(Vec<ToolCall>),
    /// The model answered (text, or JSON text of the response schema).
    Content(String),
    /// Nothing usable: a call cut short (by `max_tokens` or the context).
    /// The internal wrapper is never passed on as content.
    Nothing,
}

/// How the model may answer without calling a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// In prose: `{"response": "<text>"}`.
    Text,
    /// In the request's response format: `{"response": <value>}`.
    Structured,
}

impl Answer {
    pub fn for_constraint(constraint: Option<&Constraint>) -> Self {
        if constraint.is_some() {
            Self::Structured
        } else {
            Self::Text
        }
    }
}

/// The conversation as the model sees it: tool instructions in the system
/// message, earlier calls and results written out as text.
pub fn prepare(
    messages: &[ChatMessage],
    tools: &ToolUse,
    response: Option<&Constraint>,
) -> Vec<ChatMessage> {
    let instructions = instructions(tools, response);
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
                content: calls_text(&m.tool_calls),
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

/// Earlier calls, written as the model would have written them.
fn calls_text(calls: &[ToolCall]) -> String {
    let calls: Vec<Value> = calls
        .iter()
        .map(|c| {
            let arguments: Value = serde_json::from_str(&c.arguments)
                .unwrap_or_else(|_| Value::Object(Map::default()));
            json!({"name": c.name, "arguments": arguments})
        })
        .collect();
    json!({ "tool_calls": calls }).to_string()
}

fn instructions(tools: &ToolUse, response: Option<&Constraint>) -> String {
    let list: Vec<String> = tools
        .tools
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters.clone().unwrap_or_else(|| json!({"type": "object"})),
            })
            .to_string()
        })
        .collect();
    let list = list.join("\n");
    let several = if max_calls(tools) > 1 {
        " (several entries to call several tools at once)"
    } else {
        ""
    };
    let call = format!(
        "{{\"tool_calls\":[{{\"name\":<tool name>,\"arguments\":<arguments object>}}]}}{several}"
    );
    let how = match &tools.choice {
        ToolChoice::Auto => {
            let answer = match response {
                None => "{\"response\":<your answer>}".to_owned(),
                Some(c) => format!(
                    "{{\"response\":<your answer as JSON following this schema: {}>}}",
                    response_schema(c)
                ),
            };
            format!(
                "Reply with a JSON object: either {call} to call tools, or {answer} to answer directly."
            )
        }
        ToolChoice::Required => format!("Reply with a JSON object {call} calling the tools."),
        ToolChoice::Function(name) => format!(
            "Reply with a JSON object {{\"tool_calls\":[{{\"name\":\"{name}\",\"arguments\":<arguments object>}}]}} calling the tool `{name}`."
        ),
    };
    format!("You can call these tools:\n{list}\n{how}")
}

fn max_calls(tools: &ToolUse) -> usize {
    match tools.choice {
        ToolChoice::Function(_) => 1,
        _ if !tools.parallel => 1,
        _ => MAX_PARALLEL_CALLS,
    }
}

/// The response format as a JSON Schema value.
fn response_schema(constraint: &Constraint) -> Value {
    match constraint {
        Constraint::JsonObject => json!({"type": "object"}),
        Constraint::JsonSchema(text) => {
            serde_json::from_str(text).unwrap_or_else(|_| json!({"type": "object"}))
        }
    }
}

/// The `$defs` name of tool `i`'s parameter schema.
pub fn tool_def(i: usize) -> String {
    format!("tool{i}")
}

/// The `$defs` name of the response schema.
pub const RESPONSE_DEF: &str = "response";

/// The JSON Schema (as text) the output is constrained to.
pub fn schema(tools: &ToolUse, response: Option<&Constraint>) -> String {
    let mut defs = Map::new();
    let mut calls = Vec::new();
    for (i, t) in tools.tools.iter().enumerate() {
        if let ToolChoice::Function(name) = &tools.choice
            && &t.name != name
        {
            continue;
        }
        let def = tool_def(i);
        let parameters = t
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        defs.insert(def.clone(), rebase(&parameters, &def));
        calls.push(json!({
            "type": "object",
            "properties": {
                "name": {"const": t.name},
                "arguments": {"$ref": format!("#/$defs/{def}")},
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        }));
    }
    let tool_calls = json!({
        "type": "object",
        "properties": {"tool_calls": {
            "type": "array",
            "items": {"anyOf": calls},
            "minItems": 1,
            "maxItems": max_calls(tools),
        }},
        "required": ["tool_calls"],
        "additionalProperties": false,
    });
    let mut schema = match tools.choice {
        ToolChoice::Auto => {
            let answer = match response {
                None => json!({"type": "string"}),
                Some(c) => {
                    defs.insert(
                        RESPONSE_DEF.into(),
                        rebase(&response_schema(c), RESPONSE_DEF),
                    );
                    json!({"$ref": format!("#/$defs/{RESPONSE_DEF}")})
                }
            };
            json!({"anyOf": [
                tool_calls,
                {
                    "type": "object",
                    "properties": {"response": answer},
                    "required": ["response"],
                    "additionalProperties": false,
                },
            ]})
        }
        ToolChoice::Required | ToolChoice::Function(_) => tool_calls,
    };
    if let Value::Object(root) = &mut schema {
        root.insert("$defs".into(), Value::Object(defs));
    }
    schema.to_string()
}

/// Keywords whose values are data, not schemas: `$ref`s inside them are
/// not references.
const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "default", "examples"];

/// `schema` moved to `#/$defs/<def>` of an enclosing schema: every local
/// `$ref` (`#`, `#/$defs/X`, `#/definitions/X`, `#/properties/…`) is
/// rewritten to point into its new place.
pub fn rebase(schema: &Value, def: &str) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => match r.strip_prefix('#') {
                            Some(pointer) => Value::String(format!("#/$defs/{def}{pointer}")),
                            None => v.clone(),
                        },
                        (k, v) if DATA_KEYWORDS.contains(&k) => v.clone(),
                        (_, v) => rebase(v, def),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| rebase(v, def)).collect()),
        other => other.clone(),
    }
}

/// Reads the finished text back. `new_id` names each call. Text that is
/// not a whole reply (cut by `max_tokens` or the context) yields the part
/// of an answer already written, and never a partial call.
pub fn interpret(text: &str, answer: Answer, mut new_id: impl FnMut() -> String) -> Outcome {
    let text = text.trim();
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return partial_answer(text, answer).map_or(Outcome::Nothing, Outcome::Content);
    };
    if let Some(Value::Array(calls)) = value.get("tool_calls") {
        let calls: Vec<ToolCall> = calls
            .iter()
            .filter_map(|call| {
                let name = call.get("name").and_then(Value::as_str)?;
                let arguments = call.get("arguments").filter(|a| a.is_object())?;
                Some(ToolCall {
                    id: new_id(),
                    name: name.to_owned(),
                    arguments: arguments.to_string(),
                })
            })
            .collect();
        return if calls.is_empty() {
            Outcome::Nothing
        } else {
            Outcome::Calls(calls)
        };
    }
    match (value.get("response"), answer) {
        (Some(Value::String(s)), Answer::Text) => Outcome::Content(s.clone()),
        (Some(v), Answer::Structured) => Outcome::Content(v.to_string()),
        _ => Outcome::Nothing,
    }
}

/// The answer written so far in a reply cut short: the decoded prefix of
/// the response string, or the response value's JSON text as far as it got.
fn partial_answer(text: &str, answer: Answer) -> Option<String> {
    let rest = text.strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"response\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    match answer {
        Answer::Structured => Some(rest.to_owned()),
        Answer::Text => {
            let body = rest.strip_prefix('"')?;
            // The longest prefix that is a whole JSON string once closed
            // (the cut may fall inside an escape sequence).
            let mut end = body.len();
            loop {
                let candidate = &body[..end];
                if let Ok(s) = serde_json::from_str::<String>(&format!("\"{candidate}\"")) {
                    return Some(s);
                }
                if end == 0 || body.len() - end >= 12 {
                    return None;
                }
                end -= 1;
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
            }
        }
    }
}

/// Watches a tool-mode reply as it is generated and spots a model that
/// repeats a call it already made in the same reply (small models loop):
/// the reply is then complete without the repeat. Works on the compact JSON
/// the grammar admits: `{"tool_calls":[{…},{…}…`.
#[derive(Debug, Default)]
pub struct RepeatGuard {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Where the call being written starts.
    call_start: Option<usize>,
    /// End of the last distinct call.
    last_end: usize,
    calls: Vec<String>,
}

impl RepeatGuard {
    /// Feeds the next text; `reply` is the whole reply so far, ending with
    /// `text`. Returns the complete reply (calls up to the last distinct
    /// one, array and object closed) when the newest call repeats one.
    pub fn push(&mut self, reply: &str, text: &str) -> Option<String> {
        let start = reply.len() - text.len();
        for (i, b) in text.bytes().enumerate() {
            let at = start + i;
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    // Depth 3: a call object inside `tool_calls`.
                    if self.depth == 3 && b == b'{' && reply.starts_with("{\"tool_calls\":[") {
                        self.call_start = Some(at);
                    }
                }
                b'}' | b']' => {
                    if self.depth == 3
                        && let Some(from) = self.call_start.take()
                    {
                        let call = &reply[from..=at];
                        if self.calls.iter().any(|c| c == call) {
                            return Some(format!("{}]}}", &reply[..self.last_end]));
                        }
                        self.calls.push(call.to_owned());
                        self.last_end = at + 1;
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                _ => {}
            }
        }
        None
    }

    /// The reply of a generation cut short, closed after its last complete
    /// call; `None` when no call was completed.
    pub fn complete_calls(&self, reply: &str) -> Option<String> {
        (!self.calls.is_empty()).then(|| format!("{}]}}", &reply[..self.last_end]))
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
            parallel: true,
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
            None,
        );
        assert_eq!(out.len(), 2);
        assert!(out[0].content.starts_with("Be brief.") && out[0].content.contains("get_weather"));
        let out = prepare(&[ChatMessage::new("user", "Hi")], &weather(), None);
        assert_eq!((out[0].role.as_str(), out.len()), ("system", 2));
    }

    #[test]
    fn earlier_calls_and_results_become_text() {
        let mut call = ChatMessage::new("assistant", "");
        for (id, city) in [("call_1", "Paris"), ("call_2", "Lima")] {
            call.tool_calls.push(ToolCall {
                id: id.into(),
                name: "get_weather".into(),
                arguments: format!(r#"{{"city":"{city}"}}"#),
            });
        }
        let mut result = ChatMessage::new("tool", "18C, sunny");
        result.tool_call_id = Some("call_1".into());
        let out = prepare(
            &[ChatMessage::new("user", "Weather?"), call, result],
            &weather(),
            None,
        );
        assert_eq!(
            out[2].content,
            r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris"}},{"name":"get_weather","arguments":{"city":"Lima"}}]}"#
        );
        assert_eq!(out[3].role, "user");
        assert!(out[3].content.contains("call_1") && out[3].content.contains("sunny"));
    }

    #[test]
    fn outputs_are_read_back() {
        let id = || "call_x".to_owned();
        assert_eq!(
            interpret(
                r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Lima"}},{"name":"get_weather","arguments":{"city":"Oslo"}}]}"#,
                Answer::Text,
                id
            ),
            Outcome::Calls(vec![
                ToolCall {
                    id: "call_x".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Lima"}"#.into(),
                },
                ToolCall {
                    id: "call_x".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"city":"Oslo"}"#.into(),
                }
            ])
        );
        assert_eq!(
            interpret(r#"{"response":"Hello"}"#, Answer::Text, id),
            Outcome::Content("Hello".into())
        );
        assert_eq!(
            interpret(r#"{"response":{"a":[1, 2]}}"#, Answer::Structured, id),
            Outcome::Content(r#"{"a":[1,2]}"#.into())
        );
    }

    #[test]
    fn a_cut_call_is_nothing_and_a_cut_answer_keeps_its_text() {
        let id = || "call_x".to_owned();
        for cut in [
            "",
            "{",
            r#"{"tool_calls":[{"na"#,
            r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Li"#,
            "{\n  \"tool_call",
        ] {
            assert_eq!(interpret(cut, Answer::Text, id), Outcome::Nothing, "{cut}");
        }
        assert_eq!(
            interpret(r#"{"response":"Hel"#, Answer::Text, id),
            Outcome::Content("Hel".into())
        );
        // Cut inside an escape sequence: the whole characters before it.
        assert_eq!(
            interpret(r#"{"response":"a\u00"#, Answer::Text, id),
            Outcome::Content("a".into())
        );
        assert_eq!(
            interpret(r#"{"response":"a\"#, Answer::Text, id),
            Outcome::Content("a".into())
        );
        assert_eq!(
            interpret(r#"{"response":{"a":"#, Answer::Structured, id),
            Outcome::Content(r#"{"a":"#.into())
        );
    }

    #[test]
    fn a_repeated_call_ends_the_reply() {
        let reply = r#"{"tool_calls":[{"name":"a","arguments":{"x":"}{\"]"}},{"name":"b","arguments":{}},{"name":"a","arguments":{"x":"}{\"]"}},{"name"#;
        let mut guard = RepeatGuard::default();
        let mut so_far = String::new();
        let mut ended = None;
        // Fed in small pieces, as tokens arrive.
        for piece in reply.as_bytes().chunks(3) {
            so_far.push_str(std::str::from_utf8(piece).unwrap());
            let text = std::str::from_utf8(piece).unwrap();
            if let Some(done) = guard.push(&so_far, text) {
                ended = Some(done);
                break;
            }
        }
        let ended = ended.expect("the repeat is seen");
        assert_eq!(
            ended,
            r#"{"tool_calls":[{"name":"a","arguments":{"x":"}{\"]"}},{"name":"b","arguments":{}}]}"#
        );
        assert!(
            matches!(interpret(&ended, Answer::Text, || "c".into()), Outcome::Calls(c) if c.len() == 2)
        );
        // Cut short: the complete calls are kept.
        let mut guard = RepeatGuard::default();
        let cut = r#"{"tool_calls":[{"name":"b","arguments":{}},{"name":"a","argu"#;
        assert_eq!(guard.push(cut, cut), None);
        assert_eq!(
            guard.complete_calls(cut).as_deref(),
            Some(r#"{"tool_calls":[{"name":"b","arguments":{}}]}"#)
        );
        assert_eq!(RepeatGuard::default().complete_calls(cut), None);
        // Distinct calls and answers pass.
        let mut guard = RepeatGuard::default();
        let answer = r#"{"response":"{\"tool_calls\":[{},{}]}"}"#;
        assert_eq!(guard.push(answer, answer), None);
    }

    #[test]
    fn refs_are_rebased_but_data_is_not() {
        let schema = json!({
            "$defs": {"P": {"type": "object", "properties": {"kid": {"$ref": "#/$defs/P"}}}},
            "definitions": {"Q": {"type": "string"}},
            "properties": {
                "p": {"$ref": "#/$defs/P"},
                "q": {"allOf": [{"$ref": "#/definitions/Q"}]},
                "self": {"$ref": "#"},
                "c": {"const": {"$ref": "#/x"}},
                "url": {"$ref": "https://example.com/s.json"},
            },
        });
        let out = rebase(&schema, "tool0");
        assert_eq!(
            out["$defs"]["P"]["properties"]["kid"]["$ref"],
            "#/$defs/tool0/$defs/P"
        );
        assert_eq!(out["properties"]["p"]["$ref"], "#/$defs/tool0/$defs/P");
        assert_eq!(
            out["properties"]["q"]["allOf"][0]["$ref"],
            "#/$defs/tool0/definitions/Q"
        );
        assert_eq!(out["properties"]["self"]["$ref"], "#/$defs/tool0");
        assert_eq!(out["properties"]["c"]["const"]["$ref"], "#/x");
        assert_eq!(
            out["properties"]["url"]["$ref"],
            "https://example.com/s.json"
        );
    }

    /// A pydantic model with a nested model, an Enum, a list of models and
    /// optional fields, as `model_json_schema()` writes it.
    fn pydantic_order() -> Value {
        json!({
            "$defs": {
                "Item": {"properties": {"sku": {"title": "Sku", "type": "string"},
                    "qty": {"title": "Qty", "type": "integer"}},
                    "required": ["sku", "qty"], "title": "Item", "type": "object"},
                "Size": {"enum": ["small", "large"], "title": "Size", "type": "string"},
                "Address": {"properties": {"city": {"title": "City", "type": "string"},
                    "zip": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": null, "title": "Zip"}},
                    "required": ["city"], "title": "Address", "type": "object"},
                "Node": {"properties": {"name": {"type": "string"},
                    "children": {"items": {"$ref": "#/$defs/Node"}, "type": "array"}},
                    "required": ["name"], "type": "object"},
            },
            "properties": {
                "items": {"items": {"$ref": "#/$defs/Item"}, "title": "Items", "type": "array"},
                "size": {"$ref": "#/$defs/Size"},
                "ship_to": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": null},
                "tree": {"allOf": [{"$ref": "#/$defs/Node"}]},
            },
            "required": ["items", "size"],
            "title": "Order",
            "type": "object",
        })
    }

    #[test]
    fn schemas_compile_to_grammars() {
        for parallel in [true, false] {
            for choice in [
                ToolChoice::Auto,
                ToolChoice::Required,
                ToolChoice::Function("get_weather".into()),
            ] {
                let mut tools = ToolUse {
                    choice,
                    parallel,
                    ..weather()
                };
                tools.tools.push(Tool {
                    name: "order".into(),
                    description: String::new(),
                    parameters: Some(pydantic_order()),
                });
                for response in [
                    None,
                    Some(Constraint::JsonObject),
                    Some(Constraint::JsonSchema(pydantic_order().to_string())),
                ] {
                    let schema = schema(&tools, response.as_ref());
                    let grammar = llama_cpp_2::json_schema_to_grammar(&schema)
                        .unwrap_or_else(|e| panic!("{e}: {schema}"));
                    assert!(grammar.contains("get_weather"), "{grammar}");
                }
            }
        }
    }

    #[test]
    fn property_order_is_kept() {
        let s = schema(&weather(), None);
        assert!(s.find(r#""name""#) < s.find(r#""arguments""#), "{s}");
    }
}
