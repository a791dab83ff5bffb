//! The gRPC face of the worker: `herd.worker.v1.Worker` over an [`Engine`].

mod drain;
mod embed;
mod generate;
mod models;
mod placement;
mod status;
mod trace;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use herd_proto::v1 as pb;
use herd_proto::v1::worker_server::Worker;
use herd_proto::v1::{
    EmbedRequest, EmbedResponse, GenerateEvent, GenerateRequest, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::catalog::Catalog;
use crate::config::ModelConfig;
use crate::engine::Engine;
use crate::error::CatalogError;
use crate::metrics::WorkerMetrics;

pub use drain::{Drain, DrainState};

/// What a worker may hold, reported to gateways for placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub memory_limit_bytes: u64,
    /// 0: no limit but memory.
    pub max_loaded_models: u32,
}

impl Default for Capacity {
    /// The host's memory, no model limit.
    fn default() -> Self {
        Self {
            memory_limit_bytes: crate::memory::host().total_bytes,
            max_loaded_models: 0,
        }
    }
}

/// Serves one engine.
#[derive(Clone)]
pub struct WorkerService {
    engine: Arc<dyn Engine>,
    worker_id: String,
    /// The model store, if this worker has one.
    catalog: Option<Arc<Catalog>>,
    /// Models of the worker's config: loadable by name at any time.
    configured: Arc<[ModelConfig]>,
    capacity: Capacity,
    drain: Arc<DrainState>,
    /// The status last pushed to watchers, shared by all of them.
    pushed: Arc<status::Pushed>,
    metrics: Arc<WorkerMetrics>,
}

impl std::fmt::Debug for WorkerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerService")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl WorkerService {
    pub fn new(engine: Arc<dyn Engine>, worker_id: String) -> Self {
        Self {
            metrics: Arc::new(WorkerMetrics::new(engine.clone(), &worker_id)),
            engine,
            worker_id,
            catalog: None,
            configured: Arc::from([]),
            capacity: Capacity::default(),
            drain: Arc::default(),
            pushed: Arc::default(),
        }
    }

    /// Its metrics.
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// What the drain handle and the service share.
    pub fn drain_state(&self) -> Arc<DrainState> {
        self.drain.clone()
    }

    #[must_use]
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The models of the worker's config (loaded at start or not): the
    /// gateway may load and unload them by name.
    #[must_use]
    pub fn with_models(mut self, models: Vec<ModelConfig>) -> Self {
        self.configured = models.into();
        self
    }

    #[must_use]
    pub fn with_capacity(mut self, capacity: Capacity) -> Self {
        self.capacity = capacity;
        self
    }

    fn catalog(&self) -> Result<&Arc<Catalog>, Status> {
        self.catalog
            .as_ref()
            .ok_or_else(|| CatalogError::NoStore.into())
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<GenerateEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Worker for WorkerService {
    type GenerateStream = EventStream;

    async fn generate(
        &self,
        request: Request<GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        self.drain.admit()?;
        let span = trace::generate_span(request.metadata(), &request.get_ref().model);
        let stream = generate::start(
            self.engine.as_ref(),
            request.into_inner(),
            &self.metrics,
            span,
        )
        .await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        self.drain.admit()?;
        let response = embed::run(self.engine.as_ref(), request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn count_tokens(
        &self,
        request: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::CountTokensResponse>, Status> {
        self.drain.admit()?;
        let request = generate::to_engine_request(request.into_inner())?;
        let prompt_tokens = self.engine.count_tokens(request).await?;
        Ok(Response::new(pb::CountTokensResponse { prompt_tokens }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(status::snapshot(self).await))
    }

    type WatchStatusStream = status::StatusStream;

    async fn watch_status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        Ok(Response::new(status::watch(self)))
    }

    async fn load_model(
        &self,
        request: Request<pb::LoadModelRequest>,
    ) -> Result<Response<pb::LoadModelResponse>, Status> {
        self.drain.admit()?;
        let span = trace::load_span(request.metadata(), &request.get_ref().model);
        let loaded = placement::load(self, request.into_inner())
            .instrument(span.clone())
            .await?;
        span.record("pull_ms", loaded.pull_ms);
        span.record("load_ms", loaded.load_ms);
        Ok(Response::new(loaded))
    }

    async fn unload_model(
        &self,
        request: Request<pb::UnloadModelRequest>,
    ) -> Result<Response<pb::UnloadModelResponse>, Status> {
        Ok(Response::new(
            placement::unload(self, request.into_inner()).await?,
        ))
    }

    type PullModelStream = models::TransferStream;

    async fn pull_model(
        &self,
        request: Request<pb::PullModelRequest>,
    ) -> Result<Response<Self::PullModelStream>, Status> {
        let stream = models::pull(
            self.catalog()?.clone(),
            self.engine.clone(),
            request.into_inner(),
            self.metrics.clone(),
        )?;
        Ok(Response::new(stream))
    }

    type PushModelStream = models::TransferStream;

    async fn push_model(
        &self,
        request: Request<pb::PushModelRequest>,
    ) -> Result<Response<Self::PushModelStream>, Status> {
        let stream = models::push(
            self.catalog()?.clone(),
            self.engine.clone(),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        Ok(Response::new(
            models::list(self.catalog()?, self.engine.as_ref()).await?,
        ))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::StoredModel>, Status> {
        Ok(Response::new(
            models::get(self.catalog()?, self.engine.as_ref(), request.into_inner()).await?,
        ))
    }

    async fn delete_model(
        &self,
        request: Request<pb::DeleteModelRequest>,
    ) -> Result<Response<pb::DeleteModelResponse>, Status> {
        Ok(Response::new(
            models::delete(self.catalog()?, self.engine.clone(), request.into_inner()).await?,
        ))
    }

    async fn tag_model(
        &self,
        request: Request<pb::TagModelRequest>,
    ) -> Result<Response<pb::StoredModel>, Status> {
        Ok(Response::new(
            models::tag(self.catalog()?, self.engine.as_ref(), request.into_inner()).await?,
        ))
    }
}
