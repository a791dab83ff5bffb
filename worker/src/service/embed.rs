//! `Embed`: wire request → engine → vectors.

use herd_proto::v1 as pb;

use crate::engine::{EmbedInput, Engine};
use crate::error::EngineError;

/// The most inputs one request may embed (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

pub async fn run(
    engine: &dyn Engine,
    request: pb::EmbedRequest,
) -> Result<pb::EmbedResponse, EngineError> {
    if request.model.is_empty() {
        return Err(EngineError::param("model", "`model` is required"));
    }
    if request.inputs.is_empty() || request.inputs.len() > MAX_INPUTS {
        return Err(EngineError::param(
            "input",
            format!("`input` must hold 1 to {MAX_INPUTS} inputs"),
        ));
    }
    let inputs = request
        .inputs
        .into_iter()
        .map(|i| match i.input {
            Some(pb::embed_input::Input::Text(t)) => Ok(EmbedInput::Text(t)),
            Some(pb::embed_input::Input::Tokens(t)) => Ok(EmbedInput::Tokens(t.ids)),
            None => Err(EngineError::param("input", "an input is empty")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let out = engine.embed(&request.model, inputs).await?;
    Ok(pb::EmbedResponse {
        embeddings: out
            .vectors
            .into_iter()
            .map(|values| pb::Embedding { values })
            .collect(),
        prompt_tokens: out.prompt_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::mock::{MockConfig, MockEngine};

    fn request(count: usize) -> pb::EmbedRequest {
        pb::EmbedRequest {
            model: "mock".into(),
            inputs: (0..count)
                .map(|_| pb::EmbedInput {
                    input: Some(pb::embed_input::Input::Text("a".into())),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn the_number_of_inputs_is_bounded() {
        let engine = MockEngine::new(MockConfig::default()).unwrap();
        let reply = run(&engine, request(MAX_INPUTS)).await.unwrap();
        assert_eq!(reply.embeddings.len(), MAX_INPUTS);
        for count in [0, MAX_INPUTS + 1] {
            assert!(matches!(
                run(&engine, request(count)).await,
                Err(EngineError::InvalidParam { .. })
            ));
        }
    }
}
