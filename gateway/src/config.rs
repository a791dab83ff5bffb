//! Gateway configuration: a TOML file (see `config/gateway.toml`), validated
//! at load; command-line flags override it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    /// How often worker status is refreshed, in milliseconds.
    pub status_interval_ms: u64,
    /// How long shutdown waits for requests in flight, in seconds; those
    /// still running then are ended with an error.
    pub shutdown_grace_secs: u64,
    /// How long a new connection has to send its first request head, in
    /// seconds (slow clients get 408).
    pub header_timeout_secs: u64,
    /// Workers to route to when no shared state store is used.
    pub workers: Vec<StaticWorker>,
    /// Where model names without a registry point, as on the workers:
    /// a request for `ai/smollm2` reaches a worker serving
    /// `ai/smollm2:latest` from `docker.io`.
    pub default_registry: String,
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
            status_interval_ms: 1000,
            shutdown_grace_secs: 10,
            header_timeout_secs: DEFAULT_HEADER_TIMEOUT.as_secs(),
            workers: Vec::new(),
            default_registry: herd_store::reference::DOCKER_HUB.into(),
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
        if self.status_interval_ms < 50 {
            return Err(invalid("status_interval_ms", "must be at least 50"));
        }
        if !(1..=3600).contains(&self.header_timeout_secs) {
            return Err(invalid("header_timeout_secs", "must be 1 to 3600"));
        }
        if let Err(e) = herd_store::reference::check_registry(&self.default_registry) {
            return Err(invalid("default_registry", &e.to_string()));
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

    pub fn status_interval(&self) -> Duration {
        Duration::from_millis(self.status_interval_ms)
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
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<GatewayConfig>("max_body = 1").is_err());
    }
}
