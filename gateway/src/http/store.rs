//! Docker Model Runner's `/models` API over a worker's model store:
//! list, inspect, pull (`/models/create`), push, tag and delete. Pulls and
//! pushes stream progress as plain lines, or as JSON lines
//! (`{"type":"progress"|"success"|"error",…}`) when the client sends
//! `Accept: application/json`.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use herd_proto::v1 as pb;
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};
use tonic::Streaming;

use super::body::{self, BodyError};
use super::respond;
use super::routes::StoreRoute;
use crate::auth::Principal;
use crate::dispatch::Dispatcher;
use crate::error::ApiError;

/// Longest wait for a non-streaming store call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn serve(
    dispatcher: &Dispatcher,
    session: &mut ServerSession,
    route: StoreRoute,
    max_body_bytes: usize,
    key: Option<&Principal>,
) -> bool {
    let query = Query::parse(session.req_header().uri.query().unwrap_or(""));
    let json_lines = session
        .req_header()
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let body = match route {
        StoreRoute::Create => match body::read_limited(session, max_body_bytes).await {
            Ok(body) => Some(body),
            Err(BodyError::Reject(err)) => {
                // As for the OpenAI routes: take in the rest (bounded) so
                // the client reads the answer, then close.
                body::discard_rest(session, max_body_bytes.saturating_mul(4)).await;
                session.set_keepalive(None);
                respond::error(session, &err).await;
                return false;
            }
            Err(BodyError::Gone) => return false,
        },
        _ => {
            body::discard_rest(session, max_body_bytes).await;
            None
        }
    };
    // With API keys, models outside the key's allow-list do not exist.
    let registry = dispatcher.default_registry();
    let allowed = |name: &str| key.is_none_or(|k| k.may_use(name, registry));
    if let StoreRoute::Get(name) = &route
        && !allowed(name)
    {
        return respond::error(session, &ApiError::ModelNotFound(name.clone())).await;
    }
    let Some(mut client) = dispatcher.roster().store_worker() else {
        return respond::error(session, &ApiError::NoCapacity("the model store".into())).await;
    };
    let result = match route {
        StoreRoute::List => call(client.list_models(pb::ListModelsRequest {}))
            .await
            .map(|r| {
                let models: Vec<Value> = r
                    .models
                    .iter()
                    .filter(|m| m.tags.iter().any(|t| allowed(t)))
                    .map(model_json)
                    .collect();
                (StatusCode::OK, json!(models))
            }),
        StoreRoute::Get(name) => call(client.get_model(pb::GetModelRequest { reference: name }))
            .await
            .map(|m| (StatusCode::OK, model_json(&m))),
        StoreRoute::Delete(name) => {
            let force = query.flag("force");
            let removed = call(client.delete_model(pb::DeleteModelRequest {
                reference: name,
                force,
            }))
            .await;
            if removed.is_ok() {
                dispatcher.roster().refresh().await;
            }
            removed.map(|r| {
                let mut out: Vec<Value> = r
                    .untagged
                    .iter()
                    .map(|t| json!({ "Untagged": t }))
                    .collect();
                if !r.deleted.is_empty() {
                    out.push(json!({ "Deleted": r.deleted }));
                }
                (StatusCode::OK, json!(out))
            })
        }
        StoreRoute::Tag(name) => match (query.get("repo"), query.get("tag")) {
            (Some(repo), Some(tag)) if !repo.is_empty() && !tag.is_empty() => {
                let target = format!("{repo}:{tag}");
                let tagged = call(client.tag_model(pb::TagModelRequest {
                    source: name,
                    target: target.clone(),
                }))
                .await;
                if tagged.is_ok() {
                    dispatcher.roster().refresh().await;
                }
                tagged.map(|_| {
                    (
                        StatusCode::CREATED,
                        json!({
                            "message": format!("Model tagged successfully with \"{target}\""),
                            "target": target,
                        }),
                    )
                })
            }
            _ => Err(ApiError::field(
                "repo",
                "`repo` and `tag` query parameters are required",
            )),
        },
        StoreRoute::Create => {
            let from = match parse_create(body.as_deref().unwrap_or_default()) {
                Ok(from) => from,
                Err(err) => return respond::error(session, &err).await,
            };
            // A reference the store cannot parse is refused before any
            // registry is contacted.
            if let Err(e) = herd_store::ModelRef::parse(&from, dispatcher.default_registry()) {
                let err = ApiError::Worker {
                    status: StatusCode::BAD_REQUEST,
                    code: herd_proto::error::ErrorCode::InvalidReference.api_code(),
                    param: Some("from".into()),
                    message: e.to_string(),
                };
                return respond::error(session, &err).await;
            }
            let stream = client
                .pull_model(pb::PullModelRequest { reference: from })
                .await
                .map(tonic::Response::into_inner);
            return transfer(dispatcher, session, Mode::Pull, stream, json_lines).await;
        }
        StoreRoute::Push(name) => {
            let stream = client
                .push_model(pb::PushModelRequest { reference: name })
                .await
                .map(tonic::Response::into_inner);
            return transfer(dispatcher, session, Mode::Push, stream, json_lines).await;
        }
    };
    match result {
        Ok((status, value)) => {
            let body = serde_json::to_vec(&value).unwrap_or_default();
            respond::json(session, status, body).await
        }
        Err(err) => respond::error(session, &err).await,
    }
}

