//! API keys: who may call the gateway, as which tenant, for which models,
//! within which limits.
//!
//! Off unless a keys file is configured (`keys_file` in the gateway config,
//! `--keys-file`). Then every route but `/healthz` and `/readyz` needs a key,
//! as `Authorization: Bearer <key>` or `x-api-key: <key>`, and:
//!
//! - a missing or unknown key is a 401 (`invalid_api_key`);
//! - a `user` key on an admin route (`/models` writes, `/engines/unload`)
//!   is a 403 (`permission_denied`) — checked per route, in
//!   [`Auth::check`], before the body is read;
//! - the key's name is the request's tenant (a client's `X-Herd-Tenant` is
//!   overridden), so the scheduler shares slots fairly between keys;
//! - a model outside the key's allow-list is a 404, as if it did not exist
//!   (and `/v1/models` does not list it);
//! - over a limit (requests or tokens per minute, concurrent requests) is a
//!   429 `rate_limit_exceeded` with `Retry-After` — checked per request in
//!   the dispatcher's `authenticate` step, before the request queues, so a
//!   key at its limit never takes a queue place another key could use.
//!
//! In cluster mode the keys may live in etcd instead (`keys_from_etcd`,
//! written by `herd keys … --etcd`; see [`etcd`]): every gateway of the
//! pool follows the same records, and a key created or revoked on one
//! machine takes effect on all within the watch's delay.
//!
//! An empty keys file lets nothing through (it fails closed). The file is
//! re-read when it changes (polled every [`RELOAD_EVERY`]): `herd keys
//! create|revoke` takes effect without a restart; a file that no longer
//! parses is logged and the keys in force are kept. Usage counts survive a
//! reload, by key name.
//!
//! Keys are never stored or logged: the file holds SHA-256 digests, a
//! presented key is hashed and looked up by digest (the lookup's timing can
//! only tell an attacker about the digest of their own guess), and the
//! digests are compared in constant time (`subtle`). High-entropy keys make
//! an unsalted fast hash sufficient: there is no dictionary to try.

pub mod etcd;
mod glob;
pub mod keys;
pub mod limits;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderMap;
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

pub use self::keys::{KeyRecord, KeysError, KeysFile, Role};
use self::limits::{Limiter, Refusal};
pub use self::limits::{Limits, Permit};
use crate::error::ApiError;
use crate::http::routes::{OllamaRoute, Route, StoreRoute};

/// How often the keys file is checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The header Anthropic's clients (and some others) send the key in.
pub const API_KEY_HEADER: &str = "x-api-key";

