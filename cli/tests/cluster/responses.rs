//! Stored OpenAI Responses live in etcd: a response made through one
//! gateway is read, continued and deleted through another.

use serde_json::{Value, json};

use super::TTL;
use super::harness::Pool;

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn responses_stored_through_one_gateway_are_seen_by_another() {
    let pool = Pool::start(TTL).await;
    let _worker = pool
        .worker("w1", &["--mock-model", "m1", "--mock-slots", "2"])
        .await;
    let (g1, g2) = (pool.gateway("g1").await, pool.gateway("g2").await);
    for gateway in [&g1, &g2] {
        gateway.wait_for_workers(1, 1, 10.0).await;
    }
    let create = |g: &super::harness::Gateway, body: Value| {
        g.http.post(format!("{}/v1/responses", g.url)).json(&body)
    };
    let (status, first) = send(create(
        &g1,
        json!({"model": "m1", "input": "hello", "max_output_tokens": 4}),
    ))
    .await;
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();

    let (status, seen) = send(g2.http.get(format!("{}/v1/responses/{id}", g2.url))).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen, first);
    let (status, items) = send(
        g2.http
            .get(format!("{}/v1/responses/{id}/input_items", g2.url)),
    )
    .await;
    assert_eq!(status, 200, "{items}");
    assert_eq!(items["data"][0]["content"][0]["text"], "hello");

    let (status, follow) = send(create(
        &g2,
        json!({"model": "m1", "input": "again", "previous_response_id": id, "max_output_tokens": 4}),
    ))
    .await;
    assert_eq!(status, 200, "{follow}");
    assert_eq!(follow["previous_response_id"], id.as_str());

    let (status, deleted) = send(g2.http.delete(format!("{}/v1/responses/{id}", g2.url))).await;
    assert_eq!(status, 200, "{deleted}");
    let (status, gone) = send(g1.http.get(format!("{}/v1/responses/{id}", g1.url))).await;
    assert_eq!(status, 404, "{gone}");
}
