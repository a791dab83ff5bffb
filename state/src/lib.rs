//! Herd's shared cluster state. Workers register themselves here and
//! gateways watch them; gateways claim model loads here so only one runs
//! at a time cluster-wide. Per-token load never comes through here: each
//! gateway reads that from the workers' `WatchStatus` streams.
//!
//! - [`StateStore`]: the seam — a key-value store that speaks in leases,
//!   keep-alives, revisions, transactions and watches. [`EtcdStore`] for a
//!   cluster, [`MemoryStore`] inside `herd serve`; the same tests run
//!   against both.
//! - [`Keys`]: the key layout under a prefix (default `/herd/`);
//!   [`WorkerRecord`], [`GatewayRecord`], [`PlacementClaim`]: the values.
//! - [`Session`]: a lease kept alive with the keys bound to it, written
//!   again after an outage that outlived the lease (worker registration,
//!   a gateway's record).
//! - [`Membership`]: the registered workers, listed then watched from the
//!   listing's revision, as immutable snapshots; the last view stays while
//!   the store is unreachable.
//! - [`Claims`]: cluster-wide placement claims by transaction.
//!
//! docs/cluster.md describes the layout and the failure behaviour.

mod claims;
mod etcd;
mod keys;
mod membership;
mod memory;
mod records;
mod session;
pub mod settings;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

pub use claims::{Claim, ClaimGuard, Claims};
pub use etcd::{CALL_TIMEOUT, EtcdStore};
pub use keys::{DEFAULT_PREFIX, Keys};
pub use membership::{Members, Membership};
pub use memory::MemoryStore;
pub use records::{GatewayRecord, PlacementClaim, WorkerRecord, decode, encode, unix_ms};
pub use session::{Session, SessionStatus};
pub use store::{
    Created, Event, EventKind, EventStream, KeyValue, LeaseId, Listing, Revision, StateError,
    StateStore,
};

/// The store for a process: etcd at `endpoints`, or a new in-memory store
/// when there are none.
pub async fn connect(endpoints: &[String]) -> Result<Arc<dyn StateStore>, StateError> {
    if endpoints.is_empty() {
        Ok(Arc::new(MemoryStore::new()))
    } else {
        Ok(Arc::new(EtcdStore::connect(endpoints).await?))
    }
}
