//! Structured output: turning a response format or a set of tools into a
//! GBNF grammar for llama.cpp's grammar sampler, so every sampled token
//! keeps the output valid.
//!
//! The grammar admits compact JSON only (no whitespace between tokens): the
//! same values in fewer tokens, so calls and answers fit small budgets.

use std::sync::Arc;
use std::time::Duration;

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

use crate::engine::{Constraint, ToolUse, schema, tools};
use crate::error::EngineError;

/// The largest grammar (GBNF text) accepted.
pub const MAX_GRAMMAR_BYTES: usize = 256 * 1024;
/// How long turning a schema into a grammar, and parsing that grammar,
/// may take (off the decode thread); past it the request is refused.
pub const BUDGET: Duration = Duration::from_secs(5);

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
    gate(source)?;
    let schema = match source {
        Source::Response(constraint) => response_schema(constraint),
        Source::Tools(use_, response) => tools::schema(use_, response.as_ref()),
    };
    let grammar = match convert(&schema) {
        Ok(grammar) => compact(&grammar),
        Err(reason) => {
            return Err(EngineError::schema(
                culprit(source),
                format!("the JSON schema cannot be enforced: {reason}"),
            ));
        }
    };
    if grammar.len() > MAX_GRAMMAR_BYTES {
        return Err(EngineError::schema(
            param_of(source),
            format!(
                "the JSON schema makes a grammar of {} KiB; at most {} KiB can be enforced",
                grammar.len() / 1024,
                MAX_GRAMMAR_BYTES / 1024
            ),
        ));
    }
    Ok(grammar)
}

/// Compiles `source` and checks llama.cpp can parse the grammar, off the
/// async runtime and the decode thread, within [`BUDGET`].
pub async fn prepare(weights: Arc<LlamaModel>, source: Source) -> Result<String, EngineError> {
    let param = param_of(&source);
    let work = tokio::task::spawn_blocking(move || {
        let grammar = compile(&source)?;
        LlamaSampler::grammar(&weights, &grammar, "root").map_err(|e| {
            EngineError::schema(
                param_of(&source),
                format!("the grammar for this JSON schema is unusable: {e}"),
            )
        })?;
        Ok(grammar)
    });
    match tokio::time::timeout(BUDGET, work).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(EngineError::Internal(format!("grammar task failed: {e}"))),
        Err(_) => {
            tracing::warn!(param, "grammar compilation over budget");
            Err(EngineError::schema(
                param,
                format!(
                    "the JSON schema takes more than {} s to turn into a grammar",
                    BUDGET.as_secs()
                ),
            ))
        }
    }
}

/// The schema gate ([`schema::check`]) on every schema of `source`, each
/// refusal naming the field that holds the schema.
fn gate(source: &Source) -> Result<(), EngineError> {
    let check = |param: String, value: &serde_json::Value| {
        schema::check(value).map_err(|e| {
            EngineError::schema(param, format!("the JSON schema cannot be enforced: {e}"))
        })
    };
    let response = match source {
        Source::Response(c) => Some(c),
        Source::Tools(use_, response) => {
            for (i, tool) in use_.tools.iter().enumerate() {
                if let Some(parameters) = &tool.parameters {
                    check(format!("tools[{i}].function.parameters"), parameters)?;
                }
            }
            response.as_ref()
        }
    };
    if let Some(Constraint::JsonSchema(text)) = response {
        let value = serde_json::from_str(text).map_err(|e| {
            EngineError::schema(
                "response_format",
                format!("the JSON schema is not valid JSON: {e}"),
            )
        })?;
        check("response_format".into(), &value)?;
    }
    Ok(())
}

/// The field a grammar problem is reported against.
fn param_of(source: &Source) -> &'static str {
    match source {
        Source::Response(_) => "response_format",
        Source::Tools(..) => "tools",
    }
}

/// The response format's schema, placed under `$defs` like a tool's so a
/// `$ref` to the root (`#`) resolves too.
fn response_schema(constraint: &Constraint) -> String {
    let text = response_text(constraint);
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => serde_json::json!({
            "$defs": {tools::RESPONSE_DEF: tools::rebase(&value, tools::RESPONSE_DEF)},
            "$ref": format!("#/$defs/{}", tools::RESPONSE_DEF),
        })
        .to_string(),
        Err(_) => text.to_owned(),
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
