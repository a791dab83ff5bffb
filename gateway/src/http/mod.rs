//! The HTTP face of the gateway: a pingora [`HttpServerApp`] that routes each
//! request (parse → dispatch → stream back) and answers every failure in
//! OpenAI's error shape.

mod access;
mod apis;
mod body;
mod connection;
mod embed;
mod engines;
mod generate;
mod info;
mod observe;
mod ollama;
mod respond;
mod responses;
pub mod routes;
mod store;
mod unload;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::StatusCode;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use self::access::Access;
use self::body::BodyError;
use self::connection::Head;
use self::routes::Route;
use crate::dispatch::Dispatcher;
use crate::drain::Drain;
use crate::error::ApiError;
use crate::openai;

/// The gateway's HTTP application.
#[derive(Debug)]
pub struct HttpApp {
    dispatcher: Dispatcher,
    max_body_bytes: usize,
    options: HttpServerOptions,
    head_timeout: Duration,
    drain: Arc<Drain>,
    /// Stored OpenAI Responses (`store: true`).
    responses: Arc<crate::responses::ResponseStore>,
}

impl HttpApp {
    pub fn new(dispatcher: Dispatcher, max_body_bytes: usize, http2: bool) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = http2;
        Self {
            dispatcher,
            max_body_bytes,
            options,
            head_timeout: crate::config::DEFAULT_HEADER_TIMEOUT,
            drain: Arc::default(),
            responses: Arc::default(),
        }
    }

    /// How long a new connection has to send its first request head.
    #[must_use]
    pub fn with_head_timeout(mut self, timeout: Duration) -> Self {
        self.head_timeout = timeout;
        self
    }

    /// Keeps stored OpenAI Responses in the cluster's state store (under
    /// its key `prefix`), so every gateway sees them and they outlive a
    /// restart.
    #[must_use]
    pub fn with_state_store(
        mut self,
        store: Arc<dyn herd_state::StateStore>,
        prefix: &str,
    ) -> Self {
        self.responses =
            Arc::new(crate::responses::ResponseStore::default().in_state_store(store, prefix));
        self
    }

    /// The requests in flight, for shutdown to wait on (and to cut).
    pub fn drain(&self) -> Arc<Drain> {
        self.drain.clone()
    }

    /// Serves one request under its request id (echoed as `x-request-id`,
    /// and a field of every log line about it); returns whether the
    /// connection may be reused.
    async fn handle(&self, session: &mut ServerSession) -> bool {
        use tracing::Instrument as _;
        let _guard = self.drain.enter();
        let request_id = respond::assign_request_id(session);
        let span = tracing::info_span!("request", request_id = %request_id);
        crate::traces::continue_from(&span, &session.req_header().headers);
        let mut access = Access::new();
        let reusable = self
            .route(session, &mut access)
            .instrument(span.clone())
            .await;
        let status = session.response_written().map(|h| h.status.as_u16());
        let _entered = span.enter();
        access.done(
            self.dispatcher.metrics(),
            session.req_header().method.as_str(),
            status,
        );
        reusable
    }

    async fn route(&self, session: &mut ServerSession, access: &mut Access) -> bool {
        let header = session.req_header();
        let route = match routes::route(&header.method, header.uri.path()) {
            Ok(route) => {
                access.route = route.name();
                route
            }
            Err(err) => {
                // In the shape of the API the path belongs to.
                let shape = apis::shape_of(header.uri.path());
                // Take in a body nobody will read, so the client can read
                // the answer (and the connection can be reused).
                body::discard_rest(session, self.max_body_bytes).await;
                if !session.is_body_done() {
                    session.set_keepalive(None);
                }
                return respond::error_as(session, &err, &[], shape(&err)).await
                    && session.is_body_done();
            }
        };
        // API keys: who is calling, and may they call this route.
        let key = match self.dispatcher.auth().check(&route, &header.headers) {
            Ok(key) => key,
            Err(err) => {
                body::discard_rest(session, self.max_body_bytes).await;
                if !session.is_body_done() {
                    session.set_keepalive(None);
                }
                let challenge = [("www-authenticate", "Bearer".to_owned())];
                let extra: &respond::Extra = if err.status() == StatusCode::UNAUTHORIZED {
                    &challenge
                } else {
                    &[]
                };
                return respond::error_with(session, &err, extra).await && session.is_body_done();
            }
        };
        let roster = self.dispatcher.roster();
        match route {
            Route::Root => {
                respond::full(
                    session,
                    StatusCode::OK,
                    "text/plain",
                    "Herd is running\n".into(),
                )
                .await
            }
            Route::Health => {
                respond::json(session, StatusCode::OK, br#"{"status":"ok"}"#.to_vec()).await
            }
            Route::Ready => info::ready(session, roster).await,
            Route::Models => {
                let registry = self.dispatcher.default_registry();
                info::models(session, roster, key.as_ref(), registry).await
            }
            Route::Model(id) => {
                let registry = self.dispatcher.default_registry();
                info::model(session, roster, registry, &id, key.as_ref()).await
            }
            Route::Status => info::status(session, &self.dispatcher).await,
            Route::Store(store_route) => {
                let max = self.max_body_bytes;
                store::serve(&self.dispatcher, session, store_route, max, key.as_ref()).await
            }
            Route::Messages => apis::messages(self, session, key, access).await,
            Route::CountTokens => apis::count_tokens(self, session, key, access).await,
            Route::Ollama(ollama_route) => {
                ollama::serve(self, session, ollama_route, key, access).await
            }
            Route::Responses(responses_route) => {
                responses::serve(self, session, responses_route, key, access).await
            }
            Route::Running => engines::running(session, &self.dispatcher, key.as_ref()).await,
            Route::DiskUsage => engines::disk_usage(session, &self.dispatcher).await,
            Route::EngineStatus => engines::status(session, &self.dispatcher).await,
            Route::Metrics => observe::metrics(session, &self.dispatcher, &self.drain).await,
            Route::Logs => observe::logs(session, &self.drain).await,
            Route::Unload => match body::read_limited(session, self.max_body_bytes).await {
                Ok(body) => unload::serve(&self.dispatcher, session, &body).await,
                Err(BodyError::Reject(err)) => {
                    body::discard_rest(session, self.max_body_bytes.saturating_mul(4)).await;
                    session.set_keepalive(None);
                    respond::error(session, &err).await;
                    false
                }
                Err(BodyError::Gone) => false,
            },
            Route::ChatCompletions | Route::Completions | Route::Embeddings => {
                let body = match body::read_limited(session, self.max_body_bytes).await {
                    Ok(body) => body,
                    // The rest of the body is unread: take it in (bounded)
                    // so the client can read the answer, then close.
                    Err(BodyError::Reject(err)) => {
                        body::discard_rest(session, self.max_body_bytes.saturating_mul(4)).await;
                        session.set_keepalive(None);
                        respond::error(session, &err).await;
                        return false;
                    }
                    Err(BodyError::Gone) => return false,
                };
                let parsed = match route {
                    Route::Embeddings => {
                        return match openai::embeddings::parse_embeddings(&body) {
                            Ok(request) => {
                                embed::serve(
                                    &self.dispatcher,
                                    session,
                                    request,
                                    &self.drain,
                                    key,
                                    access,
                                )
                                .await
                            }
                            Err(err) => respond::error(session, &err).await,
                        };
                    }
                    Route::ChatCompletions => openai::parse_chat(&body),
                    _ => openai::parse_completion(&body),
                };
                match parsed {
                    Ok(request) => {
                        let drain = &self.drain;
                        generate::serve(&self.dispatcher, session, request, drain, key, access)
                            .await
                    }
                    Err(err) => respond::error(session, &err).await,
                }
            }
        }
    }
}

#[async_trait]
impl HttpServerApp for HttpApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match connection::read_head(&mut session, shutdown, self.head_timeout).await {
            Head::Request => {}
            Head::Close => return None,
            Head::Reject(err) => {
                respond::reject(&mut session, &err).await;
                return None;
            }
        }
        let stopping = *shutdown.borrow();
        connection::prepare(&mut session, stopping);
        if stopping {
            // Read after the signal: not admitted.
            respond::reject(&mut session, &ApiError::ShuttingDown).await;
            return None;
        }
        if !self.handle(&mut session).await {
            return None;
        }
        connection::reuse(session).await
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
