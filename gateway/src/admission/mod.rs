//! The one place requests are admitted. For now: a request waits (FIFO) for
//! one of the chosen worker's slots for its model, and holds it as a
//! [`Lease`] until its response is done; dropping the lease — success,
//! failure, or the client going away — frees the slot. The scheduler issue
//! replaces this with the cluster-wide queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::workers::ModelRoute;

/// A held slot.
#[derive(Debug)]
pub struct Lease {
    _permit: OwnedSemaphorePermit,
    /// How long the request waited for its slot.
    pub waited: Duration,
}

/// Counts a request as waiting on a route for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Waits for a free slot of `route`.
pub async fn admit(route: &Arc<ModelRoute>) -> Result<Lease, ApiError> {
    let started = Instant::now();
    let waiting = Waiting::enter(&route.waiting);
    let permit = route
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
    drop(waiting);
    Ok(Lease {
        _permit: permit,
        waited: started.elapsed(),
    })
}
