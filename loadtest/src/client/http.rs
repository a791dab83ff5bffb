//! `POST /v1/chat/completions` against any OpenAI-compatible server,
//! streaming (SSE) or not.

use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;

use super::{ClientError, Outcome, RequestError, Timeline};
use crate::scenarios::ChatRequest;

#[derive(Debug, Clone)]
pub struct HttpClient {
    http: reqwest::Client,
    url: String,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Usage {
    completion_tokens: u32,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
    /// How a server reports a failure after the stream began.
    error: Option<serde_json::Value>,
}

/// Takes the next complete SSE event (up to a blank line, `\n\n` or
/// `\r\n\r\n`) off the front of `buf`.
fn next_event(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let (end, len) = match (lf, crlf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    let event = buf[..end].to_vec();
    buf.drain(..end + len);
    Some(event)
}

/// The `data` of one SSE event (its `data:` lines joined by `\n`, one
/// leading space dropped from each); `None` when it has none.
fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data:") else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match &mut data {
            Some(d) => {
                d.push(b'\n');
                d.extend_from_slice(value);
            }
            None => data = Some(value.to_vec()),
        }
    }
    data
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<CompletionChoice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: Message,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
}

/// What HTTP targets need besides their URL.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Sent as `Authorization: Bearer …`.
    pub api_key: Option<String>,
    /// The CA that https:// targets' certificates chain to.
    pub ca_cert: Option<std::path::PathBuf>,
}

impl HttpClient {
    pub fn new(base: &str, timeout: Duration, options: &HttpOptions) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX);
        if let Some(key) = &options.api_key {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|e| ClientError::ApiKey(e.to_string()))?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(path) = &options.ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::CaCert(path.clone(), e.to_string()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::CaCert(path.clone(), e.to_string()))?;
            builder = builder.tls_certs_only([cert]);
        }
        let http = builder.build().map_err(ClientError::Http)?;
        Ok(Self {
            http,
            url: format!("{base}/v1/chat/completions"),
            timeout,
        })
    }

    pub async fn send(&self, request: &ChatRequest) -> Outcome {
        let timeline = Timeline::start();
        let sent = tokio::time::timeout(self.timeout, self.exchange(request, timeline));
        match sent.await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::failed(RequestError::Timeout, self.timeout),
        }
    }

    async fn exchange(&self, request: &ChatRequest, mut timeline: Timeline) -> Outcome {
        let mut body = serde_json::json!({
            "model": request.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
            "stream": request.stream,
        });
        if request.stream {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let fail = |e: RequestError, t: &Timeline| Outcome::failed(e, t.elapsed());
        let response = match self.http.post(&self.url).json(&body).send().await {
            Ok(r) => r,
            Err(e) => return fail(transport(e), &timeline),
        };
        if !response.status().is_success() {
            let status = response.status().as_u16();
            // Read the body so the connection can be reused.
            let _ = response.bytes().await;
            return fail(RequestError::Http(status), &timeline);
        }
        if !request.stream {
            let bytes = match response.bytes().await {
                Ok(b) => b,
                Err(e) => return fail(transport(e), &timeline),
            };
            let parsed: Completion = match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => return fail(RequestError::BadResponse(e.to_string()), &timeline),
            };
            let text = parsed
                .choices
                .into_iter()
                .next()
                .and_then(|c| c.message.content)
                .unwrap_or_default();
            return Outcome {
                result: Ok(()),
                ttft: None,
                itl: Vec::new(),
                e2e: timeline.elapsed(),
                output_tokens: parsed.usage.map_or(0, |u| u.completion_tokens),
                text,
            };
        }
        let mut stream = response.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut text = String::new();
        let mut usage = None;
        let mut done = false;
        while !done {
            let bytes = match stream.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => return fail(transport(e), &timeline),
                None => break,
            };
            buf.extend_from_slice(&bytes);
            while let Some(event) = next_event(&mut buf) {
                let Some(data) = event_data(&event) else {
                    continue;
                };
                if data == b"[DONE]" {
                    done = true;
                    break;
                }
                let chunk: Chunk = match serde_json::from_slice(&data) {
                    Ok(c) => c,
                    Err(e) => return fail(RequestError::BadResponse(e.to_string()), &timeline),
                };
                if let Some(error) = chunk.error {
                    let error = RequestError::BadResponse(format!("error in the stream: {error}"));
                    return fail(error, &timeline);
                }
                if let Some(u) = chunk.usage {
                    usage = Some(u.completion_tokens);
                }
                let delta = chunk
                    .choices
                    .into_iter()
                    .next()
                    .and_then(|c| c.delta.content);
                if let Some(t) = delta.filter(|t| !t.is_empty()) {
                    timeline.text();
                    text.push_str(&t);
                }
            }
        }
        if !done {
            return fail(
                RequestError::BadResponse("stream ended without [DONE]".into()),
                &timeline,
            );
        }
        Outcome {
            result: Ok(()),
            e2e: timeline.elapsed(),
            output_tokens: usage.unwrap_or(timeline.events),
            ttft: timeline.ttft,
            itl: timeline.itl,
            text,
        }
    }
}

fn transport(e: reqwest::Error) -> RequestError {
    if e.is_timeout() {
        RequestError::Timeout
    } else {
        RequestError::Transport(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(mut buf: Vec<u8>) -> (Vec<Option<String>>, Vec<u8>) {
        let mut out = Vec::new();
        while let Some(event) = next_event(&mut buf) {
            out.push(event_data(&event).map(|d| String::from_utf8(d).unwrap()));
        }
        (out, buf)
    }

    #[test]
    fn sse_framing_follows_the_spec() {
        let (data, rest) =
            events(b"data: a\n\ndata:b\r\n\r\n: comment\n\ndata: c\ndata: d\n\ndata: par".to_vec());
        assert_eq!(
            data,
            [
                Some("a".into()),
                Some("b".into()),
                None,
                Some("c\nd".into())
            ]
        );
        assert_eq!(rest, b"data: par", "an incomplete event waits for more");
    }

    #[test]
    fn an_error_in_the_stream_is_seen() {
        let chunk: Chunk =
            serde_json::from_str(r#"{"error":{"message":"boom","type":"server_error"}}"#).unwrap();
        assert!(chunk.error.is_some());
        let chunk: Chunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"x"}}]}"#).unwrap();
        assert!(chunk.error.is_none());
    }
}
