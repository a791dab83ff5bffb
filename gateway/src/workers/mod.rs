//! What the gateway knows about its workers: an immutable [`Snapshot`]
//! (identity, client, health, models and their names) that request paths
//! read without locks, swapped in whole by the [`Roster`], which follows
//! membership in the state store and keeps a `WatchStatus` stream open to
//! every worker.

mod roster;
mod snapshot;

pub use roster::{Readiness, Roster, WorkerEvents};
pub use snapshot::{NameIndex, Snapshot, WorkerView};
