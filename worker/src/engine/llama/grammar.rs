//! Structured output: turning a response format or a set of tools into a
//! GBNF grammar for llama.cpp's grammar sampler, so every sampled token
//! keeps the output valid.
//!
//! The grammar admits compact JSON only (no whitespace between tokens): the
//! same values in fewer tokens, so calls and answers fit small budgets.

use crate::engine::{Constraint, ToolUse, tools};
use crate::error::EngineError;

/// What the output is constrained by.
#[derive(Debug, Clone)]
pub enum Source {
    /// `response_format` alone.
    Response(Constraint),
    /// Tools, and the response format of an answer that calls none.
    Tools(ToolUse, Option<Constraint>),
}

/// The grammar for `source`. A schema the converter refuses is the
/// client's error, naming the field that holds it.
pub fn compile(source: &Source) -> Result<String, EngineError> {
    let schema = match source {
        Source::Response(constraint) => response_text(constraint).to_owned(),
        Source::Tools(use_, response) => tools::schema(use_, response.as_ref()),
    };
    match convert(&schema) {
        Ok(grammar) => Ok(compact(&grammar)),
        Err(reason) => Err(EngineError::schema(
            culprit(source),
            format!("the JSON schema cannot be enforced: {reason}"),
        )),
    }
}

fn response_text(constraint: &Constraint) -> &str {
    match constraint {
        Constraint::JsonObject => r#"{"type":"object"}"#,
        Constraint::JsonSchema(schema) => schema.as_str(),
    }
}

/// llama.cpp's converter, with malformed JSON refused before it. The
/// converter's own reason does not cross its C interface.
fn convert(schema: &str) -> Result<String, String> {
    serde_json::from_str::<serde_json::Value>(schema)
        .map_err(|e| format!("the schema is not valid JSON: {e}"))?;
    llama_cpp_2::json_schema_to_grammar(schema).map_err(|e| {
        tracing::debug!(error = %e, "JSON schema conversion failed");
        "it uses a keyword or value the grammar converter refuses, or a `$ref` \
         that does not resolve within the schema"
            .to_owned()
    })
}

/// The request field whose schema the converter refused: the first tool
/// whose parameters fail alone, else the response format, else `tools`.
fn culprit(source: &Source) -> String {
    match source {
        Source::Response(_) => "response_format".into(),
        Source::Tools(use_, response) => {
            for (i, tool) in use_.tools.iter().enumerate() {
                if let Some(parameters) = &tool.parameters
                    && convert(&parameters.to_string()).is_err()
                {
                    return format!("tools[{i}].function.parameters");
                }
            }
            match response {
                Some(c) if convert(response_text(c)).is_err() => "response_format".into(),
                _ => "tools".into(),
            }
        }
    }
}

/// The converter's grammar with no optional whitespace between JSON tokens.
fn compact(grammar: &str) -> String {
    grammar
        .lines()
        .map(|line| {
            if line.starts_with("space ::=") {
                "space ::= \"\""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(schema: &str) -> Source {
        Source::Response(Constraint::JsonSchema(schema.into()))
    }

    #[test]
    fn json_object_grammar_has_a_root_rule() {
        let g = compile(&Source::Response(Constraint::JsonObject)).unwrap();
        assert!(g.contains("root ::="), "{g}");
    }

    #[test]
    fn schema_properties_appear_in_the_grammar() {
        let schema =
            r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;
        let g = compile(&response(schema)).unwrap();
        assert!(g.contains("city"), "{g}");
        assert!(g.contains("space ::= \"\""), "{g}");
        assert!(!g.contains("[ \\t]"), "whitespace must be gone: {g}");
    }

    #[test]
    fn malformed_schema_names_the_field() {
        let err = compile(&response("{")).unwrap_err();
        assert!(
            matches!(&err, EngineError::InvalidParam { param, .. } if param == "response_format"),
            "{err:?}"
        );
        assert_eq!(
            err.detail().code(),
            herd_proto::error::ErrorCode::InvalidSchema
        );
    }

    #[test]
    fn a_bad_tool_schema_names_the_tool() {
        use crate::engine::{Tool, ToolChoice};
        let tool = |name: &str, parameters: serde_json::Value| Tool {
            name: name.into(),
            description: String::new(),
            parameters: Some(parameters),
        };
        let use_ = ToolUse {
            tools: vec![
                tool("a", serde_json::json!({"type": "object"})),
                tool("b", serde_json::json!({"$ref": "#/nowhere"})),
            ],
            choice: ToolChoice::Auto,
            parallel: true,
        };
        let err = compile(&Source::Tools(use_, None)).unwrap_err();
        assert!(
            matches!(&err, EngineError::InvalidParam { param, .. } if param == "tools[1].function.parameters"),
            "{err:?}"
        );
    }
}
