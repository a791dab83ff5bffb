//! Times the store against a real registry (Debian's `docker-registry` on a
//! loopback port): package, push, pull, cached pull, and a pull resumed
//! after a cut at half the GGUF. Run with
//! `cargo run --release -p herd-store --features testing --example bench_transfer`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use herd_store::testing::{CuttingProxy, TestRegistry, test_model_path};
use herd_store::{PackageRequest, Registry, RegistryOptions, Store};

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let registry_process = TestRegistry::start();
    let registry = Registry::new(RegistryOptions::default());
    let quiet: herd_store::ProgressFn = Arc::new(|_| {});
    let gguf_bytes = std::fs::metadata(test_model_path()).unwrap().len();
    println!(
        "model: {} ({:.1} MB)",
        test_model_path().display(),
        gguf_bytes as f64 / 1e6
    );
    println!("step                          seconds (each round)");
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("package (hash + copy in)", vec![]),
        ("push (fresh registry repo)", vec![]),
        ("pull (empty store)", vec![]),
        ("pull again (cached)", vec![]),
        ("pull resumed after cut at 1/2", vec![]),
    ];
    let mut resumed_bytes = Vec::new();
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "docker.io").unwrap();
        // A new repository each round, so every push uploads every blob.
        let tag = format!("{}/bench/smollm2-r{round}:v1", registry_process.host());
        let reference = store.parse_ref(&tag).unwrap();
        let t = Instant::now();
        let model = store
            .package(
                &PackageRequest {
                    gguf: test_model_path(),
                    ..PackageRequest::default()
                },
                &reference,
            )
            .unwrap();
        rows[0].1.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        registry
            .push(&store, &model, &reference, quiet.clone())
            .await
            .unwrap();
        rows[1].1.push(t.elapsed().as_secs_f64());
        store.remove(&tag, true).unwrap();
        let t = Instant::now();
        registry
            .pull(&store, &reference, quiet.clone())
            .await
            .unwrap();
        rows[2].1.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let cached = registry
            .pull(&store, &reference, quiet.clone())
            .await
            .unwrap();
        assert!(cached.cached);
        rows[3].1.push(t.elapsed().as_secs_f64());
        store.remove(&tag, true).unwrap();
        let proxy = CuttingProxy::start(registry_process.addr(), gguf_bytes / 2).await;
        let via = store
            .parse_ref(&format!("{}/bench/smollm2-r{round}:v1", proxy.host()))
            .unwrap();
        assert!(registry.pull(&store, &via, quiet.clone()).await.is_err());
        proxy.unlimit();
        let t = Instant::now();
        let resumed = registry.pull(&store, &via, quiet.clone()).await.unwrap();
        rows[4].1.push(t.elapsed().as_secs_f64());
        assert!(resumed.transferred < gguf_bytes);
        resumed_bytes.push(resumed.transferred);
    }
    for (name, times) in rows {
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
        println!("{name:<30}{}", shown.join("  "));
    }
    let shown: Vec<String> = resumed_bytes
        .iter()
        .map(|b| format!("{:.1} MB", *b as f64 / 1e6))
        .collect();
    println!("bytes fetched by the resumed pulls: {}", shown.join(", "));
}
