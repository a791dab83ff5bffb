//! The worker in a cluster: its `[cluster]` settings, and its registration
//! — a [`WorkerRecord`] under a lease in the state store, kept alive,
//! written again if the lease was lost (an etcd outage longer than the
//! TTL), marked draining on SIGTERM and deleted when the drain is over.

use std::sync::Arc;
use std::time::Duration;

use herd_state::{Keys, Session, SessionStatus, StateError, StateStore, WorkerRecord, encode};
use serde::Deserialize;
use tokio::sync::{Mutex, watch};

use crate::config::ConfigError;

/// The `[cluster]` section of the worker's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// etcd endpoints (`http://host:port`) to register in; empty: none.
    pub etcd: Vec<String>,
    /// Key prefix in etcd (the gateways' must match).
    pub prefix: String,
    /// `HOST:PORT` gateways reach this worker's gRPC at; default the
    /// listen address (which must then not be a wildcard).
    pub advertise: Option<String>,
    /// Seconds the registration lives without renewal: a worker that dies
    /// leaves the gateways' views within this.
    pub lease_ttl_secs: u64,
    /// On SIGTERM, how long generations in flight may run before the
    /// worker exits anyway, in seconds.
    pub drain_timeout_secs: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            etcd: Vec::new(),
            prefix: herd_state::DEFAULT_PREFIX.to_owned(),
            advertise: None,
            lease_ttl_secs: herd_state::settings::DEFAULT_LEASE_TTL.as_secs(),
            drain_timeout_secs: 30,
        }
    }
}

impl ClusterSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            field: format!("cluster.{field}"),
            reason,
        };
        herd_state::settings::check_endpoints(&self.etcd).map_err(|r| invalid("etcd", r))?;
        herd_state::settings::check_prefix(&self.prefix).map_err(|r| invalid("prefix", r))?;
        herd_state::settings::check_lease_ttl(self.lease_ttl_secs)
            .map_err(|r| invalid("lease_ttl_secs", r))?;
        if let Some(advertise) = &self.advertise {
            check_advertise(advertise).map_err(|r| invalid("advertise", r))?;
        }
        if !(1..=3600).contains(&self.drain_timeout_secs) {
            return Err(invalid("drain_timeout_secs", "must be 1 to 3600".into()));
        }
        Ok(())
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// The gRPC endpoint gateways use: `http://` + `advertise`, or the
    /// address the worker listens on (refused if it is a wildcard, which
    /// no gateway can reach).
    pub fn endpoint(&self, listening: std::net::SocketAddr) -> Result<String, ConfigError> {
        match &self.advertise {
            Some(advertise) => Ok(format!("http://{advertise}")),
            None if listening.ip().is_unspecified() => Err(ConfigError::Invalid {
                field: "cluster.advertise".into(),
                reason: format!(
                    "required when listening on {listening}: the address gateways reach this worker at"
                ),
            }),
            None => Ok(format!("http://{listening}")),
        }
    }
}

/// `HOST:PORT`, as `--advertise` takes it.
fn check_advertise(advertise: &str) -> Result<(), String> {
    let bad = || format!("`{advertise}` is not HOST:PORT");
    let (host, port) = advertise.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && !host.contains('/')
        && !host.chars().any(char::is_whitespace)
        && tonic::transport::Endpoint::from_shared(format!("http://{advertise}")).is_ok();
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// This worker's record in the state store.
#[derive(Debug)]
pub struct Registration {
    session: Session,
    key: String,
    record: Mutex<WorkerRecord>,
}

impl Registration {
    /// Registers `record` under a lease of `ttl`, kept alive from now on.
    /// The store need not answer yet: the registration is written when it
    /// does.
    pub async fn start(
        store: Arc<dyn StateStore>,
        keys: &Keys,
        record: WorkerRecord,
        ttl: Duration,
    ) -> Self {
        let session = Session::start(store, ttl);
        // The first lease, if the store answers soon; else the session
        // writes the record when it does.
        let mut status = session.status();
        let _ = tokio::time::timeout(
            herd_state::CALL_TIMEOUT,
            status.wait_for(|s| *s != SessionStatus::Starting),
        )
        .await;
        let key = keys.worker(&record.id);
        if let Err(e) = session.put(&key, encode(&record)).await {
            tracing::warn!(error = %e, "not registered yet; retrying in the background");
        }
        tracing::info!(worker = %record.id, endpoint = %record.endpoint, key, "registering in the state store");
        Self {
            session,
            key,
            record: Mutex::new(record),
        }
    }

    /// Live, unreachable, …: for logs and tests.
    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.session.status()
    }

    /// Marks the record draining: gateways send nothing new.
    pub async fn set_draining(&self) -> Result<(), StateError> {
        let mut record = self.record.lock().await;
        record.draining = true;
        self.session.put(&self.key, encode(&*record)).await
    }

    /// Deletes the record and ends the lease.
    pub async fn deregister(&self) -> Result<(), StateError> {
        let removed = self.session.remove(&self.key).await;
        let closed = self.session.close().await;
        removed.and(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_name_the_field() {
        let mut settings = ClusterSettings::default();
        settings.validate().unwrap();
        let listening = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(
            settings.endpoint(listening).unwrap(),
            "http://127.0.0.1:5000"
        );
        let wildcard = "0.0.0.0:5000".parse().unwrap();
        let err = settings.endpoint(wildcard).unwrap_err().to_string();
        assert!(err.contains("cluster.advertise"), "{err}");
        settings.advertise = Some("gpu-1.lan:5000".into());
        settings.validate().unwrap();
        assert_eq!(
            settings.endpoint(wildcard).unwrap(),
            "http://gpu-1.lan:5000"
        );
        for bad in ["gpu-1", "gpu-1:0", ":5000", "a b:1", "h:port"] {
            settings.advertise = Some(bad.into());
            let err = settings.validate().unwrap_err().to_string();
            assert!(err.contains("cluster.advertise"), "{bad}: {err}");
        }
        settings.advertise = None;
        settings.etcd = vec!["localhost:2379".into()];
        let err = settings.validate().unwrap_err().to_string();
        assert!(err.contains("cluster.etcd"), "{err}");
    }
}
