//! A connection between its requests: reading the next request head under a
//! deadline, answering a malformed one instead of closing silently, HTTP/1.1
//! pipelining, keep-alive and shutdown.
//!
//! pingora parses the head and enforces its limits (a head of at most 1 MiB,
//! 256 header fields, a target the `http` crate can hold — 64 KiB); what it
//! refuses is answered here with the status RFC 9110 names for it.
//!
//! Pipelining (RFC 9112 §9.3.2): a client may send requests before the
//! earlier ones are answered. They are served one at a time, answered in
//! order; bytes of a next request that arrive while one is being served are
//! kept for it (pingora's `set_pipelining_enabled`), not mistaken for a client
//! that went away.

use std::time::Duration;

use http::StatusCode;
use pingora::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::{Error, ErrorType};

use crate::error::ApiError;

/// How long an idle keep-alive connection waits for its next request (and,
/// from its first byte, for the head to complete).
pub const KEEPALIVE_SECS: u64 = 60;

/// Longest a single write (or draining an unread body) may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Marks a connection that has answered a request before (carried to its
/// next request as pingora's connection user context).
#[derive(Debug)]
struct KeptAlive;

/// The longest request target the `http` crate stores (`Uri`'s limit).
const MAX_TARGET_LEN: usize = u16::MAX as usize - 1;

/// Body errors pingora raises for a malformed body (its `v1::body` module,
/// which is private, names them so).
const INVALID_CHUNK: ErrorType = ErrorType::new("InvalidChunk");
const INVALID_TRAILER_END: ErrorType = ErrorType::new("InvalidTrailerEnd");

/// The outcome of waiting for a request head.
#[derive(Debug)]
pub enum Head {
    /// A request to serve.
    Request,
    /// The client closed the connection, it stayed idle too long, or the
    /// gateway is stopping: close without an answer.
    Close,
    /// A head that cannot be served: answer this, then close.
    Reject(ApiError),
}

/// Reads the next request head on `session`, within `head_timeout` on a new
/// connection (against clients that trickle a head byte by byte: slowloris)
/// and [`KEEPALIVE_SECS`] on a reused one. An idle connection is closed as
/// soon as the gateway starts shutting down.
pub async fn read_head(
    session: &mut ServerSession,
    shutdown: &ShutdownWatch,
    head_timeout: Duration,
) -> Head {
    let reused = session.take_connection_user_context().is_some();
    session.set_pipelining_enabled(true);
    let deadline = if reused {
        Duration::from_secs(KEEPALIVE_SECS)
    } else {
        head_timeout
    };
    let mut stopping = shutdown.clone();
    let read = tokio::select! {
        // A head that is already buffered (pipelined) is read first.
        biased;
        read = tokio::time::timeout(deadline, session.read_request()) => read,
        _ = stopping.wait_for(|stop| *stop) => return Head::Close,
    };
    match read {
        Ok(Ok(true)) => match missing_host(session) {
            Some(err) => Head::Reject(err),
            None => Head::Request,
        },
        Ok(Ok(false)) => Head::Close,
        Ok(Err(e)) => match head_error(&e) {
            Some(err) => Head::Reject(err),
            None => {
                tracing::debug!(error = %e, "connection ended while reading a request head");
                Head::Close
            }
        },
        // Whether an idle keep-alive connection had begun a head is not
        // known: it is closed like any idle one.
        Err(_) if reused => Head::Close,
        Err(_) => Head::Reject(ApiError::BadHttp {
            status: StatusCode::REQUEST_TIMEOUT,
            reason: format!(
                "the request head did not arrive within {} s",
                head_timeout.as_secs_f64()
            ),
        }),
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request without a `Host` header is a 400.
fn missing_host(session: &ServerSession) -> Option<ApiError> {
    let header = session.req_header();
    let missing = !session.is_http2()
        && header.version == http::Version::HTTP_11
        && !header.headers.contains_key(http::header::HOST);
    missing.then(|| ApiError::BadHttp {
        status: StatusCode::BAD_REQUEST,
        reason: "an HTTP/1.1 request must carry a Host header".to_owned(),
    })
}

/// Keep-alive and timeouts for a request that was read: the client's choice
/// (HTTP/1.0 and `Connection: close` close after the answer), never once the
/// gateway is stopping.
pub fn prepare(session: &mut ServerSession, stopping: bool) {
    if stopping {
        session.set_keepalive(None);
    } else if session.get_keepalive().is_some() {
        session.set_keepalive(Some(KEEPALIVE_SECS));
    }
    // A client that stops reading must not hold a slot forever.
    session.set_write_timeout(Some(WRITE_TIMEOUT));
    session.set_total_drain_timeout(Some(WRITE_TIMEOUT));
}

/// Ends an answered request; returns the connection for the next one when
/// it can be reused.
pub async fn reuse(session: ServerSession) -> Option<ReusedHttpStream> {
    let mut settings = HttpPersistentSettings::for_session(&session);
    settings.set_user_context(Box::new(KeptAlive));
    match session.finish().await {
        Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
        Ok(None) | Err(_) => None,
    }
}

/// What to answer for a request head pingora refused; `None` when the
/// connection broke (nobody to answer).
pub fn head_error(e: &Error) -> Option<ApiError> {
    if !matches!(e.etype(), ErrorType::InvalidHTTPHeader | ErrorType::H1Error) {
        return None;
    }
    let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or_default();
    let cause = e.cause.as_ref().map(|c| c.to_string()).unwrap_or_default();
    let (status, reason) = if context.starts_with("Request header larger than") {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request head is larger than 1 MiB".to_owned(),
        )
    } else if cause.contains("too many headers") {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "the request has more than 256 header fields".to_owned(),
        )
    } else if let Some(target) = context.strip_prefix("invalid uri ") {
        // pingora quotes the target it could not store in a URI; the `http`
        // crate holds at most `MAX_TARGET_LEN` bytes.
        if target.len() >= MAX_TARGET_LEN {
            (
                StatusCode::URI_TOO_LONG,
                format!("the request target is longer than {MAX_TARGET_LEN} bytes"),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                "the request target is not a valid URI".to_owned(),
            )
        }
    } else {
        (StatusCode::BAD_REQUEST, bad_head_reason(context, &cause))
    };
    Some(ApiError::BadHttp { status, reason })
}

/// What to answer for a request body pingora could not read; `None` when the
/// connection broke.
pub fn body_error(e: &Error) -> Option<ApiError> {
    let malformed = [
        INVALID_CHUNK,
        INVALID_TRAILER_END,
        ErrorType::InvalidHTTPHeader,
        ErrorType::H1Error,
    ]
    .contains(e.etype());
    if !malformed {
        return None;
    }
    let context = e.context.as_ref().map(|c| c.as_str()).unwrap_or_default();
    Some(ApiError::BadHttp {
        status: StatusCode::BAD_REQUEST,
        reason: format!("the request body is malformed: {}", short(context)),
    })
}

/// A short, printable reason for a malformed head: pingora's context names
/// the fault but may quote the raw head, which is not echoed back.
fn bad_head_reason(context: &str, cause: &str) -> String {
    if context.starts_with("buf:") {
        let what = if cause.is_empty() { "syntax" } else { cause };
        return format!("the request head is malformed ({what})");
    }
    if context.is_empty() {
        return "the request head is malformed".to_owned();
    }
    format!("the request head is malformed: {}", short(context))
}

/// At most 200 printable ASCII characters of `text`.
fn short(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}
