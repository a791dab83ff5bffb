//! Ollama's API (`/api/chat`, `/api/generate`, `/api/embed`, model
//! routes) mapped onto Herd's gRPC contract: chat and generate become the
//! same `GenerateRequest` an OpenAI chat does, written back by
//! [`render::OllamaRender`] as Ollama's NDJSON.

pub mod models;
pub mod render;
pub mod request;

pub use render::{OllamaEndpoint, OllamaRender};
pub use request::{
    OllamaEmbed, OllamaGenerate, parse_chat, parse_embed, parse_generate, parse_model,
};
