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
use crate::drain::DrainReport;
use crate::http::HttpApp;
use crate::scheduler::Scheduler;
use crate::state::StateStore;
use crate::workers::Registry;

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

    /// Serves until `shutdown` turns true, then drains: stops accepting at
    /// once (and queues nothing new), lets the requests in flight and
    /// queued finish within the grace period, and cuts those still there
    /// after it (see [`crate::drain`]).
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> DrainReport {
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
        let app = HttpApp::new(dispatcher, self.config.max_body_bytes, self.config.http2)
            .with_head_timeout(self.config.header_timeout());
        let drain = app.drain();

        // pingora binds by address string unless the fd table already holds a
        // socket for it: hand it ours.
        let key = self.local_addr.to_string();
        let mut fds = Fds::new();
        fds.add(key.clone(), self.listener.into_raw_fd());
        let fds: ListenFds = Arc::new(parking_lot::Mutex::new(fds));
        let mut service = Service::new("herd-gateway".to_owned(), app);
        service.add_tcp(&key);
        tracing::info!(addr = %self.local_addr, policy = ?self.config.scheduler.policy, "gateway listening");
        // Returns when the signal stops the accept loop; the listening
        // socket is closed then, so new connections are refused.
        service.start_service(Some(fds), shutdown, 1).await;

        // Nothing new is queued; what is queued keeps its place.
        scheduler.shut_down();
        let report = drain.finish(self.config.shutdown_grace()).await;
        follower.abort();
        scheduling.abort();
        tracing::info!(cut = report.cut, "gateway stopped");
        report
    }
}
