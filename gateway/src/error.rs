//! The gateway's errors and the one place they become HTTP responses in
//! OpenAI's error shape: `{"error":{"message","type","param","code"}}`.

use herd_proto::error::{ErrorCode, FailureClass, WorkerFailure};
use http::StatusCode;
use serde_json::json;

/// Why a request failed, as the client will be told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidField { param: String, message: String },
    #[error("{message}")]
    Unsupported { param: String, message: String },
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("Request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("Unknown engine `{name}`; the engines here are: {known}")]
    UnknownEngine { name: String, known: String },
    #[error("No route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("Method {method} is not allowed on {path}; use {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("This model's context holds {context_size} tokens, but the prompt has {prompt_tokens}")]
    ContextLengthExceeded {
        prompt_tokens: u64,
        context_size: u64,
        /// The request field holding the input (`messages`, `prompt`,
        /// `input`); see [`ApiError::for_input`].
        param: &'static str,
    },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("No worker can serve model `{0}` right now")]
    NoCapacity(String),
    #[error("Too many requests are waiting for model `{model}`; try again later")]
    QueueFull { model: String },
    #[error("Model `{model}` had no free slot within {} ms", waited.as_millis())]
    QueueTimeout {
        model: String,
        waited: std::time::Duration,
    },
    #[error(
        "Model `{model}` needs about {} MiB of memory; the largest worker allows {} MiB",
        need >> 20,
        largest >> 20
    )]
    ModelTooLarge {
        model: String,
        need: u64,
        largest: u64,
    },
    /// An error that is worth retrying after a while (`Retry-After`).
    #[error("{error}")]
    Retry {
        error: Box<ApiError>,
        after: std::time::Duration,
    },
    #[error("The worker failed: {0}")]
    Upstream(String),
    /// No API key, or one that is not known (never echoed).
    #[error("{}", if *presented {
        "Incorrect API key provided"
    } else {
        "You didn't provide an API key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`"
    })]
    Unauthorized { presented: bool },
    /// The key's role does not allow the route.
    #[error("The API key `{key}` may not do this: it needs the admin role")]
    Forbidden { key: String },
    /// The key is over one of its limits.
    #[error("Rate limit reached for API key `{key}` on {what}: limit {limit}")]
    RateLimited {
        key: String,
        what: &'static str,
        limit: u64,
    },
    #[error("The gateway is shutting down")]
    ShuttingDown,
    /// Not valid HTTP: a malformed head or body, a head over the limits, or
    /// one that arrived too slowly.
    #[error("Bad HTTP request: {reason}")]
    BadHttp { status: StatusCode, reason: String },
    /// A worker refused or failed the request with a reason it names
    /// (model-store operations, engine checks).
    #[error("{message}")]
    Worker {
        status: StatusCode,
        code: String,
        param: Option<String>,
        message: String,
    },
}