async fn call<T>(
    future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(CALL_TIMEOUT, future).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(ApiError::from_store_status(&status)),
        Err(_) => Err(ApiError::Upstream(
            "the worker's model store timed out".into(),
        )),
    }
}

/// `{"from":"ai/smollm2"}`.
fn parse_create(body: &[u8]) -> Result<String, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    match value.get("from") {
        Some(Value::String(from)) if !from.trim().is_empty() => Ok(from.clone()),
        Some(_) => Err(ApiError::field("from", "`from` must be a model reference")),
        None => Err(ApiError::field("from", "`from` is required")),
    }
}

/// Docker's model object: `{"id","tags","created","config"}`.
fn model_json(model: &pb::StoredModel) -> Value {
    let config: Value = serde_json::from_str(&model.config_json).unwrap_or(Value::Null);
    json!({
        "id": model.id,
        "tags": model.tags,
        "created": model.created,
        "config": config,
    })
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Pull,
    Push,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
        }
    }

    fn success(self) -> &'static str {
        match self {
            Self::Pull => "Model pulled successfully",
            Self::Push => "Model pushed successfully",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Self::Pull => "Downloaded",
            Self::Push => "Uploaded",
        }
    }
}

/// Streams a pull or push. Errors before the first event (bad reference,
/// unknown model, wrong media type) get their own status code; later ones
/// arrive as an `error` line in a 200 response, as in Docker.
async fn transfer(
    dispatcher: &Dispatcher,
    session: &mut ServerSession,
    mode: Mode,
    stream: Result<Streaming<pb::TransferEvent>, tonic::Status>,
    json_lines: bool,
) -> bool {
    let mut stream = match stream {
        Ok(stream) => stream,
        Err(status) => return respond::error(session, &ApiError::from_store_status(&status)).await,
    };
    let first = match stream.message().await {
        Ok(Some(event)) => event,
        Ok(None) => {
            let err = ApiError::Upstream("the worker ended the transfer without a result".into());
            return respond::error(session, &err).await;
        }
        Err(status) => return respond::error(session, &ApiError::from_store_status(&status)).await,
    };
    let content_type = if json_lines {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    if !respond::start_stream(session, content_type, &[]).await {
        return false;
    }
    let mut lines = Lines {
        mode,
        json: json_lines,
        layers: HashMap::new(),
    };
    let mut next = Some(Ok(first));
    loop {
        let item = match next.take() {
            Some(item) => item,
            None => match stream.message().await {
                Ok(Some(event)) => Ok(event),
                Ok(None) => Err(ApiError::Upstream(
                    "the worker ended the transfer without a result".into(),
                )),
                Err(status) => Err(ApiError::from_store_status(&status)),
            },
        };
        let (line, last) = match item {
            Ok(pb::TransferEvent {
                event: Some(pb::transfer_event::Event::Progress(p)),
            }) => (lines.progress(&p), false),
            Ok(pb::TransferEvent {
                event: Some(pb::transfer_event::Event::Done(model)),
            }) => {
                // Let the next request see the pulled model at once.
                dispatcher.roster().refresh().await;
                (lines.success(&model), true)
            }
            Ok(pb::TransferEvent { event: None }) => continue,
            Err(err) => (lines.error(&err), true),
        };
        if session
            .write_response_body(Bytes::from(line), last)
            .await
            .is_err()
        {
            // The client left; dropping the stream cancels the transfer.
            return false;
        }
        if last {
            return session.finish_body().await.is_ok();
        }
    }
}

/// Formats progress lines, summing bytes over layers.
struct Lines {
    mode: Mode,
    json: bool,
    layers: HashMap<String, (u64, u64)>,
}

impl Lines {
    fn progress(&mut self, p: &pb::TransferProgress) -> String {
        self.layers.insert(p.digest.clone(), (p.current, p.size));
        let done: u64 = self.layers.values().map(|(c, _)| c).sum();
        let message = format!("{}: {}", self.mode.verb(), megabytes(done));
        if self.json {
            line(&json!({
                "type": "progress",
                "message": message,
                "total": p.total,
                "pulled": done,
                "layer": {"id": p.digest, "size": p.size, "current": p.current},
                "mode": self.mode.name(),
            }))
        } else {
            format!("{message} of {}\n", megabytes(p.total))
        }
    }

    fn success(&self, model: &pb::StoredModel) -> String {
        if self.json {
            line(&json!({
                "type": "success",
                "message": self.mode.success(),
                "mode": self.mode.name(),
                "model": model_json(model),
            }))
        } else {
            format!("{} ({})\n", self.mode.success(), model.id)
        }
    }

    fn error(&self, err: &ApiError) -> String {
        if self.json {
            let body = err.body();
            line(&json!({
                "type": "error",
                "message": err.to_string(),
                "code": body["error"]["code"],
                "status": err.status().as_u16(),
                "mode": self.mode.name(),
            }))
        } else {
            format!("Error: {err}\n")
        }
    }
}

fn line(value: &Value) -> String {
    let mut text = value.to_string();
    text.push('\n');
    text
}

fn megabytes(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1_000_000.0)
}

