//! Writing responses on a pingora session. Every error reaches the client
//! through [`error`], in OpenAI's shape, and every response carries the
//! headers [`stamp`] adds (the request id).

use bytes::Bytes;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

use crate::error::ApiError;

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
    let Ok(mut header) = ResponseHeader::build(status, Some(4)) else {
        return false;
    };
    let ok = stamp(session, &mut header)
        && header.insert_header("content-type", content_type).is_ok()
        && header
            .insert_header("content-length", body.len().to_string())
            .is_ok();
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
    if err.status().is_server_error() {
        tracing::warn!(error = %err, "request failed");
    } else {
        tracing::debug!(error = %err, "request rejected");
    }
    let body = serde_json::to_vec(&err.body()).unwrap_or_default();
    json(session, err.status(), body).await
}

/// Starts a server-sent-events response; the body follows in chunks.
pub async fn start_events(session: &mut ServerSession) -> bool {
    start_stream(session, "text/event-stream", &[("x-accel-buffering", "no")]).await
}

/// Starts a chunked 200 response of `content_type`; the body follows.
pub async fn start_stream(
    session: &mut ServerSession,
    content_type: &str,
    extra: &[(&'static str, &str)],
) -> bool {
    let Ok(mut header) = ResponseHeader::build(StatusCode::OK, Some(4 + extra.len())) else {
        return false;
    };
    let ok = stamp(session, &mut header)
        && header.insert_header("content-type", content_type).is_ok()
        && header.insert_header("cache-control", "no-cache").is_ok()
        && header.insert_header("transfer-encoding", "chunked").is_ok()
        && extra
            .iter()
            .all(|(name, value)| header.insert_header(*name, *value).is_ok());
    ok && session
        .write_response_header(Box::new(header))
        .await
        .is_ok()
}
