//! Gateway configuration: a TOML file (see `config/gateway.toml`), validated
//! at load; command-line flags override it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::routing::PolicyKind;
use crate::scheduler::{DEFAULT_KEEP_ALIVE, KeepAlive};

/// `[scheduler] evict_hold_ms` unless configured (measured in
/// docs/benchmarks.md, "Model churn").
pub const DEFAULT_EVICT_HOLD_MS: u64 = 1000;

/// Default request-body limit: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// Default time a new connection has to send its first request head.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the gateway needs to start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// HTTP listen address; Docker Model Runner's port by default.
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Offer HTTP/2 over cleartext (h2c) besides HTTP/1.1. Off by default:
    /// pingora's h2c preface probe waits on every new connection.
    pub http2: bool,
    /// How long shutdown waits for requests in flight, in seconds; those
    /// still running then are ended with an error.
    pub shutdown_grace_secs: u64,
    /// How long a new connection has to send its first request head, in
    /// seconds (slow clients get 408).
    pub header_timeout_secs: u64,
    /// Workers to route to when no shared state store is used.
    pub workers: Vec<StaticWorker>,
    /// Cluster mode: workers discovered in etcd, shared with other gateways.
    pub cluster: ClusterConfig,
    /// Where model names without a registry point, as on the workers:
    /// a request for `ai/smollm2` reaches a worker serving
    /// `ai/smollm2:latest` from `docker.io`.
    pub default_registry: String,
    /// The pool scheduler: queues, placement, routing, keep-alive.
    pub scheduler: SchedulerConfig,
    /// Per-model settings, by model name (as clients name it, or its
    /// normalised form): `keep_alive`, `max_queue`, `max_queue_wait_secs`.
    pub models: BTreeMap<String, ModelSettings>,
    /// API keys (`herd keys`; docs/security.md): when set, every route but
    /// `/healthz` and `/readyz` needs a key from this file.
    pub keys_file: Option<PathBuf>,
    /// API keys from the cluster's etcd (`herd keys … --etcd`), under
    /// `{cluster.prefix}apikeys/`, followed as they change: every gateway
    /// of the pool has the same keys. Needs `cluster.etcd`; excludes
    /// `keys_file`.
    pub keys_from_etcd: bool,
    /// TLS on the listener (`[tls] cert, key`: PEM files, re-read when
    /// they change); absent: plain HTTP.
    pub tls: Option<crate::tls::TlsConfig>,
    /// TLS to `https://` workers: the CA that signs them, and this
    /// gateway's client certificate for mTLS.
    pub worker_tls: Option<crate::tls::WorkerTlsConfig>,
    /// Record the gateway's Prometheus metrics and serve `/metrics`
    /// (default on). Off: nothing is recorded and `/metrics` is a 404 —
    /// for measuring what metrics cost.
    pub metrics: bool,
}

/// The `[scheduler]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How a replica is chosen: `prefix_affinity`, `least_loaded` or
    /// `round_robin`.
    pub policy: PolicyKind,
    /// Requests waiting per model; one more is answered 429.
    pub max_queue: usize,
    /// Longest a request waits for a slot (through loads and pulls); then
    /// it is answered 503. In seconds.
    pub max_queue_wait_secs: u64,
    /// A waiting request gains one priority level per this many seconds
    /// (`low` → `normal` → `high`), so none is starved; 0 turns aging off.
    pub aging_secs: u64,
    /// When a model's oldest waiting request has waited this long and a
    /// worker has free memory, the model gets one more replica. In ms.
    pub replica_after_ms: u64,
    /// A model used within this many ms is not evicted to make room for
    /// another until that one's oldest request has waited as long: the
    /// waiting requests gather and are served by one load instead of each
    /// swapping models (docs/benchmarks.md, "Model churn"). 0: evict any
    /// idle model at once.
    pub evict_hold_ms: u64,
    /// How long an idle model stays loaded: `"5m"`, `"30s"`, `0`
    /// (unload when idle), `-1` (never). A request's `keep_alive` overrides
    /// it for its model.
    pub keep_alive: KeepAlive,
    /// Bytes of a conversation's beginning that make its prefix key.
    pub prefix_key_bytes: usize,
    /// Send `x-herd-worker` (which worker served) with every answer.
    pub worker_header: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            policy: PolicyKind::default(),
            max_queue: 1024,
            max_queue_wait_secs: 120,
            aging_secs: 10,
            replica_after_ms: 2000,
            evict_hold_ms: DEFAULT_EVICT_HOLD_MS,
            keep_alive: DEFAULT_KEEP_ALIVE,
            prefix_key_bytes: 2048,
            worker_header: true,
        }
    }
}

impl SchedulerConfig {
    pub fn max_queue_wait(&self) -> Duration {
        Duration::from_secs(self.max_queue_wait_secs)
    }

