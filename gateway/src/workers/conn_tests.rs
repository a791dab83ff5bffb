//! The worker connection against a scripted HTTP/2 worker on loopback:
//! calls go through tonic's client over it, a restarted worker is reached
//! again, and every way of losing a worker is `Unavailable` (the worker is
//! gone: the dispatcher retries elsewhere), none a hang.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use herd_proto::error::{FailureClass, WorkerFailure};
use herd_proto::v1 as pb;
use herd_proto::v1::worker_client::WorkerClient;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::*;

/// What the scripted worker does with a call.
#[derive(Clone, Copy)]
enum Worker {
    /// Answers with a status whose `worker_id` is the call's path.
    Answers,
    /// Closes the connection as soon as a call arrives.
    DropsCalls,
    /// Completes the HTTP/2 handshake, then reads nothing more (pings
    /// included), holding the connection open.
    FallsSilent,
}

/// Serves on `listener` until aborted; aborting closes every connection.
fn serve(listener: TcpListener, worker: Worker) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            connections.spawn(connection(tcp, worker));
        }
    })
}

async fn connection(tcp: TcpStream, worker: Worker) {
    let Ok(mut conn) = h2::server::handshake(tcp).await else {
        return;
    };
    if let Worker::FallsSilent = worker {
        let _held = conn;
        return std::future::pending().await;
    }
    while let Some(Ok((request, mut respond))) = conn.accept().await {
        if let Worker::DropsCalls = worker {
            return;
        }
        let head = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let mut send = respond.send_response(head, false).unwrap();
        let reply = pb::StatusResponse {
            worker_id: request.uri().path().to_owned(),
            ..Default::default()
        };
        let message = reply.encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(&message);
        send.send_data(frame.into(), false).unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        send.send_trailers(trailers).unwrap();
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn client(addr: SocketAddr, keepalive: KeepAlive) -> WorkerClient<WorkerConn> {
    let conn = WorkerConn::with_keepalive(&format!("http://{addr}"), None, keepalive).unwrap();
    let origin = conn.origin();
    WorkerClient::with_origin(conn, origin)
}

/// One `Status` call, bounded: a hang fails the test.
async fn status(client: &mut WorkerClient<WorkerConn>) -> Result<pb::StatusResponse, Status> {
    tokio::time::timeout(
        Duration::from_secs(10),
        client.status(pb::StatusRequest::default()),
    )
    .await
    .expect("the call hung")
    .map(tonic::Response::into_inner)
}

fn assert_gone(status: &Status) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        WorkerFailure::from_status(status).class,
        FailureClass::Gone,
        "{status:?}"
    );
}

#[tokio::test]
async fn calls_reach_the_worker_and_a_restarted_worker_again() {
    let (listener, addr) = listener().await;
    let worker = serve(listener, Worker::Answers);
    let mut client = client(addr, KEEPALIVE);
    for _ in 0..3 {
        let reply = status(&mut client).await.unwrap();
        assert_eq!(reply.worker_id, "/herd.worker.v1.Worker/Status");
    }
    // The worker goes away: its connection closes, calls fail.
    worker.abort();
    let _ = worker.await;
    assert_gone(&status(&mut client).await.unwrap_err());
    // It comes back on the same address: the next call connects again.
    let worker = serve(TcpListener::bind(addr).await.unwrap(), Worker::Answers);
    let reply = status(&mut client).await.unwrap();
    assert_eq!(reply.worker_id, "/herd.worker.v1.Worker/Status");
    worker.abort();
}

#[tokio::test]
async fn a_worker_that_drops_the_call_is_gone() {
    let (listener, addr) = listener().await;
    let worker = serve(listener, Worker::DropsCalls);
    assert_gone(&status(&mut client(addr, KEEPALIVE)).await.unwrap_err());
    worker.abort();
}

#[tokio::test]
async fn nothing_listening_is_gone() {
    let (listener, addr) = listener().await;
    drop(listener);
    assert_gone(&status(&mut client(addr, KEEPALIVE)).await.unwrap_err());
}

#[tokio::test]
async fn a_worker_that_stops_answering_pings_is_given_up() {
    let (listener, addr) = listener().await;
    let worker = serve(listener, Worker::FallsSilent);
    let quick = KeepAlive {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(200),
    };
    // Without pings the call would wait forever on the open connection.
    assert_gone(&status(&mut client(addr, quick)).await.unwrap_err());
    worker.abort();
}
