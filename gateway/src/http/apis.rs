//! The generation APIs beside OpenAI's: Anthropic Messages (and Ollama,
//! OpenAI Responses as they are added). Each parses with its translation
//! module and answers through the shared [`generate::run`] with its own
//! [`Render`]; its errors keep its own shape.

use bytes::Bytes;
use pingora::protocols::http::ServerSession;

use super::body::{self, BodyError};
use super::generate::{self, Job};
use super::{HttpApp, respond};
use std::sync::Arc;

use super::access::Access;
use crate::anthropic;
use crate::auth::Principal;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::render::Render;

/// An API's error body for an error.
pub type Shape = fn(&ApiError) -> serde_json::Value;

/// The error shape of the API `path` belongs to: Ollama's under `/api/`,
/// Anthropic's for Messages, OpenAI's elsewhere.
pub fn shape_of(path: &str) -> Shape {
    if path.starts_with("/api/") {
        ApiError::ollama_body
    } else if path.contains("/v1/messages") {
        ApiError::anthropic_body
    } else {
        ApiError::body
    }
}

/// Reads the body, answering a refused one in `shape`. `None`: answered
/// (or the client is gone); the connection is not reused.
pub async fn read_body(app: &HttpApp, session: &mut ServerSession, shape: Shape) -> Option<Bytes> {
    match body::read_limited(session, app.max_body_bytes).await {
        Ok(body) => Some(body),
        Err(BodyError::Reject(err)) => {
            body::discard_rest(session, app.max_body_bytes.saturating_mul(4)).await;
            session.set_keepalive(None);
            respond::error_as(session, &err, &[], shape(&err)).await;
            None
        }
        Err(BodyError::Gone) => None,
    }
}

/// `POST /v1/messages`.
pub async fn messages(
    app: &HttpApp,
    session: &mut ServerSession,
    key: Option<Principal>,
    access: &mut Access,
) -> bool {
    let mut render = anthropic::MessagesRender::new(String::new());
    let Some(body) = read_body(app, session, ApiError::anthropic_body).await else {
        return false;
    };
    let request = match anthropic::parse_messages(&body) {
        Ok(request) => request,
        Err(err) => return refuse(session, &render, &err).await,
    };
    render = anthropic::MessagesRender::new(request.model.clone());
    let job = Job {
        id: render.id.clone(),
        model: request.model,
        stream: request.stream,
        generate: request.generate,
        keep_alive: None,
        key,
    };
    generate::run(
        &app.dispatcher,
        session,
        job,
        &mut render,
        &app.drain,
        access,
    )
    .await
}

/// `POST /v1/messages/count_tokens`: the worker renders and tokenizes the
/// request as it would for `/v1/messages` (template, tools), without
/// running it or taking a generation slot.
pub async fn count_tokens(
    app: &HttpApp,
    session: &mut ServerSession,
    key: Option<Principal>,
    access: &mut Access,
) -> bool {
    let Some(body) = read_body(app, session, ApiError::anthropic_body).await else {
        return false;
    };
    let request = match anthropic::parse_count_tokens(&body) {
        Ok(request) => request,
        Err(err) => return anthropic_error(session, &err).await,
    };
    let id = format!("count_{}", uuid::Uuid::new_v4().simple());
    let mut generate = request.generate;
    generate.request_id = id.clone();
    let ctx =
        match RequestContext::from_headers(id, request.model, &session.req_header().headers, false)
        {
            Ok(ctx) => Arc::new(ctx.with_key(key)),
            Err(err) => return anthropic_error(session, &err).await,
        };
    access.tenant = Some(ctx.tenant.clone());
    let dispatcher = &app.dispatcher;
    let result = tokio::select! {
        result = dispatcher.count_tokens(&ctx, generate) => result,
        _ = generate::interrupted(session, &app.drain) => return false,
    };
    match result {
        Ok((input_tokens, lease)) => {
            access.model = Some(lease.grant.name.clone());
            access.worker = Some(lease.grant.worker.clone());
            access.queue = Some(lease.waited);
            let headers = dispatcher.response_headers(&lease);
            drop(lease);
            let body = serde_json::json!({ "input_tokens": input_tokens });
            respond::full_with(
                session,
                http::StatusCode::OK,
                "application/json",
                body.to_string().into(),
                &headers,
            )
            .await
        }
        Err(err) => {
            access.model = Some(dispatcher.model_label(&ctx.model));
            anthropic_error(session, &err.for_input("messages")).await
        }
    }
}

async fn anthropic_error(session: &mut ServerSession, err: &ApiError) -> bool {
    respond::error_as(session, err, &[], err.anthropic_body()).await
}

async fn refuse(session: &mut ServerSession, render: &dyn Render, err: &ApiError) -> bool {
    respond::error_as(session, err, &[], render.error_body(err)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_errors_take_the_shape_of_their_api() {
        let err = ApiError::RouteNotFound {
            method: "GET".into(),
            path: "/x".into(),
        };
        assert!(shape_of("/api/nothing")(&err)["error"].is_string());
        assert_eq!(shape_of("/v1/messages/x")(&err)["type"], "error");
        assert!(shape_of("/v1/nothing")(&err)["error"]["message"].is_string());
    }
}
