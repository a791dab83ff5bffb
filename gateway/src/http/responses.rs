//! OpenAI's Responses API: `POST /v1/responses` through the shared
//! [`generate::run`] with [`ResponsesRender`], and the stored responses
//! (`GET`/`DELETE /v1/responses/{id}`, `input_items`).

use std::sync::Arc;

use herd_proto::v1 as pb;
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};

use super::access::Access;
use super::apis::read_body;
use super::generate::{self, Job};
use super::routes::{ResponsesRoute, percent_decode};
use super::{HttpApp, body, respond};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::responses::{self, ResponsesRender};

pub async fn serve(
    app: &HttpApp,
    session: &mut ServerSession,
    route: ResponsesRoute,
    key: Option<Principal>,
    access: &mut Access,
) -> bool {
    let id = match route {
        ResponsesRoute::Create => return create(app, session, key, access).await,
        ResponsesRoute::Get(ref id)
        | ResponsesRoute::Delete(ref id)
        | ResponsesRoute::InputItems(ref id) => id.clone(),
    };
    body::discard_rest(session, app.max_body_bytes).await;
    let answer = match route {
        ResponsesRoute::Delete(_) => app
            .responses
            .delete(&id)
            .await
            .then(|| json!({"id": id, "object": "response.deleted", "deleted": true})),
        ResponsesRoute::InputItems(_) => {
            let query = session.req_header().uri.query().unwrap_or("").to_owned();
            app.responses
                .get(&id)
                .await
                .map(|stored| input_items(stored.input_items, &query))
        }
        _ => app.responses.get(&id).await.map(|stored| stored.response),
    };
    match answer {
        Some(value) => {
            let body = serde_json::to_vec(&value).unwrap_or_default();
            respond::json(session, StatusCode::OK, body).await
        }
        None => respond::error(session, &not_found("response_id", &id)).await,
    }
}

fn not_found(param: &str, id: &str) -> ApiError {
    ApiError::Worker {
        status: StatusCode::NOT_FOUND,
        code: "response_not_found".into(),
        param: Some(param.to_owned()),
        message: format!(
            "No response with id `{id}` is stored (responses are kept in this gateway's memory, bounded in number and age)"
        ),
    }
}

/// A page of input items: `order` (`desc` by default, as OpenAI),
/// `limit` (1-100, default 20), `after` (an item id).
fn input_items(mut items: Vec<Value>, query: &str) -> Value {
    let mut limit = 20usize;
    let mut after = None;
    let mut ascending = false;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "limit" => limit = v.parse::<usize>().map_or(20, |l| l.clamp(1, 100)),
            "after" => after = Some(v),
            "order" => ascending = v == "asc",
            _ => {}
        }
    }
    if !ascending {
        items.reverse();
    }
    if let Some(after) = after {
        let start = items
            .iter()
            .position(|i| i["id"] == after.as_str())
            .map_or(items.len(), |p| p + 1);
        items.drain(..start);
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    json!({
        "object": "list",
        "first_id": items.first().map(|i| i["id"].clone()),
        "last_id": items.last().map(|i| i["id"].clone()),
        "has_more": has_more,
        "data": items,
    })
}

/// `POST /v1/responses`.
async fn create(
    app: &HttpApp,
    session: &mut ServerSession,
    key: Option<Principal>,
    access: &mut Access,
) -> bool {
    let Some(body) = read_body(app, session, ApiError::body).await else {
        return false;
    };
    let request = match responses::parse(&body) {
        Ok(request) => request,
        Err(err) => return respond::error(session, &err).await,
    };
    let mut conversation = match &request.previous_response_id {
        None => Vec::new(),
        Some(id) => match app.responses.get(id).await {
            Some(previous) => previous.conversation,
            None => {
                return respond::error(session, &not_found("previous_response_id", id)).await;
            }
        },
    };
    conversation.extend(request.input);
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if let Some(instructions) = &request.instructions {
        messages.push(pb::ChatMessage {
            role: "system".into(),
            content: instructions.clone(),
            ..Default::default()
        });
    }
    messages.extend(conversation.iter().cloned());
    let mut generate = request.generate;
    generate.input = Some(pb::generate_request::Input::Chat(pb::ChatInput {
        messages,
    }));
    let mut render = ResponsesRender::new(
        request.model.clone(),
        request.echo,
        request.store.then(|| Arc::clone(&app.responses)),
        request.input_items,
        conversation,
    );
    let job = Job {
        id: render.id.clone(),
        model: request.model,
        stream: request.stream,
        generate,
        keep_alive: request.keep_alive,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_item_pages() {
        let items: Vec<Value> = (0..5).map(|i| json!({"id": format!("i{i}")})).collect();
        let page = input_items(items.clone(), "");
        assert_eq!(page["first_id"], "i4");
        assert_eq!(page["has_more"], false);
        let page = input_items(items.clone(), "order=asc&limit=2");
        assert_eq!(page["data"], json!([{"id": "i0"}, {"id": "i1"}]));
        assert_eq!(page["has_more"], true);
        let page = input_items(items, "order=asc&limit=2&after=i1");
        assert_eq!(page["first_id"], "i2");
    }
}
