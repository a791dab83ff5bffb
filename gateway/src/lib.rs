//! Herd's gateway: the OpenAI-compatible HTTP API (on pingora) in front of a
//! pool of workers reached over gRPC.
//!
//! A request's path: [`http`] (route, read body) → [`openai`] (parse and
//! validate into a `GenerateRequest`) → [`dispatch`] ([`routing`] picks a
//! worker from the [`workers`] snapshot, [`admission`] waits for a slot, the
//! gRPC call starts) → [`http`] streams the answer back. Errors become HTTP in
//! one place, [`error::ApiError`].

pub mod admission;
pub mod config;
pub mod dispatch;
pub mod drain;
pub mod error;
pub mod http;
pub mod openai;
pub mod routing;
pub mod server;
pub mod state;
pub mod workers;

pub use config::GatewayConfig;
pub use server::Gateway;