    pub fn aging(&self) -> Duration {
        Duration::from_secs(self.aging_secs)
    }

    pub fn replica_after(&self) -> Duration {
        Duration::from_millis(self.replica_after_ms)
    }

    pub fn evict_hold(&self) -> Duration {
        Duration::from_millis(self.evict_hold_ms)
    }
}

/// The `[cluster]` section: where workers register and gateways share
/// state (docs/cluster.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd endpoints (`http://host:port`). Empty: no cluster — the workers
    /// are `[[workers]]` (or the one `herd serve` runs).
    pub etcd: Vec<String>,
    /// Key prefix in etcd; several pools may share one etcd.
    pub prefix: String,
    /// Time to live of this gateway's lease (its record and its load
    /// claims vanish this long after it dies), in seconds.
    pub lease_ttl_secs: u64,
    /// This gateway's id in the cluster; default `<hostname>:<port>`.
    pub gateway_id: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            prefix: herd_state::DEFAULT_PREFIX.to_owned(),
            lease_ttl_secs: herd_state::settings::DEFAULT_LEASE_TTL.as_secs(),
            gateway_id: None,
        }
    }
}

impl ClusterConfig {
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
}

/// A `[models."name"]` section: what differs for one model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    pub keep_alive: Option<KeepAlive>,
    pub max_queue: Option<usize>,
    pub max_queue_wait_secs: Option<u64>,
}

/// A worker named in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticWorker {
    pub id: String,
    /// gRPC endpoint, e.g. `http://10.0.0.5:50051`.
    pub endpoint: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 12434)),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            http2: false,
            shutdown_grace_secs: 10,
            header_timeout_secs: DEFAULT_HEADER_TIMEOUT.as_secs(),
            workers: Vec::new(),
            cluster: ClusterConfig::default(),
            default_registry: herd_store::reference::DOCKER_HUB.into(),
            scheduler: SchedulerConfig::default(),
            models: BTreeMap::new(),
            keys_file: None,
            keys_from_etcd: false,
            metrics: true,
            tls: None,
            worker_tls: None,
        }
    }
}

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

