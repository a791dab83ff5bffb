//! Connections and shutdown on a real `herd serve`: the drain on a real
//! SIGTERM (streams and plain requests finish, or past the grace period end
//! with an error and `[DONE]`, and the exit status says which), and HTTP/1.1
//! pipelining while a chat generates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Herd, chat, parse_sse};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A streaming chat that reports usage.
fn streaming(content: &str, max_tokens: u32) -> Value {
    let mut body = chat(content, max_tokens);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body
}

/// What a client got: the status and the body (SSE payloads for a stream,
/// one JSON otherwise).
#[derive(Debug)]
enum Answer {
    Stream(Vec<String>),
    Json(u16, Value),
}

/// Starts `body` on `herd` in the background.
fn send(herd: &Herd, body: Value) -> tokio::task::JoinHandle<Answer> {
    let http = herd.http.clone();
    let url = format!("{}/v1/chat/completions", herd.url);
    tokio::spawn(async move {
        let resp = http.post(url).json(&body).send().await.unwrap();
        let status = resp.status().as_u16();
        if body["stream"] == true {
            assert_eq!(status, 200);
            Answer::Stream(parse_sse(&resp.text().await.unwrap()))
        } else {
            Answer::Json(status, resp.json().await.unwrap())
        }
    })
}

/// Starts the stream `body` on `herd` and returns once its head has come
/// (the gateway sends it with the first token); its events are read in the
/// background.
async fn start_stream(herd: &Herd, body: Value) -> tokio::task::JoinHandle<Answer> {
    let url = format!("{}/v1/chat/completions", herd.url);
    let resp = herd.http.post(url).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    tokio::spawn(async move { Answer::Stream(parse_sse(&resp.text().await.unwrap())) })
}

/// Polls until connecting to `url` is refused (bounded).
async fn wait_refused(url: &str) {
    let addr = url.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigterm_lets_every_stream_and_request_in_flight_finish_then_exits_0() {
    let herd = Herd::start(4).await;
    let max_tokens = 60;
    let requests: Vec<_> = (0..4)
        .map(|i| {
            let content = format!("Tell me about the sea, part {i}.");
            if i < 3 {
                send(&herd, streaming(&content, max_tokens))
            } else {
                send(&herd, chat(&content, max_tokens))
            }
        })
        .collect();
    herd.wait_until_generating(4).await;
    let url = herd.url.clone();
    herd.send_signal("TERM");
    wait_refused(&url).await;
    for request in requests {
        match request.await.unwrap() {
            Answer::Stream(events) => {
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
                assert_eq!(
                    usage["usage"]["completion_tokens"], max_tokens,
                    "the stream was not finished: {usage}"
                );
            }
            Answer::Json(status, body) => {
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["usage"]["completion_tokens"], max_tokens, "{body}");
            }
        }
    }
    let status = herd.wait().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn sigterm_serves_the_queued_requests_too() {
    // Two slots, four streams: two generate, two wait in the queue when
    // the signal comes; all four are answered in full.
    let herd = Herd::start(2).await;
    let max_tokens: u32 = 24;
    let requests: Vec<_> = (0..4)
        .map(|i| send(&herd, streaming(&format!("Name a river, {i}."), max_tokens)))
        .collect();
    herd.wait_until_generating(2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, status) = herd.get("/herd/v1/status").await;
        if status["scheduler"]["models"][0]["queued"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never queued: {status}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    herd.send_signal("TERM");
    for request in requests {
        let Answer::Stream(events) = request.await.unwrap() else {
            panic!("not a stream");
        };
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert!(
            !events.iter().any(|e| e.contains("\"error\"")),
            "cut: {events:?}"
        );
        let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        let tokens = usage["usage"]["completion_tokens"].as_u64().unwrap();
        assert!((1..=u64::from(max_tokens)).contains(&tokens), "{usage}");
    }
    let status = herd.wait().await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn past_the_grace_period_requests_end_with_an_error_and_the_exit_status_says_so() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "listen = \"127.0.0.1:0\"\nshutdown_grace_secs = 1\n",
    )
    .unwrap();
    let herd = Herd::start_with(&[
        "--parallel",
        "3",
        "--gateway-config",
        config.path().to_str().unwrap(),
    ])
    .await;
    // 2000 tokens at temperature 0 (the model does not stop earlier on this
    // prompt): far longer than the 1 s grace period. The streams have sent
    // their heads before the signal: a stream cut before its first token
    // is answered with a plain 503 instead (a busy machine can take longer
    // than the grace period to get there).
    let requests = [
        start_stream(&herd, streaming("Tell me about the sea.", 2000)).await,
        start_stream(&herd, streaming("Tell me about the sea!", 2000)).await,
        send(&herd, chat("Tell me about the sea.", 2000)),
    ];
    herd.wait_until_generating(3).await;
    herd.send_signal("TERM");
    for request in requests {
        match request.await.unwrap() {
            Answer::Stream(events) => {
                let n = events.len();
                assert_eq!(events[n - 1], "[DONE]", "{events:?}");
                let error: Value = serde_json::from_str(&events[n - 2]).unwrap();
                assert_eq!(error["error"]["code"], "shutting_down", "{error}");
                assert!(error["error"]["message"].is_string(), "{error}");
            }
            Answer::Json(status, body) => {
                common::assert_error(status, &body, 503);
                assert_eq!(body["error"]["code"], "shutting_down", "{body}");
            }
        }
    }
    let status = herd.wait().await;
    assert_eq!(
        status.code(),
        Some(herd_signals::DRAIN_CUT_EXIT_STATUS),
        "{status}"
    );
}

/// Reads one response's status line and headers.
async fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<String>) {
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).await.unwrap();
        if h.trim_end().is_empty() {
            return (status, headers);
        }
        headers.push(h.trim_end().to_ascii_lowercase());
    }
}

