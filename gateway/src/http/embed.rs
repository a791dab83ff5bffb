//! `/v1/embeddings` after parsing: dispatch to a worker, answer with the list.

use http::StatusCode;
use pingora::protocols::http::ServerSession;

use super::generate::{Interrupt, interrupted};
use super::respond;
use crate::dispatch::Dispatcher;
use crate::drain::Drain;
use crate::error::ApiError;
use crate::openai::embeddings::{EmbeddingsRequest, response};

pub async fn serve(
    dispatcher: &Dispatcher,
    session: &mut ServerSession,
    request: EmbeddingsRequest,
    drain: &Drain,
) -> bool {
    let result = tokio::select! {
        result = dispatcher.embed(request.embed) => result,
        interrupt = interrupted(session, drain) => {
            if interrupt == Interrupt::Cut {
                respond::error(session, &ApiError::ShuttingDown).await;
            }
            return false;
        }
    };
    match result {
        Ok(embeddings) => {
            let body = response(&request.model, request.encoding, embeddings);
            respond::json(session, StatusCode::OK, body).await
        }
        Err(err) => respond::error(session, &err.for_input("input")).await,
    }
}