impl GatewayConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Whether the file at `path` sets `key` itself (rather than taking the
    /// default); false when it cannot be read.
    pub fn sets(path: &Path, key: &str) -> bool {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
            .is_some_and(|table| table.contains_key(key))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| ConfigError::Invalid {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        let scheduler = &self.scheduler;
        if scheduler.max_queue == 0 {
            return Err(invalid("scheduler.max_queue", "must be at least 1"));
        }
        if scheduler.max_queue_wait_secs == 0 {
            return Err(invalid(
                "scheduler.max_queue_wait_secs",
                "must be at least 1",
            ));
        }
        if scheduler.prefix_key_bytes == 0 {
            return Err(invalid("scheduler.prefix_key_bytes", "must be at least 1"));
        }
        for (name, model) in &self.models {
            if name.trim().is_empty() {
                return Err(invalid("models", "a model name must not be empty"));
            }
            if model.max_queue == Some(0) {
                return Err(invalid(
                    &format!("models.{name}.max_queue"),
                    "must be at least 1",
                ));
            }
            if model.max_queue_wait_secs == Some(0) {
                return Err(invalid(
                    &format!("models.{name}.max_queue_wait_secs"),
                    "must be at least 1",
                ));
            }
        }
        if !(1..=3600).contains(&self.header_timeout_secs) {
            return Err(invalid("header_timeout_secs", "must be 1 to 3600"));
        }
        if let Err(e) = herd_store::reference::check_registry(&self.default_registry) {
            return Err(invalid("default_registry", &e.to_string()));
        }
        let cluster = &self.cluster;
        herd_state::settings::check_endpoints(&cluster.etcd)
            .map_err(|reason| invalid("cluster.etcd", &reason))?;
        herd_state::settings::check_prefix(&cluster.prefix)
            .map_err(|reason| invalid("cluster.prefix", &reason))?;
        herd_state::settings::check_lease_ttl(cluster.lease_ttl_secs)
            .map_err(|reason| invalid("cluster.lease_ttl_secs", &reason))?;
        if cluster.gateway_id.as_deref().is_some_and(|id| {
            id.is_empty() || id.contains('/') || id.chars().any(char::is_whitespace)
        }) {
            return Err(invalid(
                "cluster.gateway_id",
                "must be non-empty, without `/` or spaces",
            ));
        }
        if self.keys_from_etcd {
            if cluster.etcd.is_empty() {
                return Err(invalid(
                    "keys_from_etcd",
                    "needs cluster.etcd: the keys are read from the cluster's etcd",
                ));
            }
            if self.keys_file.is_some() {
                return Err(invalid(
                    "keys_from_etcd",
                    "excludes keys_file: the keys come from one place",
                ));
            }
        }
        if !cluster.etcd.is_empty() && !self.workers.is_empty() {
            return Err(invalid(
                "workers",
                "static workers and cluster.etcd exclude each other: workers register in etcd",
            ));
        }
        for (i, w) in self.workers.iter().enumerate() {
            if w.id.is_empty() {
                return Err(invalid(&format!("workers[{i}].id"), "must not be empty"));
            }
            if !(w.endpoint.starts_with("http://") || w.endpoint.starts_with("https://"))
                || w.endpoint.parse::<http::Uri>().is_err()
            {
                return Err(invalid(
                    &format!("workers[{i}].endpoint"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        Ok(())
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_loads_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gateway.toml");
        let config = GatewayConfig::from_file(&path).unwrap();
        assert_eq!(config.listen.port(), 12434);
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(config.workers.len(), 1);
        assert_eq!(config.header_timeout(), DEFAULT_HEADER_TIMEOUT);
        assert_eq!(config.scheduler, SchedulerConfig::default());
        assert_eq!(config.cluster, ClusterConfig::default());
        assert_eq!(
            config.models["ai/smollm2"].keep_alive,
            Some(KeepAlive::For(Duration::from_secs(600)))
        );
    }

    #[test]
    fn scheduler_settings_are_checked() {
        let config: GatewayConfig = toml::from_str(
            "[scheduler]\npolicy = 'round_robin'\nkeep_alive = -1\n[models.m]\nkeep_alive = '30s'",
        )
        .unwrap();
        assert_eq!(config.scheduler.policy, PolicyKind::RoundRobin);
        assert_eq!(config.scheduler.keep_alive, KeepAlive::Forever);
        assert!(toml::from_str::<GatewayConfig>("[scheduler]\npolicy = 'random'").is_err());
        assert!(toml::from_str::<GatewayConfig>("[scheduler]\nkeep_alive = 'soon'").is_err());
        let config: GatewayConfig = toml::from_str("[models.m]\nmax_queue = 0").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("models.m.max_queue"), "{err}");
    }

    #[test]
    fn bad_worker_endpoint_names_the_field() {
        let config: GatewayConfig =
            toml::from_str("[[workers]]\nid = 'w'\nendpoint = 'localhost:1'").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("workers[0].endpoint"), "{err}");
    }

    #[test]
    fn a_bad_default_registry_names_the_field() {
        let config: GatewayConfig = toml::from_str("default_registry = 'a b'").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("default_registry"), "{err}");
    }

    #[test]
    fn a_zero_header_timeout_names_the_field() {
        let config: GatewayConfig = toml::from_str("header_timeout_secs = 0").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("header_timeout_secs"), "{err}");
    }

    #[test]
    fn cluster_settings_are_checked() {
        let config: GatewayConfig = toml::from_str(
            "[cluster]\netcd = ['http://127.0.0.1:2379']\nprefix = '/pool-a/'\nlease_ttl_secs = 5",
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.cluster.lease_ttl(), Duration::from_secs(5));
        let keys_in_etcd: GatewayConfig =
            toml::from_str("keys_from_etcd = true\n[cluster]\netcd = ['http://e:2379']").unwrap();
        keys_in_etcd.validate().unwrap();
        for (text, field) in [
            ("[cluster]\netcd = ['127.0.0.1:2379']", "cluster.etcd"),
            ("[cluster]\nprefix = 'herd'", "cluster.prefix"),
            ("[cluster]\nlease_ttl_secs = 0", "cluster.lease_ttl_secs"),
            ("[cluster]\ngateway_id = 'a b'", "cluster.gateway_id"),
            (
                "[[workers]]\nid = 'w'\nendpoint = 'http://h:1'\n[cluster]\netcd = ['http://e:2379']",
                "workers",
            ),
            ("keys_from_etcd = true", "keys_from_etcd"),
            (
                "keys_from_etcd = true\nkeys_file = '/k.toml'\n[cluster]\netcd = ['http://e:2379']",
                "keys_from_etcd",
            ),
        ] {
            let config: GatewayConfig = toml::from_str(text).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn keys_and_tls_settings_parse() {
        let config: GatewayConfig =
            toml::from_str("keys_file = '/k.toml'\n[tls]\ncert = '/c.pem'\nkey = '/k.pem'")
                .unwrap();
        assert_eq!(config.keys_file.as_deref(), Some(Path::new("/k.toml")));
        let tls = config.tls.unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("/c.pem"), Some("/k.pem"))
        );
        assert!(toml::from_str::<GatewayConfig>("[tls]\ncert = '/c.pem'").is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<GatewayConfig>("max_body = 1").is_err());
    }
}
