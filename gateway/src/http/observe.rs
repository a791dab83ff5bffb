//! The gateway observed: `GET /metrics` (Prometheus, the gateway's metrics
//! and, in `herd serve`, its worker's) and `GET /logs` (the recent log
//! lines; `?follow=true` keeps the response open and streams new ones).

use bytes::{BufMut, BytesMut};
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use tokio::sync::broadcast::error::RecvError;

use super::generate::interrupted;
use super::respond;
use super::store::Query;
use crate::dispatch::Dispatcher;
use crate::drain::Drain;
use crate::error::ApiError;
use crate::logs;
use crate::metrics::CONTENT_TYPE;

/// `GET /metrics`.
pub async fn metrics(session: &mut ServerSession, dispatcher: &Dispatcher, drain: &Drain) -> bool {
    if !dispatcher.metrics().is_on() {
        // Off (`metrics = false`): as if the route did not exist.
        let err = ApiError::RouteNotFound {
            method: "GET".into(),
            path: "/metrics".into(),
        };
        return respond::error(session, &err).await;
    }
    let report = dispatcher.scheduler().report();
    let snapshot = dispatcher.roster().snapshot();
    // This request is one of those in flight; it is not counted.
    let in_flight = drain.count().saturating_sub(1);
    let body = dispatcher.metrics().render(&report, &snapshot, in_flight);
    respond::full(session, StatusCode::OK, CONTENT_TYPE, body.into()).await
}

/// `GET /logs[?follow=true]`: plain text, one line per event.
pub async fn logs(session: &mut ServerSession, drain: &Drain) -> bool {
    let follow = Query::parse(session.req_header().uri.query().unwrap_or("")).flag("follow");
    let ring = logs::ring();
    if !follow {
        let mut body = BytesMut::new();
        for line in ring.recent() {
            body.put_slice(line.as_bytes());
            body.put_u8(b'\n');
        }
        return respond::full(
            session,
            StatusCode::OK,
            "text/plain; charset=utf-8",
            body.freeze(),
        )
        .await;
    }
    let (recent, mut new_lines) = ring.follow();
    if !respond::start_stream(session, "text/plain; charset=utf-8", &[]).await {
        return false;
    }
    let mut out = BytesMut::new();
    for line in recent {
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    loop {
        if !out.is_empty()
            && session
                .write_response_body(out.split().freeze(), false)
                .await
                .is_err()
        {
            return false;
        }
        let line = tokio::select! {
            line = new_lines.recv() => line,
            _ = interrupted(session, drain) => return false,
            () = drain.stopping() => {
                // The gateway stops: end the response properly.
                let _ = session.write_response_body(out.freeze(), true).await;
                return false;
            }
        };
        match line {
            Ok(line) => {
                out.put_slice(line.as_bytes());
                out.put_u8(b'\n');
                // Lines already waiting go out in the same write.
                while let Ok(line) = new_lines.try_recv() {
                    out.put_slice(line.as_bytes());
                    out.put_u8(b'\n');
                }
            }
            Err(RecvError::Lagged(skipped)) => {
                out.put_slice(format!("… {skipped} lines skipped\n").as_bytes());
            }
            Err(RecvError::Closed) => {
                let _ = session.write_response_body(out.freeze(), true).await;
                return false;
            }
        }
    }
}