impl ApiError {
    pub fn field(param: &str, message: impl Into<String>) -> Self {
        Self::InvalidField {
            param: param.to_owned(),
            message: message.into(),
        }
    }

    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        Self::Unsupported {
            param: param.to_owned(),
            message: message.into(),
        }
    }

    /// A request header is wrong (named as the `param`).
    pub fn header(name: &str, reason: &str) -> Self {
        Self::field(name, format!("header `{name}` {reason}"))
    }

    /// This error, with a `Retry-After` of `after` (rounded up to seconds).
    #[must_use]
    pub fn with_retry_after(self, after: std::time::Duration) -> Self {
        Self::Retry {
            error: Box::new(self),
            after,
        }
    }

    /// When the client may try again, if it is worth trying.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Retry { after, .. } => Some(*after),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Retry { error, .. } => error.status(),
            Self::QueueFull { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::QueueTimeout { .. } | Self::ModelTooLarge { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::InvalidJson(_)
            | Self::InvalidField { .. }
            | Self::Unsupported { .. }
            | Self::ContextLengthExceeded { .. }
            | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::ModelNotFound(_) | Self::UnknownEngine { .. } | Self::RouteNotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoCapacity(_) | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Worker { status, .. } | Self::BadHttp { status, .. } => *status,
        }
    }

    fn kind(&self) -> &'static str {
        if self.status() == StatusCode::TOO_MANY_REQUESTS {
            "rate_limit_error"
        } else if self.status().is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            Self::Retry { error, .. } => error.param(),
            Self::ModelTooLarge { .. } => Some("model"),
            Self::InvalidField { param, .. } | Self::Unsupported { param, .. } => Some(param),
            Self::ModelNotFound(_) => Some("model"),
            Self::ContextLengthExceeded { param, .. } => Some(param),
            Self::Worker { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Retry { error, .. } => error.code(),
            Self::QueueFull { .. } => Some("queue_full"),
            Self::Unauthorized { .. } => Some("invalid_api_key"),
            Self::Forbidden { .. } => Some("permission_denied"),
            Self::RateLimited { .. } => Some("rate_limit_exceeded"),
            Self::QueueTimeout { .. } => Some("queue_timeout"),
            Self::ModelTooLarge { .. } => Some("model_too_large"),
            Self::Worker { code, .. } => Some(code),
            Self::InvalidJson(_) => Some("invalid_json"),
            Self::InvalidField { .. } => Some("invalid_value"),
            Self::Unsupported { .. } => Some("unsupported_value"),
            Self::ModelNotFound(_) => Some("model_not_found"),
            Self::BodyTooLarge { .. } => Some("request_too_large"),
            Self::UnknownEngine { .. } => Some("engine_not_found"),
            Self::RouteNotFound { .. } => Some("unknown_url"),
            Self::MethodNotAllowed { .. } => Some("method_not_allowed"),
            Self::ContextLengthExceeded { .. } => Some("context_length_exceeded"),
            Self::InvalidRequest(_) => Some("invalid_request"),
            Self::NoCapacity(_) => Some("no_capacity"),
            Self::Upstream(_) => Some("upstream_error"),
            Self::ShuttingDown => Some("shutting_down"),
            Self::BadHttp { status, .. } => Some(match *status {
                StatusCode::REQUEST_TIMEOUT => "request_timeout",
                StatusCode::URI_TOO_LONG => "uri_too_long",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "header_too_large",
                _ => "invalid_http",
            }),
        }
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": self.param(),
                "code": self.code(),
            }
        })
    }

    /// Anthropic's error shape (`/v1/messages`):
    /// `{"type":"error","error":{"type","message"}}`, the type chosen by
    /// the status as Anthropic does.
    pub fn anthropic_body(&self) -> serde_json::Value {
        let kind = match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            s if s.is_server_error() => "api_error",
            _ => "invalid_request_error",
        };
        json!({
            "type": "error",
            "error": { "type": kind, "message": self.to_string() },
        })
    }

    /// Ollama's error shape (`/api/…`): `{"error":"message"}`.
    pub fn ollama_body(&self) -> serde_json::Value {
        json!({ "error": self.to_string() })
    }

    /// Maps a worker's answer to a model-store call (`PullModel`,
    /// `DeleteModel`, …) by its error code.
    pub fn from_store_status(status: &tonic::Status) -> Self {
        let failure = WorkerFailure::from_status(status);
        use ErrorCode as C;
        let http = match (failure.code, failure.class) {
            (C::InvalidReference | C::InvalidGguf, _) => StatusCode::BAD_REQUEST,
            (C::ModelNotFound, _) => StatusCode::NOT_FOUND,
            (C::UnsupportedMediaType | C::InvalidArtifact, _) => StatusCode::UNPROCESSABLE_ENTITY,
            (C::ModelMultiplyTagged | C::ModelLoaded, _) => StatusCode::CONFLICT,
            (C::RegistryUnauthorized, _) => StatusCode::UNAUTHORIZED,
            (C::DigestMismatch | C::RegistryError, _) => StatusCode::BAD_GATEWAY,
            (C::InsufficientStorage, _) => StatusCode::INSUFFICIENT_STORAGE,
            (C::NoModelStore, _) => StatusCode::NOT_IMPLEMENTED,
            _ if failure.grpc_code == tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            (_, FailureClass::Client) => StatusCode::BAD_REQUEST,
            (_, FailureClass::Busy | FailureClass::Gone) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if http == StatusCode::INTERNAL_SERVER_ERROR {
            // Disk paths and the like stay in the log.
            tracing::warn!(code = ?failure.code, message = %failure.message, "model store error");
            "the worker's model store failed; see its log".to_owned()
        } else {
            failure.message
        };
        Self::Worker {
            status: http,
            code: match failure.code {
                C::Unspecified => "store_error".into(),
                code => code.api_code(),
            },
            param: failure.param,
            message,
        }
    }

    /// Names `param` as the field of the input that is too long (the
    /// worker does not know which endpoint the request came through).
    pub fn for_input(self, param: &'static str) -> Self {
        match self {
            Self::ContextLengthExceeded {
                prompt_tokens,
                context_size,
                ..
            } => Self::ContextLengthExceeded {
                prompt_tokens,
                context_size,
                param,
            },
            other => other,
        }
    }

    /// Maps a worker's failure of a generation or embedding, which the
    /// dispatcher did not retry, to what the client is told.
    pub fn from_worker(failure: &WorkerFailure, model: &str) -> Self {
        match (failure.class, failure.code) {
            (_, ErrorCode::ContextLengthExceeded) => match failure.context {
                Some((prompt_tokens, context_size)) => Self::ContextLengthExceeded {
                    prompt_tokens: u64::from(prompt_tokens),
                    context_size: u64::from(context_size),
                    param: "messages",
                },
                None => Self::InvalidRequest(failure.message.clone()),
            },
            (FailureClass::Client, ErrorCode::ModelNotFound) => {
                Self::ModelNotFound(model.to_owned())
            }
            (FailureClass::Client, code) => Self::Worker {
                status: StatusCode::BAD_REQUEST,
                code: match code {
                    ErrorCode::Unspecified => "invalid_request".into(),
                    code => code.api_code(),
                },
                param: failure.param.clone(),
                message: failure
                    .message
                    .strip_prefix("invalid request: ")
                    .unwrap_or(&failure.message)
                    .to_owned(),
            },
            (FailureClass::Busy | FailureClass::Gone | FailureClass::Unspecified, _) => {
                Self::NoCapacity(model.to_owned())
            }
            (FailureClass::Internal, ErrorCode::LoadFailed) => Self::Worker {
                status: StatusCode::BAD_GATEWAY,
                code: ErrorCode::LoadFailed.api_code(),
                param: None,
                message: failure.message.clone(),
            },
            (FailureClass::Internal, _) => {
                // Details stay in the log; clients get a stable message.
                tracing::warn!(model, code = ?failure.code, message = %failure.message, "worker error");
                Self::Upstream("the worker could not complete the request".into())
            }
        }
    }

    /// [`Self::from_worker`] for a status as it arrived.
    pub fn from_status(status: &tonic::Status, model: &str) -> Self {
        Self::from_worker(&WorkerFailure::from_status(status), model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::field("temperature", "`temperature` must be a number");
        let body = e.body();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["param"], "temperature");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("temperature")
        );
    }

    #[test]
    fn worker_context_error_keeps_both_numbers() {
        let mut detail = herd_proto::error::ErrorDetail::new(
            FailureClass::Client,
            ErrorCode::ContextLengthExceeded,
        );
        detail.prompt_tokens = 5000;
        detail.context_size = 4096;
        let status = detail.into_status(tonic::Code::InvalidArgument, "too long");
        let e = ApiError::from_status(&status, "m");
        assert_eq!(
            e,
            ApiError::ContextLengthExceeded {
                prompt_tokens: 5000,
                context_size: 4096,
                param: "messages",
            }
        );
        assert!(e.to_string().contains("5000") && e.to_string().contains("4096"));
        assert_eq!(e.body()["error"]["param"], "messages");
        let e = e.for_input("prompt");
        assert_eq!(e.body()["error"]["param"], "prompt");
        assert_eq!(e.body()["error"]["code"], "context_length_exceeded");
    }

    #[test]
    fn model_not_found_is_404_with_code() {
        let e = ApiError::ModelNotFound("x".into());
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        assert_eq!(e.body()["error"]["code"], "model_not_found");
    }
}
