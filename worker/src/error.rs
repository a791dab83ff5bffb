//! The worker's errors, and their one conversion into `tonic::Status`, which
//! carries a typed [`ErrorDetail`] (failure class and code) for the gateway.

use herd_proto::error::{ErrorCode, ErrorDetail, FailureClass};

/// Everything that can go wrong running a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// No model of that name, loaded or loadable (the client's mistake).
    #[error("model `{0}` is not served by this worker")]
    ModelNotFound(String),
    /// The model exists but is not loaded here (now): the gateway places it
    /// or tries another worker.
    #[error("model `{0}` is not loaded on this worker")]
    NotLoaded(String),
    #[error("the prompt has {prompt_tokens} tokens but the context holds {context_size}")]
    ContextLengthExceeded {
        prompt_tokens: u32,
        context_size: u32,
    },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A request field is wrong; `param` names it as the OpenAI API does,
    /// `code` says how (`invalid_request` unless more is known).
    #[error("invalid request: {message}")]
    InvalidParam {
        param: String,
        message: String,
        code: ErrorCode,
    },
    #[error("all {slots} slots of model `{model}` are busy")]
    Busy { model: String, slots: u32 },
    #[error("the worker is shutting down")]
    ShuttingDown,
    /// A model could not be loaded; the message says why.
    #[error("cannot load model `{model}`: {reason}")]
    LoadFailed { model: String, reason: String },
    #[error("engine failure: {0}")]
    Internal(String),
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
}

impl EngineError {
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidParam {
            param: param.into(),
            message: message.into(),
            code: ErrorCode::InvalidRequest,
        }
    }

    /// A JSON schema in `param` that cannot be enforced.
    pub fn schema(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::param(param, message).with_code(ErrorCode::InvalidSchema)
    }

    /// Gives an [`Self::InvalidParam`] a more precise code.
    #[must_use]
    pub fn with_code(self, code: ErrorCode) -> Self {
        match self {
            Self::InvalidParam { param, message, .. } => Self::InvalidParam {
                param,
                message,
                code,
            },
            other => other,
        }
    }

    /// What the caller should do about it, and why.
    pub fn detail(&self) -> ErrorDetail {
        use ErrorCode as C;
        use FailureClass as F;
        let (class, code) = match self {
            Self::ModelNotFound(_) => (F::Client, C::ModelNotFound),
            Self::NotLoaded(_) => (F::Gone, C::ModelNotLoaded),
            Self::ContextLengthExceeded { .. } => (F::Client, C::ContextLengthExceeded),
            Self::InvalidRequest(_) => (F::Client, C::InvalidRequest),
            Self::InvalidParam { code, .. } => (F::Client, *code),
            Self::Busy { .. } => (F::Busy, C::SlotsBusy),
            Self::ShuttingDown => (F::Gone, C::ShuttingDown),
            Self::LoadFailed { .. } => (F::Internal, C::LoadFailed),
            Self::Internal(_) => (F::Internal, C::EngineError),
            Self::Gpu(_) => (F::Internal, C::GpuUnavailable),
        };
        let mut detail = ErrorDetail::new(class, code);
        match self {
            Self::InvalidParam { param, .. } => detail.param.clone_from(param),
            Self::ContextLengthExceeded {
                prompt_tokens,
                context_size,
            } => {
                detail.prompt_tokens = *prompt_tokens;
                detail.context_size = *context_size;
            }
            _ => {}
        }
        detail
    }

    /// Whether the same request may succeed if tried again later or elsewhere.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.detail().class(),
            FailureClass::Busy | FailureClass::Gone
        )
    }
}

impl From<EngineError> for tonic::Status {
    fn from(err: EngineError) -> Self {
        let code = match &err {
            EngineError::ModelNotFound(_) | EngineError::NotLoaded(_) => tonic::Code::NotFound,
            EngineError::ContextLengthExceeded { .. }
            | EngineError::InvalidRequest(_)
            | EngineError::InvalidParam { .. } => tonic::Code::InvalidArgument,
            EngineError::Busy { .. } => tonic::Code::ResourceExhausted,
            EngineError::ShuttingDown => tonic::Code::Unavailable,
            EngineError::LoadFailed { .. } | EngineError::Internal(_) => tonic::Code::Internal,
            EngineError::Gpu(_) => tonic::Code::FailedPrecondition,
        };
        err.detail().into_status(code, err.to_string())
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
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl CatalogError {
    /// What the caller should do about it, and why.
    pub fn detail(&self) -> ErrorDetail {
        use ErrorCode as C;
        use FailureClass as F;
        use herd_store::StoreError as S;
        if let Self::Engine(e) = self {
            return e.detail();
        }
        let code = match self {
            Self::Engine(_) => C::Unspecified,
            Self::Loaded(_) => C::ModelLoaded,
            Self::NoStore => C::NoModelStore,
            Self::Store(e) => match e {
                S::InvalidReference { .. } => C::InvalidReference,
                S::NotFound(_) => C::ModelNotFound,
                S::UnsupportedMediaType { .. } => C::UnsupportedMediaType,
                S::InvalidArtifact { .. } => C::InvalidArtifact,
                S::DigestMismatch { .. } => C::DigestMismatch,
                S::MultiplyTagged { .. } => C::ModelMultiplyTagged,
                S::InvalidGguf { .. } => C::InvalidGguf,
                S::Registry { .. } => C::RegistryError,
                S::Unauthorized { .. } => C::RegistryUnauthorized,
                S::InsufficientStorage { .. } => C::InsufficientStorage,
                S::Io { .. } => C::StoreIoError,
            },
        };
        let class = match self {
            Self::Store(e) => match e.kind() {
                herd_store::ErrorKind::Upstream | herd_store::ErrorKind::Internal => F::Internal,
                _ => F::Client,
            },
            Self::Loaded(_) | Self::NoStore | Self::Engine(_) => F::Client,
        };
        ErrorDetail::new(class, code)
    }
}

impl From<CatalogError> for tonic::Status {
    fn from(err: CatalogError) -> Self {
        use herd_store::ErrorKind;
        let code = match &err {
            CatalogError::Engine(e) => return e.clone().into(),
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
        err.detail().into_status(code, err.to_string())
    }
}
