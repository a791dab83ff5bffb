//! Structured output: turning a response-format constraint into a GBNF
//! grammar for llama.cpp's grammar sampler, so every sampled token keeps the
//! output valid.

use crate::engine::Constraint;
use crate::error::EngineError;

/// The grammar for `constraint`. Runs llama.cpp's JSON-schema converter; an
/// unusable schema is the caller's error.
pub fn for_constraint(constraint: &Constraint) -> Result<String, EngineError> {
    let schema = match constraint {
        Constraint::JsonObject => r#"{"type":"object"}"#,
        Constraint::JsonSchema(schema) => schema.as_str(),
    };
    // Reject malformed JSON before the converter sees it.
    serde_json::from_str::<serde_json::Value>(schema).map_err(|e| {
        EngineError::InvalidRequest(format!("the JSON schema is not valid JSON: {e}"))
    })?;
    llama_cpp_2::json_schema_to_grammar(schema).map_err(|e| {
        EngineError::InvalidRequest(format!("the JSON schema cannot be enforced: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_object_grammar_has_a_root_rule() {
        let g = for_constraint(&Constraint::JsonObject).unwrap();
        assert!(g.contains("root ::="), "{g}");
    }

    #[test]
    fn schema_properties_appear_in_the_grammar() {
        let schema =
            r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#;
        let g = for_constraint(&Constraint::JsonSchema(schema.into())).unwrap();
        assert!(g.contains("city"), "{g}");
    }

    #[test]
    fn malformed_schema_is_an_invalid_request() {
        let err = for_constraint(&Constraint::JsonSchema("{".into())).unwrap_err();
        assert!(matches!(err, EngineError::InvalidRequest(_)));
    }
}
