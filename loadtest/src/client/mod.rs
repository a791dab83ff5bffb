//! Sending one request and timing it: over HTTP to an OpenAI-compatible API
//! ([`http`]) or over gRPC to a Herd worker ([`grpc`]).

pub mod grpc;
pub mod http;

use std::time::{Duration, Instant};

use crate::args::Target;
use crate::scenarios::ChatRequest;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("HTTP status {0}")]
    Http(u16),
    #[error("gRPC status {0:?}")]
    Grpc(tonic::Code),
    #[error("timed out")]
    Timeout,
    #[error("transport error: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    BadResponse(String),
}

impl RequestError {
    /// A short, bounded label for the report's errors-by-cause.
    pub fn label(&self) -> String {
        match self {
            Self::Http(status) => format!("http_{status}"),
            Self::Grpc(code) => format!("grpc_{}", grpc_code_name(*code)),
            Self::Timeout => "timeout".into(),
            Self::Transport(_) => "transport".into(),
            Self::BadResponse(_) => "bad_response".into(),
        }
    }
}

fn grpc_code_name(code: tonic::Code) -> String {
    // `Code`'s Debug is CamelCase (`ResourceExhausted`); make it snake_case.
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// What one request measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<(), RequestError>,
    /// Sent → first non-empty text (streaming only).
    pub ttft: Option<Duration>,
    /// Gaps between consecutive text events (streaming only).
    pub itl: Vec<Duration>,
    /// Sent → complete.
    pub e2e: Duration,
    pub output_tokens: u32,
    /// The generated text (the agents scenario continues with it).
    pub text: String,
}

impl Outcome {
    pub fn failed(err: RequestError, e2e: Duration) -> Self {
        Self {
            result: Err(err),
            ttft: None,
            itl: Vec::new(),
            e2e,
            output_tokens: 0,
            text: String::new(),
        }
    }
}

/// Times text arrivals of one streaming response.
#[derive(Debug)]
pub(crate) struct Timeline {
    sent: Instant,
    last: Option<Instant>,
    pub ttft: Option<Duration>,
    pub itl: Vec<Duration>,
    pub events: u32,
}

impl Timeline {
    pub fn start() -> Self {
        Self {
            sent: Instant::now(),
            last: None,
            ttft: None,
            itl: Vec::new(),
            events: 0,
        }
    }

    /// Notes that text arrived now.
    pub fn text(&mut self) {
        let now = Instant::now();
        match self.last {
            None => self.ttft = Some(now - self.sent),
            Some(last) => self.itl.push(now - last),
        }
        self.last = Some(now);
        self.events += 1;
    }

    pub fn elapsed(&self) -> Duration {
        self.sent.elapsed()
    }
}

/// A client for one target.
#[derive(Debug, Clone)]
pub enum Client {
    Http(http::HttpClient),
    Grpc(grpc::GrpcClient),
}

impl Client {
    pub fn new(
        target: &Target,
        timeout: Duration,
        options: &http::HttpOptions,
    ) -> Result<Self, ClientError> {
        Ok(match target {
            Target::Http(base) => Self::Http(http::HttpClient::new(base, timeout, options)?),
            Target::Grpc(endpoints) => Self::Grpc(grpc::GrpcClient::new(endpoints, timeout)?),
        })
    }

    /// Sends `request`; never fails, a failure is an [`Outcome`].
    pub async fn send(&self, request: &ChatRequest) -> Outcome {
        match self {
            Self::Http(c) => c.send(request).await,
            Self::Grpc(c) => c.send(request).await,
        }
    }
}

/// A client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("invalid gRPC endpoint: {0}")]
    Grpc(#[source] tonic::transport::Error),
    #[error("invalid API key: {0}")]
    ApiKey(String),
    #[error("cannot read the CA certificate {0}: {1}")]
    CaCert(std::path::PathBuf, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_labels_are_short_and_bounded() {
        assert_eq!(RequestError::Http(429).label(), "http_429");
        assert_eq!(
            RequestError::Grpc(tonic::Code::ResourceExhausted).label(),
            "grpc_resource_exhausted"
        );
        assert_eq!(RequestError::Transport("x".into()).label(), "transport");
    }
}
