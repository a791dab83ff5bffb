//! Anthropic's Messages API (`/v1/messages`, `/anthropic/v1/messages`,
//! `count_tokens`) mapped onto Herd's gRPC contract: the request becomes
//! the same `GenerateRequest` an OpenAI chat does (tools through the same
//! grammar-constrained tool calling), and the answer is written by
//! [`render::MessagesRender`].

pub mod render;
pub mod request;
pub mod tools;

pub use render::MessagesRender;
pub use request::{MessagesRequest, parse_count_tokens, parse_messages};
