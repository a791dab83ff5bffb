//! The gateway's HTTP/2 connection to one worker, driven by the `h2` crate
//! directly under tonic's gRPC codec.
//!
//! tonic's `Channel` runs each call through three tasks besides the
//! request's own: a tower `Buffer` task, hyper's dispatch into the
//! connection task, and per call a spawned task that waits for the response
//! (and one more that pumps the request body, which goes out as a second
//! write after the headers). Herd's calls are unary requests (the message
//! is ready when the call starts): here the request's task opens the
//! stream, queues headers and message together (one write), and waits for
//! the response itself; only the connection's task remains between it and
//! the socket.
//!
//! A [`WorkerConn`] connects on first use and again on the first call after
//! its connection closed (the worker restarted, went away, sent GOAWAY, or
//! stopped answering pings); concurrent callers share one attempt. A call
//! the closed connection never took is sent once more on a new one. What
//! fails is a `Status::unavailable`, which the dispatcher treats as the
//! worker being gone (retried elsewhere). Connection settings: 2 s connect
//! timeout, TCP_NODELAY, HTTP/2 pings every 10 s that must be answered
//! within 5 s; `https://` endpoints over rustls with ALPN `h2`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::Uri;
use http_body::Frame;
use http_body_util::BodyExt as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::Status;

/// How long opening the TCP connection (and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings on an open connection, and how long an answer may take.
const KEEPALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_secs(10),
    timeout: Duration::from_secs(5),
};
/// Flow-control windows (hyper's defaults for a client, which tonic used).
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 5 << 20;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often an open connection is pinged, and how long an answer may take
/// before the connection counts as lost.
#[derive(Clone, Copy, Debug)]
struct KeepAlive {
    interval: Duration,
    timeout: Duration,
}

/// A lazily (re)connecting HTTP/2 connection to one worker; clones share it.
#[derive(Clone)]
pub struct WorkerConn(Arc<Shared>);

impl std::fmt::Debug for WorkerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConn")
            .field("origin", &self.0.origin)
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// `scheme://host:port`, what tonic puts in front of each call's path.
    origin: Uri,
    /// `host:port` to connect to.
    address: String,
    /// Set for `https://` endpoints.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    keepalive: KeepAlive,
    /// The open connection, if any.
    current: parking_lot::Mutex<Option<Open>>,
    /// Held while connecting, so that callers share one attempt.
    connecting: tokio::sync::Mutex<()>,
}

/// An open connection: its request handle, and whether its task ended.
#[derive(Clone)]
struct Open {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Open {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl WorkerConn {
    /// A connection to `endpoint` (`http://host:port`, or `https://…` with
    /// `tls`); nothing is opened until the first call. `None` if the
    /// endpoint is not such a URI, or is `https://` without `tls`.
    pub fn new(endpoint: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Option<Self> {
        Self::with_keepalive(endpoint, tls, KEEPALIVE)
    }

    fn with_keepalive(
        endpoint: &str,
        tls: Option<&Arc<rustls::ClientConfig>>,
        keepalive: KeepAlive,
    ) -> Option<Self> {
        let uri: Uri = endpoint.parse().ok()?;
        let authority = uri.authority()?.clone();
        let tls = match uri.scheme_str()? {
            "http" => None,
            "https" => {
                let host = authority
                    .host()
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                let name = ServerName::try_from(host.to_owned()).ok()?;
                Some((TlsConnector::from(tls?.clone()), name))
            }
            _ => return None,
        };
        let port = authority
            .port_u16()
            .unwrap_or(if tls.is_some() { 443 } else { 80 });
        let origin = Uri::builder()
            .scheme(uri.scheme_str()?)
            .authority(authority.as_str())
            .path_and_query("/")
            .build()
            .ok()?;
        Some(Self(Arc::new(Shared {
            origin,
            address: format!("{}:{port}", authority.host()),
            tls,
            keepalive,
            current: parking_lot::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })))
    }

    /// What tonic's client is given as its origin.
    pub fn origin(&self) -> Uri {
        self.0.origin.clone()
    }
}

impl Shared {
    /// The open connection, connecting first if there is none.
    async fn open(&self) -> Result<Open, Status> {
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let _one = self.connecting.lock().await;
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let open = self.connect().await?;
        *self.current.lock() = Some(open.clone());
        Ok(open)
    }

    fn current(&self) -> Option<Open> {
        self.current
            .lock()
            .as_ref()
            .filter(|o| !o.is_closed())
            .cloned()
    }

    /// Forgets the connection if it is closed (a newer one stays).
    fn forget_closed(&self, open: &Open) {
        open.closed.store(true, Ordering::Release);
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(Open::is_closed) {
            *current = None;
        }
    }

