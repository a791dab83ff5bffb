//! Writing responses on a pingora session. Every error reaches the client
//! through [`error`], in OpenAI's shape.

use bytes::Bytes;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

use crate::error::ApiError;

/// Headers a response carries besides its content headers (which worker
/// served it, how long it queued, when to retry).
pub type Extra = [(&'static str, String)];

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
    let Ok(mut header) = ResponseHeader::build(status, Some(3 + extra.len())) else {
        return false;
    };
    let ok = header.insert_header("content-type", content_type).is_ok()
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
    if err.status().is_server_error() {
        tracing::warn!(error = %err, "request failed");
    } else {
        tracing::debug!(error = %err, "request rejected");
    }
    let body = serde_json::to_vec(&err.body()).unwrap_or_default();
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
    let Ok(mut header) = ResponseHeader::build(StatusCode::OK, Some(4 + extra.len())) else {
        return false;
    };
    let ok = header
        .insert_header("content-type", "text/event-stream")
        .is_ok()
        && header.insert_header("cache-control", "no-cache").is_ok()
        && header.insert_header("transfer-encoding", "chunked").is_ok()
        && header.insert_header("x-accel-buffering", "no").is_ok()
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
