//! The worker's errors, and their one conversion into `tonic::Status`.

use herd_proto::{CONTEXT_SIZE_METADATA, ERROR_CODE_METADATA, PROMPT_TOKENS_METADATA};
use tonic::metadata::MetadataValue;

/// Everything that can go wrong running a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("model `{0}` is not served by this worker")]
    ModelNotFound(String),
    #[error("the prompt has {prompt_tokens} tokens but the context holds {context_size}")]
    ContextLengthExceeded {
        prompt_tokens: u32,
        context_size: u32,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("all {slots} slots of model `{model}` are busy")]
    Busy { model: String, slots: u32 },
    #[error("the worker is shutting down")]
    ShuttingDown,
    #[error("engine failure: {0}")]
    Internal(String),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

impl EngineError {
    /// Machine-readable reason sent in the `herd-error-code` metadata.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ModelNotFound(_) => "model_not_found",
            Self::ContextLengthExceeded { .. } => "context_length_exceeded",
            Self::InvalidRequest(_) => "invalid_request",
            Self::Busy { .. } => "slots_busy",
            Self::ShuttingDown => "shutting_down",
            Self::Internal(_) => "engine_error",
            Self::Gpu(_) => "gpu_unavailable",
        }
    }

    /// Whether the same request may succeed if tried again later or elsewhere.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Busy { .. } | Self::ShuttingDown)
    }
}

impl From<EngineError> for tonic::Status {
    fn from(err: EngineError) -> Self {
        let code = match &err {
            EngineError::ModelNotFound(_) => tonic::Code::NotFound,
            EngineError::ContextLengthExceeded { .. } | EngineError::InvalidRequest(_) => {
                tonic::Code::InvalidArgument
            }
            EngineError::Busy { .. } => tonic::Code::ResourceExhausted,
            EngineError::ShuttingDown => tonic::Code::Unavailable,
            EngineError::Internal(_) => tonic::Code::Internal,
            EngineError::Gpu(_) => tonic::Code::FailedPrecondition,
        };
        let mut status = tonic::Status::new(code, err.to_string());
        let meta = status.metadata_mut();
        meta.insert(ERROR_CODE_METADATA, MetadataValue::from_static(err.code()));
        if let EngineError::ContextLengthExceeded {
            prompt_tokens,
            context_size,
        } = err
        {
            meta.insert(PROMPT_TOKENS_METADATA, MetadataValue::from(prompt_tokens));
            meta.insert(CONTEXT_SIZE_METADATA, MetadataValue::from(context_size));
        }
        status
    }
}

/// What can go wrong managing the model store.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] herd_store::StoreError),
    #[error("the model is loaded (as {0}); unload it first or force the removal")]
    Loaded(String),
    #[error("this worker has no model store")]
    NoStore,
}

impl CatalogError {
    /// Machine-readable reason sent in the `herd-error-code` metadata.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(e) => e.code(),
            Self::Loaded(_) => "model_loaded",
            Self::NoStore => "no_model_store",
        }
    }
}

impl From<CatalogError> for tonic::Status {
    fn from(err: CatalogError) -> Self {
        use herd_store::ErrorKind;
        let code = match &err {
            CatalogError::Store(e) => match e.kind() {
                ErrorKind::InvalidRequest => tonic::Code::InvalidArgument,
                ErrorKind::NotFound => tonic::Code::NotFound,
                ErrorKind::Unsupported | ErrorKind::Conflict => tonic::Code::FailedPrecondition,
                ErrorKind::Unauthorized => tonic::Code::PermissionDenied,
                ErrorKind::Upstream => tonic::Code::Unavailable,
                ErrorKind::InsufficientStorage => tonic::Code::ResourceExhausted,
                ErrorKind::Internal => tonic::Code::Internal,
            },
            CatalogError::Loaded(_) | CatalogError::NoStore => tonic::Code::FailedPrecondition,
        };
        if matches!(code, tonic::Code::Internal | tonic::Code::Unavailable) {
            tracing::warn!(error = %err, "model store operation failed");
        }
        let mut status = tonic::Status::new(code, err.to_string());
        status
            .metadata_mut()
            .insert(ERROR_CODE_METADATA, MetadataValue::from_static(err.code()));
        status
    }
}
