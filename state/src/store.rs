//! The state seam: a small key-value store with leases, revisions,
//! transactions and watches — the part of etcd's model Herd needs, so that
//! etcd ([`crate::EtcdStore`]) and the in-process store
//! ([`crate::MemoryStore`]) behave the same and are tested by the same
//! tests.

use std::fmt::Debug;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

/// The store's logical clock: every change increments it. A listing is
/// taken at a revision; watching from the next one misses nothing.
pub type Revision = i64;

/// A lease: keys put under it are deleted when it expires (its holder
/// stopped renewing it) or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub i64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of its last change.
    pub mod_revision: Revision,
    /// The lease it is bound to, if any.
    pub lease: Option<LeaseId>,
}

/// Every key under a prefix, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<KeyValue>,
    /// The store's revision when the listing was taken.
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    /// Deleted, revoked, or its lease expired.
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub key: String,
    /// The new value (empty for a delete).
    pub value: Vec<u8>,
    pub revision: Revision,
}

/// Changes under a prefix, in revision order, in batches. It ends (or
/// yields an error) when the store connection breaks: list again and watch
/// from the listing's revision + 1.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<Vec<Event>, StateError>> + Send>>;

/// What [`StateStore::create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The key was absent and is now ours, at this revision.
    Created(Revision),
    /// Someone holds it: its current value.
    Exists(KeyValue),
}

/// A state-store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not reachable now (connection refused, timed out, no leader): try
    /// again later, keep the last view meanwhile.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for history the store no longer keeps: list again.
    #[error("revision {requested} is compacted (the oldest kept is {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A value read from the store could not be decoded.
    #[error("invalid value at {key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The shared state: etcd in a cluster, memory inside `herd serve`.
#[async_trait]
pub trait StateStore: Send + Sync + Debug + 'static {
    /// A new lease that expires `ttl` after its last renewal.
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StateError>;
    /// Renews `lease` once. `Ok(false)` when it no longer exists: its keys
    /// are gone and a new lease must be granted.
    async fn keep_alive(&self, lease: LeaseId) -> Result<bool, StateError>;
    /// Ends `lease` now, deleting its keys.
    async fn revoke(&self, lease: LeaseId) -> Result<(), StateError>;
    /// Sets `key`, bound to `lease` (or to none: it stays until deleted).
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StateError>;
    /// Sets `key` only if it does not exist, in one transaction.
    async fn create(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Created, StateError>;
    /// Deletes `key`; deleting an absent key is not an error.
    async fn delete(&self, key: &str) -> Result<Revision, StateError>;
    /// Deletes `key` only if it was last changed at `revision` (it is still
    /// the value the caller wrote). Returns whether it was deleted.
    async fn delete_at(&self, key: &str, revision: Revision) -> Result<bool, StateError>;
    /// Every key under `prefix`, ordered by key, and the revision.
    async fn list(&self, prefix: &str) -> Result<Listing, StateError>;
    /// Changes under `prefix` from revision `from` on (inclusive).
    async fn watch(&self, prefix: &str, from: Revision) -> Result<EventStream, StateError>;
}
