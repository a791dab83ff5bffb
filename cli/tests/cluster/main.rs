//! Cluster mode end to end: a real etcd, gateways and workers as separate
//! `herd gateway` / `herd worker` processes. The workers run the **mock
//! engine** (these tests are about membership, failures and placement, not
//! about model output). Leases live 3 s here (10 s by default) to keep the
//! tests short; a deadline that depends on it says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod responses;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use harness::{Answer, Pool, eventually};

/// Lease TTL of every process in these tests, in seconds.
const TTL: u64 = 3;
/// The most a request may take here before it counts as hung.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// A dead worker's lease expires at most one TTL after its last renewal
/// (renewed every TTL/3), and etcd reaps expired leases every 500 ms; the
/// watch then reaches the gateways in milliseconds. 1 s covers the reaping
/// and the deletion's delivery.
fn leave_deadline() -> f64 {
    TTL as f64 + 1.0
}

#[tokio::test]
async fn two_gateways_share_three_mock_workers_and_serve_two_models() {
    let pool = Pool::start(TTL).await;
    let mock = [
        "--mock-model",
        "m1",
        "--mock-model",
        "m2",
        "--mock-lazy",
        "--mock-load-ms",
        "100",
        "--mock-slots",
        "4",
        "--mock-tokens-per-second",
        "400",
    ];
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        workers.push(pool.worker(id, &mock).await);
    }
    let gateways = [pool.gateway("g1").await, pool.gateway("g2").await];
    for gateway in &gateways {
        gateway.wait_for_workers(3, 3, 10.0).await;
        assert_eq!(gateway.worker_ids().await, ["w1", "w2", "w3"]);
        assert_eq!(gateway.readiness().await["status"], "ready");
    }
    // 48 requests at once: both gateways, both models, streamed and not.
    let requests = (0..48).map(|i| {
        let gateway = &gateways[i % 2];
        let model = if (i / 2) % 2 == 0 { "m1" } else { "m2" };
        async move {
            let answer = gateway
                .chat(model, &format!("request {i}"), 8, i % 3 == 0)
                .await;
            (gateway.id.clone(), model, answer)
        }
    });
    let answers = tokio::time::timeout(REQUEST_DEADLINE, join_all(requests))
        .await
        .expect("requests finish");
    let mut served = HashSet::new();
    for (gateway, model, answer) in &answers {
        assert!(
            matches!(answer, Answer::Complete { .. }),
            "{gateway} {model}: {answer:?}"
        );
        served.insert((gateway.clone(), *model));
    }
    assert_eq!(served.len(), 4, "each gateway served each model");
    // Prefix affinity: one system prompt lands on one worker, whichever
    // gateway is asked (both hash the prefix over the same worker ids).
    let system = "You are the release-notes agent. ".repeat(40);
    let mut by_prefix = HashSet::new();
    for i in 0..6 {
        let question = format!("question {i}");
        let answer = gateways[i % 2]
            .chat_with("m1", &[("system", &system), ("user", &question)], 4, false)
            .await;
        let Answer::Complete { worker } = answer else {
            panic!("{answer:?}");
        };
        by_prefix.insert(worker);
    }
    assert_eq!(by_prefix.len(), 1, "{by_prefix:?}");
    // Each model was loaded once per replica, by one gateway or the other.
    for model in ["m1", "m2"] {
        let loads = gateways[0].model_stat(model, "loads").await
            + gateways[1].model_stat(model, "loads").await;
        assert!(loads >= 1, "{model} loaded");
    }
}

