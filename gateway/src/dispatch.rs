//! The request pipeline after parsing: pick a worker → admit (wait for a
//! slot) → call `Generate` over gRPC. The returned [`Generation`] holds the
//! slot until it is dropped.

use std::sync::Arc;
use std::time::Duration;

use herd_proto::v1 as pb;
use tonic::Streaming;

use crate::admission::{self, Lease};
use crate::error::ApiError;
use crate::routing::RoutingPolicy;
use crate::workers::Registry;

/// How often, and how far apart, a call refused with "all slots busy" is
/// tried again. The worker frees a cancelled slot within one decode step, so
/// this only bridges that gap.
const BUSY_RETRIES: u32 = 50;
const BUSY_BACKOFF: Duration = Duration::from_millis(10);

/// A running generation on a worker.
#[derive(Debug)]
pub struct Generation {
    pub events: Streaming<pb::GenerateEvent>,
    pub worker_id: String,
    pub lease: Lease,
}

/// Routes generation requests to workers.
#[derive(Debug)]
pub struct Dispatcher {
    registry: Arc<Registry>,
    policy: Arc<dyn RoutingPolicy>,
}

impl Dispatcher {
    pub fn new(registry: Arc<Registry>, policy: Arc<dyn RoutingPolicy>) -> Self {
        Self { registry, policy }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Picks, admits and starts `request`. Waits while the worker's slots are
    /// all taken; the wait ends with the caller's future being dropped.
    pub async fn dispatch(&self, request: pb::GenerateRequest) -> Result<Generation, ApiError> {
        let pick = {
            let snapshot = self.registry.snapshot();
            match self.policy.pick(&snapshot, &request.model) {
                Some(pick) => pick,
                None if snapshot.knows_model(&request.model) => {
                    return Err(ApiError::NoCapacity(request.model));
                }
                None => return Err(ApiError::ModelNotFound(request.model)),
            }
        };
        let Some(client) = pick.worker.client.clone() else {
            return Err(ApiError::NoCapacity(request.model));
        };
        let lease = admission::admit(&pick.route).await?;
        let mut retries = 0;
        loop {
            match client.clone().generate(request.clone()).await {
                Ok(response) => {
                    return Ok(Generation {
                        events: response.into_inner(),
                        worker_id: pick.worker.id.clone(),
                        lease,
                    });
                }
                Err(status)
                    if status.code() == tonic::Code::ResourceExhausted
                        && retries < BUSY_RETRIES =>
                {
                    retries += 1;
                    tokio::time::sleep(BUSY_BACKOFF).await;
                }
                Err(status) => {
                    tracing::debug!(worker = %pick.worker.id, %status, "generate refused");
                    return Err(ApiError::from_status(&status, &request.model));
                }
            }
        }
    }
}
