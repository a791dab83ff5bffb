//! A generation after parsing, for every generation API (OpenAI chat and
//! completions, Anthropic Messages, Ollama, OpenAI Responses): dispatch to a
//! worker, then either collect the whole answer or stream it, written by
//! the API's [`Render`]. A client that goes away at any point drops the
//! gRPC stream, which stops the generation on the worker; so does the end
//! of the shutdown grace period, after telling the client (see
//! [`crate::drain`]). A non-streaming request whose worker dies
//! mid-generation has sent its client nothing: it is run again once,
//! elsewhere.

use std::sync::Arc;

use bytes::BytesMut;
use futures::FutureExt;
use herd_proto::error::{FailureClass, WorkerFailure};
use herd_proto::v1 as pb;
use herd_proto::v1::generate_event::Event;
use http::StatusCode;
use pingora::protocols::http::ServerSession;

use super::access::Access;
use super::respond;
use crate::auth::Principal;
use crate::context::{RequestContext, prefix_key_of};
use crate::dispatch::{Dispatcher, Generation};
use crate::drain::Drain;
use crate::error::ApiError;
use crate::metrics::{Departure, Requeue};
use crate::openai::GenerationRequest;
use crate::openai::render::OpenAiRender;
use crate::render::Render;
use crate::scheduler::KeepAlive;

/// A parsed generation request, whatever API it came through.
#[derive(Debug, Clone)]
pub struct Job {
    /// The response's id, also the worker's `request_id`.
    pub id: String,
    pub model: String,
    pub stream: bool,
    pub generate: pb::GenerateRequest,
    pub keep_alive: Option<KeepAlive>,
    /// The API key it came with (when keys are on).
    pub key: Option<Principal>,
}

/// Serves one OpenAI chat or text completion. Returns whether the
/// connection may be reused.
pub async fn serve(
    dispatcher: &Dispatcher,
    session: &mut ServerSession,
    request: GenerationRequest,
    drain: &Drain,
    key: Option<Principal>,
    access: &mut Access,
) -> bool {
    let mut render = OpenAiRender::new(
        request.endpoint,
        request.model.clone(),
        request.include_usage,
    );
    let job = Job {
        id: render.meta.id.clone(),
        model: request.model,
        stream: request.stream,
        generate: request.generate,
        keep_alive: request.keep_alive,
        key,
    };
    run(dispatcher, session, job, &mut render, drain, access).await
}

/// Serves one generation, answering in `render`'s shapes, and records it
/// in `access` (the request's metrics and access-log line). Returns
/// whether the connection may be reused.
pub async fn run(
    dispatcher: &Dispatcher,
    session: &mut ServerSession,
    job: Job,
    render: &mut dyn Render,
    drain: &Drain,
    access: &mut Access,
) -> bool {
    let meta = Meta {
        id: job.id.clone(),
        model: job.model.clone(),
        input_param: render.input_param(),
    };
    let mut generate = job.generate;
    generate.request_id = meta.id.clone();
    let ctx = match RequestContext::from_headers(
        meta.id.clone(),
        job.model.clone(),
        &session.req_header().headers,
        true,
    ) {
        Ok(mut ctx) => {
            ctx.prefix_key = prefix_key_of(&generate, dispatcher.prefix_key_bytes());
            ctx.keep_alive = job.keep_alive;
            Arc::new(ctx.with_key(job.key))
        }
        Err(err) => return error(session, render, &err, &[]).await,
    };
    access.tenant = Some(ctx.tenant.clone());
    // Kept to run again if the worker dies before the answer is sent.
    let retry = (!job.stream).then(|| generate.clone());
    let dispatched = tokio::select! {
        dispatched = dispatcher.generate(&ctx, generate) => dispatched,
        interrupt = interrupted(session, drain) => {
            tracing::debug!(request_id = %meta.id, ?interrupt, "interrupted while queued");
            access.model = Some(dispatcher.model_label(&ctx.model));
            if interrupt == Interrupt::ClientGone {
                dispatcher.metrics().client_left(Departure::Queued);
            }
            if interrupt == Interrupt::Cut {
                let err = ApiError::ShuttingDown.with_retry_after(std::time::Duration::from_secs(1));
                error(session, render, &err, &[]).await;
            }
            return false;
        }
    };
    let generation = match dispatched {
        Ok(generation) => generation,
        Err(err) => {
            access.model = Some(dispatcher.model_label(&ctx.model));
            let err = err.for_input(meta.input_param);
            return error(session, render, &err, &[]).await;
        }
    };
    let headers = dispatcher.response_headers(&generation.lease);
    access.generating(dispatcher.metrics(), generation.lease.grant.name.clone());
    access.worker = Some(generation.lease.grant.worker.clone());
    access.queue = Some(generation.lease.waited);
    tracing::debug!(
        request_id = %meta.id,
        worker = %generation.lease.grant.worker,
        tenant = %ctx.tenant,
        priority = ctx.priority.as_str(),
        queued_ms = generation.lease.waited.as_millis() as u64,
        "dispatched"
    );
    let steps = Steps {
        session,
        meta: &meta,
        drain,
        dispatcher,
        access,
    };
    if job.stream {
        stream(steps, generation, render, &headers).await
    } else {
        let rerun = retry.map(|request| (&ctx, request));
        collect(steps, generation, render, &headers, rerun).await
    }
}

