//! Binding and running the gateway: a pingora listening service on a socket
//! bound up front (so port 0 works and the address is known before serving),
//! the worker roster following the state store, the pool scheduler, this
//! gateway's own record and load claims in the store, and graceful
//! shutdown.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::sync::Arc;

use herd_state::{Claims, GatewayRecord, Keys, Membership, Session, StateStore};
use pingora::server::{Fds, ListenFds};
use pingora::services::Service as _;
use pingora::services::listening::Service;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::config::GatewayConfig;
use crate::dispatch::Dispatcher;
use crate::drain::DrainReport;
use crate::http::HttpApp;
use crate::metrics::GatewayMetrics;
use crate::scheduler::Scheduler;
use crate::tls::CertStore;
use crate::workers::Roster;

/// A bound, not yet serving gateway.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    local_addr: SocketAddr,
    roster: Arc<Roster>,
    store: Arc<dyn StateStore>,
    config: GatewayConfig,
    auth: Auth,
    certs: Option<Arc<CertStore>>,
    metrics: Arc<GatewayMetrics>,
}

impl Gateway {
    /// Binds the configured address; workers come from `store` (etcd in a
    /// cluster, or a [`herd_state::MemoryStore`] holding the static or
    /// embedded workers), under `config.cluster.prefix`.
    /// Reads the keys file first, if one is configured.
    pub fn bind(config: GatewayConfig, store: Arc<dyn StateStore>) -> std::io::Result<Self> {
        let auth = Auth::from_config(&config)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let certs = config
            .tls
            .as_ref()
            .map(CertStore::load)
            .transpose()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut roster = Roster::new();
        if let Some(worker_tls) = &config.worker_tls {
            let tls = worker_tls
                .client_config()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            roster = roster.with_tls(tls);
        }
        let listener = TcpListener::bind(config.listen)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let metrics = Arc::new(if config.metrics {
            GatewayMetrics::new()
        } else {
            GatewayMetrics::off()
        });
        Ok(Self {
            listener,
            local_addr,
            roster: Arc::new(roster),
            store,
            config,
            auth,
            certs,
            metrics,
        })
    }

    /// Its metrics (served on `GET /metrics`); `herd serve` adds its
    /// worker's to the same exposition with [`GatewayMetrics::add_extra`].
    pub fn metrics(&self) -> Arc<GatewayMetrics> {
        self.metrics.clone()
    }

    /// This gateway's id in the cluster: configured, or `<hostname>:<port>`.
    pub fn id(&self) -> String {
        self.config.cluster.gateway_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty() && !h.contains('/'))
                .unwrap_or_else(|| "gateway".to_owned());
            format!("{host}:{}", self.local_addr.port())
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https` with TLS on the listener, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn roster(&self) -> Arc<Roster> {
        self.roster.clone()
    }

    /// Serves until `shutdown` turns true, then drains: stops accepting at
    /// once (and queues nothing new), lets the requests in flight and
    /// queued finish within the grace period, and cuts those still there
    /// after it (see [`crate::drain`]).
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> DrainReport {
        let id = self.id();
        let keys = Keys::new(&self.config.cluster.prefix);
        let (membership, membership_task) =
            Membership::follow(self.store.clone(), keys.clone(), shutdown.clone());
        // This gateway's lease carries its record and its load claims: they
        // vanish within the TTL if it dies.
        let session = Arc::new(Session::start(
            self.store.clone(),
            self.config.cluster.lease_ttl(),
        ));
        let mut lease = session.status();
        let _ = tokio::time::timeout(
            herd_state::CALL_TIMEOUT,
            lease.wait_for(|s| *s != herd_state::SessionStatus::Starting),
        )
        .await;
        let record = GatewayRecord {
            id: id.clone(),
            listen: self.local_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: herd_state::unix_ms() / 1000,
        };
        if let Err(e) = session
            .put(&keys.gateway(&id), herd_state::encode(&record))
            .await
        {
            tracing::debug!(error = %e, "the gateway's record is not written yet; retrying in the background");
        }
        let claims = Claims::new(self.store.clone(), keys, session.clone(), id.clone());
        let scheduler = Scheduler::new(
            &self.config,
            self.roster.clone(),
            Some(claims),
            self.metrics.clone(),
        );
        let follower = self
            .roster
            .start(scheduler.clone(), membership, shutdown.clone())
            .await;
        let scheduling = tokio::spawn(scheduler.clone().run(shutdown.clone()));
        let dispatcher = Dispatcher::new(
            scheduler.clone(),
            self.config.default_registry.clone(),
            self.config.scheduler.worker_header,
            self.config.scheduler.prefix_key_bytes,
            self.metrics.clone(),
        )
        .with_auth(self.auth.clone());
        let keys_task = tokio::spawn(
            self.auth
                .clone()
                .follow(self.store.clone(), shutdown.clone()),
        );
        let app = HttpApp::new(dispatcher, self.config.max_body_bytes, self.config.http2)
            .with_head_timeout(self.config.header_timeout())
            .with_state_store(self.store.clone(), &self.config.cluster.prefix);
        let drain = app.drain();

        // pingora binds by address string unless the fd table already holds a
        // socket for it: hand it ours.
        let key = self.local_addr.to_string();
        let mut fds = Fds::new();
        fds.add(key.clone(), self.listener.into_raw_fd());
        let fds: ListenFds = Arc::new(parking_lot::Mutex::new(fds));
        let mut service = Service::new("herd-gateway".to_owned(), app);
        let mut certs_task = None;
        match &self.certs {
            Some(certs) => match certs.settings() {
                Ok(settings) => {
                    service.add_tls_with_settings(&key, None, settings);
                    certs_task = Some(tokio::spawn(certs.clone().follow(shutdown.clone())));
                }
                Err(error) => {
                    // Never fall back to plain HTTP.
                    tracing::error!(%error, "cannot set up TLS; not serving");
                    return drain.finish(std::time::Duration::ZERO).await;
                }
            },
            None => service.add_tcp(&key),
        }
        tracing::info!(addr = %self.local_addr, gateway = %id, tls = self.certs.is_some(), policy = ?self.config.scheduler.policy, "gateway listening");
        // Returns when the signal stops the accept loop; the listening
        // socket is closed then, so new connections are refused.
        service.start_service(Some(fds), shutdown, 1).await;

        // Nothing new is queued; what is queued keeps its place.
        scheduler.shut_down();
        let report = drain.finish(self.config.shutdown_grace()).await;
        follower.abort();
        keys_task.abort();
        if let Some(task) = certs_task {
            task.abort();
        }
        scheduling.abort();
        membership_task.abort();
        if let Err(e) = session.close().await {
            tracing::debug!(error = %e, "cannot revoke the gateway's lease; it expires");
        }
        tracing::info!(cut = report.cut, "gateway stopped");
        report
    }
}
