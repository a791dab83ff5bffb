//! A request's steps after parsing: authenticate → admit (the scheduler
//! queues it, places its model and picks a replica) → dispatch (the gRPC
//! call). A worker's typed failure decides what happens next:
//!
//! - busy (every slot taken after all): back to the queue, in its place;
//! - the model is no longer loaded there: back to the queue (the scheduler
//!   has dropped that replica and places the model again if needed);
//! - the worker is gone or unreachable, nothing sent yet: retried once on
//!   another worker (a generation counts as started only once its first
//!   event arrived, so a worker that dies before producing anything is
//!   retried too);
//! - anything else (a bad request, an engine failure): to the client.
//!
//! The returned [`Generation`] holds its slot until it is dropped.

use std::sync::Arc;

use herd_proto::error::{ErrorCode, FailureClass, WorkerFailure};
use herd_proto::v1 as pb;
use tonic::Streaming;
use tracing::Instrument as _;

use crate::auth::{Auth, Permit};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::metrics::{GatewayMetrics, Requeue, UNKNOWN_MODEL};
use crate::scheduler::{Lease, Outcome, Resolved, Scheduler};

/// How many times one request is put back after busy or unloaded
/// refusals before it fails (each waits for the worker's next status or a
/// new replica, so this is no spin).
const MAX_REQUEUES: u32 = 8;

/// The response header naming the worker that served a request.
pub const WORKER_HEADER: &str = "x-herd-worker";
/// The response header with the milliseconds a request queued.
pub const QUEUE_MS_HEADER: &str = "x-herd-queue-ms";

/// A running generation on a worker.
#[derive(Debug)]
pub struct Generation {
    pub events: Streaming<pb::GenerateEvent>,
    /// Its first event, read before the generation was handed over (`None`:
    /// the stream ended at once).
    pub first: Option<pb::GenerateEvent>,
    pub lease: Lease,
    /// The API key's permit (keys on): its concurrency slot, freed with
    /// the generation, and the tokens it used.
    pub permit: Option<Permit>,
}

impl Generation {
    /// Counts the tokens of the finished generation against its API key.
    pub fn account(&mut self, finished: &pb::GenerateFinished) {
        if let Some(permit) = &mut self.permit {
            permit.add_tokens(
                u64::from(finished.prompt_tokens) + u64::from(finished.completion_tokens),
            );
        }
    }
}

/// Runs requests through the scheduler to workers.
#[derive(Debug)]
pub struct Dispatcher {
    scheduler: Arc<Scheduler>,
    default_registry: String,
    worker_header: bool,
    prefix_key_bytes: usize,
    auth: Auth,
    metrics: Arc<GatewayMetrics>,
}

impl Dispatcher {
    pub fn new(
        scheduler: Arc<Scheduler>,
        default_registry: String,
        worker_header: bool,
        prefix_key_bytes: usize,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self {
            scheduler,
            default_registry,
            worker_header,
            prefix_key_bytes,
            auth: Auth::off(),
            metrics,
        }
    }

    /// With API keys.
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn metrics(&self) -> &Arc<GatewayMetrics> {
        &self.metrics
    }

    /// The model label of a request for `requested`: its name in the
    /// pool's index, or `unknown` (never the client's text as such).
    pub fn model_label(&self, requested: &str) -> String {
        self.roster()
            .snapshot()
            .resolve(requested, &self.default_registry)
            .map_or_else(|| UNKNOWN_MODEL.to_owned(), |(name, _)| name)
    }

    pub fn default_registry(&self) -> &str {
        &self.default_registry
    }

    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    pub fn roster(&self) -> &Arc<crate::workers::Roster> {
        self.scheduler.roster()
    }

    /// Bytes of a conversation's beginning that make its prefix key.
    pub fn prefix_key_bytes(&self) -> usize {
        self.prefix_key_bytes
    }

    /// The authentication step. With API keys on, the request's key (the
    /// route-level check found it) must allow its model — else 404, as if
    /// the model did not exist — and be within its limits — else 429 with
    /// `Retry-After`. The permit holds the key's concurrency slot until the
    /// request ends. Without keys every request passes.
    pub fn authenticate(&self, ctx: &RequestContext) -> Result<Option<Permit>, ApiError> {
        let Some(key) = &ctx.key else {
            return Ok(None);
        };
        if !key.may_use(&ctx.model, &self.default_registry) {
            return Err(ApiError::ModelNotFound(ctx.model.clone()));
        }
        key.admit().map(Some)
    }

    /// The headers that tell the client where and how long: the worker
    /// (unless configured off) and the queueing time.
    pub fn response_headers(&self, lease: &Lease) -> Vec<(&'static str, String)> {
        let mut headers = vec![(QUEUE_MS_HEADER, lease.waited.as_millis().to_string())];
        if self.worker_header {
            headers.push((WORKER_HEADER, lease.grant.worker.to_string()));
        }
        headers
    }

    /// Admits `request` and starts it on a worker. Waits while every slot
    /// of its model is taken; the wait ends with the caller's future being
    /// dropped.
    pub async fn generate(
        &self,
        ctx: &Arc<RequestContext>,
        request: pb::GenerateRequest,
    ) -> Result<Generation, ApiError> {
        let permit = self.authenticate(ctx)?;
        self.generate_again(ctx, request, permit).await
    }

