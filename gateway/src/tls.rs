//! TLS on the gateway's listener (rustls, through pingora): a certificate
//! chain and a private key from PEM files, HTTP/2 and HTTP/1.1 offered by
//! ALPN, and the pair re-read when either file changes (polled every
//! [`RELOAD_EVERY`]): new handshakes get the new certificate, connections
//! already open keep theirs — nothing is dropped. A pair that cannot be
//! loaded (half-written, key not matching) is logged and the one in force
//! kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use serde::Deserialize;
use tokio::sync::watch;

/// How often the certificate and key files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The `[worker_tls]` section: TLS (and mTLS) to `https://` workers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerTlsConfig {
    /// PEM CA certificate(s) that sign the workers' certificates.
    pub ca: PathBuf,
    /// This gateway's client certificate (PEM), for workers that require
    /// one (`herd worker --client-ca`).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

impl WorkerTlsConfig {
    /// The rustls client settings: the CA as the only root, the client
    /// identity if set, ALPN `h2`. Read as the listener's pair is (pingora's
    /// PEM readers).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        pingora::tls::install_default_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        pingora::tls::load_ca_file_into_store(&self.ca, &mut roots).map_err(|e| {
            TlsError::Read {
                path: self.ca.clone(),
                reason: e.to_string(),
            }
        })?;
        if roots.is_empty() {
            return Err(TlsError::Read {
                path: self.ca.clone(),
                reason: "no PEM certificate in it".into(),
            });
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let pair = pingora::tls::load_certs_and_key_files(
                    &cert.to_string_lossy(),
                    &key.to_string_lossy(),
                )
                .map_err(|e| TlsError::Read {
                    path: cert.clone(),
                    reason: e.to_string(),
                })?;
                let Some((certs, private)) = pair else {
                    return Err(TlsError::Empty {
                        path: cert.clone(),
                        key: key.clone(),
                    });
                };
                builder
                    .with_client_auth_cert(certs, private)
                    .map_err(|e| TlsError::Key {
                        path: key.clone(),
                        reason: e.to_string(),
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Empty {
                    path: self.cert.clone().unwrap_or_default(),
                    key: self.key.clone().unwrap_or_default(),
                });
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Why a certificate pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} holds no certificate, or {key} no private key")]
    Empty { path: PathBuf, key: PathBuf },
    #[error("the private key in {path} cannot be used: {reason}")]
    Key { path: PathBuf, reason: String },
}

/// Loads the pair into a rustls certified key.
fn load(config: &TlsConfig) -> Result<Arc<CertifiedKey>, TlsError> {
    pingora::tls::install_default_crypto_provider();
    let (cert, key) = (config.cert.to_string_lossy(), config.key.to_string_lossy());
    let pair = pingora::tls::load_certs_and_key_files(&cert, &key).map_err(|e| TlsError::Read {
        path: config.cert.clone(),
        reason: e.to_string(),
    })?;
    let Some((certs, key)) = pair else {
        return Err(TlsError::Empty {
            path: config.cert.clone(),
            key: config.key.clone(),
        });
    };
    let key_error = |reason: String| TlsError::Key {
        path: config.key.clone(),
        reason,
    };
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| key_error("no crypto provider installed".into()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| key_error(format!("it does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The certificate in force, swapped whole on reload.
#[derive(Debug)]
pub struct CertStore {
    config: TlsConfig,
    current: ArcSwap<CertifiedKey>,
    stamps: parking_lot::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl CertStore {
    /// Loads the pair; fails if it cannot be used.
    pub fn load(config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let stamps = (modified(&config.cert), modified(&config.key));
        let current = load(config)?;
        Ok(Arc::new(Self {
            config: config.clone(),
            current: ArcSwap::new(current),
            stamps: parking_lot::Mutex::new(stamps),
        }))
    }

    /// Re-reads the pair if either file changed; returns whether a new
    /// certificate is in force.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = (modified(&self.config.cert), modified(&self.config.key));
        {
            let mut last = self.stamps.lock();
            if *last == stamps {
                return false;
            }
            *last = stamps;
        }
        match load(&self.config) {
            Ok(key) => {
                self.current.store(key);
                tracing::info!(cert = %self.config.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "the TLS files changed but cannot be used; the certificate in force stays");
                false
            }
        }
    }

    /// pingora's listener settings: this store answers every handshake,
    /// ALPN offers h2 then http/1.1.
    pub fn settings(self: &Arc<Self>) -> Result<TlsSettings, TlsError> {
        let mut settings = TlsSettings::intermediate("", "").map_err(|e| TlsError::Read {
            path: self.config.cert.clone(),
            reason: e.to_string(),
        })?;
        settings.set_cert_resolver(self.clone());
        settings.enable_h2();
        Ok(settings)
    }

    /// Follows the files until `shutdown` turns true.
    pub async fn follow(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tick.tick() => {
                    let store = self.clone();
                    let _ = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
                }
                changed = shutdown.changed() => if changed.is_err() { return },
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
