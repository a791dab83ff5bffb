//! Smoke test of the load tool against a worker running the **mock engine**,
//! in process: the worker's gRPC server and the gateway (in-memory state
//! store) on loopback port 0. Checks that every request succeeded and that
//! the report round-trips through JSON; no timing assertions.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use herd_gateway::state::{Keys, MemoryStore, StateStore, WorkerRecord, encode};
use herd_gateway::{Gateway, GatewayConfig};
use herd_loadtest::{Args, Report, chart, run};
use herd_worker::{GrpcServer, MockConfig, MockEngine};
use tokio::sync::watch;

struct Cluster {
    gateway_url: String,
    worker_url: String,
    stop: watch::Sender<bool>,
}

async fn start_mock_cluster() -> Cluster {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let engine = MockEngine::new(MockConfig {
        models: vec!["m1".into(), "m2".into()],
        slots: 16,
        tokens_per_second: 2000.0,
        ..MockConfig::default()
    })
    .unwrap();
    let worker = GrpcServer::bind(loopback, Some("mock".into()), Arc::new(engine))
        .await
        .unwrap();
    let worker_url = format!("grpc://{}", worker.local_addr());
    let store = Arc::new(MemoryStore::new());
    let record = WorkerRecord {
        id: worker.worker_id().to_owned(),
        endpoint: format!("http://{}", worker.local_addr()),
        ..WorkerRecord::default()
    };
    store
        .put(&Keys::default().worker(&record.id), encode(&record), None)
        .await
        .unwrap();
    let (stop, stopped) = watch::channel(false);
    let mut worker_stopped = stopped.clone();
    tokio::spawn(worker.serve(async move {
        let _ = worker_stopped.wait_for(|s| *s).await;
    }));
    let gateway = Gateway::bind(
        GatewayConfig {
            listen: loopback,
            ..GatewayConfig::default()
        },
        store,
    )
    .unwrap();
    let gateway_url = format!("http://{}", gateway.local_addr());
    tokio::spawn(gateway.run(stopped));
    Cluster {
        gateway_url,
        worker_url,
        stop,
    }
}

fn assert_all_succeeded(report: &Report) {
    for target in &report.targets {
        for level in &target.levels {
            let s = &level.stats;
            assert!(s.ok > 0, "{}: no request completed", target.target);
            assert_eq!(s.failed, 0, "{}: errors {:?}", target.target, s.errors);
            assert!(s.output_tokens > 0);
            assert!(s.e2e_ms.is_some());
        }
    }
    // The JSON parses back (floats may differ in the last digit).
    let json = serde_json::to_string_pretty(report).unwrap();
    let parsed: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed.targets.len(), report.targets.len());
    for (p, r) in parsed.targets.iter().zip(&report.targets) {
        assert_eq!(p.target, r.target);
        let ok = |t: &herd_loadtest::report::TargetReport| {
            t.levels
                .iter()
                .map(|l| (l.load, l.stats.ok))
                .collect::<Vec<_>>()
        };
        assert_eq!(ok(p), ok(r));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_smoke_with_mock_engine_through_gateway_and_grpc() {
    let cluster = start_mock_cluster().await;
    // Streaming chat, closed loop at two levels, gateway vs worker directly.
    let args = Args::parse_from([
        "herd-loadtest",
        "--target",
        &cluster.gateway_url,
        "--compare",
        &cluster.worker_url,
        "--model",
        "m1",
        "--stream",
        "--concurrency",
        "1,4",
        "--duration",
        "1",
        "--requests",
        "100",
        "--rounds",
        "2",
        "--max-tokens",
        "8",
        "--timeout",
        "10",
        "--quiet",
    ]);
    let report = run(&args).await.unwrap();
    assert_eq!(report.targets.len(), 2);
    assert_eq!(report.targets[0].levels.len(), 2);
    assert_eq!(report.comparison.len(), 2);
    assert_all_succeeded(&report);
    let first = &report.targets[0].levels[0].stats;
    assert!(first.ttft_ms.is_some() && first.itl_ms.is_some());
    let table = report.table();
    eprintln!("{table}");
    assert!(table.contains("compare vs target"));
    let svg = std::env::temp_dir().join(format!("herd-loadtest-smoke-{}.svg", std::process::id()));
    chart::write(&report, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg"));
    let _ = std::fs::remove_file(&svg);

    // Agents over two models, non-streaming, open loop, through the gateway.
    let args = Args::parse_from([
        "herd-loadtest",
        "--target",
        &cluster.gateway_url,
        "--scenario",
        "agents",
        "--agents",
        "4",
        "--turns",
        "3",
        "--model",
        "m1",
        "--model",
        "m2",
        "--rate",
        "40",
        "--duration",
        "1",
        "--max-tokens",
        "4",
        "--timeout",
        "10",
        "--quiet",
    ]);
    let report = run(&args).await.unwrap();
    assert_all_succeeded(&report);

    // Mixed models straight to the worker's gRPC.
    let args = Args::parse_from([
        "herd-loadtest",
        "--target",
        &cluster.worker_url,
        "--scenario",
        "mixed-models",
        "--model",
        "m1",
        "--model",
        "m2",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--requests",
        "50",
        "--quiet",
    ]);
    let report = run(&args).await.unwrap();
    assert_all_succeeded(&report);
    let _ = cluster.stop.send(true);
}
