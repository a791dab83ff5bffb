//! HTTP/1.1 at the socket, against the production gateway on port 0 with no
//! workers (these are about the connection, not about models): pipelining,
//! protocol errors answered instead of closed, the request-head deadline,
//! absolute-form targets, and the drain at shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd_gateway::drain::DrainReport;
use herd_gateway::state::MemoryStore;
use herd_gateway::{Gateway, GatewayConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bound on every wait for the server (it answers in milliseconds).
const WAIT: Duration = Duration::from_secs(20);

struct TestGateway {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    run: JoinHandle<DrainReport>,
}

async fn start(mut config: GatewayConfig) -> TestGateway {
    config.listen = "127.0.0.1:0".parse().unwrap();
    let gateway = Gateway::bind(config, Arc::new(MemoryStore::new())).unwrap();
    let addr = gateway.local_addr();
    let (stop, shutdown) = watch::channel(false);
    let run = tokio::spawn(gateway.run(shutdown));
    TestGateway { addr, stop, run }
}

async fn gateway() -> TestGateway {
    start(GatewayConfig::default()).await
}

/// One parsed response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The OpenAI-shaped error's `code`, checking the shape.
    fn error_code(&self) -> String {
        let body = self.json();
        let err = &body["error"];
        assert!(
            err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert!(err["type"].is_string(), "{body}");
        err["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// A raw client connection.
struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let (read, writer) = TcpStream::connect(addr).await.unwrap().into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    /// Reads the next response; `None` if the connection closed first.
    async fn response(&mut self) -> Option<Response> {
        tokio::time::timeout(WAIT, read_response(&mut self.reader))
            .await
            .expect("no response in time")
    }

    /// Whether the server closed the connection (EOF) with nothing more
    /// to read.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(WAIT, self.reader.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => rest.is_empty(),
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }
}

async fn read_response(reader: &mut BufReader<OwnedReadHalf>) -> Option<Response> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).await.ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':')?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        if status == 100 {
            continue;
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(len) = response.header("content-length") {
            let mut body = vec![0; len.parse().ok()?];
            reader.read_exact(&mut body).await.ok()?;
            response.body = body;
        } else if response
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).await.ok()?;
                let size = usize::from_str_radix(size.trim(), 16).ok()?;
                let mut chunk = vec![0; size + 2];
                reader.read_exact(&mut chunk).await.ok()?;
                if size == 0 {
                    break;
                }
                response.body.extend_from_slice(&chunk[..size]);
            }
        } else {
            reader.read_to_end(&mut response.body).await.ok()?;
        }
        return Some(response);
    }
}

/// Sends `request` on a new connection and reads one response.
async fn ask(addr: SocketAddr, request: &[u8]) -> Response {
    let mut client = Client::connect(addr).await;
    client.send(request).await;
    client.response().await.expect("closed without an answer")
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn three_requests_pipelined_in_one_write_get_three_answers_in_order() {
    let gw = gateway().await;
    let mut client = Client::connect(gw.addr).await;
    client
        .send(&[get("/healthz"), get("/v1/models"), get("/healthz")].concat())
        .await;
    let first = client.response().await.unwrap();
    let second = client.response().await.unwrap();
    let third = client.response().await.unwrap();
    assert_eq!(first.json()["status"], "ok");
    assert_eq!(second.json()["object"], "list");
    assert_eq!(third.json()["status"], "ok");
    // The connection stays usable.
    client.send(&get("/healthz")).await;
    assert_eq!(client.response().await.unwrap().status, 200);
}

#[tokio::test]
async fn a_post_with_a_body_and_a_get_pipelined_in_one_write_are_both_answered() {
    let gw = gateway().await;
    let mut client = Client::connect(gw.addr).await;
    client
        .send(
            &[
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{oops"
                    .to_vec(),
                get("/healthz"),
            ]
            .concat(),
        )
        .await;
    let first = client.response().await.unwrap();
    assert_eq!(first.status, 400);
    assert_eq!(first.error_code(), "invalid_json");
    let second = client.response().await.unwrap();
    assert_eq!(second.json()["status"], "ok");
}

/// Each malformed request is answered (status, error code) and the
/// connection then closed.
#[tokio::test]
async fn protocol_errors_are_answered_then_the_connection_closed() {
    let gw = gateway().await;
    let post = |extra: &str, body: &str| {
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{extra}\r\n{body}").into_bytes()
    };
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "bad Content-Length",
            post("Content-Length: abc\r\n", ""),
            400,
            "invalid_http",
        ),
        (
            "two different Content-Lengths",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            400,
            "invalid_http",
        ),
        (
            "bad chunk size",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
            400,
            "invalid_http",
        ),
        (
            "a final encoding other than chunked",
            post("Transfer-Encoding: gzip\r\n", ""),
            400,
            "invalid_http",
        ),
        (
            "NUL in a header value",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(),
            400,
            "invalid_http",
        ),
        (
            "a folded header",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n".to_vec(),
            400,
            "invalid_http",
        ),
        (
            "300 headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
            "header_too_large",
        ),
        (
            "a 200 KB target",
            format!(
                "GET /healthz?{} HTTP/1.1\r\nHost: x\r\n\r\n",
                "a".repeat(200 * 1024)
            )
            .into_bytes(),
            414,
            "uri_too_long",
        ),
        (
            "no Host in HTTP/1.1",
            b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(),
            400,
            "invalid_http",
        ),
        (
            "not HTTP at all",
            b"\x16\x03\x01hello\r\n\r\n".to_vec(),
            400,
            "invalid_http",
        ),
    ];
    for (name, request, status, code) in cases {
        let mut client = Client::connect(gw.addr).await;
        client.send(&request).await;
        let response = client
            .response()
            .await
            .unwrap_or_else(|| panic!("{name}: closed without an answer"));
        assert_eq!(response.status, status, "{name}: {response:?}");
        assert_eq!(response.error_code(), code, "{name}");
        assert_eq!(response.header("connection"), Some("close"), "{name}");
        assert!(response.body.len() < 300, "{name}: a short body");
        assert!(client.closed().await, "{name}: connection left open");
    }
}