#[tokio::test]
async fn kill_9_of_a_mock_worker_with_24_requests_in_flight_hangs_nothing() {
    let pool = Pool::start(TTL).await;
    // 20 tokens/s and 100 tokens: each request runs for about 5 s.
    let mock = [
        "--mock-model",
        "m1",
        "--mock-slots",
        "16",
        "--mock-tokens-per-second",
        "20",
    ];
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        workers.push(pool.worker(id, &mock).await);
    }
    let gateways = Arc::new([pool.gateway("g1").await, pool.gateway("g2").await]);
    for gateway in gateways.iter() {
        gateway.wait_for_workers(3, 3, 10.0).await;
    }
    let requests: Vec<_> = (0..24)
        .map(|i| {
            let gateways = gateways.clone();
            tokio::spawn(async move {
                let stream = i % 2 == 0;
                let answer = tokio::time::timeout(
                    REQUEST_DEADLINE,
                    gateways[i % 2].chat("m1", &format!("request {i}"), 100, stream),
                )
                .await
                .unwrap_or_else(|_| panic!("request {i} hung"));
                (stream, answer)
            })
        })
        .collect();
    // All 24 are running on workers.
    eventually(10.0, "24 requests in flight", || async {
        gateways[0].model_stat("m1", "running").await
            + gateways[1].model_stat("m1", "running").await
            == 24
    })
    .await;
    // Kill the busiest worker.
    let status = gateways[0].status().await;
    let (victim, busy) = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let busy = w["status"]["slots_busy"].as_u64().unwrap_or(0);
            (w["id"].as_str().unwrap().to_owned(), busy)
        })
        .max_by_key(|(_, busy)| *busy)
        .unwrap();
    assert!(busy >= 8, "the busiest of 3 workers runs 8 or more of 24");
    let victim_index = workers.iter().position(|w| w.id == victim).unwrap();
    let killed_at = Instant::now();
    workers[victim_index].process.kill9().await;

    // Meanwhile, the dead worker leaves both views within the lease TTL.
    let leaves = async {
        for gateway in gateways.iter() {
            eventually(
                leave_deadline() - killed_at.elapsed().as_secs_f64(),
                "the dead worker leaves the view",
                || async { !gateway.worker_ids().await.contains(&victim) },
            )
            .await;
        }
    };
    let answers = async {
        let mut answers = Vec::new();
        for request in requests {
            answers.push(request.await.unwrap());
        }
        answers
    };
    let ((), answers) = tokio::join!(leaves, answers);
    assert!(!pool.registered().await.contains(&victim));
    let mut on_victim = 0;
    for (stream, answer) in answers {
        match &answer {
            Answer::Complete { worker } => assert_ne!(
                (stream, worker.as_str()),
                (true, victim.as_str()),
                "a stream on the dead worker cannot complete"
            ),
            // A stream that had started on the dead worker ends with an
            // error event (and a clean end of the body).
            Answer::ErrorEvent { worker, error } if stream => {
                assert_eq!(*worker, victim);
                assert!(error.contains("\"error\""), "{error}");
                on_victim += 1;
            }
            // A plain request had sent nothing: it ran again elsewhere.
            other => panic!("stream: {stream}: {other:?}"),
        }
    }
    // How many streams the kill cut is up to where the policy put them.
    eprintln!("streams cut by the kill: {on_victim}");
    // The pool still serves.
    for gateway in gateways.iter() {
        assert!(matches!(
            gateway.chat("m1", "after", 4, false).await,
            Answer::Complete { .. }
        ));
    }
}

#[tokio::test]
async fn an_etcd_outage_of_15_s_under_mock_load_fails_no_request() {
    let mut pool = Pool::start(TTL).await;
    let mock = [
        "--mock-model",
        "m1",
        "--mock-slots",
        "16",
        "--mock-tokens-per-second",
        "200",
    ];
    let _w1 = pool.worker("w1", &mock).await;
    let _w2 = pool.worker("w2", &mock).await;
    let gateways = Arc::new([pool.gateway("g1").await, pool.gateway("g2").await]);
    for gateway in gateways.iter() {
        gateway.wait_for_workers(2, 2, 10.0).await;
    }
    // Load: four clients in a loop, over both gateways.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (gateways, stop, served) = (gateways.clone(), stop.clone(), served.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let answer = gateways[(c + i) % 2]
                        .chat("m1", &format!("client {c} request {i}"), 8, i % 2 == 0)
                        .await;
                    match answer {
                        Answer::Complete { .. } => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failures.push(other),
                    }
                    i += 1;
                }
                failures
            })
        })
        .collect();

    pool.etcd.stop();
    for gateway in gateways.iter() {
        eventually(10.0, "the gateway says it is degraded", || async {
            gateway.readiness().await["status"] == "degraded"
        })
        .await;
        // Alive, and serving.
        assert_eq!(gateway.get("/healthz").await.0, 200);
    }
    let before = served.load(Ordering::SeqCst);
    // The outage: longer than every lease's TTL.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        served.load(Ordering::SeqCst) > before,
        "requests were served during the outage"
    );
    pool.etcd.restart();

    // A worker that joins after the outage is seen by both gateways.
    let _w3 = pool.worker("w3", &mock).await;
    for gateway in gateways.iter() {
        gateway.wait_for_workers(3, 3, 20.0).await;
        assert_eq!(gateway.readiness().await["status"], "ready");
    }
    let mut registered = pool.registered().await;
    registered.sort();
    assert_eq!(
        registered,
        ["w1", "w2", "w3"],
        "the old workers are registered again"
    );

    stop.store(true, Ordering::SeqCst);
    for client in clients {
        let failures = client.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
}

