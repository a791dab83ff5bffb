//! Shared cluster state: which workers exist and where. `herd serve` uses the
//! in-memory store; a multi-machine deployment uses etcd (a later issue adds
//! `etcd.rs` behind the same trait).

mod memory;

use std::fmt::Debug;

use async_trait::async_trait;
use tokio::sync::watch;

pub use memory::MemoryStateStore;

/// A worker as registered in the state store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkerRecord {
    /// Stable, unique id.
    pub id: String,
    /// gRPC endpoint, e.g. `http://127.0.0.1:50051`.
    pub endpoint: String,
}

/// A state-store failure.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid worker record: {0}")]
    Invalid(String),
}

/// Where workers register and gateways discover them.
#[async_trait]
pub trait StateStore: Send + Sync + Debug + 'static {
    /// Adds or replaces a worker.
    async fn register_worker(&self, record: WorkerRecord) -> Result<(), StateError>;
    /// Removes a worker; removing an unknown one is not an error.
    async fn deregister_worker(&self, id: &str) -> Result<(), StateError>;
    /// Every registered worker, ordered by id.
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StateError>;
    /// Changes whenever membership changes.
    fn membership_changes(&self) -> watch::Receiver<u64>;
}
