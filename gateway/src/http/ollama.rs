//! Ollama's API under `/api/`: generation (`chat`, `generate`) through the
//! shared [`generate::run`] with [`OllamaRender`]; `embed` through the
//! dispatcher; `tags`, `ps`, `show` from the workers' snapshot and the
//! scheduler; `pull` and `delete` through the same model-store calls as
//! Docker's `/models` API. Errors are Ollama's `{"error":"…"}`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use herd_proto::v1 as pb;
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use serde_json::{Value, json};

use super::access::Access;
use super::apis::read_body;
use super::generate::{self, Interrupt, Job, interrupted};
use super::routes::OllamaRoute;
use super::{HttpApp, body, respond};
use crate::auth::Principal;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::ollama::{self, OllamaEndpoint, OllamaRender, models};
use crate::scheduler::KeepAlive;

/// Longest wait for a store call (delete).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn serve(
    app: &HttpApp,
    session: &mut ServerSession,
    route: OllamaRoute,
    key: Option<Principal>,
    access: &mut Access,
) -> bool {
    match route {
        OllamaRoute::Version => {
            body::discard_rest(session, app.max_body_bytes).await;
            json_ok(session, &json!({"version": models::OLLAMA_VERSION})).await
        }
        OllamaRoute::Tags => {
            body::discard_rest(session, app.max_body_bytes).await;
            tags(app, session, key.as_ref()).await
        }
        OllamaRoute::Ps => {
            body::discard_rest(session, app.max_body_bytes).await;
            ps(app, session, key.as_ref()).await
        }
        OllamaRoute::Show => show(app, session, key.as_ref()).await,
        OllamaRoute::Chat => generation(app, session, OllamaEndpoint::Chat, key, access).await,
        OllamaRoute::Generate => {
            generation(app, session, OllamaEndpoint::Generate, key, access).await
        }
        OllamaRoute::Embed => embed(app, session, key).await,
        OllamaRoute::Pull => pull(app, session).await,
        OllamaRoute::Delete => delete(app, session).await,
    }
}

async fn json_ok(session: &mut ServerSession, value: &Value) -> bool {
    respond::json(
        session,
        StatusCode::OK,
        serde_json::to_vec(value).unwrap_or_default(),
    )
    .await
}

async fn refuse(session: &mut ServerSession, err: &ApiError) -> bool {
    respond::error_as(session, err, &[], err.ollama_body()).await
}

/// The status of the model `name` means, from a healthy worker.
fn find_model(app: &HttpApp, name: &str) -> Option<pb::ModelStatus> {
    let snapshot = app.dispatcher.roster().snapshot();
    let (name, _) = snapshot.resolve(name, app.dispatcher.default_registry())?;
    snapshot
        .workers
        .iter()
        .filter(|w| w.healthy)
        .flat_map(|w| w.models())
        .find(|m| m.name == name || m.aliases.contains(&name))
        .cloned()
}

/// Whether `key` (if keys are on) may see the model `name`: one it may
/// not use is not listed, as if it did not exist.
fn visible(app: &HttpApp, key: Option<&Principal>, name: &str) -> bool {
    key.is_none_or(|k| k.may_use(name, app.dispatcher.default_registry()))
}

/// `GET /api/tags`: every model the workers serve or store, under each
/// of its names (with API keys, the names the key may use).
async fn tags(app: &HttpApp, session: &mut ServerSession, key: Option<&Principal>) -> bool {
    let snapshot = app.dispatcher.roster().snapshot();
    let mut seen = std::collections::BTreeMap::new();
    for worker in snapshot.workers.iter().filter(|w| w.healthy) {
        for model in worker.models() {
            for entry in models::tags(model) {
                if let Some(name) = entry["name"].as_str()
                    && visible(app, key, name)
                {
                    seen.entry(name.to_owned()).or_insert(entry);
                }
            }
        }
    }
    let list: Vec<Value> = seen.into_values().collect();
    json_ok(session, &json!({ "models": list })).await
}