    async fn connect(&self) -> Result<Open, Status> {
        let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let tcp = TcpStream::connect(&self.address).await?;
            tcp.set_nodelay(true)?;
            match &self.tls {
                None => handshake(tcp, self.keepalive).await,
                Some((connector, name)) => {
                    let tls = connector.connect(name.clone(), tcp).await?;
                    handshake(tls, self.keepalive).await
                }
            }
        })
        .await;
        match opened {
            Ok(Ok(open)) => Ok(open),
            Ok(Err(e)) => Err(Status::unavailable(format!(
                "cannot connect to the worker at {}: {e}",
                self.origin
            ))),
            Err(_) => Err(Status::unavailable(format!(
                "connecting to the worker at {} timed out",
                self.origin
            ))),
        }
    }

    /// Opens a stream for `head` and sends `body` with it. `Err(None)`:
    /// the connection closed before it took the request.
    async fn send(
        &self,
        open: Open,
        head: http::Request<()>,
        body: Bytes,
    ) -> Result<h2::client::ResponseFuture, Option<h2::Error>> {
        let mut sender = match open.sender.clone().ready().await {
            Ok(sender) => sender,
            Err(_) => {
                self.forget_closed(&open);
                return Err(None);
            }
        };
        let (response, mut stream) = match sender.send_request(head, body.is_empty()) {
            Ok(sent) => sent,
            Err(e) if e.is_go_away() || e.is_io() => {
                self.forget_closed(&open);
                return Err(None);
            }
            Err(e) => return Err(Some(e)),
        };
        if !body.is_empty() {
            stream.send_data(body, true).map_err(Some)?;
        }
        Ok(response)
    }
}

/// The HTTP/2 handshake on `io`; the connection is driven by its own task,
/// which also pings the worker and closes a connection it stops answering.
async fn handshake<IO>(io: IO, keepalive: KeepAlive) -> std::io::Result<Open>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(std::io::Error::other)?;
    let closed = Arc::new(AtomicBool::new(false));
    let pings = connection.ping_pong();
    let ended = closed.clone();
    tokio::spawn(async move {
        let keepalive = async {
            let Some(mut pings) = pings else {
                return std::future::pending().await;
            };
            loop {
                tokio::time::sleep(keepalive.interval).await;
                let pong = tokio::time::timeout(keepalive.timeout, pings.ping(h2::Ping::opaque()));
                if !matches!(pong.await, Ok(Ok(_))) {
                    return;
                }
            }
        };
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, "worker connection closed");
                }
            }
            () = keepalive => tracing::debug!("a worker stopped answering pings; closing its connection"),
        }
        ended.store(true, Ordering::Release);
    });
    Ok(Open { sender, closed })
}

impl tower_service::Service<http::Request<tonic::body::Body>> for WorkerConn {
    type Response = http::Response<ResponseBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is the connection's: it is checked (and opened) per call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            let (head, body) = request.into_parts();
            // Every worker RPC takes one message: it is encoded by now.
            let body = body.collect().await?.to_bytes();
            let head = http::Request::from_parts(head, ());
            let open = shared.open().await?;
            let response = match shared.send(open, head.clone(), body.clone()).await {
                Ok(response) => response,
                Err(Some(e)) => return Err(status_of(&shared.origin, &e).into()),
                // Once more on a new connection.
                Err(None) => {
                    let open = shared.open().await?;
                    shared.send(open, head, body).await.map_err(|e| match e {
                        Some(e) => status_of(&shared.origin, &e),
                        None => Status::unavailable(format!(
                            "the worker at {} closed the connection",
                            shared.origin
                        )),
                    })?
                }
            };
            let response = response.await.map_err(|e| status_of(&shared.origin, &e))?;
            let origin = shared.origin.clone();
            Ok(response.map(|stream| ResponseBody { stream, origin }))
        })
    }
}

/// A response's body as tonic reads it: the data (its flow-control
/// capacity given back as it is read), then the trailers.
#[derive(Debug)]
pub struct ResponseBody {
    stream: h2::RecvStream,
    origin: Uri,
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if !this.stream.is_end_stream() {
            match ready!(this.stream.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.stream.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(status_of(&this.origin, &e)))),
                None => {}
            }
        }
        match ready!(this.stream.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(status_of(&this.origin, &e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

/// A failed stream as a gRPC status (gRPC's mapping of HTTP/2 errors): the
/// connection lost, or the stream refused, is the worker being unavailable.
fn status_of(origin: &Uri, error: &h2::Error) -> Status {
    use h2::Reason;
    match error.reason() {
        _ if error.is_io() || error.is_go_away() => {
            Status::unavailable(format!("the worker at {origin} is unreachable: {error}"))
        }
        Some(Reason::REFUSED_STREAM) => {
            Status::unavailable(format!("the worker at {origin} refused the call: {error}"))
        }
        Some(Reason::CANCEL) => Status::cancelled(error.to_string()),
        Some(Reason::ENHANCE_YOUR_CALM) => Status::resource_exhausted(error.to_string()),
        _ => Status::internal(format!("HTTP/2 error from the worker at {origin}: {error}")),
    }
}

#[cfg(test)]
#[path = "conn_tests.rs"]
mod tests;
