//! Typed failures across the gRPC hop: a worker attaches an [`ErrorDetail`]
//! to every error status ([`ErrorDetail::into_status`]); a gateway reads it
//! back ([`WorkerFailure::from_status`]) and decides by its
//! [`FailureClass`] — requeue, try another worker, or answer the client —
//! without parsing messages.

use prost::Message as _;

pub use crate::v1::{ErrorCode, ErrorDetail, FailureClass};

impl ErrorDetail {
    pub fn new(class: FailureClass, code: ErrorCode) -> Self {
        Self {
            class: class as i32,
            code: code as i32,
            ..Self::default()
        }
    }

    /// Names the request field at fault.
    #[must_use]
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = param.into();
        self
    }

    /// A gRPC status carrying this detail.
    pub fn into_status(self, code: tonic::Code, message: impl Into<String>) -> tonic::Status {
        tonic::Status::with_details(code, message, self.encode_to_vec().into())
    }
}

impl ErrorCode {
    /// The name clients see as OpenAI's error `code`: the enum name without
    /// its prefix, in lower case (`ERROR_CODE_SLOTS_BUSY` → `slots_busy`).
    pub fn api_code(self) -> String {
        self.as_str_name()
            .strip_prefix("ERROR_CODE_")
            .unwrap_or("unspecified")
            .to_ascii_lowercase()
    }
}

/// A worker's error status, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerFailure {
    pub class: FailureClass,
    pub code: ErrorCode,
    pub param: Option<String>,
    /// With [`ErrorCode::ContextLengthExceeded`]: prompt tokens and context.
    pub context: Option<(u32, u32)>,
    /// The status message (meant for logs; a gateway decides what clients see).
    pub message: String,
    pub grpc_code: tonic::Code,
}

impl WorkerFailure {
    /// Reads the detail a worker attached. A status without one came from
    /// the transport (refused, reset, timed out) or an older worker: it
    /// counts as [`FailureClass::Gone`] when the call may not have reached
    /// the worker, else [`FailureClass::Internal`].
    pub fn from_status(status: &tonic::Status) -> Self {
        let detail = (!status.details().is_empty())
            .then(|| ErrorDetail::decode(status.details()).ok())
            .flatten();
        let (class, code, param, context) = match detail {
            Some(d) => (
                FailureClass::try_from(d.class).unwrap_or(FailureClass::Unspecified),
                ErrorCode::try_from(d.code).unwrap_or(ErrorCode::Unspecified),
                (!d.param.is_empty()).then_some(d.param),
                (d.prompt_tokens > 0 || d.context_size > 0)
                    .then_some((d.prompt_tokens, d.context_size)),
            ),
            None => (
                FailureClass::Unspecified,
                ErrorCode::Unspecified,
                None,
                None,
            ),
        };
        let class = match class {
            FailureClass::Unspecified => match status.code() {
                tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown => {
                    FailureClass::Gone
                }
                tonic::Code::ResourceExhausted => FailureClass::Busy,
                tonic::Code::InvalidArgument | tonic::Code::NotFound => FailureClass::Client,
                _ => FailureClass::Internal,
            },
            class => class,
        };
        Self {
            class,
            code,
            param,
            context,
            message: status.message().to_owned(),
            grpc_code: status.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_survives_the_status() {
        let mut detail = ErrorDetail::new(FailureClass::Client, ErrorCode::ContextLengthExceeded)
            .with_param("messages");
        detail.prompt_tokens = 5000;
        detail.context_size = 4096;
        let status = detail.into_status(tonic::Code::InvalidArgument, "too long");
        let failure = WorkerFailure::from_status(&status);
        assert_eq!(failure.class, FailureClass::Client);
        assert_eq!(failure.code, ErrorCode::ContextLengthExceeded);
        assert_eq!(failure.param.as_deref(), Some("messages"));
        assert_eq!(failure.context, Some((5000, 4096)));
        assert_eq!(failure.code.api_code(), "context_length_exceeded");
    }

    #[test]
    fn transport_errors_are_gone() {
        let failure = WorkerFailure::from_status(&tonic::Status::unavailable("refused"));
        assert_eq!(failure.class, FailureClass::Gone);
        assert_eq!(failure.code, ErrorCode::Unspecified);
        let failure = WorkerFailure::from_status(&tonic::Status::internal("boom"));
        assert_eq!(failure.class, FailureClass::Internal);
    }
}
