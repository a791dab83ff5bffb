//! `/v1/embeddings` after parsing: through the scheduler to a replica of
//! the model, answer with the list.

use std::sync::Arc;

use http::StatusCode;
use pingora::protocols::http::ServerSession;

use super::access::Access;
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
    access: &mut Access,
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
    access.tenant = Some(ctx.tenant.clone());
    let result = tokio::select! {
        result = dispatcher.embed(&ctx, request.embed) => result,
        interrupt = interrupted(session, drain) => {
            access.model = Some(dispatcher.model_label(&ctx.model));
            if interrupt == Interrupt::ClientGone {
                dispatcher.metrics().client_left(crate::metrics::Departure::Queued);
            }
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
            access.model = Some(lease.grant.name.clone());
            access.worker = Some(lease.grant.worker.clone());
            access.queue = Some(lease.waited);
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
        Err(err) => {
            access.model = Some(dispatcher.model_label(&ctx.model));
            respond::error(session, &err.for_input("input")).await
        }
    }
}
