//! Binding and running the gateway: a pingora listening service on a socket
//! bound up front (so port 0 works and the address is known before serving),
//! the worker registry and the pool scheduler, and graceful shutdown.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::Arc;

use pingora::server::{Fds, ListenFds};
use pingora::services::Service as _;
use pingora::services::listening::Service;
use tokio::sync::watch;

use crate::config::GatewayConfig;
use crate::dispatch::Dispatcher;
use crate::http::HttpApp;
use crate::scheduler::Scheduler;
use crate::state::StateStore;
use crate::workers::Registry;

/// How long the answers to queued requests turned away at the end of a
/// drain may take to be written.
const REJECT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A bound, not yet serving gateway.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    registry: Arc<Registry>,
    config: GatewayConfig,
}

impl Gateway {
    /// Binds the configured address; workers come from `store`.
    pub fn bind(config: GatewayConfig, store: Arc<dyn StateStore>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            registry: Arc::new(Registry::new(store)),
            config,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Serves until `shutdown` turns true, then stops accepting, lets the
    /// requests in flight and queued finish for up to the grace period,
    /// and turns the ones still queued away with 503.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let scheduler = Scheduler::new(&self.config, self.registry.clone());
        let follower = self
            .registry
            .start(scheduler.clone(), shutdown.clone())
            .await;
        let scheduling = tokio::spawn(scheduler.clone().run(shutdown.clone()));
        let dispatcher = Dispatcher::new(
            scheduler.clone(),
            self.config.default_registry.clone(),
            self.config.scheduler.worker_header,
            self.config.scheduler.prefix_key_bytes,
        );
        let app = HttpApp::new(dispatcher, self.config.max_body_bytes, self.config.http2);
        let in_flight = app.in_flight();

        // pingora binds by address string unless the fd table already holds a
        // socket for it: hand it ours.
        let key = self.local_addr.to_string();
        let mut fds = Fds::new();
        fds.add(key.clone(), self.listener.into_raw_fd());
        let fds: ListenFds = Arc::new(parking_lot::Mutex::new(fds));
        let mut service = Service::new("herd-gateway".to_owned(), app);
        service.add_tcp(&key);
        tracing::info!(addr = %self.local_addr, policy = ?self.config.scheduler.policy, "gateway listening");
        service.start_service(Some(fds), shutdown, 1).await;

        // Draining: nothing new is queued; what is queued keeps its place.
        scheduler.shut_down();
        let grace = self.config.shutdown_grace();
        if tokio::time::timeout(grace, in_flight.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = in_flight.count(),
                "shutdown grace period over; turning queued requests away, dropping the rest"
            );
            // Queued requests are answered 503 with Retry-After; give their
            // answers a moment to be written.
            scheduler.reject_all();
            let _ = tokio::time::timeout(REJECT_GRACE, in_flight.wait_idle()).await;
        }
        follower.abort();
        scheduling.abort();
        tracing::info!("gateway stopped");
    }
}
