//! Cluster-wide claims on model loads: before a gateway asks a worker to
//! load a model, it creates `{prefix}placements/{model}` in one transaction
//! (only if absent), bound to its session's lease. Whoever created it
//! loads; the others wait for the load to show in the workers' statuses.
//! The claim is deleted when the load ends, and vanishes with the lease if
//! the gateway dies. Not etcd's lock API: a lock holder that stalls past
//! its lease can still act on a lock it lost (Jepsen, etcd 3.4.3); a claim
//! only decides who sends a `LoadModel`, and a worker loading a model it
//! already has answers at once.

use std::sync::Arc;
use std::time::Duration;

use crate::keys::Keys;
use crate::records::{PlacementClaim, decode, encode, unix_ms};
use crate::session::Session;
use crate::store::{Created, Revision, StateError, StateStore};

/// How long a claim's release is retried while the store is unreachable.
const RELEASE_FOR: Duration = Duration::from_secs(60);

/// Takes placement claims for one gateway.
#[derive(Debug, Clone)]
pub struct Claims {
    store: Arc<dyn StateStore>,
    keys: Keys,
    session: Arc<Session>,
    gateway: String,
}

/// The outcome of [`Claims::claim`].
#[derive(Debug)]
pub enum Claim {
    /// This gateway loads the model; the claim ends when the guard is
    /// released or dropped.
    Won(ClaimGuard),
    /// Another gateway is loading it.
    Held(PlacementClaim),
}

/// A claim this gateway holds.
#[derive(Debug)]
pub struct ClaimGuard {
    store: Arc<dyn StateStore>,
    key: String,
    revision: Revision,
    released: bool,
}

impl Claims {
    /// Claims for `gateway`, bound to `session`'s lease.
    pub fn new(
        store: Arc<dyn StateStore>,
        keys: Keys,
        session: Arc<Session>,
        gateway: impl Into<String>,
    ) -> Self {
        Self {
            store,
            keys,
            session,
            gateway: gateway.into(),
        }
    }

    /// Claims the load of `model` (its pool-wide key) onto `worker`.
    pub async fn claim(&self, model: &str, worker: &str) -> Result<Claim, StateError> {
        let lease = self
            .session
            .lease()
            .await
            .ok_or_else(|| StateError::Unavailable("this gateway has no lease".into()))?;
        let key = self.keys.placement(model);
        let record = PlacementClaim {
            gateway: self.gateway.clone(),
            worker: worker.to_owned(),
            since_ms: unix_ms(),
        };
        let guard = |revision| ClaimGuard {
            store: self.store.clone(),
            key: key.clone(),
            revision,
            released: false,
        };
        match self
            .store
            .create(&key, encode(&record), Some(lease))
            .await?
        {
            Created::Created(revision) => Ok(Claim::Won(guard(revision))),
            Created::Exists(held) => {
                let holder: PlacementClaim = decode(&key, &held.value).unwrap_or_default();
                if holder.gateway == self.gateway {
                    // Ours, left by a release the store did not take: this
                    // gateway loads one model once at a time, so it is
                    // ours to use again.
                    Ok(Claim::Won(guard(held.mod_revision)))
                } else {
                    Ok(Claim::Held(holder))
                }
            }
        }
    }
}

impl ClaimGuard {
    /// Ends the claim now.
    pub async fn release(mut self) {
        self.released = true;
        release(self.store.clone(), self.key.clone(), self.revision).await;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.released
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(release(self.store.clone(), self.key.clone(), self.revision));
        }
    }
}

/// Deletes the claim if it is still the one taken at `revision`, retrying
/// while the store is unreachable (a claim left behind would hold every
/// other gateway's load of the model until this gateway's lease ends).
async fn release(store: Arc<dyn StateStore>, key: String, revision: Revision) {
    let deadline = tokio::time::Instant::now() + RELEASE_FOR;
    loop {
        match store.delete_at(&key, revision).await {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(key, error = %e, "cannot release a placement claim; it ends with this gateway's lease");
                return;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
