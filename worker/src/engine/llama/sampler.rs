//! Builds llama.cpp's sampler chain for one generation.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

use crate::engine::Sampling;
use crate::error::EngineError;

/// How many recent tokens the presence/frequency penalties look at.
const PENALTY_WINDOW: i32 = 256;

/// The chain for `sampling`: the grammar (if any) first, penalties, then
/// greedy at temperature 0, else top-k → top-p → min-p → temperature → a
/// seeded draw.
pub fn build(
    sampling: &Sampling,
    model: &LlamaModel,
    grammar: Option<&str>,
) -> Result<LlamaSampler, EngineError> {
    let n_vocab = model.n_vocab();
    let mut chain = Vec::new();
    if let Some(grammar) = grammar {
        chain.push(LlamaSampler::grammar(model, grammar, "root").map_err(|e| {
            EngineError::schema("response_format", format!("unusable grammar: {e}"))
        })?);
    }
    if sampling.presence_penalty != 0.0 || sampling.frequency_penalty != 0.0 {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            PENALTY_WINDOW,
            1.0,
            // Checked at the gRPC edge; clamped again because an infinite
            // penalty makes llama.cpp abort under a grammar.
            clamp_penalty(sampling.frequency_penalty),
            clamp_penalty(sampling.presence_penalty),
        ));
    }
    if sampling.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if sampling.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(sampling.top_k).unwrap_or(i32::MAX),
            ));
        }
        if sampling.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(sampling.top_p, 1));
        }
        if sampling.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(sampling.min_p, 1));
        }
        chain.push(LlamaSampler::temp(sampling.temperature));
        chain.push(LlamaSampler::dist(sampling.seed));
    }
    Ok(LlamaSampler::chain_simple(chain))
}

fn clamp_penalty(penalty: f32) -> f32 {
    let range = Sampling::PENALTY_RANGE;
    penalty.clamp(*range.start(), *range.end())
}
