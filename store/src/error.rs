//! The store's errors. Each knows whose fault it is ([`StoreError::kind`]);
//! the worker turns that into a gRPC code and the gateway into an HTTP status.

use std::path::PathBuf;

/// Everything that can go wrong storing, pulling or pushing a model.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid reference `{reference}`: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("model `{0}` not found")]
    NotFound(String),
    #[error(
        "`{reference}` is not a Docker model artifact: config media type `{found}` (expected `{}`)",
        crate::artifact::CONFIG_MEDIA_TYPE
    )]
    UnsupportedMediaType { reference: String, found: String },
    #[error("invalid model artifact `{reference}`: {reason}")]
    InvalidArtifact { reference: String, reason: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("model `{reference}` has {tags} tags; remove one tag or force the removal")]
    MultiplyTagged { reference: String, tags: usize },
    #[error("invalid GGUF file {path}: {reason}")]
    InvalidGguf { path: PathBuf, reason: String },
    #[error("registry {registry}: {source}")]
    Registry {
        registry: String,
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    #[error(
        "not enough disk space for this model: it needs {needed} more bytes, the store has {available} free"
    )]
    InsufficientStorage { needed: u64, available: u64 },
    #[error("registry {registry}: access denied ({message})")]
    Unauthorized { registry: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Whose fault an error is, and so how callers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (HTTP 400).
    InvalidRequest,
    /// No such model locally or in the registry (404).
    NotFound,
    /// The artifact is not a model Herd can run (422).
    Unsupported,
    /// The request conflicts with the store's state (409).
    Conflict,
    /// The registry refused our credentials (401).
    Unauthorized,
    /// The registry or the network failed, or sent corrupt data (502).
    Upstream,
    /// The store's disk cannot hold the model (507).
    InsufficientStorage,
    /// Local disk failure (500).
    Internal,
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidReference { .. } | Self::InvalidGguf { .. } => ErrorKind::InvalidRequest,
            Self::NotFound(_) => ErrorKind::NotFound,
            Self::UnsupportedMediaType { .. } | Self::InvalidArtifact { .. } => {
                ErrorKind::Unsupported
            }
            Self::MultiplyTagged { .. } => ErrorKind::Conflict,
            Self::Unauthorized { .. } => ErrorKind::Unauthorized,
            Self::DigestMismatch { .. } | Self::Registry { .. } => ErrorKind::Upstream,
            Self::InsufficientStorage { .. } => ErrorKind::InsufficientStorage,
            Self::Io { .. } => ErrorKind::Internal,
        }
    }

    /// A machine-readable code, as in OpenAI's error `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidReference { .. } => "invalid_reference",
            Self::NotFound(_) => "model_not_found",
            Self::UnsupportedMediaType { .. } => "unsupported_media_type",
            Self::InvalidArtifact { .. } => "invalid_artifact",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::MultiplyTagged { .. } => "model_multiply_tagged",
            Self::InvalidGguf { .. } => "invalid_gguf",
            Self::Registry { .. } => "registry_error",
            Self::Unauthorized { .. } => "registry_unauthorized",
            Self::InsufficientStorage { .. } => "insufficient_storage",
            Self::Io { .. } => "store_io_error",
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}
