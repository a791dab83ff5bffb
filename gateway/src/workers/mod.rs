//! What the gateway knows about its workers: an immutable [`Snapshot`] that
//! request paths read without locks, swapped in whole by one background
//! refresher that reads membership from the state store and each worker's
//! `Status` over gRPC.

mod registry;
mod snapshot;

pub use registry::Registry;
pub use snapshot::{ModelRoute, Snapshot, WorkerView};
