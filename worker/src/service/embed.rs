//! `Embed`: wire request → engine → vectors.

use herd_proto::v1 as pb;

use crate::engine::{EmbedInput, Engine};
use crate::error::EngineError;

pub async fn run(
    engine: &dyn Engine,
    request: pb::EmbedRequest,
) -> Result<pb::EmbedResponse, EngineError> {
    if request.model.is_empty() {
        return Err(EngineError::InvalidRequest("`model` is required".into()));
    }
    if request.inputs.is_empty() {
        return Err(EngineError::InvalidRequest(
            "`inputs` must not be empty".into(),
        ));
    }
    let inputs = request
        .inputs
        .into_iter()
        .map(|i| match i.input {
            Some(pb::embed_input::Input::Text(t)) => Ok(EmbedInput::Text(t)),
            Some(pb::embed_input::Input::Tokens(t)) => Ok(EmbedInput::Tokens(t.ids)),
            None => Err(EngineError::InvalidRequest("an input is empty".into())),
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
