//! Draining: on SIGTERM the worker says so (its status and gRPC health;
//! its cluster record is the caller's), refuses new work as GONE (so a
//! gateway that had not yet heard tries another worker), lets what runs
//! finish up to a deadline, then ends its status streams so the server can
//! stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herd_proto::v1::worker_server::WorkerServer;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

use super::WorkerService;
use crate::engine::Engine;
use crate::error::EngineError;

/// Shared by the service (which refuses and reports) and the [`Drain`]
/// handle (which starts and ends the drain).
#[derive(Debug, Default)]
pub struct DrainState {
    draining: AtomicBool,
    /// Cancelled when the drain is over: status streams end.
    over: CancellationToken,
}

impl DrainState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// `Err(ShuttingDown)` while draining: new work goes elsewhere.
    pub fn admit(&self) -> Result<(), EngineError> {
        if self.is_draining() {
            Err(EngineError::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Resolves when the drain is over.
    pub async fn over(&self) {
        self.over.cancelled().await;
    }
}

/// Starts and ends a worker's drain.
#[derive(Clone)]
pub struct Drain {
    state: Arc<DrainState>,
    engine: Arc<dyn Engine>,
    health: HealthReporter,
}

impl std::fmt::Debug for Drain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Drain")
            .field("draining", &self.state.is_draining())
            .finish_non_exhaustive()
    }
}

impl Drain {
    pub fn new(state: Arc<DrainState>, engine: Arc<dyn Engine>, health: HealthReporter) -> Self {
        Self {
            state,
            engine,
            health,
        }
    }

    /// From now on the worker reports draining (status, gRPC health
    /// `NOT_SERVING`) and refuses new generations, embeddings and loads.
    pub async fn begin(&self) {
        if self.state.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        self.health
            .set_not_serving::<WorkerServer<WorkerService>>()
            .await;
        self.health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        // Watchers get a status saying so now.
        self.engine.changes().bump();
    }

    /// Waits until no generation runs, at most `deadline`; returns whether
    /// everything finished.
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let mut changes = self.engine.changes().subscribe();
        let idle = async {
            loop {
                changes.mark_unchanged();
                let busy: u32 = self
                    .engine
                    .status()
                    .models
                    .iter()
                    .map(|m| m.slots_busy)
                    .sum();
                if busy == 0 {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(deadline, idle).await.is_ok()
    }

    /// Ends the status streams (so the gRPC server can stop).
    pub fn finish(&self) {
        self.state.over.cancel();
    }
}
