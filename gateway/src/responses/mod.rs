//! OpenAI's Responses API (`/v1/responses`) mapped onto Herd's gRPC
//! contract: the input items (with a stored previous response's
//! conversation in front) become the same `GenerateRequest` a chat does;
//! [`render::ResponsesRender`] writes the answer and keeps it in the
//! bounded [`store::ResponseStore`].

pub mod render;
pub mod request;
pub mod shared;
pub mod store;

pub use render::ResponsesRender;
pub use request::{ResponsesRequest, parse};
pub use store::ResponseStore;
