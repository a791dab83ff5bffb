//! Reading a request body under a size limit.

use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession;

use crate::error::ApiError;

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Answer the client with this.
    Reject(ApiError),
    /// The connection broke; nobody to answer.
    Gone,
}

/// Reads the whole body, refusing more than `limit` bytes (first by
/// `Content-Length`, then by what actually arrives) and a malformed one
/// (a bad chunk size, say).
pub async fn read_limited(session: &mut ServerSession, limit: usize) -> Result<Bytes, BodyError> {
    let too_large = || BodyError::Reject(ApiError::BodyTooLarge { limit });
    let declared = session
        .get_header("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let expects_continue = session
        .get_header("expect")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue && session.write_continue_response().await.is_err() {
        return Err(BodyError::Gone);
    }
    let mut body = BytesMut::with_capacity(declared.map_or(1024, |l| l as usize));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(e) => {
                return Err(match super::connection::body_error(&e) {
                    Some(err) => BodyError::Reject(err),
                    None => BodyError::Gone,
                });
            }
        }
    }
}

/// After refusing a body: reads and discards what the client is still
/// sending (at most `budget` bytes, for at most two seconds), so it gets to
/// read the answer instead of a connection reset.
pub async fn discard_rest(session: &mut ServerSession, budget: usize) {
    let declared = session
        .get_header("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > budget as u64) {
        return;
    }
    let drain = async {
        let mut seen = 0usize;
        while let Ok(Some(chunk)) = session.read_request_body().await {
            seen += chunk.len();
            if seen > budget {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
}
