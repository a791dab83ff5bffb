//! Pull and push model artifacts with `oci-client`.
//!
//! Pulls stream every blob to a `.partial` file next to its final place,
//! hashing on the way, and resume an interrupted one with an HTTP Range
//! request; a blob is renamed into the store only when its size and sha256
//! match the manifest. Blobs are fetched concurrently; a model already in
//! the store only gains the tag.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use oci_client::RegistryOperation;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::artifact::{ConfigFile, Descriptor, MANIFEST_MEDIA_TYPE, Manifest};
use crate::error::StoreError;
use crate::reference::ModelRef;
use crate::store::{Store, StoredModel, sha256_digest};

/// Progress is reported at most once per this many bytes of a blob.
const PROGRESS_STEP: u64 = 1 << 20;

/// The largest manifest read (Docker's limit); a registry sending more is
/// refused before it can fill the worker's memory.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The largest model config accepted (it is read into memory and parsed).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// How much of a registry's error body is kept for the message.
const MAX_ERROR_BYTES: usize = 16 << 10;

/// Credentials for a registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A bearer token, sent as is.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Sent to `credentials_registry` only; every other registry is
    /// accessed anonymously (a reference names any host, and credentials
    /// must not follow it there).
    pub credentials: Credentials,
    /// The registry (`host[:port]`) the credentials belong to.
    pub credentials_registry: String,
    /// Registries (`host[:port]`) spoken to over plain HTTP; loopback hosts
    /// always are.
    pub insecure: Vec<String>,
}

/// One step of a pull or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The blob (`sha256:…`).
    pub digest: String,
    /// The blob's size.
    pub size: u64,
    /// Bytes of it in place so far (including resumed ones).
    pub current: u64,
    /// Bytes of the whole model.
    pub total: u64,
}

/// Receives progress; called from the transfer tasks.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub model: StoredModel,
    /// Bytes that crossed the network this time.
    pub transferred: u64,
    /// The model was already stored; only the tag was added.
    pub cached: bool,
}

/// A registry client for one operation's registry.
#[derive(Debug, Clone)]
pub struct Registry {
    options: RegistryOptions,
}

impl Registry {
    pub fn new(options: RegistryOptions) -> Self {
        Self { options }
    }

