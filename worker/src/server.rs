//! Binding and serving the worker's gRPC endpoint: `herd.worker.v1.Worker`
//! plus the standard `grpc.health.v1.Health`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::Stream;
use herd_proto::v1::worker_server::WorkerServer;
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;

use crate::engine::Engine;
use crate::service::WorkerService;

/// Largest gRPC message either way: above the gateway's largest request body
/// and the largest embedding batch.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A worker endpoint that is bound (its address is known) but not yet serving.
#[derive(Debug)]
pub struct GrpcServer {
    listener: TcpListener,
    service: WorkerService,
    local_addr: SocketAddr,
    worker_id: String,
}

impl GrpcServer {
    /// Binds `listen` (port 0 picks a free port). The worker id defaults to
    /// `worker-<port>`.
    pub async fn bind(
        listen: SocketAddr,
        worker_id: Option<String>,
        engine: Arc<dyn Engine>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let worker_id = worker_id.unwrap_or_else(|| format!("worker-{}", local_addr.port()));
        Ok(Self {
            listener,
            service: WorkerService::new(engine, worker_id.clone()),
            local_addr,
            worker_id,
        })
    }

    /// Serves the store RPCs from `catalog`; its models can be loaded.
    #[must_use]
    pub fn with_catalog(mut self, catalog: Arc<crate::catalog::Catalog>) -> Self {
        self.service = self.service.with_catalog(catalog);
        self
    }

    /// The models of the worker's config, loadable by name.
    #[must_use]
    pub fn with_models(mut self, models: Vec<crate::config::ModelConfig>) -> Self {
        self.service = self.service.with_models(models);
        self
    }

    /// What the worker reports it may hold.
    #[must_use]
    pub fn with_capacity(mut self, capacity: crate::service::Capacity) -> Self {
        self.service = self.service.with_capacity(capacity);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Serves until `shutdown` resolves, then finishes in-flight calls.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<WorkerServer<WorkerService>>().await;
        tracing::info!(addr = %self.local_addr, worker_id = %self.worker_id, "worker gRPC listening");
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(
                WorkerServer::new(self.service)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(incoming_nodelay(self.listener), shutdown)
            .await
    }
}

/// Accepted connections with Nagle's algorithm off. `Server::tcp_nodelay`
/// applies only to listeners tonic binds itself; without this, a response's
/// HEADERS and first DATA frame are separate writes and the second waits for
/// the peer's delayed ACK (~40 ms on Linux).
fn incoming_nodelay(
    listener: TcpListener,
) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        if let Err(e) = conn.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        Ok(conn)
    })
}
