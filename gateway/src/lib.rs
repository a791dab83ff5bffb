//! Herd's gateway: the OpenAI-compatible HTTP API (on pingora) in front of a
//! pool of workers reached over gRPC.
//!
//! A request's path: [`http`] (route, read body) → [`openai`] (parse and
//! validate into a `GenerateRequest`) → [`context`] (tenant, priority,
//! prefix key, deadline) → [`dispatch`] (authenticate; the [`scheduler`]
//! queues it per model, places the model on a worker if needed and picks a
//! replica with a [`routing`] policy; the gRPC call starts) → [`http`]
//! streams the answer back. Workers are known through the [`workers`]
//! snapshot, which follows the shared [`state`] store (etcd in a cluster).
//! Errors become HTTP in one place, [`error::ApiError`].

pub mod anthropic;
pub mod auth;
pub mod cli;
pub mod config;
pub mod context;
pub mod dispatch;
pub mod drain;
pub mod error;
pub mod http;
pub mod logs;
pub mod metrics;
pub mod ollama;
pub mod openai;
pub mod render;
pub mod responses;
pub mod routing;
pub mod scheduler;
pub mod server;
pub mod tls;
pub mod traces;
pub mod workers;

/// The state seam (workers register, gateways watch): the `herd-state`
/// crate.
pub use herd_state as state;

pub use config::GatewayConfig;
pub use server::Gateway;
