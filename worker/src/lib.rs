//! Herd's worker: loads GGUF models with llama.cpp and serves them over gRPC
//! (`herd.worker.v1.Worker`).
//!
//! Request path: [`service`] (wire → engine types, stream back) →
//! [`engine::Engine::generate`] (admission: model, prompt, slot) → the model's
//! decode loop (`engine::llama::runner`), which batches every active slot.

pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
pub mod exposition;
pub mod footprint;
pub mod gpu;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod random;
pub mod server;
pub mod service;

pub use catalog::{Catalog, LoadDefaults};
pub use config::{ModelConfig, WorkerConfig};
pub use engine::Engine;
pub use engine::llama::LlamaEngine;
pub use engine::mock::{MockConfig, MockEngine};
pub use error::EngineError;
pub use server::GrpcServer;
pub use service::Capacity;
