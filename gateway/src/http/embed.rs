//! `/v1/embeddings` after parsing: dispatch to a worker, answer with the list.

use http::StatusCode;
use pingora::protocols::http::ServerSession;

use super::generate::client_gone;
use super::respond;
use crate::dispatch::Dispatcher;
use crate::openai::embeddings::{EmbeddingsRequest, response};

pub async fn serve(
    dispatcher: &Dispatcher,
    session: &mut ServerSession,
    request: EmbeddingsRequest,
) -> bool {
    let result = tokio::select! {
        result = dispatcher.embed(request.embed) => result,
        () = client_gone(session) => return false,
    };
    match result {
        Ok(embeddings) => {
            let body = response(&request.model, request.encoding, embeddings);
            respond::json(session, StatusCode::OK, body).await
        }
        Err(err) => respond::error(session, &err.for_input("input")).await,
    }
}
