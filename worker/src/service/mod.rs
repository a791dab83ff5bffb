//! The gRPC face of the worker: `herd.worker.v1.Worker` over an [`Engine`].

mod embed;
mod generate;
mod models;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use herd_proto::v1 as pb;
use herd_proto::v1::worker_server::Worker;
use herd_proto::v1::{
    EmbedRequest, EmbedResponse, GenerateEvent, GenerateRequest, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::catalog::Catalog;
use crate::engine::Engine;
use crate::error::CatalogError;

/// Serves one engine.
#[derive(Clone)]
pub struct WorkerService {
    engine: Arc<dyn Engine>,
    worker_id: String,
    /// The model store, if this worker has one.
    catalog: Option<Arc<Catalog>>,
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
            engine,
            worker_id,
            catalog: None,
        }
    }

    #[must_use]
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    fn catalog(&self) -> Result<&Arc<Catalog>, Status> {
        self.catalog
            .as_ref()
            .ok_or_else(|| CatalogError::NoStore.into())
    }

    /// The engine's name for `model`, loading it from the store if needed.
    async fn resolve_model(&self, model: &str) -> Result<String, Status> {
        match &self.catalog {
            Some(catalog) => Ok(catalog.ensure_loaded(self.engine.as_ref(), model).await?),
            None => Ok(model.to_owned()),
        }
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
        let mut request = request.into_inner();
        request.model = self.resolve_model(&request.model).await?;
        let stream = generate::start(self.engine.as_ref(), request).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let mut request = request.into_inner();
        request.model = self.resolve_model(&request.model).await?;
        let response = embed::run(self.engine.as_ref(), request).await?;
        Ok(Response::new(response))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let mut snapshot = status::snapshot(self.engine.as_ref(), &self.worker_id);
        if let Some(catalog) = &self.catalog {
            let catalog = catalog.clone();
            let mut statuses = snapshot.models.clone();
            if let Ok(with_stored) = tokio::task::spawn_blocking(move || {
                models::add_stored(&catalog, &mut statuses);
                statuses
            })
            .await
            {
                snapshot.models = with_stored;
            }
        }
        Ok(Response::new(snapshot))
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
