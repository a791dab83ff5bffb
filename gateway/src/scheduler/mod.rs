//! The pool scheduler: one queue per model across all workers, placement
//! of models by memory, routing by a policy, keep-alive — the gateway
//! decides, workers obey.
//!
//! - [`core`]: the state machine. Events in (a request arrives or leaves,
//!   a lease ends, a status arrives, a load ends, time passes), effects out
//!   (grants, rejections, loads, unloads). Pure, so it is tested without
//!   a network or a clock.
//! - [`queue`]: a model's waiting requests (priority with aging, tenants in
//!   turn, FIFO within a tenant); [`placement`]: where a model is loaded and
//!   what is evicted for it; [`pool`]: each worker's replicas, budget and
//!   loads in flight; [`keep_alive`]: durations as Ollama spells them.
//! - [`service`]: the async shell around the state machine — waiting
//!   requests, leases (RAII: dropping one frees its slot), the
//!   `LoadModel`/`UnloadModel` calls the state machine orders, and the
//!   timer that drives keep-alive and replica scaling.

pub mod core;
mod keep_alive;
pub mod placement;
pub mod pool;
pub mod queue;
mod service;

pub use self::core::{ModelReport, ModelStats, Outcome, ReplicaReport, UnloadReport};
pub use keep_alive::{DEFAULT_KEEP_ALIVE, KeepAlive};
pub use pool::ModelKey;
pub use service::{Lease, Resolved, Scheduler};
