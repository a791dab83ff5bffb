//! `/v1/embeddings` after parsing: through the scheduler to a replica of
//! the model, answer with the list.

use std::sync::Arc;

use http::StatusCode;
use pingora::protocols::http::ServerSession;

use super::generate::{Interrupt, interrupted};
use super::respond;
use crate::auth::Principal;
use crate::context::RequestContext;
use crate::dispatch::Dispatcher;
use crate::drain::Drain;
use crate::error::ApiError;
use crate::openai::embeddings::{EmbeddingsRequest, response};

pub async fn serve(
    dispatcher: &Dispatcher,
    session: &mut ServerSession,
    request: EmbeddingsRequest,
    drain: &Drain,
    key: Option<Principal>,
) -> bool {
    let id = format!("embd-{}", uuid::Uuid::new_v4().simple());
    let ctx = match RequestContext::from_headers(
        id,
        request.model.clone(),
        &session.req_header().headers,
        false,
    ) {
        Ok(mut ctx) => {
            ctx.keep_alive = request.keep_alive;
            Arc::new(ctx.with_key(key))
        }
        Err(err) => return respond::error(session, &err).await,
    };
    let result = tokio::select! {
        result = dispatcher.embed(&ctx, request.embed) => result,
        interrupt = interrupted(session, drain) => {
            if interrupt == Interrupt::Cut {
                let err = ApiError::ShuttingDown.with_retry_after(std::time::Duration::from_secs(1));
                respond::error(session, &err).await;
            }
            return false;
        }
    };
    match result {
        Ok((embeddings, lease)) => {
            let headers = dispatcher.response_headers(&lease);
            drop(lease);
            let body = response(&request.model, request.encoding, embeddings);
            respond::full_with(
                session,
                StatusCode::OK,
                "application/json",
                body.into(),
                &headers,
            )
            .await
        }
        Err(err) => respond::error(session, &err.for_input("input")).await,
    }
}
