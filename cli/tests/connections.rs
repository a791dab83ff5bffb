//! Connections on a real `herd serve`: HTTP/1.1 pipelining while a chat
//! generates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