impl Enabled {
    /// Puts `file`'s keys in force, keeping the usage of keys (by name).
    fn put_in_force(&self, file: &KeysFile) {
        let old = self.ring.load();
        let ring = KeyRing::build(file, Some(&old), &self.default_registry);
        tracing::info!(source = ?self.source, keys = ring.by_digest.len(), "API keys in force");
        self.ring.store(Arc::new(ring));
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (probes).
    Public,
    /// Any key.
    User,
    /// Admin keys only.
    Admin,
}

/// Who may call `route`. Exhaustive on purpose: a new route must be
/// classified here.
pub fn access(route: &Route) -> Access {
    match route {
        Route::Health | Route::Ready => Access::Public,
        Route::Store(
            StoreRoute::Create | StoreRoute::Delete(_) | StoreRoute::Tag(_) | StoreRoute::Push(_),
        )
        | Route::Unload
        | Route::Logs
        | Route::Ollama(OllamaRoute::Pull | OllamaRoute::Delete) => Access::Admin,
        Route::Root
        | Route::ChatCompletions
        | Route::Completions
        | Route::Embeddings
        | Route::Models
        | Route::Model(_)
        | Route::Status
        | Route::Store(StoreRoute::List | StoreRoute::Get(_))
        | Route::Running
        | Route::DiskUsage
        | Route::EngineStatus
        | Route::Messages
        | Route::CountTokens
        | Route::Ollama(_)
        | Route::Responses(_)
        | Route::Metrics => Access::User,
    }
}

/// An authenticated key: what its requests may do.
#[derive(Clone)]
pub struct Principal(Arc<KeyEntry>);

struct KeyEntry {
    name: String,
    role: Role,
    digest: [u8; 32],
    /// Allow-list patterns, with literal names also in their normalised
    /// form (`ai/smollm2` → `ai/smollm2:latest`).
    models: Vec<String>,
    limits: Limits,
    limiter: Arc<Limiter>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.0.name)
            .field("role", &self.0.role)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The normalised form of a model name (`ai/smollm2` →
/// `ai/smollm2:latest`), if it is a reference.
fn familiar(name: &str, default_registry: &str) -> Option<String> {
    herd_store::ModelRef::parse(name, default_registry)
        .ok()
        .map(|r| r.familiar(default_registry))
}

impl Principal {
    /// The key's name: its requests' tenant.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Whether the key may use `model` (as named, or normalised).
    pub fn may_use(&self, model: &str, default_registry: &str) -> bool {
        let normal = familiar(model, default_registry);
        self.0.models.iter().any(|pattern| {
            glob::matches(pattern, model)
                || normal.as_deref().is_some_and(|n| glob::matches(pattern, n))
        })
    }

    /// Admits one request under the key's limits.
    pub fn admit(&self) -> Result<Permit, ApiError> {
        self.0
            .limiter
            .admit(&self.0.limits, Instant::now())
            .map_err(|refusal: Refusal| {
                ApiError::RateLimited {
                    key: self.0.name.clone(),
                    what: refusal.kind.describe(),
                    limit: refusal.limit,
                }
                .with_retry_after(refusal.retry_after)
            })
    }
}

/// The keys in force, by digest.
#[derive(Default)]
struct KeyRing {
    by_digest: HashMap<[u8; 32], Principal>,
}

impl KeyRing {
    /// The ring of `file`, keeping the usage of keys (by name) from `old`.
    fn build(file: &KeysFile, old: Option<&KeyRing>, default_registry: &str) -> Self {
        let limiters: HashMap<&str, Arc<Limiter>> = old
            .map(|old| {
                old.by_digest
                    .values()
                    .map(|p| (p.0.name.as_str(), p.0.limiter.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut by_digest = HashMap::new();
        for record in &file.keys {
            let Some(digest) = keys::parse_digest(&record.sha256) else {
                continue; // validated before
            };
            let mut models = record.models.clone();
            for pattern in &record.models {
                if !pattern.contains(['*', '?'])
                    && let Some(normal) = familiar(pattern, default_registry)
                {
                    models.push(normal);
                }
            }
            let entry = KeyEntry {
                name: record.name.clone(),
                role: record.role,
                digest,
                models,
                limits: record.limits(),
                limiter: limiters
                    .get(record.name.as_str())
                    .cloned()
                    .unwrap_or_default(),
            };
            by_digest.insert(digest, Principal(Arc::new(entry)));
        }
        Self { by_digest }
    }

    fn find(&self, key: &str) -> Option<&Principal> {
        let digest = keys::digest(key);
        self.by_digest
            .get(&digest)
            .filter(|p| bool::from(p.0.digest.ct_eq(&digest)))
    }
}

struct Enabled {
    source: Source,
    default_registry: String,
    ring: ArcSwap<KeyRing>,
}

/// Where the keys come from.
enum Source {
    File {
        path: PathBuf,
        /// The file's modification time when last read.
        modified: parking_lot::Mutex<Option<SystemTime>>,
    },
    /// The cluster's etcd, under this prefix's `apikeys/`.
    Etcd { keys: herd_state::Keys },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path, .. } => write!(f, "file {}", path.display()),
            Self::Etcd { keys } => write!(f, "etcd {}", keys.api_keys()),
        }
    }
}

/// The gateway's API keys: off, the keys of a file, or the keys in etcd.
#[derive(Clone, Default)]
pub struct Auth {
    enabled: Option<Arc<Enabled>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.enabled {
            None => f.write_str("Auth(off)"),
            Some(e) => f
                .debug_struct("Auth")
                .field("source", &e.source)
                .field("keys", &e.ring.load().by_digest.len())
                .finish(),
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Auth {
    /// No keys: every request passes.
    pub fn off() -> Self {
        Self::default()
    }

    /// The keys of `path` (which must exist and parse).
    pub fn from_file(path: &Path, default_registry: &str) -> Result<Self, KeysError> {
        let stamp = modified(path);
        let file = KeysFile::load(path)?;
        let ring = KeyRing::build(&file, None, default_registry);
        Ok(Self {
            enabled: Some(Arc::new(Enabled {
                source: Source::File {
                    path: path.to_owned(),
                    modified: parking_lot::Mutex::new(stamp),
                },
                default_registry: default_registry.to_owned(),
                ring: ArcSwap::from_pointee(ring),
            })),
        })
    }

    /// The keys in etcd under `prefix` — none until [`Auth::follow`] has
    /// read them: nothing passes before (it fails closed).
    pub fn from_etcd(prefix: &str, default_registry: &str) -> Self {
        Self {
            enabled: Some(Arc::new(Enabled {
                source: Source::Etcd {
                    keys: herd_state::Keys::new(prefix),
                },
                default_registry: default_registry.to_owned(),
                ring: ArcSwap::from_pointee(KeyRing::default()),
            })),
        }
    }

    /// What the gateway config says: the keys of `keys_file`, those in
    /// etcd, or off.
    pub fn from_config(config: &crate::GatewayConfig) -> Result<Self, KeysError> {
        if config.keys_from_etcd {
            return Ok(Self::from_etcd(
                &config.cluster.prefix,
                &config.default_registry,
            ));
        }
        match &config.keys_file {
            Some(path) => Self::from_file(path, &config.default_registry),
            None => Ok(Self::off()),
        }
    }

    pub fn is_on(&self) -> bool {
        self.enabled.is_some()
    }

    /// The route-level check: the key a request presents, and whether it
    /// may call `route`. `Ok(None)`: keys are off, or the route is public.
    pub fn check(&self, route: &Route, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        let Some(enabled) = &self.enabled else {
            return Ok(None);
        };
        let needed = access(route);
        if needed == Access::Public {
            return Ok(None);
        }
        let Some(key) = presented_key(headers) else {
            return Err(ApiError::Unauthorized { presented: false });
        };
        let ring = enabled.ring.load();
        let Some(principal) = ring.find(key) else {
            return Err(ApiError::Unauthorized { presented: true });
        };
        if needed == Access::Admin && principal.role() != Role::Admin {
            return Err(ApiError::Forbidden {
                key: principal.name().to_owned(),
            });
        }
        Ok(Some(principal.clone()))
    }

    /// Re-reads the keys file if it changed since it was last read.
    /// Returns whether new keys are in force.
    pub fn reload_if_changed(&self) -> bool {
        let Some(enabled) = &self.enabled else {
            return false;
        };
        let Source::File {
            path,
            modified: last,
        } = &enabled.source
        else {
            return false;
        };
        let stamp = modified(path);
        {
            let mut last = last.lock();
            if *last == stamp {
                return false;
            }
            *last = stamp;
        }
        match KeysFile::load(path) {
            Ok(file) => {
                enabled.put_in_force(&file);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "the keys file changed but cannot be used; the keys in force stay");
                false
            }
        }
    }

    /// Follows the keys file, or the keys in `store` (etcd), until
    /// `shutdown` turns true.
    pub async fn follow(
        self,
        store: Arc<dyn herd_state::StateStore>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(enabled) = &self.enabled else {
            return;
        };
        if let Source::Etcd { keys } = &enabled.source {
            let prefix = keys.api_keys();
            tokio::select! {
                () = etcd::follow(enabled.clone(), store, prefix) => {}
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
            return;
        }
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*shutdown.borrow() {
            tokio::select! {
                _ = tick.tick() => {
                    let auth = self.clone();
                    // File reads off the runtime.
                    let _ = tokio::task::spawn_blocking(move || auth.reload_if_changed()).await;
                }
                changed = shutdown.changed() => if changed.is_err() { return },
            }
        }
    }
}

/// The key a request presents: `Authorization: Bearer <key>`, else
/// `x-api-key: <key>`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer
        .or_else(|| {
            headers
                .get(API_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests;