/// What the shared steps need to know of a request.
struct Meta {
    id: String,
    model: String,
    input_param: &'static str,
}

/// What collecting or streaming an answer works with.
struct Steps<'a> {
    session: &'a mut ServerSession,
    meta: &'a Meta,
    drain: &'a Drain,
    dispatcher: &'a Dispatcher,
    access: &'a mut Access,
}

/// An error answered in the API's shape.
async fn error(
    session: &mut ServerSession,
    render: &dyn Render,
    err: &ApiError,
    extra: &respond::Extra,
) -> bool {
    respond::error_as(session, err, extra, render.error_body(err)).await
}

/// Ends a finished generation: frees its slot lease now and reads the gRPC
/// stream to its end (the trailers follow `finished` at once) in the
/// background. Dropping the stream before its end sends RST_STREAM, and h2
/// closes a connection that has reset 1024 streams ("locally-reset streams
/// reached limit"), failing every request on it — measured as 503s at
/// ~8k req/s with the mock engine.
fn release(generation: Generation) {
    let Generation {
        mut events, lease, ..
    } = generation;
    drop(lease);
    // The trailers usually came with `finished`: then no task is needed.
    if matches!(events.message().now_or_never(), Some(Ok(None) | Err(_))) {
        return;
    }
    tokio::spawn(async move {
        let drain = async { while let Ok(Some(_)) = events.message().await {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    });
}

/// What happened next on a running generation.
enum Next {
    Text(String),
    Finished(pb::GenerateFinished),
    Failed(ApiError),
    /// The worker went away (killed, unreachable) mid-generation.
    WorkerGone(ApiError),
    ClientGone,
    /// The shutdown grace period is over.
    Cut,
}

/// Waits for the worker's next event, unless the client leaves (or the
/// shutdown grace period ends) first.
async fn next_event(
    session: &mut ServerSession,
    generation: &mut Generation,
    meta: &Meta,
    drain: &Drain,
) -> Next {
    if let Some(first) = generation.first.take() {
        return event(first);
    }
    let message = tokio::select! {
        message = generation.events.message() => message,
        interrupt = interrupted(session, drain) => return match interrupt {
            Interrupt::ClientGone => Next::ClientGone,
            Interrupt::Cut => Next::Cut,
        },
    };
    match message {
        Ok(Some(message)) => event(message),
        Ok(None) => Next::Failed(ApiError::Upstream(
            "the worker ended the stream without finishing".into(),
        )),
        Err(status) => {
            let err = ApiError::from_status(&status, &meta.model).for_input(meta.input_param);
            if WorkerFailure::from_status(&status).class == FailureClass::Gone {
                Next::WorkerGone(err)
            } else {
                Next::Failed(err)
            }
        }
    }
}

fn event(message: pb::GenerateEvent) -> Next {
    match message.event {
        Some(Event::Delta(delta)) => Next::Text(delta.text),
        Some(Event::Finished(finished)) => Next::Finished(finished),
        None => Next::Text(String::new()),
    }
}

/// Non-streaming: gather the text, answer once. With `rerun`, a worker
/// that goes away mid-generation is replaced once: the request runs again
/// from the start on another worker.
async fn collect(
    steps: Steps<'_>,
    mut generation: Generation,
    render: &mut dyn Render,
    headers: &respond::Extra,
    mut rerun: Option<(&Arc<RequestContext>, pb::GenerateRequest)>,
) -> bool {
    let Steps {
        session,
        meta,
        drain,
        dispatcher,
        access,
    } = steps;
    let mut text = String::new();
    let mut headers = std::borrow::Cow::Borrowed(headers);
    let finished = loop {
        match next_event(session, &mut generation, meta, drain).await {
            Next::ClientGone => {
                dispatcher.metrics().client_left(Departure::Generating);
                return false;
            }
            Next::Cut => {
                error(session, render, &ApiError::ShuttingDown, &[]).await;
                return false;
            }
            Next::Finished(finished) => {
                generation.account(&finished);
                break finished;
            }
            Next::Text(delta) => {
                if !delta.is_empty() {
                    access.token();
                }
                text.push_str(&delta);
            }
            Next::WorkerGone(err) if rerun.is_some() => {
                let Some((ctx, request)) = rerun.take() else {
                    continue;
                };
                dispatcher
                    .metrics()
                    .requeued(Requeue::WorkerGoneMidGeneration);
                tracing::warn!(request_id = %meta.id, worker = %generation.lease.grant.worker, error = %err, "worker gone mid-generation; running the request again elsewhere");
                generation
                    .lease
                    .set_outcome(crate::scheduler::Outcome::WorkerGone);
                let permit = generation.permit.take();
                drop(generation);
                let dispatched = tokio::select! {
                    dispatched = dispatcher.generate_again(ctx, request, permit) => dispatched,
                    _ = interrupted(session, drain) => return false,
                };
                match dispatched {
                    Ok(again) => {
                        headers =
                            std::borrow::Cow::Owned(dispatcher.response_headers(&again.lease));
                        access.worker = Some(again.lease.grant.worker.clone());
                        generation = again;
                        text.clear();
                    }
                    Err(err) => {
                        let err = err.for_input(meta.input_param);
                        return error(session, render, &err, &[]).await;
                    }
                }
            }
            Next::Failed(err) | Next::WorkerGone(err) => {
                return error(session, render, &err, &headers).await;
            }
        }
    };
    release(generation);
    access.finished(
        dispatcher.metrics(),
        finished.prompt_tokens,
        finished.completion_tokens,
        finished.cached_prompt_tokens,
    );
    let body = render.body(&text, &finished);
    if let Some(finish) = render.finish() {
        finish.await;
    }
    respond::full_with(
        session,
        StatusCode::OK,
        "application/json",
        body.into(),
        &headers,
    )
    .await
}

/// Streaming: what the render writes per delta, then its end. Events that
/// are already waiting are written together (one write, one flush), so a
/// busy gateway does not pay a syscall per token; nothing ever waits to be
/// batched.
async fn stream(
    steps: Steps<'_>,
    mut generation: Generation,
    render: &mut dyn Render,
    headers: &respond::Extra,
) -> bool {
    let Steps {
        session,
        meta,
        drain,
        dispatcher,
        access,
    } = steps;
    let started = if render.stream_content_type() == "text/event-stream" {
        respond::start_events(session, headers).await
    } else {
        respond::start_stream(session, render.stream_content_type(), headers).await
    };
    if !started {
        return false;
    }
    let mut out = BytesMut::new();
    render.stream_start(&mut out);
    loop {
        let next = if out.is_empty() {
            next_event(session, &mut generation, meta, drain).await
        } else {
            match next_event(session, &mut generation, meta, drain).now_or_never() {
                Some(next) => next,
                None => {
                    if session
                        .write_response_body(out.split().freeze(), false)
                        .await
                        .is_err()
                    {
                        return false;
                    }
                    continue;
                }
            }
        };
        match next {
            Next::ClientGone => {
                dispatcher.metrics().client_left(Departure::Generating);
                return false;
            }
            Next::Cut => {
                // Headers are out: say why in-band, and end the stream
                // properly so the client is not left with a broken one.
                tracing::warn!(request_id = %meta.id, "stream cut at the end of the shutdown grace period");
                render.stream_cut(&mut out);
                let _ = session.write_response_body(out.freeze(), true).await;
                return false;
            }
            Next::Text(delta) => {
                if !delta.is_empty() {
                    access.token();
                }
                render.stream_text(&delta, &mut out);
            }
            Next::Failed(err) | Next::WorkerGone(err) => {
                // Headers are out; report in-band, then end.
                tracing::warn!(request_id = %meta.id, error = %err, "generation failed mid-stream");
                render.stream_error(&err, &mut out);
                let _ = session.write_response_body(out.freeze(), true).await;
                return false;
            }
            Next::Finished(finished) => {
                generation.account(&finished);
                release(generation);
                access.finished(
                    dispatcher.metrics(),
                    finished.prompt_tokens,
                    finished.completion_tokens,
                    finished.cached_prompt_tokens,
                );
                render.stream_end(&finished, &mut out);
                if let Some(finish) = render.finish() {
                    finish.await;
                }
                return session
                    .write_response_body(out.freeze(), true)
                    .await
                    .is_ok();
            }
        }
    }
}

/// Why a request must stop before its answer is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    ClientGone,
    /// The shutdown grace period is over.
    Cut,
}

/// Resolves when the client leaves or the shutdown grace period ends;
/// pending otherwise.
pub async fn interrupted(session: &mut ServerSession, drain: &Drain) -> Interrupt {
    let interrupt = tokio::select! {
        () = client_gone(session) => Interrupt::ClientGone,
        () = drain.cut() => Interrupt::Cut,
    };
    if interrupt == Interrupt::Cut {
        // The answer is not complete: the connection cannot be reused.
        session.set_keepalive(None);
    }
    interrupt
}

/// Resolves when the client closes the connection (or resets its HTTP/2
/// stream); pending otherwise. Bytes of a pipelined next request are not a
/// departure: pingora keeps them for that request (pipelining is enabled on
/// every HTTP/1.1 session, see `connection.rs`) and this stays pending.
pub async fn client_gone(session: &mut ServerSession) {
    loop {
        match session.read_body_or_idle(true).await {
            Err(_) => return,
            Ok(Some(_)) => continue,
            Ok(None) => std::future::pending::<()>().await,
        }
    }
}