/// `GET /api/ps`: loaded replicas and until when they stay (with API
/// keys, of the models the key may use).
async fn ps(app: &HttpApp, session: &mut ServerSession, key: Option<&Principal>) -> bool {
    let snapshot = app.dispatcher.roster().snapshot();
    let now = SystemTime::now();
    let mut list = Vec::new();
    for model in app.dispatcher.scheduler().report() {
        for replica in &model.placements {
            if !visible(app, key, &replica.name) && !visible(app, key, &model.name) {
                continue;
            }
            let Some(status) = snapshot.worker(&replica.worker).and_then(|w| {
                w.models()
                    .iter()
                    .find(|m| m.name == replica.name || m.aliases.contains(&replica.name))
            }) else {
                continue;
            };
            let expires = match replica.keep_alive {
                KeepAlive::For(d) if replica.busy == 0 && model.queued == 0 => {
                    let last_used = now.checked_sub(replica.idle_for).unwrap_or(now);
                    (last_used + d)
                        .duration_since(UNIX_EPOCH)
                        .ok()
                        .map(|t| t.as_secs() as i64)
                }
                _ => None,
            };
            list.push(models::running(status, expires));
        }
    }
    json_ok(session, &json!({ "models": list })).await
}

/// `POST /api/show` (404 for a model the key may not use).
async fn show(app: &HttpApp, session: &mut ServerSession, key: Option<&Principal>) -> bool {
    let Some(body) = read_body(app, session, ApiError::ollama_body).await else {
        return false;
    };
    let name = match ollama::parse_model(&body, &["model", "name", "verbose"]) {
        Ok((name, _)) => name,
        Err(err) => return refuse(session, &err).await,
    };
    if !visible(app, key, &name) {
        return refuse(session, &ApiError::ModelNotFound(name)).await;
    }
    match find_model(app, &name) {
        Some(model) => json_ok(session, &models::show(&model)).await,
        None => refuse(session, &ApiError::ModelNotFound(name)).await,
    }
}

/// `POST /api/chat`, `POST /api/generate`.
async fn generation(
    app: &HttpApp,
    session: &mut ServerSession,
    endpoint: OllamaEndpoint,
    key: Option<Principal>,
    access: &mut Access,
) -> bool {
    let Some(body) = read_body(app, session, ApiError::ollama_body).await else {
        return false;
    };
    let parsed = match endpoint {
        OllamaEndpoint::Chat => ollama::parse_chat(&body),
        OllamaEndpoint::Generate => ollama::parse_generate(&body),
    };
    let request = match parsed {
        Ok(request) => request,
        Err(err) => return refuse(session, &err).await,
    };
    let model_context = request
        .num_ctx
        .and_then(|_| find_model(app, &request.model))
        .map(|m| m.context_size);
    if let (Some(num_ctx), Some(context)) = (request.num_ctx, model_context)
        && context > 0
        && num_ctx > context
    {
        let err = ApiError::field(
            "options.num_ctx",
            format!(
                "`options.num_ctx` is {num_ctx}, but `{}` is served with a context of {context} tokens per request",
                request.model
            ),
        );
        return refuse(session, &err).await;
    }
    let mut render = OllamaRender::new(endpoint, request.model.clone());
    let job = Job {
        id: format!("ollama-{}", uuid::Uuid::new_v4().simple()),
        model: request.model,
        stream: request.stream,
        generate: request.generate,
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

/// `POST /api/embed`.
async fn embed(app: &HttpApp, session: &mut ServerSession, key: Option<Principal>) -> bool {
    let Some(body) = read_body(app, session, ApiError::ollama_body).await else {
        return false;
    };
    let request = match ollama::parse_embed(&body) {
        Ok(request) => request,
        Err(err) => return refuse(session, &err).await,
    };
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
        Err(err) => return refuse(session, &err).await,
    };
    let started = std::time::Instant::now();
    let result = tokio::select! {
        result = app.dispatcher.embed(&ctx, request.embed) => result,
        interrupt = interrupted(session, &app.drain) => {
            if interrupt == Interrupt::Cut {
                refuse(session, &ApiError::ShuttingDown).await;
            }
            return false;
        }
    };
    match result {
        Ok((response, lease)) => {
            let headers = app.dispatcher.response_headers(&lease);
            drop(lease);
            let embeddings: Vec<&[f32]> = response
                .embeddings
                .iter()
                .map(|e| e.values.as_slice())
                .collect();
            let body = json!({
                "model": request.model,
                "embeddings": embeddings,
                "total_duration": started.elapsed().as_nanos() as u64,
                "load_duration": 0,
                "prompt_eval_count": response.prompt_tokens,
            });
            respond::full_with(
                session,
                StatusCode::OK,
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default().into(),
                &headers,
            )
            .await
        }
        Err(err) => refuse(session, &err.for_input("input")).await,
    }
}

/// `DELETE /api/delete` `{"model"}`: removes the name (the model too when
/// it was its last), unloading it first if loaded, as Ollama does.
async fn delete(app: &HttpApp, session: &mut ServerSession) -> bool {
    let Some(body) = read_body(app, session, ApiError::ollama_body).await else {
        return false;
    };
    let name = match ollama::parse_model(&body, &["model", "name"]) {
        Ok((name, _)) => name,
        Err(err) => return refuse(session, &err).await,
    };
    let Some(mut client) = app.dispatcher.roster().store_worker() else {
        return refuse(session, &ApiError::NoCapacity("the model store".into())).await;
    };
    let call = client.delete_model(pb::DeleteModelRequest {
        reference: name,
        force: true,
    });
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(_)) => {
            app.dispatcher.roster().refresh().await;
            respond::full(session, StatusCode::OK, "application/json", Bytes::new()).await
        }
        Ok(Err(status)) => refuse(session, &ApiError::from_store_status(&status)).await,
        Err(_) => {
            let err = ApiError::Upstream("the worker's model store timed out".into());
            refuse(session, &err).await
        }
    }
}

