//! Writing responses on a pingora session. Every error reaches the client
//! through [`error`], in OpenAI's shape, and every response carries the
//! headers [`stamp`] adds (the request id).

use bytes::Bytes;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

use crate::error::ApiError;

/// Headers a response carries besides its content headers (which worker
/// served it, how long it queued, when to retry).
pub type Extra = [(&'static str, String)];

/// The request id header: taken from the client when it sent a usable one,
/// else made here; echoed on every response and logged with the request.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest client-chosen request id kept.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Gives the request its id (the client's, if it is 1-128 visible ASCII
/// characters, else a new `req_…`) and records it in the request's headers,
/// where [`stamp`] finds it. Returns the id.
pub fn assign_request_id(session: &mut ServerSession) -> String {
    let given = session
        .req_header()
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=MAX_REQUEST_ID_LEN).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| format!("req_{}", uuid::Uuid::new_v4().simple()));
    let _ = session
        .req_header_mut()
        .insert_header(REQUEST_ID, id.as_str());
    id
}

/// The request's id, as [`assign_request_id`] recorded it.
pub fn request_id(session: &ServerSession) -> Option<&str> {
    session
        .req_header()
        .headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
}

/// Adds the headers every response carries. The one place to add more.
fn stamp(session: &ServerSession, header: &mut ResponseHeader) -> bool {
    match request_id(session) {
        Some(id) => header.insert_header(REQUEST_ID, id).is_ok(),
        None => true,
    }
}

/// Writes a complete response. Returns false if the client is gone.
pub async fn full(
    session: &mut ServerSession,
    status: StatusCode,
    content_type: &str,
    body: Bytes,
) -> bool {
    full_with(session, status, content_type, body, &[]).await
}

/// [`full`] with extra headers.
pub async fn full_with(
    session: &mut ServerSession,
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    extra: &Extra,
) -> bool {
    let Ok(mut header) = ResponseHeader::build(status, Some(4 + extra.len())) else {
        return false;
    };
    let ok = stamp(session, &mut header)
        && header.insert_header("content-type", content_type).is_ok()
        && header
            .insert_header("content-length", body.len().to_string())
            .is_ok()
        && extra
            .iter()
            .all(|(name, value)| header.insert_header(*name, value.as_str()).is_ok());
    if !ok {
        return false;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    if session
        .write_response_header(Box::new(header))
        .await
        .is_err()
    {
        return false;
    }
    if head_only || body.is_empty() {
        return session.finish_body().await.is_ok();
    }
    session.write_response_body(body, true).await.is_ok()
}

/// A JSON response.
pub async fn json(session: &mut ServerSession, status: StatusCode, body: Vec<u8>) -> bool {
    full(session, status, "application/json", body.into()).await
}

/// An error in OpenAI's shape.
pub async fn error(session: &mut ServerSession, err: &ApiError) -> bool {
    error_with(session, err, &[]).await
}

/// [`error`] with extra headers; `Retry-After` is added when the error
/// says when to retry.
pub async fn error_with(session: &mut ServerSession, err: &ApiError, extra: &Extra) -> bool {
    error_as(session, err, extra, err.body()).await
}

/// [`error_with`] with the body in another API's shape (`body`, made from
/// `err` by `error.rs`).
pub async fn error_as(
    session: &mut ServerSession,
    err: &ApiError,
    extra: &Extra,
    body: serde_json::Value,
) -> bool {
    if err.status().is_server_error() {
        tracing::warn!(error = %err, "request failed");
    } else {
        tracing::debug!(error = %err, "request rejected");
    }
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut headers = extra.to_vec();
    if let Some(after) = err.retry_after() {
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        headers.push(("retry-after", seconds.max(1).to_string()));
    }
    full_with(
        session,
        err.status(),
        "application/json",
        body.into(),
        &headers,
    )
    .await
}

/// Starts a server-sent-events response; the body follows in chunks.
pub async fn start_events(session: &mut ServerSession, extra: &Extra) -> bool {
    let mut headers = Vec::with_capacity(extra.len() + 1);
    headers.push(("x-accel-buffering", "no".to_owned()));
    headers.extend_from_slice(extra);
    start_stream(session, "text/event-stream", &headers).await
}

/// Starts a chunked 200 response of `content_type`; the body follows.
pub async fn start_stream(session: &mut ServerSession, content_type: &str, extra: &Extra) -> bool {
    let Ok(mut header) = ResponseHeader::build(StatusCode::OK, Some(4 + extra.len())) else {
        return false;
    };
    let ok = stamp(session, &mut header)
        && header.insert_header("content-type", content_type).is_ok()
        && header.insert_header("cache-control", "no-cache").is_ok()
        && header.insert_header("transfer-encoding", "chunked").is_ok()
        && extra
            .iter()
            .all(|(name, value)| header.insert_header(*name, value.as_str()).is_ok());
    ok && session
        .write_response_header(Box::new(header))
        .await
        .is_ok()
}

/// Answers a request that cannot be served (its head may not even have been
/// parsed), then closes the connection: the rest of what the client sent
/// cannot be trusted to frame a next request.
pub async fn reject(session: &mut ServerSession, err: &ApiError) {
    tracing::debug!(error = %err, "request refused");
    let body = serde_json::to_vec(&err.body()).unwrap_or_default();
    let Ok(mut header) = ResponseHeader::build(err.status(), Some(3)) else {
        return;
    };
    let ok = header
        .insert_header("content-type", "application/json")
        .is_ok()
        && header
            .insert_header("content-length", body.len().to_string())
            .is_ok();
    if !ok {
        return;
    }
    session.set_keepalive(None);
    if session
        .write_response_header(Box::new(header))
        .await
        .is_ok()
    {
        let _ = session.write_response_body(body.into(), true).await;
    }
}
