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

impl HttpClient {
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .build()
            .map_err(ClientError::Http)?;
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
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                let Some(data) = event[..end].strip_prefix(b"data: ") else {
                    continue;
                };
                if data == b"[DONE]" {
                    done = true;
                    break;
                }
                let chunk: Chunk = match serde_json::from_slice(data) {
                    Ok(c) => c,
                    Err(e) => return fail(RequestError::BadResponse(e.to_string()), &timeline),
                };
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