/// `POST /api/pull` `{"model","stream"}`: the same pull as
/// `/models/create`, reported as Ollama's NDJSON status lines (or one
/// `{"status":"success"}` without `stream`).
async fn pull(app: &HttpApp, session: &mut ServerSession) -> bool {
    let Some(body) = read_body(app, session, ApiError::ollama_body).await else {
        return false;
    };
    let (reference, stream) =
        match ollama::parse_model(&body, &["model", "name", "stream", "insecure"]) {
            Ok(parsed) => parsed,
            Err(err) => return refuse(session, &err).await,
        };
    if let Err(e) = herd_store::ModelRef::parse(&reference, app.dispatcher.default_registry()) {
        return refuse(session, &ApiError::field("model", e.to_string())).await;
    }
    let Some(mut client) = app.dispatcher.roster().store_worker() else {
        return refuse(session, &ApiError::NoCapacity("the model store".into())).await;
    };
    let mut events = match client.pull_model(pb::PullModelRequest { reference }).await {
        Ok(response) => response.into_inner(),
        Err(status) => return refuse(session, &ApiError::from_store_status(&status)).await,
    };
    // The first event says whether the pull started at all: errors before
    // it get their own status code.
    let first = match events.message().await {
        Ok(Some(event)) => event,
        Ok(None) => {
            let err = ApiError::Upstream("the worker ended the pull without a result".into());
            return refuse(session, &err).await;
        }
        Err(status) => return refuse(session, &ApiError::from_store_status(&status)).await,
    };
    if stream && !respond::start_stream(session, "application/x-ndjson", &[]).await {
        return false;
    }
    let mut lines = vec![json!({"status": "pulling manifest"})];
    let mut next = Some(first);
    loop {
        let event = match next.take() {
            Some(event) => Ok(event),
            None => match events.message().await {
                Ok(Some(event)) => Ok(event),
                Ok(None) => Err(ApiError::Upstream(
                    "the worker ended the pull without a result".into(),
                )),
                Err(status) => Err(ApiError::from_store_status(&status)),
            },
        };
        let last = match event {
            Ok(pb::TransferEvent {
                event: Some(pb::transfer_event::Event::Progress(p)),
            }) => {
                let short = p.digest.strip_prefix("sha256:").unwrap_or(&p.digest);
                lines.push(json!({
                    "status": format!("pulling {}", short.get(..12).unwrap_or(short)),
                    "digest": p.digest,
                    "total": p.size,
                    "completed": p.current,
                }));
                false
            }
            Ok(pb::TransferEvent {
                event: Some(pb::transfer_event::Event::Done(_)),
            }) => {
                app.dispatcher.roster().refresh().await;
                lines.push(json!({"status": "verifying sha256 digest"}));
                lines.push(json!({"status": "writing manifest"}));
                lines.push(json!({"status": "success"}));
                true
            }
            Ok(pb::TransferEvent { event: None }) => false,
            Err(err) if !stream => return refuse(session, &err).await,
            Err(err) => {
                lines.push(err.ollama_body());
                true
            }
        };
        if stream {
            let mut out = Vec::new();
            for line in lines.drain(..) {
                out.extend_from_slice(&serde_json::to_vec(&line).unwrap_or_default());
                out.push(b'\n');
            }
            if session.write_response_body(out.into(), last).await.is_err() {
                return false;
            }
            if last {
                return session.finish_body().await.is_ok();
            }
        } else if last {
            return json_ok(session, &json!({"status": "success"})).await;
        }
    }
}