#[tokio::test]
async fn a_two_megabyte_header_gets_431() {
    let gw = gateway().await;
    let mut client = Client::connect(gw.addr).await;
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(2 * 1024 * 1024)
    );
    // The server answers before it has read it all: write and read at once.
    let writer = tokio::spawn(async move {
        let _ = client.writer.write_all(request.as_bytes()).await;
        client.writer
    });
    let response = tokio::time::timeout(WAIT, read_response(&mut client.reader))
        .await
        .unwrap()
        .expect("closed without an answer");
    assert_eq!(response.status, 431);
    assert_eq!(response.error_code(), "header_too_large");
    drop(writer.await);
}

#[tokio::test]
async fn absolute_form_targets_are_served() {
    let gw = gateway().await;
    let host = gw.addr.to_string();
    let response = ask(
        gw.addr,
        format!("GET http://{host}/healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.json()["status"], "ok");
    // Routed like the origin form: the body is parsed (and refused).
    let response = ask(
        gw.addr,
        format!(
            "POST http://{host}/v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\n{{oops"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "invalid_json");
    // A Host that names another authority than the target is ambiguous.
    let response = ask(
        gw.addr,
        format!("GET http://{host}/healthz HTTP/1.1\r\nHost: other.example\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "invalid_http");
}

#[tokio::test]
async fn http_1_0_and_connection_close_get_their_answer_then_a_close() {
    let gw = gateway().await;
    for request in [
        b"GET /healthz HTTP/1.0\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
    ] {
        let mut client = Client::connect(gw.addr).await;
        client.send(&request).await;
        let response = client.response().await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("connection"), Some("close"));
        assert!(client.closed().await);
    }
}

#[tokio::test]
async fn a_head_trickled_past_the_deadline_gets_408() {
    let gw = start(GatewayConfig {
        header_timeout_secs: 1,
        ..GatewayConfig::default()
    })
    .await;
    let Client {
        mut reader,
        mut writer,
    } = Client::connect(gw.addr).await;
    let answer = tokio::spawn(async move { read_response(&mut reader).await });
    let head = get("/healthz");
    // One byte every 100 ms (a slowloris client), until the server answers;
    // the last byte is never sent.
    let started = Instant::now();
    let mut sent = 0;
    while !answer.is_finished() {
        assert!(started.elapsed() < WAIT, "no answer to a trickled head");
        if sent < head.len() - 1 && writer.write_all(&head[sent..=sent]).await.is_ok() {
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = answer.await.unwrap();
    let response = response.expect("closed without an answer");
    assert_eq!(response.status, 408);
    assert_eq!(response.error_code(), "request_timeout");
    assert!(sent < head.len(), "the head was never completed");
}

/// Connects until the listener refuses (bounded); panics if it never does.
async fn wait_refused(addr: SocketAddr) {
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(started.elapsed() < WAIT, "still accepting after the signal");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a request the server reads the head of but whose body is not
/// complete: it stays in flight until the client sends the rest.
async fn request_in_flight(addr: SocketAddr) -> Client {
    let mut client = Client::connect(addr).await;
    client
        .send(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .await;
    // `100 Continue` says the server has read the head and waits for the body.
    let mut line = String::new();
    tokio::time::timeout(WAIT, client.reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line:?}");
    let mut blank = String::new();
    client.reader.read_line(&mut blank).await.unwrap();
    client.send(b"{o").await;
    client
}

#[tokio::test]
async fn shutdown_refuses_new_connections_closes_idle_ones_and_answers_those_in_flight() {
    let gw = gateway().await;
    // An idle keep-alive connection.
    let mut idle = Client::connect(gw.addr).await;
    idle.send(&get("/healthz")).await;
    assert_eq!(idle.response().await.unwrap().status, 200);
    let mut busy = request_in_flight(gw.addr).await;

    gw.stop.send(true).unwrap();
    wait_refused(gw.addr).await;
    assert!(idle.closed().await, "an idle connection stays open");
    assert!(
        !gw.run.is_finished(),
        "the request in flight was not waited for"
    );

    // The request in flight completes and is answered, then the
    // connection closes.
    busy.send(b"ps}").await;
    let response = busy.response().await.unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(response.error_code(), "invalid_json");
    assert!(busy.closed().await);
    let report = tokio::time::timeout(WAIT, gw.run).await.unwrap().unwrap();
    assert_eq!(report, DrainReport { cut: 0 });
}

#[tokio::test]
async fn requests_still_running_after_the_grace_period_are_cut_and_counted() {
    let gw = start(GatewayConfig {
        shutdown_grace_secs: 1,
        ..GatewayConfig::default()
    })
    .await;
    let _stuck = request_in_flight(gw.addr).await;
    gw.stop.send(true).unwrap();
    let report = tokio::time::timeout(WAIT, gw.run).await.unwrap().unwrap();
    assert_eq!(report, DrainReport { cut: 1 });
    assert!(!report.complete());
}
