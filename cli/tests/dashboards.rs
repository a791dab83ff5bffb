//! The dashboards and `/engines/ps` against a live `herd serve` on the real
//! model: every metric the Grafana dashboard's queries name is exported,
//! the Prometheus config passes `promtool check config`, and `/engines/ps`
//! with the queue gauges shows a request waiting behind a busy slot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::scrape::{Scrape, promtool_check_config, scrape_text};
use common::{Herd, MODEL, chat};
use serde_json::{Value, json};

#[tokio::test]
async fn engines_ps_and_the_queue_gauges_show_a_request_waiting_behind_a_busy_slot() {
    let herd = Herd::start(1).await;
    // One long completion holds the only slot …
    let busy = {
        let url = format!("{}/v1/completions", herd.url);
        let http = herd.http.clone();
        tokio::spawn(async move {
            let body = json!({
                "model": MODEL,
                "prompt": "Count from 1 to 500, separated by commas: 1, 2, 3, 4,",
                "max_tokens": 300,
                "temperature": 0,
            });
            let resp = http.post(url).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        })
    };
    herd.wait_until_generating(1).await;
    // … and a high-priority one waits for it.
    let queued = {
        let url = format!("{}/v1/chat/completions", herd.url);
        let http = herd.http.clone();
        tokio::spawn(async move {
            let resp = http
                .post(url)
                .header("x-herd-priority", "high")
                .json(&chat("Hi", 2))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
        })
    };
    let ps = poll_ps(&herd, |entry| entry["queued"] == 1).await;
    assert_eq!(ps["model_name"], MODEL, "{ps}");
    assert_eq!(ps["worker"], "local", "{ps}");
    assert_eq!(ps["slots_total"], 1, "{ps}");
    assert_eq!(ps["slots_busy"], 1, "{ps}");
    assert_eq!(ps["in_use"], true, "{ps}");
    assert_eq!(ps["keep_alive_secs"], 300, "{ps}");
    assert!(ps["expires_at"].is_null(), "busy: not expiring: {ps}");
    assert!(ps["last_used"].as_u64().is_some_and(|t| t > 0), "{ps}");

    let text = scrape_text(&herd.http, &format!("{}/metrics", herd.url)).await;
    let scrape = Scrape::parse(&text);
    let depth = |priority: &str| {
        scrape.get(&format!(
            "herd_gateway_queue_depth{{model=\"{MODEL}\",priority=\"{priority}\"}}"
        ))
    };
    assert_eq!(depth("high"), 1.0, "{text}");
    assert_eq!(depth("normal") + depth("low"), 0.0, "{text}");
    assert_eq!(
        scrape.get(&format!("herd_gateway_running{{model=\"{MODEL}\"}}")),
        1.0
    );
    assert_eq!(
        scrape.get(&format!("herd_worker_slots_busy{{model=\"{MODEL}\"}}")),
        1.0
    );
    // In flight besides the scrape itself: the busy one and the queued one.
    assert_eq!(scrape.get("herd_gateway_in_flight"), 2.0, "{text}");

    busy.await.unwrap();
    queued.await.unwrap();
    let ps = poll_ps(&herd, |entry| entry["slots_busy"] == 0).await;
    assert_eq!(ps["queued"], 0, "{ps}");
    assert_eq!(ps["in_use"], false, "{ps}");
    let (last_used, expires_at) = (
        ps["last_used"].as_u64().unwrap(),
        ps["expires_at"].as_u64().unwrap(),
    );
    assert!(
        (299..=301).contains(&(expires_at - last_used)),
        "idle: expires keep_alive after its last use: {ps}"
    );
}

/// Polls `/engines/ps` until its one entry satisfies `check`.
async fn poll_ps(herd: &Herd, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = herd.get("/engines/ps").await;
        assert_eq!(status, 200, "{body}");
        if body
            .as_array()
            .and_then(|entries| entries.first())
            .is_some_and(&check)
        {
            return body[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/engines/ps never showed it: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every `expr` (and variable query) in the dashboard's JSON.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "definition", Value::String(q)) => out.push(q.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(dashboard, &mut queries);
    queries
}

/// The `herd_…` metric names a query mentions.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("herd_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_dashboard_query_names_a_metric_a_live_herd_exports() {
    let herd = Herd::start(2).await;
    let (status, body) = herd.post("/v1/chat/completions", &chat("Hi", 3)).await;
    assert_eq!(status, 200, "{body}");
    // Unload the model and load it again with the next request: the
    // load and unload metrics move too.
    let (status, body) = herd.post("/engines/unload", &json!({"all": true})).await;
    assert_eq!(status, 200, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while herd.get("/engines/ps").await.1 != json!([]) {
        assert!(tokio::time::Instant::now() < deadline, "never unloaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = herd.post("/v1/chat/completions", &chat("Hi", 3)).await;
    assert_eq!(status, 200, "{body}");

    let text = scrape_text(&herd.http, &format!("{}/metrics", herd.url)).await;
    let scrape = Scrape::parse(&text);
    let model = format!("model=\"{MODEL}\"");
    for (series, want) in [
        (format!("herd_gateway_model_unloads_total{{{model}}}"), 1.0),
        (
            format!("herd_gateway_model_loads_total{{{model},result=\"ok\"}}"),
            1.0,
        ),
        (
            format!("herd_gateway_model_load_duration_seconds_count{{{model}}}"),
            1.0,
        ),
        (format!("herd_worker_model_unloads_total{{{model}}}"), 1.0),
        (
            "herd_worker_model_loads_total{result=\"ok\"}".to_owned(),
            1.0,
        ),
        (
            format!("herd_worker_model_load_duration_seconds_count{{{model}}}"),
            1.0,
        ),
        (
            "herd_worker_generations_total{outcome=\"completed\"}".to_owned(),
            2.0,
        ),
    ] {
        assert_eq!(scrape.get(&series), want, "{series}\n{text}");
    }

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/herd.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "herd-overview");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{queries:#?}");
    let exported = scrape.names();
    let mut missing = Vec::new();
    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "a query without a Herd metric: {query}");
        missing.extend(names.into_iter().filter(|n| !exported.contains(n.as_str())));
    }
    assert!(
        missing.is_empty(),
        "dashboard queries name metrics /metrics does not export: {missing:?}"
    );
    promtool_check_config(&root.join("deploy/prometheus/prometheus.yml"));
}
