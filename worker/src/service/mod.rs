//! The gRPC face of the worker: `herd.worker.v1.Worker` over an [`Engine`].

mod embed;
mod generate;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use herd_proto::v1::worker_server::Worker;
use herd_proto::v1::{
    EmbedRequest, EmbedResponse, GenerateEvent, GenerateRequest, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use crate::engine::Engine;

/// Serves one engine.
#[derive(Clone)]
pub struct WorkerService {
    engine: Arc<dyn Engine>,
    worker_id: String,
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
        Self { engine, worker_id }
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
        let stream = generate::start(self.engine.as_ref(), request.into_inner()).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        let response = embed::run(self.engine.as_ref(), request.into_inner()).await?;
        Ok(Response::new(response))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(status::snapshot(
            self.engine.as_ref(),
            &self.worker_id,
        )))
    }
}
