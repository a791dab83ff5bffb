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

use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::engine::Engine;
use crate::service::{Drain, WorkerService};

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
    health: HealthReporter,
    drain: Drain,
    tls: Option<tonic::transport::ServerTlsConfig>,
}

impl GrpcServer {
    /// Binds `listen` (port 0 picks a free port). The worker id defaults to
    /// `worker-<port>`.
    pub async fn bind(
        listen: SocketAddr,
        worker_id: Option<String>,
        engine: Arc<dyn Engine>,
    ) -> std::io::Result<Self> {
        Self::from_listener(TcpListener::bind(listen).await?, worker_id, engine)
    }

    /// Serves on a bound `listener`. The worker id defaults to
    /// `worker-<port>`.
    pub fn from_listener(
        listener: TcpListener,
        worker_id: Option<String>,
        engine: Arc<dyn Engine>,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let worker_id = worker_id.unwrap_or_else(|| format!("worker-{}", local_addr.port()));
        let service = WorkerService::new(engine.clone(), worker_id.clone());
        let health = HealthReporter::new();
        let drain = Drain::new(service.drain_state(), engine, health.clone());
        Ok(Self {
            listener,
            service,
            local_addr,
            worker_id,
            health,
            drain,
            tls: None,
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

    /// Serves over TLS (with a client CA: only to clients holding a
    /// certificate it signed — mTLS).
    #[must_use]
    pub fn with_tls(mut self, tls: tonic::transport::ServerTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its metrics (see [`crate::metrics`]).
    pub fn metrics(&self) -> Arc<crate::metrics::WorkerMetrics> {
        self.service.metrics()
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The handle that drains this worker: marks it draining (status, gRPC
    /// health, refusals), waits for its generations, ends its status
    /// streams.
    pub fn drain(&self) -> Drain {
        self.drain.clone()
    }

    /// Serves until `shutdown` resolves, then ends the status streams and
    /// finishes the calls in flight (a drain, [`GrpcServer::drain`], runs
    /// before `shutdown` resolves).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let health = self.health.clone();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        health.set_serving::<WorkerServer<WorkerService>>().await;
        let health_service = HealthServer::new(HealthService::from_health_reporter(health));
        let drain = self.drain.clone();
        let shutdown = async move {
            shutdown.await;
            drain.finish();
        };
        tracing::info!(addr = %self.local_addr, worker_id = %self.worker_id, "worker gRPC listening");
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        builder
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
