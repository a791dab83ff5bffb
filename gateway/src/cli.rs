//! The gateway's command line, shared by `herd-gateway` and `herd
//! gateway`: flags and environment variables over the config file, the
//! state store (etcd with `--etcd`, else the static `[[workers]]` in
//! memory), then serving until a signal.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use herd_state::{Keys, MemoryStore, StateStore, WorkerRecord};

use crate::{Gateway, GatewayConfig};

#[derive(Debug, clap::Parser)]
#[command(
    version,
    about = "Herd gateway: the OpenAI API in front of Herd workers"
)]
pub struct GatewayArgs {
    /// TOML config file (see config/gateway.toml).
    #[arg(long, short, env = "HERD_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP listen address; overrides the file.
    #[arg(long, env = "HERD_GATEWAY_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// etcd endpoints (`http://host:port`, comma-separated): discover the
    /// workers registered there and share the pool with other gateways.
    /// Overrides the file's `cluster.etcd`.
    #[arg(
        long,
        env = "HERD_ETCD",
        value_name = "URL[,URL…]",
        value_delimiter = ','
    )]
    etcd: Vec<String>,
    /// Key prefix in etcd (default `/herd/`); overrides `cluster.prefix`.
    #[arg(long, env = "HERD_ETCD_PREFIX")]
    etcd_prefix: Option<String>,
    /// Seconds this gateway's lease lives without renewal (default 10);
    /// overrides `cluster.lease_ttl_secs`.
    #[arg(long, env = "HERD_LEASE_TTL_SECS")]
    lease_ttl: Option<u64>,
    /// This gateway's id in the cluster (default `<hostname>:<port>`);
    /// overrides `cluster.gateway_id`.
    #[arg(long, env = "HERD_GATEWAY_ID")]
    gateway_id: Option<String>,
    /// API keys file (`herd keys create --file …`): with it, every route
    /// but /healthz and /readyz needs a key. Overrides `keys_file`.
    #[arg(long, env = "HERD_KEYS_FILE")]
    keys_file: Option<PathBuf>,
    /// API keys from the cluster's etcd (`herd keys … --etcd`), shared by
    /// every gateway of the pool. Sets `keys_from_etcd`.
    #[arg(long, env = "HERD_KEYS_FROM_ETCD")]
    keys_from_etcd: bool,
    /// TLS certificate chain (PEM); with --tls-key, the listener speaks
    /// TLS only. Overrides `[tls] cert`.
    #[arg(long, env = "HERD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM). Overrides `[tls] key`.
    #[arg(long, env = "HERD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that signs the workers' certificates: reach `https://`
    /// workers over TLS. Overrides `[worker_tls] ca`.
    #[arg(long, env = "HERD_WORKER_CA")]
    worker_ca: Option<PathBuf>,
    /// This gateway's client certificate (PEM) for workers that require
    /// one (mTLS). Overrides `[worker_tls] cert`.
    #[arg(long, env = "HERD_CLIENT_CERT", requires_all = ["client_key", "worker_ca"])]
    client_cert: Option<PathBuf>,
    /// Its private key (PEM). Overrides `[worker_tls] key`.
    #[arg(long, env = "HERD_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

impl GatewayArgs {
    /// The config file with the flags applied, validated.
    pub fn config(&self) -> anyhow::Result<GatewayConfig> {
        let mut config = match &self.config {
            Some(path) => GatewayConfig::from_file(path)?,
            None => GatewayConfig::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        let etcd = herd_state::settings::split_endpoints(&self.etcd);
        if !etcd.is_empty() {
            config.cluster.etcd = etcd;
        }
        if let Some(prefix) = &self.etcd_prefix {
            config.cluster.prefix.clone_from(prefix);
        }
        if let Some(ttl) = self.lease_ttl {
            config.cluster.lease_ttl_secs = ttl;
        }
        if let Some(id) = &self.gateway_id {
            config.cluster.gateway_id = Some(id.clone());
        }
        if let Some(path) = &self.keys_file {
            config.keys_file = Some(path.clone());
        }
        if self.keys_from_etcd {
            config.keys_from_etcd = true;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(crate::tls::TlsConfig {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(ca) = &self.worker_ca {
            config.worker_tls = Some(crate::tls::WorkerTlsConfig {
                ca: ca.clone(),
                cert: self.client_cert.clone(),
                key: self.client_key.clone(),
            });
        }
        config.validate()?;
        crate::auth::Auth::from_config(&config)?;
        Ok(config)
    }
}

/// Serves until SIGINT or SIGTERM, then drains. Returns the exit status:
/// 0, or [`herd_signals::DRAIN_CUT_EXIT_STATUS`] when requests were cut.
pub async fn run(args: GatewayArgs) -> anyhow::Result<i32> {
    let config = args.config()?;
    let store = state_store(&config).await?;
    let gateway = Gateway::bind(config.clone(), store)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // The readiness line scripts and tests wait for.
    println!(
        "herd-gateway listening on {}://{}",
        gateway.scheme(),
        gateway.local_addr()
    );
    std::io::Write::flush(&mut std::io::stdout()).ok();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        herd_signals::shutdown().await;
        let _ = stop.send(true);
    });
    let report = gateway.run(shutdown).await;
    Ok(if report.complete() {
        0
    } else {
        herd_signals::DRAIN_CUT_EXIT_STATUS
    })
}

/// etcd when `cluster.etcd` is set; else a memory store holding the
/// config's static workers (without leases: they stay).
pub async fn state_store(config: &GatewayConfig) -> anyhow::Result<Arc<dyn StateStore>> {
    if !config.cluster.etcd.is_empty() {
        let store = herd_state::EtcdStore::connect(&config.cluster.etcd).await?;
        return Ok(Arc::new(store));
    }
    let store = MemoryStore::new();
    let keys = Keys::new(&config.cluster.prefix);
    for worker in &config.workers {
        let record = WorkerRecord {
            id: worker.id.clone(),
            endpoint: worker.endpoint.clone(),
            ..WorkerRecord::default()
        };
        store
            .put(&keys.worker(&worker.id), herd_state::encode(&record), None)
            .await?;
    }
    Ok(Arc::new(store))
}
