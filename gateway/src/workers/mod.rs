//! What the gateway knows about its workers: an immutable [`Snapshot`]
//! (identity, client, health, models and their names) that request paths
//! read without locks, swapped in whole by the [`Roster`], which follows
//! membership in the state store and keeps a `WatchStatus` stream open to
//! every worker.

mod conn;
mod roster;
mod snapshot;

pub use conn::WorkerConn;
pub use roster::{Readiness, Roster, WorkerEvents};

/// A worker's gRPC client, over its [`WorkerConn`].
pub type WorkerRpc = herd_proto::v1::worker_client::WorkerClient<WorkerConn>;
pub use snapshot::{NameIndex, Snapshot, WorkerView};