/// The query string's `key=value` pairs, percent-decoded.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(query: &str) -> Self {
        Self(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let decode = |s: &str| super::routes::percent_decode(&s.replace('+', " "));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `?force`, `?force=true` or `?force=1`.
    pub(super) fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.is_empty() || v == "true" || v == "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_flags_and_values() {
        let q = Query::parse("force&repo=me%2Fmodel&tag=v1");
        assert!(q.flag("force"));
        assert_eq!(q.get("repo"), Some("me/model"));
        assert!(!Query::parse("force=false").flag("force"));
        assert!(Query::parse("force=true").flag("force"));
        assert!(!Query::parse("").flag("force"));
    }

    #[test]
    fn create_needs_a_from() {
        assert_eq!(
            parse_create(br#"{"from":"ai/smollm2"}"#).unwrap(),
            "ai/smollm2"
        );
        assert!(matches!(
            parse_create(b"{}"),
            Err(ApiError::InvalidField { .. })
        ));
        assert!(matches!(
            parse_create(b"nope"),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_create(br#"{"from":7}"#),
            Err(ApiError::InvalidField { .. })
        ));
    }

    #[test]
    fn progress_lines_sum_layers() {
        let mut lines = Lines {
            mode: Mode::Pull,
            json: true,
            layers: HashMap::new(),
        };
        let p = |digest: &str, current| pb::TransferProgress {
            digest: digest.into(),
            size: 100,
            current,
            total: 200,
        };
        lines.progress(&p("a", 100));
        let last: Value = serde_json::from_str(&lines.progress(&p("b", 50))).unwrap();
        assert_eq!(last["type"], "progress");
        assert_eq!(last["pulled"], 150);
        assert_eq!(last["layer"]["current"], 50);
        assert_eq!(last["mode"], "pull");
    }
}