    /// A client for `reference`'s registry, the reference in oci-client's
    /// terms, the credentials it gets, and whether it is spoken to over
    /// plain HTTP (decided as oci-client does: by the resolved host).
    fn client(&self, reference: &ModelRef) -> (Client, Reference, RegistryAuth, bool) {
        let registry = reference.registry().to_owned();
        let mut insecure = self.options.insecure.clone();
        if is_loopback(&registry) {
            insecure.push(registry.clone());
        }
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.clone()),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            // One PUT per blob (POST + PUT): fewer round trips than chunks.
            use_monolithic_push: true,
            ..ClientConfig::default()
        });
        let repository = reference.repository().to_owned();
        let oci_ref = match (reference.tag(), reference.digest()) {
            (Some(tag), Some(digest)) => {
                Reference::with_tag_and_digest(registry, repository, tag.into(), digest.into())
            }
            (None, Some(digest)) => Reference::with_digest(registry, repository, digest.into()),
            (Some(tag), None) => Reference::with_tag(registry, repository, tag.into()),
            (None, None) => Reference::with_tag(registry, repository, "latest".into()),
        };
        let ours = crate::reference::same_registry(
            &self.options.credentials_registry,
            reference.registry(),
        );
        let auth = match &self.options.credentials {
            _ if !ours => RegistryAuth::Anonymous,
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        };
        let plain_http = insecure.iter().any(|r| r == oci_ref.resolve_registry());
        (client, oci_ref, auth, plain_http)
    }

    /// Pulls `reference` into `store`.
    pub async fn pull(
        &self,
        store: &Store,
        reference: &ModelRef,
        progress: ProgressFn,
    ) -> Result<Pulled, StoreError> {
        let full = reference.full();
        // `name:tag@sha256:…` pulls the digest and tags it `name:tag`.
        let tag_ref = reference.tag().map(|_| reference.without_digest());
        let tag = tag_ref.as_ref();
        // A digest already stored needs no network at all.
        if let Some(digest) = reference.digest()
            && let Ok(model) = store.resolve(digest)
        {
            let model = match tag {
                Some(tag) => {
                    let (store, id, tag) = (store.clone(), model.id.clone(), tag.full());
                    tokio::task::spawn_blocking(move || store.tag(&id, &tag))
                        .await
                        .map_err(|e| {
                            StoreError::io("store task failed")(std::io::Error::other(e))
                        })??
                }
                None => model,
            };
            return Ok(Pulled {
                model,
                transferred: 0,
                cached: true,
            });
        }
        let (client, oci_ref, auth, plain_http) = self.client(reference);
        let registry_error = |source| classify(reference, &full, source);
        let auth = crate::auth::for_reference(&oci_ref, &auth, plain_http, false)
            .await
            .map_err(registry_error)?;
        let manifest_bytes = match fetch_manifest(&client, &oci_ref, &auth, plain_http, &full).await
        {
            Ok(bytes) => bytes,
            Err(Fetch::Oci(source)) => return Err(registry_error(source)),
            Err(Fetch::Store(e)) => return Err(e),
        };
        let id = sha256_digest(&manifest_bytes);
        if let Some(expected) = reference.digest()
            && expected != id
        {
            return Err(StoreError::DigestMismatch {
                what: format!("the manifest of {full}"),
                expected: expected.to_owned(),
                actual: id,
            });
        }
        let manifest = Manifest::parse(&manifest_bytes, &full)?;
        // The config is read into memory and parsed: a huge one is refused
        // before it is fetched.
        if manifest.config.size > MAX_CONFIG_BYTES {
            return Err(StoreError::InvalidArtifact {
                reference: full,
                reason: format!(
                    "the config is {} bytes, larger than {MAX_CONFIG_BYTES}",
                    manifest.config.size
                ),
            });
        }
        if store.resolve_id(&id).is_ok() {
            let model = add_model(store, &manifest_bytes, tag).await?;
            return Ok(Pulled {
                model,
                transferred: 0,
                cached: true,
            });
        }
        let total = manifest.total_size();
        // Refuse at once what cannot fit, rather than fail when the disk is
        // full (and never let a registry's sizes fill it).
        let missing = manifest
            .blobs()
            .map(|b| store.missing_bytes(&b.digest, b.size))
            .fold(0u64, u64::saturating_add);
        if missing > 0 {
            store.check_space(missing)?;
        }
        // Garbage collection leaves these blobs alone until the model is in
        // the index (or this pull gives up).
        let _pins = store.pin(manifest.blobs().map(|b| b.digest.clone()));
        let transferred = Arc::new(AtomicU64::new(0));
        let fetched = futures::stream::iter(manifest.blobs().cloned().map(Ok))
            .try_for_each_concurrent(4, |blob| {
                let (client, oci_ref, full) = (&client, &oci_ref, &full);
                let (progress, transferred) = (progress.clone(), transferred.clone());
                async move {
                    fetch_blob(
                        client,
                        oci_ref,
                        store,
                        &blob,
                        total,
                        &progress,
                        &transferred,
                    )
                    .await
                    .map_err(|e| match e {
                        Fetch::Store(e) => e,
                        Fetch::Oci(source) => classify(reference, full, source),
                    })
                }
            })
            .await;
        let checked = match fetched {
            // The config must be a model config, not merely well-addressed.
            Ok(()) => tokio::fs::read(store.blob_path(&manifest.config.digest))
                .await
                .map_err(StoreError::io("cannot read the pulled config"))
                .and_then(|bytes| ConfigFile::parse(&bytes, &full)),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            // Leave the store as it was: blobs this pull completed go again
            // (a `.partial` file of an interrupted one stays, to resume).
            let (store, digests) = (
                store.clone(),
                manifest.blobs().map(|b| b.digest.clone()).collect(),
            );
            let _ = tokio::task::spawn_blocking(move || store.discard_unreferenced(digests)).await;
            return Err(e);
        }
        let model = add_model(store, &manifest_bytes, tag).await?;
        Ok(Pulled {
            model,
            transferred: transferred.load(Ordering::Relaxed),
            cached: false,
        })
    }

    /// Pushes the stored `model` to `target`; blobs the registry already
    /// has are not sent again.
    pub async fn push(
        &self,
        store: &Store,
        model: &StoredModel,
        target: &ModelRef,
        progress: ProgressFn,
    ) -> Result<(), StoreError> {
        let full = target.full();
        let (client, oci_ref, auth, plain_http) = self.client(target);
        let auth = crate::auth::for_reference(&oci_ref, &auth, plain_http, true)
            .await
            .map_err(|e| classify(target, &full, e))?;
        client
            .store_auth_if_needed(oci_ref.resolve_registry(), &auth)
            .await;
        let total = model.manifest.total_size();
        for blob in model.manifest.blobs() {
            let exists = client
                .blob_exists(&oci_ref, &blob.digest)
                .await
                .map_err(|e| classify(target, &full, e))?;
            if !exists {
                let file = tokio::fs::File::open(store.blob_path(&blob.digest))
                    .await
                    .map_err(StoreError::io(format!("cannot open blob {}", blob.digest)))?;
                let (digest, size) = (blob.digest.clone(), blob.size);
                let report = progress.clone();
                let sent = Arc::new(AtomicU64::new(0));
                let stream = tokio_util_reader(file).map(move |chunk| {
                    let chunk = chunk.map_err(OciDistributionError::IoError)?;
                    let current =
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
                    report(Progress {
                        digest: digest.clone(),
                        size,
                        current,
                        total,
                    });
                    Ok(chunk)
                });
                client
                    .push_blob_stream(&oci_ref, stream, &blob.digest, Some(blob.size))
                    .await
                    .map_err(|e| classify(target, &full, e))?;
            }
            progress(Progress {
                digest: blob.digest.clone(),
                size: blob.size,
                current: blob.size,
                total,
            });
        }
        let manifest_bytes = store.manifest_bytes(&model.id)?;
        client
            .push_manifest_raw(
                &oci_ref,
                manifest_bytes,
                http::HeaderValue::from_static(MANIFEST_MEDIA_TYPE),
            )
            .await
            .map_err(|e| classify(target, &full, e))?;
        Ok(())
    }
}

