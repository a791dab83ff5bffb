//! The request pipeline after parsing: pick a worker → admit (wait for a
//! slot) → call `Generate` over gRPC. The returned [`Generation`] holds the
//! slot until it is dropped.

use std::sync::Arc;
use std::time::Duration;

use herd_proto::v1 as pb;
use tonic::Streaming;

use crate::admission::{self, Lease};
use crate::error::ApiError;
use crate::routing::{Pick, RoutingPolicy};
use crate::workers::Registry;

/// How long a call refused with "all slots busy" is tried again. The worker
/// frees a cancelled generation's slot at its next decode step, which can
/// lag the gateway's lease by one (long) batch; this bridges that gap.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(30);
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
    default_registry: String,
}

impl Dispatcher {
    pub fn new(
        registry: Arc<Registry>,
        policy: Arc<dyn RoutingPolicy>,
        default_registry: String,
    ) -> Self {
        Self {
            registry,
            policy,
            default_registry,
        }
    }

    pub fn default_registry(&self) -> &str {
        &self.default_registry
    }

    /// The name workers serve `model` under: as given if some worker lists
    /// it, else its normalised reference (`ai/smollm2` →
    /// `ai/smollm2:latest`) if some worker lists that.
    pub fn resolve_model(&self, model: &str) -> String {
        self.registry
            .snapshot()
            .resolve_name(model, &self.default_registry)
            .unwrap_or_else(|| model.to_owned())
    }

    /// A worker to run model-store operations on: the first healthy one
    /// (the embedded mode has exactly one; spreading them over a cluster
    /// belongs to the scheduler).
    pub fn store_worker(
        &self,
    ) -> Result<herd_proto::v1::worker_client::WorkerClient<tonic::transport::Channel>, ApiError>
    {
        self.registry
            .snapshot()
            .workers
            .iter()
            .filter(|w| w.healthy)
            .find_map(|w| w.client.clone())
            .ok_or_else(|| ApiError::NoCapacity("the model store".into()))
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Embeds on a worker serving the model. Embeddings run on the worker's
    /// own embedding thread, not in generation slots, so no slot is held.
    pub async fn embed(
        &self,
        mut request: pb::EmbedRequest,
    ) -> Result<pb::EmbedResponse, ApiError> {
        request.model = self.resolve_model(&request.model);
        let pick = self.pick(&request.model)?;
        let Some(mut client) = pick.worker.client.clone() else {
            return Err(ApiError::NoCapacity(request.model));
        };
        client
            .embed(request.clone())
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ApiError::from_status(&status, &request.model))
    }

    /// The worker and model route for `model`, from the current snapshot.
    fn pick(&self, model: &str) -> Result<Pick, ApiError> {
        let snapshot = self.registry.snapshot();
        match self.policy.pick(&snapshot, model) {
            Some(pick) => Ok(pick),
            None if snapshot.knows_model(model) => Err(ApiError::NoCapacity(model.to_owned())),
            None => Err(ApiError::ModelNotFound(model.to_owned())),
        }
    }

    /// Picks, admits and starts `request`. Waits while the worker's slots are
    /// all taken; the wait ends with the caller's future being dropped.
    pub async fn dispatch(&self, mut request: pb::GenerateRequest) -> Result<Generation, ApiError> {
        request.model = self.resolve_model(&request.model);
        let pick = self.pick(&request.model)?;
        let Some(client) = pick.worker.client.clone() else {
            return Err(ApiError::NoCapacity(request.model));
        };
        let lease = admission::admit(&pick.route).await?;
        let retry_until = tokio::time::Instant::now() + BUSY_RETRY_FOR;
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
                        && tokio::time::Instant::now() < retry_until =>
                {
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