/// Reads a body framed by `headers` (chunked or with a length).
async fn read_body(reader: &mut BufReader<TcpStream>, headers: &[String]) -> String {
    let mut body = Vec::new();
    if let Some(len) = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length:"))
    {
        body.resize(len.trim().parse().unwrap(), 0);
        reader.read_exact(&mut body).await.unwrap();
    } else {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await.unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    String::from_utf8(body).unwrap()
}

fn post_raw(body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn requests_pipelined_while_a_chat_streams_wait_their_turn_and_do_not_cancel_it() {
    let herd = Herd::start(2).await;
    let addr = herd.url.trim_start_matches("http://").to_owned();
    let mut conn = BufReader::new(TcpStream::connect(&addr).await.unwrap());
    let max_tokens = 100;
    conn.get_mut()
        .write_all(&post_raw(&streaming("Tell me about the sea.", max_tokens)))
        .await
        .unwrap();
    let (status, headers) = read_head(&mut conn).await;
    assert_eq!(status, 200);
    // The chat is generating: pipeline two more requests behind it.
    assert_eq!(herd.worker_status().await["slots_busy"], 1);
    conn.get_mut()
        .write_all(
            &[
                b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
                post_raw(&chat("Say hi.", 5)),
            ]
            .concat(),
        )
        .await
        .unwrap();

    let events = parse_sse(&read_body(&mut conn, &headers).await);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], max_tokens, "{usage}");

    let (status, headers) = read_head(&mut conn).await;
    assert_eq!(status, 200);
    assert_eq!(read_body(&mut conn, &headers).await, r#"{"status":"ok"}"#);
    let (status, headers) = read_head(&mut conn).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&read_body(&mut conn, &headers).await).unwrap();
    assert_eq!(answer["object"], "chat.completion", "{answer}");

    let worker = herd.worker_status().await;
    assert_eq!(worker["generations"]["cancelled"], 0, "{worker}");
    assert_eq!(worker["generations"]["completed"], 2, "{worker}");
}