/// [`Store::add_model`] off the async threads (it fsyncs and takes a lock).
async fn add_model(
    store: &Store,
    manifest_bytes: &[u8],
    tag: Option<&ModelRef>,
) -> Result<StoredModel, StoreError> {
    let (store, bytes, tag) = (store.clone(), manifest_bytes.to_vec(), tag.cloned());
    tokio::task::spawn_blocking(move || store.add_model(&bytes, tag.as_ref()))
        .await
        .map_err(|e| StoreError::io("store task failed")(std::io::Error::other(e)))?
}

/// A file as a stream of 1 MiB chunks.
fn tokio_util_reader(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 1 << 20];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((bytes::Bytes::from(buf), file)))
    })
}

enum Fetch {
    Store(StoreError),
    Oci(OciDistributionError),
}

impl From<StoreError> for Fetch {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Fetches `oci_ref`'s manifest, at most `MAX_MANIFEST_BYTES` of it
/// (`oci-client` would read whatever the registry sends into memory).
/// `auth` has been through [`crate::auth::for_reference`]. The
/// handshake is `oci-client`'s, so its token serves the blob requests too.
async fn fetch_manifest(
    client: &Client,
    oci_ref: &Reference,
    auth: &RegistryAuth,
    plain_http: bool,
    full: &str,
) -> Result<Vec<u8>, Fetch> {
    let token = client
        .auth(oci_ref, auth, RegistryOperation::Pull)
        .await
        .map_err(Fetch::Oci)?;
    let url = format!(
        "{scheme}://{registry}/v2/{repository}/manifests/{reference}",
        scheme = if plain_http { "http" } else { "https" },
        registry = oci_ref.resolve_registry(),
        repository = oci_ref.repository(),
        reference = oci_ref.digest().or(oci_ref.tag()).unwrap_or("latest"),
    );
    let http = reqwest::Client::builder()
        .user_agent(concat!("herd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| Fetch::Oci(e.into()))?;
    let mut request = http
        .get(&url)
        .header(http::header::ACCEPT, MANIFEST_MEDIA_TYPE);
    request = match (token, auth) {
        (Some(token), _) => request.bearer_auth(token),
        (None, RegistryAuth::Basic(username, password)) => {
            request.basic_auth(username, Some(password))
        }
        (None, _) => request,
    };
    let response = request.send().await.map_err(|e| Fetch::Oci(e.into()))?;
    let status = response.status().as_u16();
    let limit = if status == 200 {
        MAX_MANIFEST_BYTES
    } else {
        MAX_ERROR_BYTES
    };
    let (body, whole) = crate::auth::read_at_most(response, limit)
        .await
        .map_err(|e| Fetch::Oci(e.into()))?;
    match status {
        200 if !whole => Err(Fetch::Store(StoreError::InvalidArtifact {
            reference: full.to_owned(),
            reason: format!("the manifest is larger than {limit} bytes"),
        })),
        200 => Ok(body),
        404 => Err(Fetch::Oci(
            OciDistributionError::ImageManifestNotFoundError(full.to_owned()),
        )),
        401 | 403 => Err(Fetch::Oci(OciDistributionError::UnauthorizedError { url })),
        code => Err(Fetch::Oci(OciDistributionError::ServerError {
            code,
            url,
            message: String::from_utf8_lossy(&body).into_owned(),
        })),
    }
}

/// Downloads one blob into the store, resuming a `.partial` file.
async fn fetch_blob(
    client: &Client,
    oci_ref: &Reference,
    store: &Store,
    blob: &Descriptor,
    total: u64,
    progress: &ProgressFn,
    transferred: &AtomicU64,
) -> Result<(), Fetch> {
    let report = |current| {
        progress(Progress {
            digest: blob.digest.clone(),
            size: blob.size,
            current,
            total,
        });
    };
    if store.has_blob(&blob.digest) {
        report(blob.size);
        return Ok(());
    }
    let partial = store.partial_path(&blob.digest);
    let io = |what: &str| StoreError::io(format!("{what} {}", partial.display()));
    // One writer per partial file, across tasks and processes.
    let lock = {
        let path = partial.clone();
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::MetadataExt;
            loop {
                let file = std::fs::File::options()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(&path)?;
                file.lock()?;
                // The holder we waited for may have deleted (digest
                // mismatch) or renamed (done) the file: then this handle is
                // an orphan, and the path must be opened again.
                let held = file.metadata()?;
                match std::fs::metadata(&path) {
                    Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                        return Ok::<_, std::io::Error>(file);
                    }
                    _ => continue,
                }
            }
        })
        .await
        .map_err(|e| StoreError::io("lock task failed")(std::io::Error::other(e)))?
        .map_err(io("cannot lock"))?
    };
    if store.has_blob(&blob.digest) {
        // Another writer finished it while we waited; the partial file we
        // hold is a fresh, empty one.
        let _ = tokio::fs::remove_file(&partial).await;
        report(blob.size);
        return Ok(());
    }
    let mut file = tokio::fs::File::from_std(lock);
    let mut offset = file.metadata().await.map_err(io("cannot stat"))?.len();
    if offset > blob.size {
        file.set_len(0).await.map_err(io("cannot truncate"))?;
        offset = 0;
    }
    // Re-hash what an earlier attempt left, then ask for the rest.
    let mut hasher = Sha256::new();
    if offset > 0 {
        let mut existing = tokio::fs::File::open(&partial)
            .await
            .map_err(io("cannot read"))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = existing.read(&mut buf).await.map_err(io("cannot read"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let mut stream = if offset == blob.size {
        None
    } else {
        let response = client
            .pull_blob_stream_partial(oci_ref, blob.digest.as_str(), offset, None)
            .await
            .map_err(Fetch::Oci)?;
        Some(match response {
            BlobResponse::Partial(stream) => stream,
            BlobResponse::Full(stream) => {
                // The registry ignored the range: start over.
                if offset > 0 {
                    tracing::info!(digest = %blob.digest, "registry ignored the range; downloading the whole blob");
                    file.set_len(0).await.map_err(io("cannot truncate"))?;
                    hasher = Sha256::new();
                    offset = 0;
                }
                stream
            }
        })
    };
    if offset > 0 {
        tracing::info!(digest = %blob.digest, offset, size = blob.size, "resuming download");
    }
    let mut current = offset;
    let mut reported = offset;
    report(current);
    let mut stream_error = None;
    if let Some(stream) = stream.as_mut() {
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    stream_error = Some(e);
                    break;
                }
            };
            if current + chunk.len() as u64 > blob.size {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(StoreError::DigestMismatch {
                    what: format!("blob {}", blob.digest),
                    expected: format!("{} bytes", blob.size),
                    actual: "more bytes".into(),
                }
                .into());
            }
            file.write_all(&chunk).await.map_err(io("cannot write"))?;
            hasher.update(&chunk);
            current += chunk.len() as u64;
            transferred.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if current - reported >= PROGRESS_STEP || current == blob.size {
                report(current);
                reported = current;
            }
        }
    }
    file.flush().await.map_err(io("cannot write"))?;
    file.sync_all().await.map_err(io("cannot sync"))?;
    // `file` holds the lock until the function returns: the partial file is
    // removed or moved into place before another writer may look at it.
    if current < blob.size {
        // Interrupted: keep the partial file for the next attempt.
        let source = stream_error.map_or_else(
            || OciDistributionError::GenericError(Some("the blob ended early".into())),
            OciDistributionError::IoError,
        );
        return Err(Fetch::Oci(source));
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != blob.digest {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(StoreError::DigestMismatch {
            what: format!("blob {}", blob.digest),
            expected: blob.digest.clone(),
            actual,
        }
        .into());
    }
    store.commit_blob(&partial, &blob.digest)?;
    Ok(())
}

/// Turns an `oci-client` error into ours.
fn classify(reference: &ModelRef, full: &str, source: OciDistributionError) -> StoreError {
    let registry = reference.registry().to_owned();
    match &source {
        OciDistributionError::ImageManifestNotFoundError(_) => {
            StoreError::NotFound(full.to_owned())
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            StoreError::NotFound(full.to_owned())
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            StoreError::NotFound(full.to_owned())
        }
        OciDistributionError::RequestError(e) if e.status().map(|s| s.as_u16()) == Some(404) => {
            StoreError::NotFound(full.to_owned())
        }
        OciDistributionError::RequestError(e)
            if matches!(e.status().map(|s| s.as_u16()), Some(401 | 403)) =>
        {
            StoreError::Unauthorized {
                registry,
                message: source.to_string(),
            }
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        }
        | OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => StoreError::Unauthorized {
            registry,
            message: source.to_string(),
        },
        _ => StoreError::Registry { registry, source },
    }
}

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .strip_prefix('[')
        .and_then(|r| r.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| registry.rsplit_once(':').map_or(registry, |(h, _)| h));
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_use_plain_http() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("docker.io"));
        assert!(!is_loopback("10.0.0.1:5000"));
    }

    #[test]
    fn credentials_are_redacted_in_debug() {
        let text = format!(
            "{:?}",
            Credentials::Basic {
                username: "me".into(),
                password: "hunter2".into()
            }
        );
        assert!(!text.contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok".into())).contains("tok"));
    }
}