    /// Runs a request that passed [`Self::authenticate`] (again, after its
    /// worker went away), under the permit it holds: it counts once
    /// against its key's limits.
    pub async fn generate_again(
        &self,
        ctx: &Arc<RequestContext>,
        request: pb::GenerateRequest,
        permit: Option<Permit>,
    ) -> Result<Generation, ApiError> {
        let model = self.scheduler.resolve(&ctx.model)?;
        self.run(ctx, &model, |mut client, name| {
            let mut request = request.clone();
            request.model = name;
            async move {
                let mut request = tonic::Request::new(request);
                crate::traces::inject(request.metadata_mut());
                let mut events = client.generate(request).await?.into_inner();
                let first = events.message().await?;
                Ok((events, first))
            }
        })
        .await
        .map(|((events, first), lease)| Generation {
            events,
            first,
            lease,
            permit,
        })
    }

    /// Embeds on a replica of the model. Embeddings run on the worker's
    /// embedding thread, not in generation slots: they need a replica, not
    /// a slot.
    pub async fn embed(
        &self,
        ctx: &Arc<RequestContext>,
        request: pb::EmbedRequest,
    ) -> Result<(pb::EmbedResponse, Lease), ApiError> {
        let mut permit = self.authenticate(ctx)?;
        let model = self.scheduler.resolve(&ctx.model)?;
        let (response, lease) = self
            .run(ctx, &model, |mut client, name| {
                let mut request = request.clone();
                request.model = name;
                async move {
                    let mut request = tonic::Request::new(request);
                    crate::traces::inject(request.metadata_mut());
                    client.embed(request).await.map(tonic::Response::into_inner)
                }
            })
            .await?;
        if let Some(permit) = &mut permit {
            permit.add_tokens(u64::from(response.prompt_tokens));
        }
        Ok((response, lease))
    }

    /// Counts the prompt tokens of a generation request on a replica of its
    /// model without running it: like an embedding, it needs a replica, not
    /// a slot.
    pub async fn count_tokens(
        &self,
        ctx: &Arc<RequestContext>,
        request: pb::GenerateRequest,
    ) -> Result<(u32, Lease), ApiError> {
        let _permit = self.authenticate(ctx)?;
        let model = self.scheduler.resolve(&ctx.model)?;
        let (response, lease) = self
            .run(ctx, &model, |mut client, name| {
                let mut request = request.clone();
                request.model = name;
                async move {
                    let mut request = tonic::Request::new(request);
                    crate::traces::inject(request.metadata_mut());
                    client
                        .count_tokens(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        Ok((response.prompt_tokens, lease))
    }

    /// Admit → dispatch, putting the request back or retrying it elsewhere
    /// as the worker's failure class says.
    async fn run<T, F, Fut>(
        &self,
        ctx: &Arc<RequestContext>,
        model: &Resolved,
        call: F,
    ) -> Result<(T, Lease), ApiError>
    where
        F: Fn(crate::workers::WorkerRpc, String) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut place = None;
        let mut requeues = 0;
        let mut moved_on = false;
        loop {
            let queued = tracing::info_span!("queue", model = %model.key.as_str());
            let admitted = self
                .scheduler
                .admit(ctx, model, place)
                .instrument(queued)
                .await;
            let mut lease = match admitted {
                Ok(lease) => lease,
                Err(err) => return Err(self.refused(err)),
            };
            let dispatch = tracing::info_span!("dispatch", worker = %lease.grant.worker);
            let called = call(lease.client.clone(), lease.grant.name.clone())
                .instrument(dispatch)
                .await;
            let status = match called {
                Ok(value) => {
                    self.metrics.queue_waited(&lease.grant.name, lease.waited);
                    return Ok((value, lease));
                }
                Err(status) => status,
            };
            let failure = WorkerFailure::from_status(&status);
            tracing::debug!(
                request_id = %ctx.id,
                worker = %lease.grant.worker,
                class = ?failure.class,
                code = ?failure.code,
                "worker refused the request"
            );
            let outcome = match (failure.class, failure.code) {
                (FailureClass::Busy, _) => Outcome::Busy,
                (FailureClass::Gone, ErrorCode::ModelNotLoaded) => Outcome::ReplicaGone,
                (FailureClass::Gone | FailureClass::Unspecified, _) if !moved_on => {
                    moved_on = true;
                    Outcome::WorkerGone
                }
                _ => {
                    lease.set_outcome(Outcome::Unused);
                    return Err(ApiError::from_worker(&failure, &ctx.model));
                }
            };
            self.metrics.requeued(match outcome {
                Outcome::Busy => Requeue::Busy,
                Outcome::ReplicaGone => Requeue::ReplicaGone,
                _ => Requeue::WorkerGone,
            });
            requeues += 1;
            if requeues > MAX_REQUEUES {
                return Err(self.refused(ApiError::NoCapacity(ctx.model.clone())));
            }
            lease.set_outcome(outcome);
            place = Some(lease.place());
        }
    }
}

/// The reasons a refusal (429, 503) is counted under.
const REFUSAL_REASONS: &[&str] = &[
    "queue_full",
    "queue_timeout",
    "no_capacity",
    "shutting_down",
    "model_too_large",
    "load_failed",
];

impl Dispatcher {
    /// Counts a refusal by its status and reason, and passes it on.
    fn refused(&self, err: ApiError) -> ApiError {
        let status = err.status().as_u16();
        if status == 429 || status == 503 {
            let code = err.code().unwrap_or_default();
            let reason = REFUSAL_REASONS
                .iter()
                .find(|r| **r == code)
                .copied()
                .unwrap_or("other");
            self.metrics.refused(status, reason);
        }
        err
    }
}
