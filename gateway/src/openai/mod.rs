//! The OpenAI API's request and response types and their mapping onto
//! Herd's gRPC contract.

pub mod embeddings;
pub mod fields;
pub mod keep_alive;
pub mod render;
pub mod request;
pub mod response;
pub mod sse;
pub mod tools;

pub use request::{Endpoint, GenerationRequest, parse_chat, parse_completion};
