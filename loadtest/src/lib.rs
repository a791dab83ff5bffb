//! `herd-loadtest`: drives an OpenAI-compatible endpoint (or a Herd worker's
//! gRPC `Generate`) and reports latency percentiles and rates.
//!
//! A run: [`args`] (options → plan) → per load level and round, [`load`]
//! drives each target with a [`scenarios`] workload through a [`client`] →
//! [`stats`] summarises → [`report`] (table, JSON, ratios) and [`chart`].

pub mod args;
pub mod chart;
pub mod client;
pub mod load;
pub mod report;
pub mod run;
pub mod scenarios;
pub mod stats;

pub use args::Args;
pub use report::Report;
pub use run::{RunError, run};
