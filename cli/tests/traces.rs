//! OpenTelemetry traces end to end: `herd serve` on the real model exports
//! its spans over OTLP/gRPC to a small receiver (a tonic server on
//! `opentelemetry-proto`'s trace service), one trace per request that
//! continues the client's `traceparent`, with the worker's spans children
//! of the gateway's across the gRPC hop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Herd, MODEL, chat, model_path};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::process::Command;

/// A received span: trace id, span id, parent span id (hex), name.
#[derive(Debug, Clone)]
struct Received {
    trace: String,
    id: String,
    parent: String,
    name: String,
}

#[derive(Debug, Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        trace: hex(&span.trace_id),
                        id: hex(&span.span_id),
                        parent: hex(&span.parent_span_id),
                        name: span.name,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the receiver on a free loopback port; returns its URL.
async fn start_receiver(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

#[tokio::test]
async fn a_request_is_one_trace_across_the_grpc_hop_continuing_the_clients() {
    let receiver = Receiver::default();
    let endpoint = start_receiver(receiver.clone()).await;
    let store = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_herd"));
    command
        .args(["serve", "--threads", "1", "--parallel", "1"])
        .arg("--model")
        .arg(model_path())
        .args(["--name", MODEL, "--listen", "127.0.0.1:0"])
        .arg("--store")
        .arg(store.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let (child, rest) = common::spawn_until_ready(command, "Herd is serving ").await;
    let url = rest
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches("/v1")
        .to_owned();
    let herd = Herd::attach(child, url);
    check_one_trace(&herd, &receiver, "4bf92f3577b34da6a3ce929d0e0e4736").await;
}

#[tokio::test]
async fn a_standalone_gateway_and_worker_export_one_trace_between_them() {
    let receiver = Receiver::default();
    let endpoint = start_receiver(receiver.clone()).await;
    let store = tempfile::tempdir().unwrap();
    let model = model_path();
    let worker_args = [
        "--name".as_ref(),
        MODEL.as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
    ];
    let (_worker, herd, _dir) = worker_and_gateway(&endpoint, store.path(), &worker_args).await;
    check_one_trace(&herd, &receiver, "0af7651916cd43dd8448eb211c80319c").await;
}

#[tokio::test]
async fn a_model_load_shows_in_the_trace_of_the_request_that_waited_for_it() {
    let receiver = Receiver::default();
    let endpoint = start_receiver(receiver.clone()).await;
    // The model is in the worker's store, not loaded: the first request
    // waits while the gateway has it loaded.
    let store = tempfile::tempdir().unwrap();
    let packaged = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(["package", "--gguf"])
        .arg(model_path())
        .arg("--store")
        .arg(store.path())
        .arg("traced/smollm2:v1")
        .output()
        .unwrap();
    assert!(packaged.status.success(), "{packaged:?}");
    let (_worker, herd, _dir) = worker_and_gateway(&endpoint, store.path(), &[]).await;
    let trace = "5d3b0e4b8a1c2d3e4f5a6b7c8d9e0f1a";
    let spans = send_traced(
        &herd,
        &receiver,
        trace,
        "traced/smollm2:v1",
        &["load", "load_model"],
    )
    .await;
    let one = |name: &str| {
        let found: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
        found[0].clone()
    };
    let load = one("load");
    assert_eq!(
        load.parent,
        one("queue").id,
        "the load is a child of the waiting request's queue span"
    );
    assert_eq!(
        one("load_model").parent,
        load.id,
        "the worker's load is a child of the gateway's across the gRPC hop"
    );
    assert_eq!(one("generate").parent, one("dispatch").id);
}

/// A `herd-worker` (w1: one thread, one slot, `store`, `worker_args`)
/// behind a `herd-gateway`, both exporting spans to `endpoint`; returned
/// once the gateway lists a model (with the gateway config's directory).
async fn worker_and_gateway(
    endpoint: &str,
    store: &std::path::Path,
    worker_args: &[&std::ffi::OsStr],
) -> (tokio::process::Child, Herd, tempfile::TempDir) {
    let mut worker = Command::new(common::pool::binary("herd-worker"));
    worker
        .args(["--listen", "127.0.0.1:0", "--worker-id", "w1"])
        .args(["--threads", "1", "--parallel", "1"])
        .arg("--store")
        .arg(store)
        .args(worker_args)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let (worker, rest) = common::spawn_until_ready(worker, "herd-worker w1 listening on ").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[[workers]]\nid = \"w1\"\nendpoint = \"http://{}\"\n",
            rest.trim()
        ),
    )
    .unwrap();
    let mut gateway = Command::new(common::pool::binary("herd-gateway"));
    gateway
        .arg("--config")
        .arg(&config)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let (child, rest) = common::spawn_until_ready(gateway, "herd-gateway listening on ").await;
    let herd = Herd::attach(child, rest.trim().to_owned());
    assert!(
        common::pool::eventually(Duration::from_secs(30), || async {
            herd.get("/v1/models").await.1["data"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        })
        .await,
        "the gateway never saw the worker's model"
    );
    (worker, herd, dir)
}

/// Sends one request with a `traceparent` of `trace` and checks its spans
/// as received: the gateway's continue the client's, the worker's are
/// children of the gateway's `dispatch`.
async fn check_one_trace(herd: &Herd, receiver: &Receiver, trace: &str) {
    let spans = send_traced(herd, receiver, trace, MODEL, &[]).await;

    let one = |name: &str| {
        let found: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
        found[0].clone()
    };
    let request = one("request");
    assert_eq!(
        request.parent, CLIENT_SPAN,
        "continues the client's traceparent"
    );
    assert_eq!(one("queue").parent, request.id);
    let dispatch = one("dispatch");
    assert_eq!(dispatch.parent, request.id);
    let generate = one("generate");
    assert_eq!(
        generate.parent, dispatch.id,
        "the worker's span is a child of the gateway's across the gRPC hop"
    );
    assert_eq!(one("prefill").parent, generate.id);
    assert_eq!(one("decode").parent, generate.id);
}

/// The client's span id in the `traceparent` the tests send.
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// Sends one chat request for `model` with a `traceparent` of `trace` and
/// returns the spans of that trace once the usual ones and `extra` have
/// all been received.
async fn send_traced(
    herd: &Herd,
    receiver: &Receiver,
    trace: &str,
    model: &str,
    extra: &[&str],
) -> Vec<Received> {
    let mut body = chat("Name a color.", 4);
    body["model"] = model.into();
    let response = herd
        .http
        .post(format!("{}/v1/chat/completions", herd.url))
        .header("traceparent", format!("00-{trace}-{CLIENT_SPAN}-01"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Wait for the spans of that trace (exported every 100 ms).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let spans: Vec<Received> = receiver
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace == trace)
            .cloned()
            .collect();
        let names = |n: &str| spans.iter().any(|s| s.name == n);
        if [
            "request", "queue", "dispatch", "generate", "prefill", "decode",
        ]
        .iter()
        .chain(extra)
        .all(|n| names(n))
        {
            return spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans of the trace so far: {spans:#?}\nall: {:#?}",
            receiver.0.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