#[tokio::test]
async fn sigterm_drains_a_mock_worker_and_nothing_new_reaches_it() {
    let pool = Pool::start(TTL).await;
    let mock = [
        "--mock-model",
        "m1",
        "--mock-slots",
        "8",
        "--mock-tokens-per-second",
        "20",
    ];
    let mut workers = [
        pool.worker("w1", &mock).await,
        pool.worker("w2", &mock).await,
    ];
    let gateway = Arc::new(pool.gateway("g1").await);
    gateway.wait_for_workers(2, 2, 10.0).await;
    // 1 = SERVING.
    assert_eq!(workers[0].health("").await, 1);
    // Six requests of about 3 s each.
    let running: Vec<_> = (0..6)
        .map(|i| {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                gateway
                    .chat("m1", &format!("long {i}"), 60, i % 2 == 0)
                    .await
            })
        })
        .collect();
    eventually(10.0, "6 requests in flight", || async {
        gateway.model_stat("m1", "running").await == 6
    })
    .await;
    let status = gateway.status().await;
    let victim = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|w| w["status"]["slots_busy"].as_u64().unwrap_or(0))
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .unwrap();
    let index = workers.iter().position(|w| w.id == victim).unwrap();
    workers[index].process.terminate();
    eventually(5.0, "the gateway sees the worker draining", || async {
        gateway.status().await["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["id"] == victim.as_str() && w["draining"] == true)
            || !gateway.worker_ids().await.contains(&victim)
    })
    .await;
    // Its gRPC health says so too (2 = NOT_SERVING).
    for service in ["", "herd.worker.v1.Worker"] {
        assert_eq!(workers[index].health(service).await, 2, "{service:?}");
    }
    // New requests while it drains go elsewhere.
    let fresh = join_all((0..10).map(|i| {
        let gateway = &gateway;
        async move { gateway.chat("m1", &format!("new {i}"), 4, i % 2 == 0).await }
    }))
    .await;
    for answer in &fresh {
        match answer {
            Answer::Complete { worker } => {
                assert_ne!(*worker, victim, "reached the draining worker")
            }
            other => panic!("{other:?}"),
        }
    }
    // What ran there finished.
    let mut finished_on_victim = 0;
    for request in running {
        let answer = tokio::time::timeout(REQUEST_DEADLINE, request)
            .await
            .expect("not hung")
            .unwrap();
        let Answer::Complete { worker } = &answer else {
            panic!("{answer:?}");
        };
        if *worker == victim {
            finished_on_victim += 1;
        }
    }
    assert!(finished_on_victim > 0, "the drained worker had work");
    let exit = workers[index].process.wait(20).await;
    assert!(exit.success(), "{exit:?}: everything finished");
    assert!(!pool.registered().await.contains(&victim), "deregistered");
    eventually(5.0, "the drained worker leaves the view", || async {
        !gateway.worker_ids().await.contains(&victim)
    })
    .await;
}

#[tokio::test]
async fn two_gateways_asked_for_one_unloaded_mock_model_load_it_once() {
    let pool = Pool::start(TTL).await;
    // Loads take 1 s: both gateways ask while the first load runs.
    let mock = [
        "--mock-model",
        "m1",
        "--mock-lazy",
        "--mock-load-ms",
        "1000",
        "--mock-tokens-per-second",
        "400",
    ];
    let mut workers = Vec::new();
    for id in ["w1", "w2", "w3"] {
        workers.push(pool.worker(id, &mock).await);
    }
    let gateways = [pool.gateway("g1").await, pool.gateway("g2").await];
    for gateway in &gateways {
        gateway.wait_for_workers(3, 3, 10.0).await;
    }
    let requests = (0..16).map(|i| {
        let gateway = &gateways[i % 2];
        async move { gateway.chat("m1", &format!("cold {i}"), 4, false).await }
    });
    let answers = tokio::time::timeout(REQUEST_DEADLINE, join_all(requests))
        .await
        .expect("requests finish");
    for answer in &answers {
        assert!(matches!(answer, Answer::Complete { .. }), "{answer:?}");
    }
    let loads =
        gateways[0].model_stat("m1", "loads").await + gateways[1].model_stat("m1", "loads").await;
    assert_eq!(loads, 1, "one load cluster-wide");
    let status = gateways[0].status().await;
    let replicas: Vec<&str> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w["status"]["models"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "m1" && m["loaded"] == true)
        })
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(replicas.len(), 1, "loaded on one worker: {replicas:?}");
    let workers_served: HashSet<Option<String>> = answers
        .iter()
        .map(|a| a.worker().map(str::to_owned))
        .collect();
    assert_eq!(workers_served.len(), 1, "both gateways used that replica");
}

