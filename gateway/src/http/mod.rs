//! The HTTP face of the gateway: a pingora [`HttpServerApp`] that routes each
//! request (parse → dispatch → stream back) and answers every failure in
//! OpenAI's error shape.

mod body;
mod embed;
mod generate;
mod info;
mod respond;
pub mod routes;
mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use http::StatusCode;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use tokio::sync::Notify;

use self::body::BodyError;
use self::routes::Route;
use crate::dispatch::Dispatcher;
use crate::openai;

/// Longest a single write (or draining an unread body) may block.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Requests being served, so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The gateway's HTTP application.
#[derive(Debug)]
pub struct HttpApp {
    dispatcher: Dispatcher,
    max_body_bytes: usize,
    options: HttpServerOptions,
    in_flight: Arc<InFlight>,
}

impl HttpApp {
    pub fn new(dispatcher: Dispatcher, max_body_bytes: usize, http2: bool) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = http2;
        Self {
            dispatcher,
            max_body_bytes,
            options,
            in_flight: Arc::default(),
        }
    }

    pub fn in_flight(&self) -> Arc<InFlight> {
        self.in_flight.clone()
    }

    /// Serves one request under its request id (echoed as `x-request-id`,
    /// and a field of every log line about it); returns whether the
    /// connection may be reused.
    async fn handle(&self, session: &mut ServerSession) -> bool {
        use tracing::Instrument as _;
        let _guard = self.in_flight.enter();
        let request_id = respond::assign_request_id(session);
        let span = tracing::info_span!("request", request_id = %request_id);
        self.route(session).instrument(span).await
    }

    async fn route(&self, session: &mut ServerSession) -> bool {
        let header = session.req_header();
        let route = match routes::route(&header.method, header.uri.path()) {
            Ok(route) => route,
            Err(err) => {
                // Take in a body nobody will read, so the client can read
                // the answer (and the connection can be reused).
                body::discard_rest(session, self.max_body_bytes).await;
                if !session.is_body_done() {
                    session.set_keepalive(None);
                }
                return respond::error(session, &err).await && session.is_body_done();
            }
        };
        let registry = self.dispatcher.registry();
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
            Route::Models => info::models(session, registry).await,
            Route::Model(id) => {
                info::model(session, registry, self.dispatcher.default_registry(), &id).await
            }
            Route::Status => info::status(session, registry).await,
            Route::Store(store_route) => {
                store::serve(&self.dispatcher, session, store_route, self.max_body_bytes).await
            }
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
                            Ok(request) => embed::serve(&self.dispatcher, session, request).await,
                            Err(err) => respond::error(session, &err).await,
                        };
                    }
                    Route::ChatCompletions => openai::parse_chat(&body),
                    _ => openai::parse_completion(&body),
                };
                match parsed {
                    Ok(request) => generate::serve(&self.dispatcher, session, request).await,
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
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) | Err(_) => return None,
        }
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        // A client that stops reading must not hold a slot forever.
        session.set_write_timeout(Some(WRITE_TIMEOUT));
        session.set_total_drain_timeout(Some(WRITE_TIMEOUT));
        if !self.handle(&mut session).await {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(Some(stream)) => Some(ReusedHttpStream::from_reusable_stream(stream, settings)),
            Ok(None) | Err(_) => None,
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
