//! Herd's wire contract between gateway and worker: the `.proto` files under
//! `proto/` and the tonic code generated from them, nothing else.

/// `herd.worker.v1`: generation, status (and, later, embeddings and model
/// management) served by every worker.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod worker {
    pub mod v1 {
        tonic::include_proto!("herd.worker.v1");
    }
}

pub use worker::v1;

/// The `herd-error-code` metadata key carrying a machine-readable reason on
/// error statuses (e.g. `context_length_exceeded`).
pub const ERROR_CODE_METADATA: &str = "herd-error-code";

/// With `context_length_exceeded`: the prompt's tokens and the context size.
pub const PROMPT_TOKENS_METADATA: &str = "herd-prompt-tokens";
pub const CONTEXT_SIZE_METADATA: &str = "herd-context-size";