#[tokio::test]
async fn a_gateway_restart_loses_only_its_own_requests() {
    let pool = Pool::start(TTL).await;
    // 20 tokens/s and 60 tokens: each request runs for about 3 s.
    let mock = [
        "--mock-model",
        "m1",
        "--mock-slots",
        "16",
        "--mock-tokens-per-second",
        "20",
    ];
    let _workers = [
        pool.worker("w1", &mock).await,
        pool.worker("w2", &mock).await,
    ];
    let mut doomed = pool.gateway("g1").await;
    let survivor = Arc::new(pool.gateway("g2").await);
    for gateway in [&doomed, &*survivor] {
        gateway.wait_for_workers(2, 2, 10.0).await;
    }
    let through_survivor: Vec<_> = (0..6)
        .map(|i| {
            let survivor = survivor.clone();
            tokio::spawn(async move {
                tokio::time::timeout(
                    REQUEST_DEADLINE,
                    survivor.chat("m1", &format!("kept {i}"), 60, i % 2 == 0),
                )
                .await
                .unwrap_or_else(|_| panic!("request {i} hung"))
            })
        })
        .collect();
    let doomed_url = doomed.url.clone();
    let through_doomed: Vec<_> = (0..4)
        .map(|i| {
            let url = doomed_url.clone();
            tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&serde_json::json!({
                        "model": "m1",
                        "messages": [{"role": "user", "content": format!("lost {i}")}],
                        "max_tokens": 60,
                    }))
                    .send()
                    .await
            })
        })
        .collect();
    eventually(10.0, "10 requests in flight", || async {
        survivor.model_stat("m1", "running").await == 6
            && doomed.model_stat("m1", "running").await == 4
    })
    .await;
    doomed.process.kill9().await;
    // Its own clients see their connections end.
    for request in through_doomed {
        assert!(request.await.unwrap().is_err(), "the dead gateway answered");
    }
    // The other gateway's requests all complete.
    for request in through_survivor {
        let answer = request.await.unwrap();
        assert!(matches!(answer, Answer::Complete { .. }), "{answer:?}");
    }
    // The workers dropped the dead gateway's generations: their slots are
    // free again.
    eventually(
        10.0,
        "the dead gateway's requests leave the workers",
        || async {
            let status = survivor.status().await;
            status["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["status"]["slots_busy"].as_u64() == Some(0))
        },
    )
    .await;
    // Its registration expires with its lease.
    let key = pool.keys.gateway("g1");
    eventually(
        leave_deadline(),
        "the dead gateway's record expires",
        || async {
            pool.store
                .list(&key)
                .await
                .is_ok_and(|listing| listing.items.iter().all(|kv| kv.key != key))
        },
    )
    .await;
    // Restarted under the same id, it rejoins and serves.
    let restarted = pool.gateway("g1").await;
    restarted.wait_for_workers(2, 2, 10.0).await;
    assert!(matches!(
        restarted.chat("m1", "back", 4, false).await,
        Answer::Complete { .. }
    ));
}

/// `herd keys ARGS --etcd <the pool's etcd>`: its exit status and stdout.
fn herd_keys(pool: &Pool, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("keys")
        .args(args)
        .args(["--etcd", &pool.etcd.url()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn api_keys_in_etcd_reach_every_gateway_and_revoking_reaches_them_too() {
    let pool = Pool::start(TTL).await;
    let a = pool.gateway_with("gw-a", &["--keys-from-etcd"]).await;
    let b = pool.gateway_with("gw-b", &["--keys-from-etcd"]).await;
    // No keys yet: nothing passes (fail closed), probes do.
    for gw in [&a, &b] {
        assert_eq!(gw.get("/v1/models").await.0, 401);
        assert_eq!(gw.get_with_key("/v1/models", "sk-herd-guess").await, 401);
        assert_eq!(gw.get("/healthz").await.0, 200);
    }

    let (ok, key) = herd_keys(&pool, &["create", "team-a"]);
    assert!(ok, "herd keys create failed");
    let key = key.trim().to_owned();
    assert!(key.starts_with("sk-herd-"), "{key}");
    for gw in [&a, &b] {
        eventually(
            10.0,
            "a key created in etcd works on every gateway",
            || async { gw.get_with_key("/v1/models", &key).await == 200 },
        )
        .await;
        // A user key is not an admin key.
        let unload = gw
            .http
            .post(format!("{}/engines/unload", gw.url))
            .bearer_auth(&key)
            .json(&serde_json::json!({"all": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(unload.status(), 403);
    }
    let (ok, listing) = herd_keys(&pool, &["list"]);
    assert!(ok && listing.contains("team-a"), "{listing}");
    assert!(!listing.contains(&key), "the listing never shows a key");
    let (again, _) = herd_keys(&pool, &["create", "team-a"]);
    assert!(!again, "a second key of the same name is refused");

    let (ok, _) = herd_keys(&pool, &["revoke", "team-a"]);
    assert!(ok, "herd keys revoke failed");
    for gw in [&a, &b] {
        eventually(
            10.0,
            "a key revoked in etcd is refused on every gateway",
            || async { gw.get_with_key("/v1/models", &key).await == 401 },
        )
        .await;
    }
    let (missing, _) = herd_keys(&pool, &["revoke", "team-a"]);
    assert!(!missing, "revoking an absent key fails");
}
