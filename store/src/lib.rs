//! Herd's model store: Docker model artifacts (OCI, config media type
//! `application/vnd.docker.ai.model.config.v0.1+json`) in a content-addressed
//! directory, pulled from and pushed to any OCI registry.
//!
//! - [`reference`]: `smollm2` → `ai/smollm2:latest`, `host:port/ns/name:tag`,
//!   `name@sha256:…`.
//! - [`artifact`]: the manifest and config formats.
//! - [`gguf`]: reads a GGUF header to fill the config.
//! - [`Store`]: blobs, manifests and the tag index on disk, crash-safe.
//! - [`package`](Store::package): a GGUF file becomes an artifact.
//! - [`Registry`]: pull (resumable, verified) and push.

pub mod artifact;
mod auth;
mod error;
mod gc;
pub mod gguf;
mod package;
pub mod reference;
mod registry;
mod store;

pub use error::{ErrorKind, StoreError};
pub use package::{FILEPATH_ANNOTATION, PackageRequest};
pub use reference::ModelRef;
pub use registry::{Credentials, Progress, ProgressFn, Pulled, Registry, RegistryOptions};
pub use store::{Removal, RemovalPlan, Store, StoredModel, sha256_digest};
#[cfg(feature = "testing")]
pub mod testing;
