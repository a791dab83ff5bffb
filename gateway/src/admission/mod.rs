//! The one place requests are admitted. For now: a request waits (FIFO) for
//! one of the chosen worker's slots for its model, and holds it as a
//! [`Lease`] until its response is done; dropping the lease — success,
//! failure, or the client going away — frees the slot. The scheduler issue
//! replaces this with the cluster-wide queue.

use std::sync::Arc;
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

/// Waits for a free slot of `route`.
pub async fn admit(route: &Arc<ModelRoute>) -> Result<Lease, ApiError> {
    let started = Instant::now();
    let permit = route
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ApiError::ShuttingDown)?;
    Ok(Lease {
        _permit: permit,
        waited: started.elapsed(),
    })
}
