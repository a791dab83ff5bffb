//! A standalone worker's `GET /metrics` (`--metrics-listen`): the smallest
//! HTTP/1.1 server that answers a scrape — one request per connection,
//! head read under a deadline and a size limit, `Connection: close`. In
//! `herd serve` the gateway's `/metrics` carries the worker's metrics
//! instead.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::WorkerMetrics;

/// Longest request head read.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long a connection has to send its head and take the answer.
const DEADLINE: Duration = Duration::from_secs(10);

/// Serves scrapes on `listener` until the task is dropped or aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<WorkerMetrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(DEADLINE, answer(stream, &metrics))
                .await
                .is_err()
            {
                tracing::debug!("metrics listener: a scrape timed out");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &WorkerMetrics) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD_BYTES {
            let _ = stream
                .write_all(&response(
                    "431 Request Header Fields Too Large",
                    "text/plain",
                    "",
                ))
                .await;
            return;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let reply = match (method, path) {
        (b"GET", b"/metrics") => response(
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            &metrics.render(),
        ),
        (b"GET", b"/healthz") => response("200 OK", "text/plain", "ok\n"),
        (b"GET", _) => response("404 Not Found", "text/plain", "only /metrics here\n"),
        _ => response("405 Method Not Allowed", "text/plain", "GET only\n"),
    };
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
}

fn response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
